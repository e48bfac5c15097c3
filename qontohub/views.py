"""Core views: health, organisation switcher, home."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from qontohub import health
from qontohub.current import switch_organization
from qontohub.models import Organization


@never_cache
def healthz(request: Any) -> JsonResponse:
    healthy, body = health.report()
    return JsonResponse(body, status=200 if healthy else 503)


@login_required
@require_POST
def switch_org(request: Any) -> HttpResponse:
    raw = request.POST.get("organization", "")
    try:
        org = switch_organization(request, int(raw) if raw else None)
    except (ValueError, Organization.DoesNotExist) as exc:
        raise Http404("No such organisation among yours.") from exc
    messages.info(request, f"Now working in {org}." if org else "Showing all your organisations.")
    target = request.POST.get("next") or "/admin/"
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "/admin/"
    return HttpResponseRedirect(target)


def home(request: Any) -> HttpResponse:
    return HttpResponseRedirect("/admin/")
