"""REST endpoint of the accountant hub: client files with their integration status.

``GET /api/v1/client-files/`` lists the files the caller may see (firm members: their firm's
files; organisation members: their own), with status, push frequency, last push and last error
per file. Read-only; another firm's file is a 404 (``TenantViewSet`` scopes every query).
"""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers

from accountant.models import ClientFile, JournalEntry
from qontohub.api import TenantViewSet, router


class ClientFileSerializer(serializers.ModelSerializer):
    organization_name = serializers.CharField(source="organization.name", read_only=True)
    entries_pushed = serializers.IntegerField(read_only=True)
    entries_blocked = serializers.IntegerField(read_only=True)
    entries_failed = serializers.IntegerField(read_only=True)
    entries_waiting = serializers.IntegerField(read_only=True)

    class Meta:
        model = ClientFile
        fields = [
            "id",
            "organization",
            "organization_name",
            "firm",
            "software",
            "remote_company_id",
            "remote_company_name",
            "remote_siren",
            "status",
            "sync_frequency",
            "weekly_account_sync",
            "reference_synced_at",
            "last_push_at",
            "last_error",
            "last_error_at",
            "entries_pushed",
            "entries_blocked",
            "entries_failed",
            "entries_waiting",
        ]


@extend_schema(
    parameters=[
        OpenApiParameter("organization", int),
        OpenApiParameter("status", str, enum=ClientFile.Status.values),
    ]
)
class ClientFileViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Client files with their status, last push and last error (filters: organization, status)."""

    queryset = ClientFile.objects.select_related("organization").order_by("organization__name", "pk")
    serializer_class = ClientFileSerializer

    def get_queryset(self) -> QuerySet[ClientFile]:
        qs = super().get_queryset()
        status = self.request.query_params.get("status")
        if status:
            qs = qs.filter(status=status)
        statuses = JournalEntry.Status
        return qs.annotate(
            entries_pushed=Count("entries", filter=Q(entries__status=statuses.PUSHED)),
            entries_blocked=Count("entries", filter=Q(entries__status=statuses.BLOCKED)),
            entries_failed=Count("entries", filter=Q(entries__status=statuses.ERROR)),
            entries_waiting=Count("entries", filter=Q(entries__status=statuses.VALIDATED)),
        )


router.register("client-files", ClientFileViewSet, basename="client-file")
