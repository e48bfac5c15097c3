"""REST endpoints of sync status: connections, their status, sync runs and their events.

Read-only; every queryset goes through ``visible_to(request.user)`` (the TenantViewSet base), so
another organisation's connection, run or event is a 404. Credentials are never serialised.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from connectors.models import Connection, SyncCursor, SyncEvent, SyncRun
from qontohub.api import TenantViewSet, router


class ConnectionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Connection
        fields = [
            "id",
            "organization",
            "firm",
            "provider",
            "auth_method",
            "display_name",
            "external_account_id",
            "status",
            "last_sync_at",
            "last_error",
            "last_error_at",
            "connected_at",
        ]


class SyncRunSerializer(serializers.ModelSerializer):
    provider = serializers.CharField(source="connection.provider", read_only=True)

    class Meta:
        model = SyncRun
        fields = ["id", *SyncRun.REPORT_FIELDS, "provider"]


class SyncEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = SyncEvent
        fields = ["id", "run", "connection", "stream", "external_id", "kind", "reason", "created_at"]


class StreamStatusSerializer(serializers.Serializer):
    stream = serializers.CharField()
    cursor = serializers.CharField()
    last_success_at = serializers.DateTimeField(allow_null=True)
    resuming = serializers.BooleanField()


class ConnectionStatusSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    provider = serializers.CharField()
    status = serializers.CharField()
    current_error = serializers.CharField(allow_blank=True)
    last_run = SyncRunSerializer(allow_null=True)
    streams = StreamStatusSerializer(many=True)


class ConnectionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Connections of the caller's organisations (filter: ``organization``, ``provider``, ``status``)."""

    queryset = Connection.objects.select_related("organization")
    serializer_class = ConnectionSerializer

    def get_queryset(self) -> QuerySet[Connection]:
        qs = super().get_queryset()
        for name in ("provider", "status"):
            value = self.request.query_params.get(name)
            if value:
                qs = qs.filter(**{name: value})
        return qs

    @extend_schema(responses=ConnectionStatusSerializer)
    @action(detail=True, methods=["get"], pagination_class=None)
    def status(self, request: Request, pk: str | None = None) -> Response:
        """State, last run, last successful sync per stream, counts and current error."""
        connection = self.get_object()
        last_run = connection.runs.select_related("connection").order_by("-started_at", "-pk").first()
        cursors = SyncCursor.objects.filter(connection=connection).order_by("stream")
        body = {
            "id": connection.pk,
            "provider": connection.provider,
            "status": connection.status,
            "current_error": connection.last_error if connection.status != Connection.Status.ACTIVE else "",
            "last_run": SyncRunSerializer(last_run).data if last_run else None,
            "streams": StreamStatusSerializer(
                [
                    {
                        "stream": c.stream,
                        "cursor": c.value,
                        "last_success_at": c.last_success_at,
                        "resuming": bool(c.position),
                    }
                    for c in cursors
                ],
                many=True,
            ).data,
        }
        return Response(body)


def _datetime_param(request: Request, name: str) -> Any:
    raw = request.query_params.get(name)
    if not raw:
        return None
    value = parse_datetime(raw)
    if value is None:
        raise ValidationError({name: "Use an ISO 8601 date-time, e.g. 2026-12-01T00:00:00Z."})
    return value


@extend_schema(
    parameters=[
        OpenApiParameter("organization", int),
        OpenApiParameter("connection", int),
        OpenApiParameter("provider", str),
        OpenApiParameter("outcome", str),
        OpenApiParameter("trigger", str),
        OpenApiParameter("started_after", str, description="ISO 8601"),
        OpenApiParameter("started_before", str, description="ISO 8601"),
    ]
)
class SyncRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Sync runs, newest first, filterable."""

    queryset = SyncRun.objects.select_related("connection")
    serializer_class = SyncRunSerializer

    def get_queryset(self) -> QuerySet[SyncRun]:
        qs = super().get_queryset()
        params = self.request.query_params
        if params.get("connection"):
            if not params["connection"].isdigit():
                raise ValidationError({"connection": "Give the connection's numeric id."})
            qs = qs.filter(connection_id=int(params["connection"]))
        for name, lookup in (("provider", "connection__provider"), ("outcome", "outcome"), ("trigger", "trigger")):
            if params.get(name):
                qs = qs.filter(**{lookup: params[name]})
        after = _datetime_param(self.request, "started_after")
        before = _datetime_param(self.request, "started_before")
        if after:
            qs = qs.filter(started_at__gte=after)
        if before:
            qs = qs.filter(started_at__lt=before)
        return qs

    @extend_schema(responses=SyncEventSerializer(many=True))
    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str | None = None) -> Response:
        """The run's failed and changed records, with reasons."""
        run = self.get_object()
        events = SyncEvent.objects.filter(run=run).order_by("-pk")
        page = self.paginate_queryset(events)
        return self.get_paginated_response(SyncEventSerializer(page, many=True).data)


router.register("connections", ConnectionViewSet, basename="connection")
router.register("sync-runs", SyncRunViewSet, basename="sync-run")
