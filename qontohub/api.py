"""REST API plumbing: the router every app registers on, the tenant-scoped viewset base,
and the core endpoints (organisations, me)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import permissions, serializers, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.routers import DefaultRouter

from qontohub.models import Organization


class HubRouter(DefaultRouter):
    """Routes answer with or without the trailing slash: REST clients post to
    ``/review-items/{id}/decision`` as documented, and a redirect would drop a POST body."""

    def __init__(self) -> None:
        super().__init__(trailing_slash=True)
        self.trailing_slash = "/?"


router = HubRouter()


class TenantViewSet(viewsets.GenericViewSet):
    """Base for every tenant-owned endpoint.

    The queryset is always ``model.objects.visible_to(request.user)``, optionally narrowed by
    ``?organization=<id>``; an object of another organisation is therefore a 404, never a 403
    that would confirm it exists.
    """

    permission_classes = [permissions.IsAuthenticated]
    queryset: QuerySet[Any]

    def get_queryset(self) -> QuerySet[Any]:
        qs = self.queryset.all().visible_to(self.request.user)
        org = self.request.query_params.get("organization")
        if org:
            if not org.isdigit():
                raise ValidationError({"organization": "Give the organisation's numeric id."})
            qs = qs.filter(**{qs.organization_field: int(org)})
        return qs


class OrganizationSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Organization
        fields = ["id", "name", "qonto_slug", "country", "time_zone", "siren", "firm", "role"]

    def get_role(self, obj: Organization) -> str | None:
        roles = self.context.setdefault("_roles", None)
        if roles is None:
            user = self.context["request"].user
            roles = dict(user.memberships.values_list("organization_id", "role"))
            self.context["_roles"] = roles
        return roles.get(obj.pk)


class OrganizationViewSet(viewsets.ReadOnlyModelViewSet):
    """The organisations the caller can see, with the caller's role in each."""

    serializer_class = OrganizationSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[Organization]:
        return Organization.objects.visible_to(self.request.user).order_by("name")


router.register("organizations", OrganizationViewSet, basename="organization")
