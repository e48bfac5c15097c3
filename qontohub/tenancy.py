"""Tenancy: who may see and change which organisation's rows.

Access is explicit. Every tenant-owned model inherits :class:`TenantModel`; views, admin and
API fetch through ``Model.objects.for_org(org)`` or ``Model.objects.visible_to(user)``. There are
no thread-locals: a query that forgets to scope itself is visible in code review and is caught by
the outsider tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models

if TYPE_CHECKING:
    from qontohub.models import Organization, User

SUPPORT_GROUP = "support"


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ACCOUNTANT = "accountant", "Accountant"
    REVIEWER = "reviewer", "Reviewer"
    VIEWER = "viewer", "Viewer"


class FirmRole(models.TextChoices):
    PARTNER = "partner", "Partner"
    ACCOUNTANT = "accountant", "Accountant"


# Roles allowed to change an organisation's configuration (connections, policies, mappings).
MANAGE_ROLES = frozenset({Role.OWNER, Role.ACCOUNTANT})
# Roles allowed to decide review items.
REVIEW_ROLES = frozenset({Role.OWNER, Role.ACCOUNTANT, Role.REVIEWER})


def is_support(user: Any) -> bool:
    """Operator-wide read-only support staff (membership of the ``support`` group)."""
    if not getattr(user, "is_authenticated", False):
        return False
    cached = getattr(user, "_qh_is_support", None)
    if cached is None:
        cached = user.groups.filter(name=SUPPORT_GROUP).exists()
        user._qh_is_support = cached
    return cached


def organization_ids_for(user: Any, roles: frozenset[str] | None = None) -> set[int]:
    """Ids of the organisations where ``user`` holds one of ``roles`` (any role when None).

    Firm members act as accountants on every client organisation of their firm.
    """
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return set()
    memberships, firm_org_ids = _access_of(user)
    ids = {org_id for org_id, role in memberships if roles is None or role in roles}
    if roles is None or Role.ACCOUNTANT in roles:
        ids |= firm_org_ids
    return ids


def _access_of(user: Any) -> tuple[list[tuple[int, str]], set[int]]:
    """The user's memberships and firm client organisations, read once per user object.

    One request asks this many times (every ModelAdmin's permission hooks build the sidebar);
    two queries answer all of them, which keeps busy admin pages within their query budgets.
    """
    cached = user.__dict__.get("_qh_access")
    if cached is None:
        from qontohub.models import FirmMembership, Membership, Organization

        memberships = list(Membership.objects.filter(user=user).values_list("organization_id", "role"))
        firm_org_ids = set(
            Organization.objects.filter(
                firm_id__in=FirmMembership.objects.filter(user=user).values("firm_id")
            ).values_list("id", flat=True)
        )
        cached = user.__dict__["_qh_access"] = (memberships, firm_org_ids)
    return cached


def sees_everything(user: Any) -> bool:
    return bool(getattr(user, "is_superuser", False)) or is_support(user)


def role_in(user: Any, organization: Organization | int, roles: frozenset[str]) -> bool:
    """Whether ``user`` may act on ``organization`` with one of ``roles`` (support never may)."""
    if getattr(user, "is_superuser", False):
        return True
    org_id = organization if isinstance(organization, int) else organization.pk
    return org_id in organization_ids_for(user, roles)


class TenantQuerySet(models.QuerySet):
    """Query set of a tenant-owned model; ``organization_field`` names the path to the tenant."""

    organization_field = "organization"

    def for_org(self, organization: Organization | int) -> TenantQuerySet:
        return self.filter(**{self.organization_field: organization})

    def visible_to(self, user: User | Any) -> TenantQuerySet:
        if sees_everything(user):
            return self.all()
        ids = organization_ids_for(user)
        if not ids:
            return self.none()
        return self.filter(**{f"{self.organization_field}__in": ids})

    def manageable_by(self, user: User | Any) -> TenantQuerySet:
        if getattr(user, "is_superuser", False):
            return self.all()
        return self.filter(
            **{f"{self.organization_field}__in": organization_ids_for(user, MANAGE_ROLES)}
        )


class TenantModel(models.Model):
    """A row owned by one organisation."""

    organization = models.ForeignKey(
        "qontohub.Organization", on_delete=models.CASCADE, related_name="+"
    )

    objects = TenantQuerySet.as_manager()

    class Meta:
        abstract = True
