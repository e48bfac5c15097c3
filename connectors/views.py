"""The connection screens outside the admin: start OAuth, the provider's callback, the API-key
form, disconnect and reconnect.

Each view parses the request, checks access (a connection or organisation the user cannot see is
a 404, a role that may not manage it a 403), calls one function of ``connectors.services`` and
redirects to the connection's admin page with a message saying what happened.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from connectors import services
from connectors.base import Connector
from connectors.models import Connection
from connectors.registry import PROVIDERS, connector_class
from qontohub.models import Organization
from qontohub.tenancy import MANAGE_ROLES, role_in


class ApiKeyForm(forms.Form):
    login = forms.CharField(
        max_length=200,
        help_text="Your organisation's login as the provider shows it next to the key (e.g. acme-1234).",
    )
    secret_key = forms.CharField(
        max_length=500,
        strip=True,
        # Never echoed back into the page, not even after an error.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )


def _provider_or_404(provider: str) -> type[Connector]:
    if provider not in PROVIDERS:
        raise Http404("No such provider.")
    return connector_class(provider)


def _organization_or_404(request: HttpRequest) -> Organization:
    raw = request.GET.get("organization") or request.POST.get("organization") or ""
    if not raw.isdigit():
        raise Http404("Say which organisation to connect (?organization=<id>).")
    return get_object_or_404(Organization.objects.visible_to(request.user), pk=int(raw))


def _connection_or_404(request: HttpRequest, pk: int) -> Connection:
    return get_object_or_404(Connection.objects.visible_to(request.user), pk=pk)


def _connection_page(connection: Connection | None) -> HttpResponseRedirect:
    if connection is None or connection.pk is None:
        return HttpResponseRedirect(reverse("admin:connectors_connection_changelist"))
    return HttpResponseRedirect(reverse("admin:connectors_connection_change", args=[connection.pk]))


@login_required
@require_POST
def connect(request: HttpRequest, provider: str) -> HttpResponse:
    _provider_or_404(provider)
    organization = _organization_or_404(request)
    try:
        _, url = services.start_connect(organization, request.user, provider, services.callback_uri(provider))
    except services.ConnectError as exc:
        messages.error(request, str(exc))
        return _connection_page(None)
    return HttpResponseRedirect(url)


@never_cache
@login_required
@require_GET
def callback(request: HttpRequest, provider: str) -> HttpResponse:
    cls = _provider_or_404(provider)
    state = request.GET.get("state", "")
    try:
        connection = services.connection_for_callback(request.user, provider, state)
    except Connection.DoesNotExist as exc:
        raise Http404("No such connection among yours.") from exc
    except services.ConnectError as exc:
        messages.error(request, str(exc))
        return _connection_page(None)
    try:
        if request.GET.get("error"):
            message = services.cancel_connect(
                connection, request.user, state, request.GET["error"], request.GET.get("error_description", "")
            )
            messages.error(request, message)
        else:
            connection = services.finish_connect(
                connection, request.user, request.GET.get("code", ""), state, request.GET.dict()
            )
            messages.success(request, f"Connected to {cls.name} as {connection.display_name}.")
            if connection.last_error:
                messages.warning(request, connection.last_error)
    except services.ConnectError as exc:
        messages.error(request, str(exc))
    return _connection_page(connection if Connection.objects.filter(pk=connection.pk).exists() else None)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def api_key(request: HttpRequest, provider: str) -> HttpResponse:
    cls = _provider_or_404(provider)
    if "api_key" not in cls.auth_methods:
        raise Http404(f"{cls.name} is not connected with an API key.")
    organization = _organization_or_404(request)
    if not role_in(request.user, organization, MANAGE_ROLES):
        raise PermissionDenied("Only an owner or accountant of the organisation may connect providers.")
    form = ApiKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            connection = services.connect_api_key(
                organization, request.user, provider, form.cleaned_data["login"], form.cleaned_data["secret_key"]
            )
        except services.ConnectError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Connected to {cls.name} as {connection.display_name}.")
            if connection.last_error:
                messages.warning(request, connection.last_error)
            return _connection_page(connection)
    context: dict[str, Any] = {
        "title": f"Connect {cls.name} with an API key",
        "provider_name": cls.name,
        "organization": organization,
        "form": form,
    }
    return TemplateResponse(request, "connectors/api_key.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def disconnect(request: HttpRequest, pk: int) -> HttpResponse:
    connection = _connection_or_404(request, pk)
    connection = services.disconnect(connection, request.user)
    if connection.last_error:
        messages.warning(request, f"Disconnected, with a problem: {connection.last_error}")
    else:
        messages.success(request, "Disconnected: access revoked with the provider; synced data is kept.")
    return _connection_page(connection)


@login_required
@require_POST
def reconnect(request: HttpRequest, pk: int) -> HttpResponse:
    connection = _connection_or_404(request, pk)
    if connection.auth_method == Connection.AuthMethod.API_KEY and connection.organization_id is not None:
        if not role_in(request.user, connection.organization_id, MANAGE_ROLES):
            raise PermissionDenied("Only an owner or accountant of the organisation may reconnect.")
        query = urlencode({"organization": connection.organization_id})
        return HttpResponseRedirect(reverse("connectors:api-key", args=[connection.provider]) + "?" + query)
    try:
        url = services.reconnect(connection, request.user, services.callback_uri(connection.provider))
    except services.ConnectError as exc:
        messages.error(request, str(exc))
        return _connection_page(connection)
    return HttpResponseRedirect(url)
