"""Template context: the organisations the user can switch between, and the current one."""

from __future__ import annotations

from typing import Any

from qontohub.current import current_organization
from qontohub.models import Organization


def organizations(request: Any) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "my_organizations": Organization.objects.visible_to(user).only("id", "name"),
        "current_organization": current_organization(request),
    }
