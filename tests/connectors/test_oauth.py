"""Tests of connectors.oauth against the in-process Qonto sandbox: state, PKCE, code exchange,
refresh (proactive, on 401, rotated, revoked, concurrent) and revocation."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.conf import settings
from django.core import signing
from django.db import connections
from django.utils import timezone

from connectors import oauth, services
from connectors.base import AuthRevoked
from connectors.models import Connection
from connectors.qonto.connector import QontoConnector
from qontohub.models import Membership
from qontohub.tenancy import Role
from tests.connectors.oauth_support import (
    SMALL_QONTO,
    callback_query,
    connect_qonto,
    consent,
    raw_column,
    token_grants,
)


@pytest.fixture
def qonto(sandbox_for):  # type: ignore[no-untyped-def]
    return sandbox_for("qonto", **SMALL_QONTO)


@pytest.fixture
def pending(org_a, owner_a) -> Connection:  # type: ignore[no-untyped-def]
    return Connection.objects.create(organization=org_a, provider="qonto", created_by=owner_a)


@pytest.fixture
def connected(qonto, org_a, owner_a) -> Connection:  # type: ignore[no-untyped-def]
    return connect_qonto(org_a, owner_a)


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


# --- authorization URL and state ----------------------------------------------------------------
def test_authorization_url_carries_a_signed_state_bound_to_connection_org_and_user(
    qonto, pending, owner_a
) -> None:
    url = oauth.authorization_url(pending, owner_a, "https://hub.example/cb/")
    params = _query(url)
    assert url.startswith(settings.PROVIDERS["qonto"]["oauth_base_url"] + "/oauth2/auth?")
    assert params["client_id"] == "qontohub-dev"
    assert params["redirect_uri"] == "https://hub.example/cb/"
    assert params["response_type"] == "code"
    assert params["scope"].split(" ") == list(QontoConnector.oauth.scopes)
    assert "code_challenge" not in params  # Qonto's spec does not ask for PKCE
    payload = oauth.read_state(params["state"])
    assert (payload.connection_id, payload.organization_id, payload.user_id, payload.provider) == (
        pending.pk,
        pending.organization_id,
        owner_a.pk,
        "qonto",
    )
    # The nonce the state refers to is kept server-side, encrypted.
    pending.refresh_from_db()
    assert pending.credentials[oauth.PENDING_KEY]["nonce"] == payload.nonce
    assert payload.nonce not in raw_column(pending, "credentials")


def test_pkce_verifier_stays_server_side_and_the_sandbox_checks_it(
    qonto, pending, owner_a, monkeypatch
) -> None:
    monkeypatch.setattr(QontoConnector, "oauth", dataclasses.replace(QontoConnector.oauth, pkce=True))
    url = oauth.authorization_url(pending, owner_a, services.callback_uri("qonto"))
    params = _query(url)
    assert params["code_challenge_method"] == "S256"
    pending.refresh_from_db()
    verifier = pending.credentials[oauth.PENDING_KEY]["code_verifier"]
    assert len(verifier) >= 43
    assert verifier not in url
    assert verifier not in signing.loads(params["state"], salt=oauth.STATE_SALT).values()
    back = callback_query(consent(url))
    oauth.exchange_code(pending, back["code"], back["state"], owner_a, back)
    assert pending.credentials["access_token"].startswith("ory_at_")


def test_pkce_with_a_wrong_verifier_is_refused(qonto, pending, owner_a, monkeypatch) -> None:
    monkeypatch.setattr(QontoConnector, "oauth", dataclasses.replace(QontoConnector.oauth, pkce=True))
    url = oauth.authorization_url(pending, owner_a, services.callback_uri("qonto"))
    back = callback_query(consent(url))
    credentials = dict(pending.credentials)
    credentials[oauth.PENDING_KEY] = {**credentials[oauth.PENDING_KEY], "code_verifier": "x" * 64}
    Connection.objects.filter(pk=pending.pk).update(credentials=credentials)
    with pytest.raises(AuthRevoked, match="invalid_grant|refused"):
        oauth.exchange_code(pending, back["code"], back["state"], owner_a, back)
    assert "access_token" not in pending.credentials


# --- code exchange ------------------------------------------------------------------------------
def test_exchange_saves_tokens_encrypted_with_expiry_and_scopes(qonto, pending, owner_a) -> None:
    url = oauth.authorization_url(pending, owner_a, services.callback_uri("qonto"))
    back = callback_query(consent(url))
    oauth.exchange_code(pending, back["code"], back["state"], owner_a, back)
    pending.refresh_from_db()
    tokens = pending.credentials
    assert tokens["access_token"].startswith("ory_at_")
    assert tokens["refresh_token"].startswith("ory_rt_")
    assert oauth.PENDING_KEY not in tokens
    assert "offline_access" in pending.scopes and "organization.read" in pending.scopes
    assert (
        timezone.now() + timedelta(minutes=59)
        < pending.token_expires_at
        <= timezone.now() + timedelta(hours=1)
    )
    raw = raw_column(pending, "credentials")
    assert tokens["access_token"] not in raw and tokens["refresh_token"] not in raw
    # The token endpoint saw a form post with the hub's client credentials, not a bearer header.
    request = next(r for r in qonto.requests_made if r.route == "POST /oauth2/token")
    assert b"grant_type=authorization_code" in request.body and b"client_secret=" in request.body
    assert "Bearer" not in request.headers.get("Authorization", "")


def test_state_signed_for_another_user_is_refused(qonto, pending, owner_a, org_a) -> None:
    other = type(owner_a).objects.create_user(email="owner-2@example.test", password="x")
    Membership.objects.create(organization=org_a, user=other, role=Role.OWNER)
    url = oauth.authorization_url(pending, owner_a, services.callback_uri("qonto"))
    back = callback_query(consent(url))
    with pytest.raises(oauth.OAuthFlowError, match="another person"):
        oauth.exchange_code(pending, back["code"], back["state"], other, back)
    assert token_grants(qonto, "authorization_code") == 0


def test_state_for_another_connection_or_organisation_is_refused(qonto, pending, owner_a, org_b) -> None:
    url = oauth.authorization_url(pending, owner_a, services.callback_uri("qonto"))
    back = callback_query(consent(url))
    elsewhere = Connection.objects.create(organization=org_b, provider="qonto")
    with pytest.raises(oauth.OAuthFlowError, match="another organisation or connection"):
        oauth.exchange_code(elsewhere, back["code"], back["state"], owner_a, back)


def test_tampered_state_is_refused(qonto, pending, owner_a) -> None:
    url = oauth.authorization_url(pending, owner_a, services.callback_uri("qonto"))
    back = callback_query(consent(url))
    forged = signing.dumps({"c": pending.pk, "o": pending.organization_id, "u": owner_a.pk}, salt="other")
    for state in (back["state"][:-2] + "xx", forged, ""):
        with pytest.raises(oauth.OAuthFlowError):
            oauth.exchange_code(pending, back["code"], state, owner_a, back)
    assert token_grants(qonto, "authorization_code") == 0


def test_expired_state_is_refused(qonto, pending, owner_a) -> None:
    eleven_minutes_ago = time.time() - 11 * 60
    with mock.patch("django.core.signing.time.time", return_value=eleven_minutes_ago):
        url = oauth.authorization_url(pending, owner_a, services.callback_uri("qonto"))
    back = callback_query(consent(url))
    with pytest.raises(oauth.OAuthFlowError, match="10 minutes"):
        oauth.exchange_code(pending, back["code"], back["state"], owner_a, back)


def test_state_is_single_use_and_only_the_newest_link_finishes(qonto, pending, owner_a) -> None:
    first = oauth.authorization_url(pending, owner_a, services.callback_uri("qonto"))
    second = oauth.authorization_url(pending, owner_a, services.callback_uri("qonto"))
    old = callback_query(consent(first))
    with pytest.raises(oauth.OAuthFlowError, match="already used or replaced"):
        oauth.exchange_code(pending, old["code"], old["state"], owner_a, old)
    new = callback_query(consent(second))
    oauth.exchange_code(pending, new["code"], new["state"], owner_a, new)
    with pytest.raises(oauth.OAuthFlowError, match="already used or replaced"):
        oauth.exchange_code(pending, new["code"], new["state"], owner_a, new)
    assert token_grants(qonto, "authorization_code") == 1


# --- refresh ------------------------------------------------------------------------------------
def test_token_close_to_expiry_is_refreshed_once_and_the_call_succeeds(qonto, connected) -> None:
    old = dict(connected.credentials)
    Connection.objects.filter(pk=connected.pk).update(token_expires_at=timezone.now() + timedelta(minutes=4))
    connected.refresh_from_db()
    assert oauth.ensure_fresh(connected) is True
    assert token_grants(qonto, "refresh_token") == 1
    assert connected.credentials["access_token"] != old["access_token"]
    assert connected.token_expires_at > timezone.now() + timedelta(minutes=55)
    # Fresh now: a second call does not spend the refresh token again.
    assert oauth.ensure_fresh(connected) is False
    assert connected.connector().identify()[0] == qonto.organization_slug
    assert token_grants(qonto, "refresh_token") == 1


def test_rotated_refresh_token_is_saved_and_the_next_refresh_uses_it(qonto, connected) -> None:
    first_refresh = connected.credentials["refresh_token"]
    assert oauth.refresh(connected.pk, force=True) is True
    connected.refresh_from_db()
    second_refresh = connected.credentials["refresh_token"]
    assert second_refresh != first_refresh
    # Past the 60 s grace only the rotated token works, so this refresh succeeding proves the
    # hub presented the token it saved.
    qonto.advance(120)
    assert oauth.refresh(connected.pk, force=True) is True
    last = [r.body for r in qonto.requests_made if b"grant_type=refresh_token" in r.body][-1]
    assert second_refresh.encode() in last
    connected.refresh_from_db()
    assert connected.status == Connection.Status.ACTIVE


def test_fresh_token_is_not_refreshed(qonto, connected) -> None:
    assert oauth.refresh(connected.pk) is False
    assert oauth.ensure_fresh(connected) is False
    assert token_grants(qonto, "refresh_token") == 0


def test_401_refreshes_once_and_retries_through_the_http_door(qonto, connected) -> None:
    before = connected.credentials["access_token"]
    qonto.expire_access_tokens()  # the hub still believes its token is valid for an hour
    connector = connected.connector()
    assert connector.identify()[0] == qonto.organization_slug
    assert qonto.calls("GET", "/v2/organization") >= 2
    assert token_grants(qonto, "refresh_token") == 1
    assert connector.connection.credentials["access_token"] != before
    connected.refresh_from_db()
    assert connected.credentials["access_token"] == connector.connection.credentials["access_token"]


def test_revoked_grant_flags_the_connection_and_stops_retrying(qonto, connected) -> None:
    qonto.revoke_all_tokens()
    connector = connected.connector()
    with pytest.raises(AuthRevoked):
        connector.identify()
    connected.refresh_from_db()
    assert connected.status == Connection.Status.NEEDS_ATTENTION
    assert "Reconnect" in connected.last_error and "no longer accepts" in connected.last_error
    assert "refresh_token" not in connected.credentials
    assert token_grants(qonto, "refresh_token") == 1
    # Later calls fail fast: no new attempt to spend a dead refresh token.
    with pytest.raises(AuthRevoked):
        connected.connector().identify()
    with pytest.raises(AuthRevoked):
        oauth.refresh(connected.pk, force=True)
    assert token_grants(qonto, "refresh_token") == 1


def test_no_refresh_hook_for_api_key_connections(org_a) -> None:
    connection = Connection(organization=org_a, provider="qonto", auth_method="api_key")
    assert connection.connector().http.refresh_hook is None
    oauth_connection = Connection(organization=org_a, provider="qonto", auth_method="oauth2")
    assert oauth_connection.connector().http.refresh_hook is not None


# --- revoke -------------------------------------------------------------------------------------
def test_revoke_tells_the_provider_and_the_token_stops_working(qonto, connected) -> None:
    access = connected.credentials["access_token"]
    assert oauth.revoke(connected) is True
    assert qonto.calls("POST", "/oauth2/revoke") >= 1
    request = next(r for r in qonto.requests_made if r.route == "POST /oauth2/revoke")
    assert b"client_id=" in request.body and b"client_secret=" in request.body and b"token=" in request.body
    assert qonto.verify_access_token(access)[0] is None


# --- concurrency (PostgreSQL row locks) ---------------------------------------------------------
@pytest.mark.postgres
def test_two_workers_refreshing_at_once_spend_the_refresh_token_once(
    transactional_db, qonto, org_a, owner_a
) -> None:
    connection = connect_qonto(org_a, owner_a)
    qonto.expire_access_tokens()
    Connection.objects.filter(pk=connection.pk).update(token_expires_at=timezone.now() - timedelta(seconds=1))
    # A slow token endpoint makes sure both workers are inside refresh() at the same time.
    qonto.inject_fault(status=None, delay=0.3, path_prefix="/oauth2/token", times=None)
    barrier = threading.Barrier(2)
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            mine = Connection.objects.get(pk=connection.pk)
            barrier.wait()
            oauth.ensure_fresh(mine)
            mine.connector().identify()  # the token each worker ends with really works
            results[n] = mine.credentials["access_token"]
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert token_grants(qonto, "refresh_token") == 1
    assert results[0] == results[1]
    connection.refresh_from_db()
    assert connection.credentials["access_token"] == results[0]
    assert qonto.verify_access_token(results[0])[0] is not None


def test_due_for_refresh_lists_active_oauth_connections_about_to_expire(qonto, connected, org_a) -> None:
    assert oauth.due_for_refresh() == []
    Connection.objects.filter(pk=connected.pk).update(token_expires_at=timezone.now() + timedelta(minutes=3))
    Connection.objects.create(organization=org_a, provider="qonto", auth_method="api_key", status="active")
    assert oauth.due_for_refresh() == [connected.pk]
    assert oauth.refresh(connected.pk) is True
    assert oauth.due_for_refresh() == []
