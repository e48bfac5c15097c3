"""Admin bases that apply tenancy: what a user sees and may change follows their roles.

Every tenant-owned ModelAdmin inherits :class:`TenantAdmin`. It lists rows through
``visible_to(user)`` (narrowed to the organisation picked in the header switcher), answers 404
for another organisation's row, lets support staff read without changing, and offers only the
user's own organisations in the organisation field. Django's per-model permissions are not used:
roles decide.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest

from qontohub.current import current_organization
from qontohub.models import Organization
from qontohub.tenancy import MANAGE_ROLES, is_support, organization_ids_for


class TenantAdmin(admin.ModelAdmin):
    #: Path from the model to its organisation, for filtering.
    organization_field = "organization"
    #: Roles that may add, change and delete rows of this model.
    change_roles: frozenset[str] = MANAGE_ROLES
    #: Support staff may read this model (connection status, runs, events…).
    support_can_view = True

    def organization_id_of(self, obj: Model) -> int:
        value: Any = obj
        for part in self.organization_field.split("__"):
            value = getattr(value, part)
        return value.pk if isinstance(value, Model) else value

    # --- what is listed -------------------------------------------------------------------
    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        qs = super().get_queryset(request)
        user = request.user
        if not (user.is_superuser or (self.support_can_view and is_support(user))):
            ids = organization_ids_for(user)
            qs = qs.filter(**{f"{self.organization_field}__in": ids}) if ids else qs.none()
        org = current_organization(request)
        if org is not None:
            qs = qs.filter(**{self.organization_field: org.pk})
        return qs

    def change_view(self, request: HttpRequest, object_id: str, *args: Any, **kwargs: Any) -> Any:
        # Django redirects to the index for an unknown id; for another tenant's row we answer a
        # plain 404 so nothing confirms that the row exists.
        if not self._visible(request, object_id):
            raise Http404("No such record in your organisations.")
        return super().change_view(request, object_id, *args, **kwargs)

    def delete_view(self, request: HttpRequest, object_id: str, *args: Any, **kwargs: Any) -> Any:
        if not self._visible(request, object_id):
            raise Http404("No such record in your organisations.")
        return super().delete_view(request, object_id, *args, **kwargs)

    def history_view(self, request: HttpRequest, object_id: str, *args: Any, **kwargs: Any) -> Any:
        if not self._visible(request, object_id):
            raise Http404("No such record in your organisations.")
        return super().history_view(request, object_id, *args, **kwargs)

    def _visible(self, request: HttpRequest, object_id: str) -> bool:
        field = self.model._meta.pk
        try:
            pk = field.to_python(object_id)
        except Exception:
            return False
        return self.get_queryset(request).filter(pk=pk).exists()

    # --- who may do what ------------------------------------------------------------------
    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        if user.is_superuser or (self.support_can_view and is_support(user)):
            return True
        ids = organization_ids_for(user)
        if obj is None:
            return bool(ids)
        return self.organization_id_of(obj) in ids

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        if user.is_superuser:
            return True
        if is_support(user):
            return False
        ids = organization_ids_for(user, self.change_roles)
        if obj is None:
            return bool(ids)
        return self.organization_id_of(obj) in ids

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return self.has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self.has_change_permission(request, obj)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.related_model is Organization:
            kwargs["queryset"] = Organization.objects.with_role(request.user, self.change_roles)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ReadOnlyTenantAdmin(TenantAdmin):
    """Records written by the hub's flows (sync runs, events…): shown, never edited by hand."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return bool(request.user.is_superuser)

