"""The organisation a user is working in, kept in the session.

A user who belongs to several organisations picks one with the switcher in the admin header;
lists then show that organisation only. "All" shows every organisation they can see. The choice is
re-checked against the user's memberships on every request, so a revoked membership takes
effect at once.
"""

from __future__ import annotations

from typing import Any

from qontohub.models import Organization

SESSION_KEY = "qontohub_current_org"


def current_organization(request: Any) -> Organization | None:
    if hasattr(request, "_qh_current_org"):
        return request._qh_current_org
    org = None
    org_id = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
    if org_id is not None:
        org = Organization.objects.visible_to(request.user).filter(pk=org_id).first()
        if org is None:
            request.session.pop(SESSION_KEY, None)
    request._qh_current_org = org
    return org


def switch_organization(request: Any, org_id: int | None) -> Organization | None:
    """Select ``org_id`` (None for all); raises Organization.DoesNotExist if not visible."""
    if org_id is None:
        request.session.pop(SESSION_KEY, None)
        request._qh_current_org = None
        return None
    org = Organization.objects.visible_to(request.user).get(pk=org_id)
    request.session[SESSION_KEY] = org.pk
    request._qh_current_org = org
    return org
