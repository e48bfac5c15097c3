"""OAuth 2.0 authorization-code flow for every provider that declares an ``OAuthSpec``.

What this module guarantees:

* **State.** ``authorization_url`` signs a ``state`` (``django.core.signing``) bound to the
  connection, its owner (organisation, or firm), the user who started and a one-time nonce; it is valid for
  10 minutes. ``exchange_code`` refuses a state that was altered, is too old, belongs to another
  user, organisation or connection, or was already used (the nonce is consumed).
* **PKCE** (RFC 7636, S256) when the spec asks for it. The code verifier is kept server-side,
  encrypted in the connection's ``credentials`` next to the nonce, and never put in the state:
  the state travels through the browser, the provider and their logs, and PKCE only helps if
  whoever intercepts the authorization response (code + state) cannot also read the verifier.
* **Refresh under a per-connection lock.** ``refresh`` takes ``SELECT … FOR UPDATE`` on the
  connection row and re-reads the token once it holds the lock: when another worker renewed it
  meanwhile, that token is used and the refresh token is not spent again. The rotated refresh
  token is saved in the same transaction as the access token it came with, so a crash cannot
  leave the hub holding a refresh token the provider has already retired.
* **Revocation.** ``invalid_grant`` on refresh means a person must reconnect: the dead tokens
  are dropped, the connection flips to needs_attention with a readable reason and
  :class:`~connectors.base.AuthRevoked` is raised; later calls fail fast without asking the
  provider again. ``revoke`` tells the provider to forget a grant (RFC 7009).

Token requests go through the one HTTP door (``connectors.http.HttpClient``); oauthlib's
``WebApplicationClient`` only builds the form bodies and parses the token responses.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.utils import timezone
from oauthlib.oauth2 import WebApplicationClient
from oauthlib.oauth2.rfc6749 import errors as oauth_errors

from connectors.base import AuthRevoked, ConnectorError, OAuthSpec, PermanentError
from connectors.http import HttpClient

if TYPE_CHECKING:
    from connectors.base import Connector
    from connectors.models import Connection

logger = logging.getLogger(__name__)

STATE_SALT = "connectors.oauth.state"
#: Seconds a signed state stays valid: the provider's consent page must be done within that.
STATE_MAX_AGE = 600
#: Access tokens expiring within this margin are refreshed before use.
REFRESH_MARGIN = timedelta(minutes=5)
#: Key in ``Connection.credentials`` of the authorization in progress (nonce, PKCE verifier).
PENDING_KEY = "pending_authorization"
TOKEN_KEYS = ("access_token", "refresh_token", "token_type", "expires_at", "scope")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class OAuthFlowError(Exception):
    """The browser leg of the flow cannot be completed; the message says what to do."""


@dataclass(frozen=True)
class StatePayload:
    connection_id: int
    #: The owner of the connection: an organisation, or a firm (its accounting software).
    organization_id: int | None
    firm_id: int | None
    user_id: int
    provider: str
    nonce: str


# --- configuration ------------------------------------------------------------------------------
def spec_for(provider: str) -> OAuthSpec:
    from connectors.registry import connector_class

    spec = connector_class(provider).oauth
    if spec is None:
        raise OAuthFlowError(f"{provider} does not offer OAuth connections.")
    return spec


def provider_settings(provider: str) -> dict[str, str]:
    return dict(settings.PROVIDERS.get(provider, {}))


def _url(template: str, provider: str) -> str:
    try:
        return template.format(**provider_settings(provider))
    except KeyError as exc:
        raise PermanentError(
            f"{provider} is not configured: settings.PROVIDERS[{provider!r}] lacks {exc.args[0]!r} "
            f"(set {provider.upper()}_{str(exc.args[0]).upper()})."
        ) from exc


def _client_credentials(provider: str) -> tuple[str, str]:
    config = provider_settings(provider)
    client_id, client_secret = config.get("client_id", ""), config.get("client_secret", "")
    if not client_id or not client_secret:
        raise PermanentError(
            f"{provider} has no OAuth client configured: set {provider.upper()}_CLIENT_ID and "
            f"{provider.upper()}_CLIENT_SECRET."
        )
    return client_id, client_secret


def _extra_headers(connection: Connection) -> dict[str, str]:
    # Token calls carry the provider's per-call headers too (Qonto's sandbox wants its
    # X-Qonto-Staging-Token on the token endpoint, qonto-api.md §1), but never a bearer token.
    return dict(connection.connector().extra_headers())


# --- state --------------------------------------------------------------------------------------
def sign_state(payload: StatePayload) -> str:
    data = {
        "c": payload.connection_id,
        "o": payload.organization_id,
        "f": payload.firm_id,
        "u": payload.user_id,
        "p": payload.provider,
        "n": payload.nonce,
    }
    return signing.dumps(data, salt=STATE_SALT, compress=True)


def read_state(state: str) -> StatePayload:
    """Verify the signature and age of ``state`` (not who may use it: see ``check_state``)."""
    if not state:
        raise OAuthFlowError("The provider's answer carried no state. Start the connection again.")
    try:
        data = signing.loads(state, salt=STATE_SALT, max_age=STATE_MAX_AGE)
    except signing.SignatureExpired as exc:
        raise OAuthFlowError(
            "The authorisation took longer than 10 minutes. Start the connection again."
        ) from exc
    except signing.BadSignature as exc:
        raise OAuthFlowError(
            "The provider's answer could not be verified (its state was altered). "
            "Start the connection again from QontoHub."
        ) from exc
    try:
        return StatePayload(
            connection_id=int(data["c"]),
            organization_id=_optional_int(data.get("o")),
            firm_id=_optional_int(data.get("f")),
            user_id=int(data["u"]),
            provider=str(data["p"]),
            nonce=str(data["n"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise OAuthFlowError("The provider's answer carried a malformed state. Start again.") from exc


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def check_state(connection: Connection, state: str, user: Any) -> StatePayload:
    """Verify ``state`` and that it was issued for this connection, its organisation and ``user``."""
    payload = read_state(state)
    if payload.user_id != getattr(user, "pk", None):
        raise OAuthFlowError(
            "This authorisation was started by another person. Ask them to finish it, or start "
            "the connection again yourself."
        )
    if (
        payload.connection_id != connection.pk
        or payload.organization_id != connection.organization_id
        or payload.firm_id != getattr(connection, "firm_id", None)
        or payload.provider != connection.provider
    ):
        raise OAuthFlowError(
            "This authorisation was started for another organisation or connection. Start the "
            "connection again from the organisation you want to connect."
        )
    pending = (connection.credentials or {}).get(PENDING_KEY) or {}
    if not secrets.compare_digest(str(pending.get("nonce", "")), payload.nonce):
        raise OAuthFlowError(
            "This authorisation link was already used or replaced by a newer one. Start the "
            "connection again."
        )
    return payload


# --- authorization URL ------------------------------------------------------------------------
def authorization_url(connection: Connection, user: Any, redirect_uri: str) -> str:
    """The provider's consent-page URL for ``connection``, started by ``user``.

    Records the authorization in progress (nonce, redirect URI and, with PKCE, the verifier) on
    the connection, replacing any earlier one: only the newest link can finish.
    """
    from connectors.models import Connection

    spec = spec_for(connection.provider)
    client_id, _ = _client_credentials(connection.provider)
    nonce = secrets.token_urlsafe(16)
    pending: dict[str, Any] = {"nonce": nonce, "redirect_uri": redirect_uri, "user_id": user.pk}
    params: dict[str, str] = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": spec.scope_separator.join(spec.scopes),
    }
    if spec.pkce:
        client = WebApplicationClient(client_id)
        verifier = client.create_code_verifier(64)
        pending["code_verifier"] = verifier
        params["code_challenge"] = client.create_code_challenge(verifier, "S256")
        params["code_challenge_method"] = "S256"
    with transaction.atomic():
        row = Connection.objects.select_for_update().get(pk=connection.pk)
        credentials = dict(row.credentials or {})
        credentials[PENDING_KEY] = pending
        row.credentials = credentials
        row.save(update_fields=["credentials", "updated_at"])
    connection.credentials = credentials
    params["state"] = sign_state(
        StatePayload(
            connection_id=connection.pk,
            organization_id=connection.organization_id,
            firm_id=getattr(connection, "firm_id", None),
            user_id=user.pk,
            provider=connection.provider,
            nonce=nonce,
        )
    )
    return _add_query(_url(spec.authorize_url, connection.provider), params)


def _add_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    # %20 rather than "+" for the spaces of a scope list: both are valid, %20 is what every
    # provider's documentation shows.
    query = urlencode(params, quote_via=quote)
    return urlunsplit(parts._replace(query=f"{parts.query}&{query}" if parts.query else query))


# --- token endpoint ---------------------------------------------------------------------------
def _token_request(connection: Connection, body: str) -> dict[str, Any]:
    """POST ``body`` to the token endpoint and parse the answer; ConnectorError on refusal."""
    spec = spec_for(connection.provider)
    client_id, _ = _client_credentials(connection.provider)
    http = HttpClient(provider=connection.provider)
    response = http.request(
        "POST",
        _url(spec.token_url, connection.provider),
        data=body,
        headers={**_extra_headers(connection), **FORM},
        authenticated=False,
        # RFC 6749 §5.2 errors come as 400/401 with an ``error`` code: parsed below.
        expected=(400, 401),
    )
    try:
        token = WebApplicationClient(client_id).parse_request_body_response(response.text)
    except oauth_errors.InvalidGrantError as exc:
        raise AuthRevoked(
            f"{connection.provider} refused the grant: {exc.description or 'invalid_grant'}",
            status=response.status_code,
            code="invalid_grant",
        ) from exc
    except (oauth_errors.InvalidClientError, oauth_errors.UnauthorizedClientError) as exc:
        raise PermanentError(
            f"{connection.provider} refused the hub's OAuth client ({exc.error}); check "
            f"{connection.provider.upper()}_CLIENT_ID and {connection.provider.upper()}_CLIENT_SECRET.",
            status=response.status_code,
            code=exc.error,
        ) from exc
    except oauth_errors.OAuth2Error as exc:
        raise PermanentError(
            f"{connection.provider}'s token endpoint answered {exc.error}: {exc.description or ''}".strip(),
            status=response.status_code,
            code=exc.error,
        ) from exc
    except (ValueError, Warning) as exc:
        raise PermanentError(
            f"{connection.provider}'s token endpoint answered HTTP {response.status_code} without a token.",
            status=response.status_code,
        ) from exc
    if response.status_code >= 400:
        raise PermanentError(
            f"{connection.provider}'s token endpoint answered HTTP {response.status_code}.",
            status=response.status_code,
        )
    return dict(token)


def _apply_token(row: Connection, token: Mapping[str, Any], spec: OAuthSpec) -> None:
    """Put a token response on ``row`` (not saved): secrets encrypted, expiry and scopes mirrored.

    The expiry and scopes are also kept in plain columns because schedulers query them.
    """
    credentials = dict(row.credentials or {})
    previous_refresh = credentials.get("refresh_token")
    credentials["access_token"] = token["access_token"]
    credentials["token_type"] = token.get("token_type", "bearer")
    # RFC 6749 §6: the server MAY issue a new refresh token; without one the old one stays valid.
    credentials["refresh_token"] = token.get("refresh_token") or previous_refresh
    expires_at: datetime | None = None
    if token.get("expires_in") not in (None, ""):
        expires_at = timezone.now() + timedelta(seconds=int(token["expires_in"]))
    credentials["expires_at"] = expires_at.isoformat() if expires_at else None
    scope = token.get("scope")
    if isinstance(scope, str) and scope:
        separator = spec.scope_separator.strip() or None
        credentials["scope"] = scope
        row.scopes = [s.strip() for s in scope.split(separator) if s.strip()]
    elif isinstance(scope, list | tuple):
        credentials["scope"] = spec.scope_separator.join(scope)
        row.scopes = list(scope)
    elif not row.scopes:
        row.scopes = list(spec.scopes)
    row.credentials = credentials
    row.token_expires_at = expires_at


# --- code exchange ----------------------------------------------------------------------------
def exchange_code(
    connection: Connection,
    code: str,
    state: str,
    user: Any,
    callback_params: Mapping[str, str] | None = None,
) -> Connection:
    """Trade the authorization ``code`` for tokens and save them on ``connection``.

    Raises :class:`OAuthFlowError` for a bad state and :class:`ConnectorError` when the provider
    refuses the code. Status, identity and on-connect set-up are the caller's (``services``).
    """
    from connectors.models import Connection

    spec = spec_for(connection.provider)
    client_id, client_secret = _client_credentials(connection.provider)
    if not code:
        raise OAuthFlowError("The provider's answer carried no authorization code. Start again.")
    with transaction.atomic():
        # The lock makes the nonce single-use even when a browser submits the callback twice.
        row = Connection.objects.select_for_update().get(pk=connection.pk)
        check_state(row, state, user)
        pending = dict((row.credentials or {}).get(PENDING_KEY) or {})
        body = WebApplicationClient(client_id).prepare_request_body(
            code=code,
            redirect_uri=pending.get("redirect_uri"),
            include_client_id=True,
            client_secret=client_secret,
            code_verifier=pending.get("code_verifier"),
        )
        failure: ConnectorError | None = None
        try:
            token = _token_request(row, body)
        except ConnectorError as exc:
            failure = exc
        credentials = dict(row.credentials or {})
        credentials.pop(PENDING_KEY, None)
        row.credentials = credentials
        if failure is None:
            _apply_token(row, token, spec)
            for name in spec.callback_params:
                if callback_params and callback_params.get(name):
                    row.options = {**(row.options or {}), name: str(callback_params[name])}
        row.save(update_fields=["credentials", "scopes", "token_expires_at", "options", "updated_at"])
    _copy_tokens(row, connection)
    if failure is not None:
        # The nonce is consumed either way: an authorization code is single-use at the provider.
        raise failure
    return connection


# --- refresh ----------------------------------------------------------------------------------
def expires_soon(connection: Connection, margin: timedelta = REFRESH_MARGIN) -> bool:
    expires_at = connection.token_expires_at
    return expires_at is not None and expires_at <= timezone.now() + margin


def refresh(connection_id: int, *, force: bool = False, seen_access_token: str | None = None) -> bool:
    """Renew the connection's access token if it expires within 5 minutes (always with ``force``).

    Runs under ``SELECT … FOR UPDATE`` on the connection row. ``seen_access_token`` is the
    token the caller holds (by default the one stored before the lock is taken): if the row
    holds another one once locked, a concurrent worker has already renewed it and no refresh
    token is spent. Returns True when the stored access token is now a different one than the
    caller saw, False when nothing needed renewing.

    Raises :class:`AuthRevoked` (and flips the connection to needs_attention) when the provider
    answers ``invalid_grant`` or no refresh token is left for an expired or rejected token.
    """
    from connectors.models import Connection

    if seen_access_token is None:
        current = Connection.objects.filter(pk=connection_id).only("credentials").first()
        seen_access_token = ((current.credentials or {}).get("access_token") if current else None) or ""
    failure: ConnectorError | None = None
    with transaction.atomic():
        row = Connection.objects.select_for_update().get(pk=connection_id)
        credentials = row.credentials or {}
        access_token = credentials.get("access_token") or ""
        if access_token and access_token != seen_access_token:
            return True
        if row.status == Connection.Status.DISCONNECTED:
            raise AuthRevoked(f"The {row.provider} connection is disconnected; reconnect it to use it.")
        expired = row.token_expires_at is not None and row.token_expires_at <= timezone.now()
        if not (force or expires_soon(row)):
            return False
        refresh_token = credentials.get("refresh_token")
        if not refresh_token:
            if not (force or expired):
                # Still usable for a few minutes; the person will be asked once it is dead.
                return False
            reason = _revoked_reason(row.provider, "no refresh token is left to renew it")
            if row.status != Connection.Status.NEEDS_ATTENTION or row.last_error != reason:
                _flag(row, reason)
            failure = AuthRevoked(reason, code="no_refresh_token")
        else:
            spec = spec_for(row.provider)
            client_id, client_secret = _client_credentials(row.provider)
            body = WebApplicationClient(client_id).prepare_refresh_body(
                refresh_token=refresh_token, client_id=client_id, client_secret=client_secret
            )
            try:
                token = _token_request(row, body)
            except AuthRevoked as exc:
                # The grant is gone: drop the dead tokens so nothing retries them, and tell people.
                row.credentials = {k: v for k, v in credentials.items() if k not in TOKEN_KEYS}
                row.token_expires_at = None
                reason = _revoked_reason(row.provider, exc.message)
                _flag(row, reason, extra_fields=["credentials", "token_expires_at"])
                failure = AuthRevoked(reason, status=exc.status, code=exc.code)
            except PermanentError as exc:
                _flag(row, f"Refreshing the {row.provider} token failed: {exc.message}")
                failure = exc
            else:
                # The rotated refresh token is saved with its access token, in this transaction.
                _apply_token(row, token, spec)
                row.save(update_fields=["credentials", "scopes", "token_expires_at", "updated_at"])
                logger.info("%s connection %s: access token refreshed", row.provider, row.pk)
                return True
    # Raised after the transaction committed, so the needs_attention flag is kept.
    assert failure is not None
    raise failure


def due_for_refresh(within: timedelta = REFRESH_MARGIN * 2) -> list[int]:
    """Ids of active OAuth connections whose access token expires within ``within``.

    For the scheduled proactive refresh, which fans out one ``refresh(id)`` per connection.
    """
    from connectors.models import Connection

    return list(
        Connection.objects.filter(
            status=Connection.Status.ACTIVE,
            auth_method=Connection.AuthMethod.OAUTH2,
            token_expires_at__lte=timezone.now() + within,
        )
        .order_by("token_expires_at")
        .values_list("pk", flat=True)
    )


def _revoked_reason(provider: str, detail: str) -> str:
    return (
        f"{provider.title()} no longer accepts this connection's authorisation ({detail}). "
        f"Reconnect it to resume syncing; everything synced so far is kept."
    )


def _flag(row: Connection, reason: str, extra_fields: list[str] | None = None) -> None:
    row.status = row.Status.NEEDS_ATTENTION
    row.last_error = reason
    row.last_error_at = timezone.now()
    row.save(update_fields=["status", "last_error", "last_error_at", "updated_at", *(extra_fields or [])])


def _copy_tokens(source: Connection, target: Connection) -> None:
    if source is target:
        return
    for name in ("credentials", "scopes", "token_expires_at", "options", "status", "last_error", "last_error_at"):
        setattr(target, name, getattr(source, name))


def _reload(connection: Connection) -> None:
    from connectors.models import Connection

    fresh = Connection.objects.get(pk=connection.pk)
    _copy_tokens(fresh, connection)


def ensure_fresh(connection: Connection) -> bool:
    """Refresh ``connection``'s token if it expires within 5 minutes; updates the object in place.

    Returns True if the access token changed. No-op for API-key connections.
    """
    if connection.auth_method != "oauth2" or connection.pk is None or not expires_soon(connection):
        return False
    seen = (connection.credentials or {}).get("access_token") or ""
    try:
        renewed = refresh(connection.pk, seen_access_token=seen)
    finally:
        _reload(connection)
    return renewed


def install_refresh_hook(connector: Connector) -> None:
    """Give an OAuth connector's HTTP client its one refresh-and-retry on 401 (see ``http.py``)."""
    connection = connector.connection
    if connector.oauth is None or connection.auth_method != "oauth2" or connector.http.refresh_hook:
        return

    def refresh_after_401() -> bool:
        if connection.pk is None:
            return False
        seen = (connection.credentials or {}).get("access_token") or ""
        try:
            return refresh(connection.pk, force=True, seen_access_token=seen)
        finally:
            _reload(connection)

    connector.http.refresh_hook = refresh_after_401


# --- revocation -------------------------------------------------------------------------------
def revoke(connection: Connection) -> bool:
    """Ask the provider to forget the connection's grant (RFC 7009); False if it has no endpoint.

    The refresh token is revoked first (which ends the grant at RFC 7009 servers), then the
    access token, for servers that only kill the token presented.
    """
    spec = spec_for(connection.provider)
    if not spec.revoke_url:
        return False
    client_id, client_secret = _client_credentials(connection.provider)
    credentials = connection.credentials or {}
    tokens = [(credentials.get(k), k) for k in ("refresh_token", "access_token") if credentials.get(k)]
    if not tokens:
        return False
    http = HttpClient(provider=connection.provider)
    url = _url(spec.revoke_url, connection.provider)
    if spec.revoke_style == "json_basic":
        basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        http.request(
            "POST",
            url,
            json={"token": tokens[0][0]},
            headers={**_extra_headers(connection), "Authorization": f"Basic {basic}"},
            authenticated=False,
        )
        return True
    headers = {**_extra_headers(connection), **FORM}
    for token, hint in tokens:
        http.request(
            "POST",
            url,
            data={"client_id": client_id, "client_secret": client_secret, "token": token, "token_type_hint": hint},
            headers=headers,
            authenticated=False,
        )
    return True
