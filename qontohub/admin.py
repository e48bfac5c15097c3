"""Admin screens of the core: people, firms, organisations and memberships, API tokens."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import Http404, HttpRequest

from qontohub.admin_base import TenantAdmin
from qontohub.models import ApiToken, Firm, FirmMembership, Membership, Organization, User
from qontohub.tenancy import Role, is_support, organization_ids_for


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    """People are managed by operators (superusers); everyone else only sees their own row."""

    ordering = ["email"]
    list_display = ["email", "first_name", "last_name", "is_active", "is_superuser", "last_login"]
    search_fields = ["email", "first_name", "last_name"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name")}),
        ("Access", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser


class FirmMembershipInline(admin.TabularInline):
    model = FirmMembership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Firm)
class FirmAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    prepopulated_fields = {"slug": ("name",)}
    inlines = [FirmMembershipInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Firm]:
        qs = super().get_queryset(request)
        if request.user.is_superuser or is_support(request.user):
            return qs
        return qs.filter(memberships__user=request.user).distinct()

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser or request.user.firm_memberships.exists()

    def has_view_permission(self, request: HttpRequest, obj: Firm | None = None) -> bool:
        return self.has_module_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Firm | None = None) -> bool:
        return request.user.is_superuser

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Firm | None = None) -> bool:
        return request.user.is_superuser

    def change_view(self, request: HttpRequest, object_id: str, *args: Any, **kwargs: Any) -> Any:
        if not self.get_queryset(request).filter(pk=object_id).exists():
            raise Http404("No such firm among yours.")
        return super().change_view(request, object_id, *args, **kwargs)


class MembershipInline(admin.TabularInline):
    """Members are listed to the organisation's owners; operators grant and change roles
    (choosing a user would otherwise list every person on the hub)."""

    model = Membership
    extra = 0
    autocomplete_fields = ["user"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True


@admin.register(Organization)
class OrganizationAdmin(TenantAdmin):
    organization_field = "pk"
    change_roles = frozenset({Role.OWNER})
    list_display = ["name", "qonto_slug", "country", "time_zone", "firm"]
    search_fields = ["name", "qonto_slug", "siren"]
    inlines = [MembershipInline]

    def organization_id_of(self, obj: Organization) -> int:
        return obj.pk

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Which firm a company is a client of is an operator decision (it grants access).
        return [] if request.user.is_superuser else ["firm"]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        # New tenants are opened by operators.
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser


class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["name", "user"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """REST tokens: created here, the key shown once in a message, revoked with one action."""

    form = ApiTokenForm
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiToken]:
        qs = super().get_queryset(request).select_related("user")
        return qs if request.user.is_superuser else qs.filter(user=request.user)

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        fields = ["name"]
        if request.user.is_superuser and obj is None:
            fields.append("user")
        return fields + (self.readonly_fields if obj else [])

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        return ["name", *self.readonly_fields] if obj else []

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff and not is_support(request.user)

    def has_view_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_module_permission(request) and (
            request.user.is_superuser or bool(organization_ids_for(request.user))
        )

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return self.has_module_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return self.has_module_permission(request)

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            return super().save_model(request, obj, form, change)
        if not request.user.is_superuser or not obj.user_id:
            obj.user = request.user
        key = obj.set_new_key()
        super().save_model(request, obj, form, change)
        messages.warning(
            request,
            f"Token '{obj.name}' created: {key} — copy it now, it will not be shown again. "
            "Clients send it as 'Authorization: Token <key>'.",
        )

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = 0
        for token in queryset.filter(revoked_at__isnull=True):
            token.revoke()
            count += 1
        messages.success(request, f"{count} token(s) revoked; clients using them now get 401.")
