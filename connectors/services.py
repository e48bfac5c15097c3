"""Connecting, disconnecting and reconnecting an organisation to a provider.

These are the rules behind the connection screens (views stay thin and call one function here):

* only people with a managing role on the organisation (owner, accountant) may change its
  connections; everyone else gets ``PermissionDenied``;
* a connection becomes active only once the provider has told us which account it is
  (``Connector.identify``); provider-side set-up (``on_connect``) failing leaves it active with
  the error recorded, because the data can still be read;
* disconnecting revokes the grant with the provider and wipes the credentials, but keeps every
  synced row, cursor, review item and the webhook endpoint, so that reconnecting (same row)
  resumes where the last sync stopped.

Problems the person can fix are raised as :class:`ConnectError`, whose message says what to do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from connectors import oauth
from connectors.base import AuthExpired, AuthRevoked, Connector, ConnectorError
from connectors.models import Connection
from connectors.registry import PROVIDERS, connector_class
from qontohub.models import FirmMembership, Organization
from qontohub.tenancy import MANAGE_ROLES, is_support, role_in

logger = logging.getLogger(__name__)


class ConnectError(Exception):
    """Connecting failed for a reason the person can act on; ``str()`` says what to do."""


# --- helpers ----------------------------------------------------------------------------------
def provider_class(provider: str) -> type[Connector]:
    if provider not in PROVIDERS:
        raise ConnectError(f"QontoHub does not know the provider {provider!r}.")
    return connector_class(provider)


def callback_uri(provider: str) -> str:
    """The redirect URI registered with ``provider``: the hub's public base URL + the callback."""
    return settings.HUB_BASE_URL + reverse("connectors:callback", args=[provider])


def _require_manager(user: Any, organization: Organization | int) -> None:
    if not role_in(user, organization, MANAGE_ROLES):
        raise PermissionDenied("Only an owner or accountant of the organisation may change its connections.")


def _require_manager_of(user: Any, connection: Connection) -> None:
    """Organisation connections: owner or accountant. Firm connections: any member of the firm."""
    if connection.organization_id is not None:
        _require_manager(user, connection.organization_id)
        return
    if getattr(user, "is_superuser", False):
        return
    if is_support(user) or not FirmMembership.objects.filter(user=user, firm_id=connection.firm_id).exists():
        raise PermissionDenied("Only a member of the firm may change the firm's connections.")


def _same_owner(connection: Connection) -> Any:
    """Connections of the same owner (organisation or firm) and provider as ``connection``."""
    return Connection.objects.filter(
        organization_id=connection.organization_id, firm_id=connection.firm_id, provider=connection.provider
    )


def _run_on_connect(connection: Connection) -> None:
    """Provider-side set-up; its failure is recorded, not fatal (the data can still be read)."""
    try:
        connection.connector().on_connect()
    except Exception as exc:  # noqa: BLE001 - any failure here is reported on the connection
        logger.warning("%s connection %s: on_connect failed: %s", connection.provider, connection.pk, exc)
        connection.last_error = f"Connected, but the set-up on {connection.provider.title()} failed: {exc}"
        connection.last_error_at = timezone.now()
        connection.save(update_fields=["last_error", "last_error_at", "updated_at"])


def _revoke_quietly(connection: Connection) -> str:
    """Revoke an OAuth grant; returns an error message instead of raising (disconnect goes on)."""
    if connection.auth_method != Connection.AuthMethod.OAUTH2 or not connection.credentials:
        return ""
    try:
        oauth.revoke(connection)
    except (ConnectorError, oauth.OAuthFlowError) as exc:
        logger.warning("%s connection %s: revoke failed: %s", connection.provider, connection.pk, exc)
        return (
            f"QontoHub could not revoke its access at {connection.provider.title()} ({exc}); "
            f"remove the app from your {connection.provider.title()} settings to be sure."
        )
    return ""


# --- OAuth --------------------------------------------------------------------------------------
def _require_organization_owned(cls: type[Connector]) -> None:
    if cls.owner != "organization":
        raise ConnectError(
            f"{cls.name} is connected once by the accounting firm for all its client files: "
            "use the client files' association wizard instead."
        )


def start_connect(
    organization: Organization, user: Any, provider: str, redirect_uri: str
) -> tuple[Connection, str]:
    """Create (or reuse) a pending connection and return it with the provider's consent URL."""
    cls = provider_class(provider)
    _require_manager(user, organization)
    _require_organization_owned(cls)
    if cls.oauth is None or "oauth2" not in cls.auth_methods:
        raise ConnectError(f"{cls.name} cannot be connected by OAuth; use its API key form instead.")
    # An abandoned attempt is reused rather than piling up pending rows.
    connection = (
        Connection.objects.for_org(organization)
        .filter(provider=provider, status=Connection.Status.PENDING, external_account_id="")
        .order_by("-pk")
        .first()
    )
    if connection is None:
        connection = Connection.objects.create(
            organization=organization,
            provider=provider,
            auth_method=Connection.AuthMethod.OAUTH2,
            created_by=user,
        )
    elif connection.auth_method != Connection.AuthMethod.OAUTH2:
        connection.auth_method = Connection.AuthMethod.OAUTH2
        connection.save(update_fields=["auth_method", "updated_at"])
    return connection, _authorization_url(connection, user, redirect_uri)


def _authorization_url(connection: Connection, user: Any, redirect_uri: str) -> str:
    try:
        return oauth.authorization_url(connection, user, redirect_uri)
    except (oauth.OAuthFlowError, ConnectorError) as exc:
        raise ConnectError(f"Cannot start connecting {connection.provider.title()}: {exc}") from exc


def connection_for_callback(user: Any, provider: str, state: str) -> Connection:
    """The connection a provider's callback is about, from its signed ``state``.

    Raises ``ConnectError`` for a state that is missing, altered or too old, and
    ``Connection.DoesNotExist`` when the user cannot see that connection (views answer 404).
    """
    try:
        payload = oauth.read_state(state)
    except oauth.OAuthFlowError as exc:
        raise ConnectError(str(exc)) from exc
    return Connection.objects.visible_to(user).get(pk=payload.connection_id, provider=provider)


def finish_connect(
    connection: Connection,
    user: Any,
    code: str,
    state: str,
    callback_params: Mapping[str, str] | None = None,
) -> Connection:
    """Exchange the code, identify the account, activate, then run the provider's set-up.

    Returns the active connection. That may be another row than ``connection``: when the
    account consented to is already known to the organisation (a disconnected connection
    connected again with the Connect button), its existing row adopts the tokens, so its
    cursors and synced data carry on.
    """
    _require_manager_of(user, connection)
    name = provider_class(connection.provider).name
    try:
        oauth.exchange_code(connection, code, state, user, callback_params)
    except oauth.OAuthFlowError as exc:
        raise ConnectError(str(exc)) from exc
    except ConnectorError as exc:
        raise ConnectError(
            f"{name} refused the authorisation ({exc.message}). Start the connection again."
        ) from exc

    try:
        external_id, display_name = connection.connector().identify()
    except ConnectorError as exc:
        connection.last_error = f"{name} granted access but did not say which account it is: {exc}"
        connection.last_error_at = timezone.now()
        connection.save(update_fields=["last_error", "last_error_at", "updated_at"])
        raise ConnectError(
            f"{name} granted access but did not answer when asked which account it is ({exc.message}). "
            f"Try connecting again in a few minutes."
        ) from exc

    if connection.external_account_id and connection.external_account_id != external_id:
        # A reconnect where the person picked another account on the consent page: mixing two
        # accounts' data under one connection would corrupt it, so the new grant is dropped.
        _revoke_quietly(connection)
        connection.credentials = {}
        connection.token_expires_at = None
        connection.save(update_fields=["credentials", "token_expires_at", "updated_at"])
        connection.mark_needs_attention(
            f"Reconnected with the {name} account {external_id}, but this connection belongs to "
            f"{connection.external_account_id}. Reconnect and choose {connection.external_account_id}."
        )
        raise ConnectError(connection.last_error)

    with transaction.atomic():
        existing = (
            _same_owner(connection)
            .select_for_update()
            .filter(external_account_id=external_id)
            .exclude(pk=connection.pk)
            .first()
        )
        if existing is not None:
            connection = _adopt(existing, connection)
        connection.set_active(external_id, display_name)
        connection.save()
    _run_on_connect(connection)
    return connection


def _adopt(existing: Connection, pending: Connection) -> Connection:
    """Move a fresh grant from a just-created pending row onto the account's existing row."""
    if pending.status != Connection.Status.PENDING:
        raise ConnectError(
            f"This {pending.provider.title()} account is already connected to this organisation "
            f"as another connection."
        )
    if existing.credentials.get("refresh_token") and existing.auth_method == Connection.AuthMethod.OAUTH2:
        # The older grant is superseded; do not leave it alive at the provider.
        _revoke_quietly(existing)
    existing.auth_method = pending.auth_method
    existing.credentials = {k: v for k, v in pending.credentials.items() if k != oauth.PENDING_KEY}
    existing.scopes = pending.scopes
    existing.token_expires_at = pending.token_expires_at
    existing.options = {**(existing.options or {}), **(pending.options or {})}
    pending.delete()
    return existing


def cancel_connect(connection: Connection, user: Any, state: str, error: str, description: str = "") -> str:
    """Record that the person refused (or the provider failed) on the consent page.

    Nothing becomes active; a reconnect attempt leaves the connection as it was. Returns the
    message to show.
    """
    _require_manager_of(user, connection)
    name = provider_class(connection.provider).name
    try:
        oauth.check_state(connection, state, user)
    except oauth.OAuthFlowError as exc:
        raise ConnectError(str(exc)) from exc
    if error == "access_denied":
        message = (
            f"Access was not granted on {name}'s page, so nothing was connected. To connect, "
            f"start again and choose Authorize."
        )
    else:
        detail = f": {description}" if description else ""
        message = f"{name} could not complete the authorisation ({error}{detail}). Start the connection again."
    with transaction.atomic():
        row = Connection.objects.select_for_update().get(pk=connection.pk)
        credentials = dict(row.credentials or {})
        credentials.pop(oauth.PENDING_KEY, None)
        row.credentials = credentials
        row.last_error = message
        row.last_error_at = timezone.now()
        row.save(update_fields=["credentials", "last_error", "last_error_at", "updated_at"])
    connection.credentials, connection.last_error = row.credentials, row.last_error
    return message


# --- API key ------------------------------------------------------------------------------------
def connect_api_key(
    organization: Organization, user: Any, provider: str, login: str, secret_key: str
) -> Connection:
    """Connect with an API key after checking it with the provider; nothing is saved if it fails."""
    cls = provider_class(provider)
    _require_manager(user, organization)
    _require_organization_owned(cls)
    if "api_key" not in cls.auth_methods:
        raise ConnectError(f"{cls.name} cannot be connected with an API key; use Connect instead.")
    login, secret_key = (login or "").strip(), (secret_key or "").strip()
    if not login or not secret_key:
        raise ConnectError("Enter both the login and the secret key shown in the provider's API key settings.")
    credentials = {"login": login, "secret_key": secret_key}
    probe = Connection(
        organization=organization,
        provider=provider,
        auth_method=Connection.AuthMethod.API_KEY,
        credentials=credentials,
    )
    try:
        external_id, display_name = probe.connector().identify()
    except (AuthRevoked, AuthExpired) as exc:
        raise ConnectError(
            f"{cls.name} refused this login and secret key. Copy both again from {cls.name} "
            f"(Settings > Integrations & Partnerships > API key) and paste them here."
        ) from exc
    except ConnectorError as exc:
        raise ConnectError(
            f"The key could not be checked with {cls.name} ({exc.message}). Try again in a few minutes."
        ) from exc

    with transaction.atomic():
        scoped = Connection.objects.select_for_update().for_org(organization).filter(provider=provider)
        connection = (
            scoped.filter(external_account_id=external_id).first()
            or scoped.filter(status=Connection.Status.PENDING, external_account_id="").order_by("-pk").first()
        )
        if connection is None:
            connection = Connection(organization=organization, provider=provider, created_by=user)
        elif connection.auth_method == Connection.AuthMethod.OAUTH2 and connection.credentials:
            _revoke_quietly(connection)
        connection.auth_method = Connection.AuthMethod.API_KEY
        connection.credentials = credentials
        connection.scopes = []
        connection.token_expires_at = None
        connection.set_active(external_id, display_name)
        connection.save()
    _run_on_connect(connection)
    return connection


# --- disconnect and reconnect -------------------------------------------------------------------
def disconnect(connection: Connection, user: Any) -> Connection:
    """Stop using the connection: provider clean-up, revoke, wipe credentials, keep the data."""
    _require_manager_of(user, connection)
    # The stored tokens may have been rotated by a worker since this object was loaded.
    connection.refresh_from_db()
    problems: list[str] = []
    if connection.status in (Connection.Status.ACTIVE, Connection.Status.NEEDS_ATTENTION) and connection.credentials:
        try:
            connection.connector().on_disconnect()
        except Exception as exc:  # noqa: BLE001 - clean-up failing must not block disconnecting
            logger.warning("%s connection %s: on_disconnect failed: %s", connection.provider, connection.pk, exc)
            problems.append(f"The clean-up at {connection.provider.title()} failed: {exc}.")
    revoke_problem = _revoke_quietly(connection)
    if revoke_problem:
        problems.append(revoke_problem)
    with transaction.atomic():
        row = Connection.objects.select_for_update().get(pk=connection.pk)
        # Only the secrets go; cursors, synced rows, review items and the webhook endpoint stay so
        # that a reconnect resumes where the last sync stopped.
        row.credentials = {}
        row.token_expires_at = None
        row.status = Connection.Status.DISCONNECTED
        row.disconnected_at = timezone.now()
        row.last_error = " ".join(problems)
        row.last_error_at = timezone.now() if problems else None
        row.save(
            update_fields=[
                "credentials",
                "token_expires_at",
                "status",
                "disconnected_at",
                "last_error",
                "last_error_at",
                "updated_at",
            ]
        )
    connection.refresh_from_db()
    return connection


def reconnect(connection: Connection, user: Any, redirect_uri: str) -> str:
    """The consent URL to re-authorise ``connection`` itself (same row, so cursors are reused)."""
    _require_manager_of(user, connection)
    cls = provider_class(connection.provider)
    if connection.auth_method == Connection.AuthMethod.API_KEY or cls.oauth is None:
        raise ConnectError(f"This {cls.name} connection uses an API key: enter a new key to reconnect it.")
    return _authorization_url(connection, user, redirect_uri)
