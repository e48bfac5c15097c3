"""Tests of connectors.services: connect by OAuth and by API key, refusals, disconnect, reconnect."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

from connectors import oauth, services
from connectors.base import AuthRevoked
from connectors.models import BankAccount, Connection, SyncCursor
from connectors.qonto.connector import QontoConnector
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
def connected(qonto, org_a, owner_a) -> Connection:  # type: ignore[no-untyped-def]
    return connect_qonto(org_a, owner_a)


def _api_key(qonto) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    login, _, secret = qonto.api_key_header.partition(":")
    return login, secret


def _synced_data(connection: Connection) -> None:
    SyncCursor.objects.create(connection=connection, stream="transactions", value="2026-03-01T00:00:00Z")
    BankAccount.objects.create(
        organization=connection.organization,
        connection=connection,
        stream="bank_accounts",
        external_id="acc-1",
        raw={"id": "acc-1"},
        fingerprint="f",
        name="Compte principal",
    )


# --- OAuth ------------------------------------------------------------------------------------
def test_oauth_connect_end_to_end_activates_an_identified_connection(qonto, org_a, owner_a) -> None:
    connection, url = services.start_connect(org_a, owner_a, "qonto", services.callback_uri("qonto"))
    assert connection.status == Connection.Status.PENDING
    back = callback_query(consent(url))
    assert back["state"] and back["code"].startswith("ory_ac_")
    connection = services.finish_connect(connection, owner_a, back["code"], back["state"], back)
    connection.refresh_from_db()
    assert connection.status == Connection.Status.ACTIVE
    assert connection.auth_method == "oauth2"
    assert connection.external_account_id == qonto.organization_slug
    assert connection.display_name == qonto.legal_name
    assert connection.connected_at is not None and connection.last_error == ""
    assert connection.credentials["access_token"] not in raw_column(connection, "credentials")


def test_start_connect_reuses_an_abandoned_pending_connection(qonto, org_a, owner_a) -> None:
    first, _ = services.start_connect(org_a, owner_a, "qonto", services.callback_uri("qonto"))
    second, _ = services.start_connect(org_a, owner_a, "qonto", services.callback_uri("qonto"))
    assert first.pk == second.pk
    assert Connection.objects.for_org(org_a).count() == 1


@pytest.mark.parametrize("persona", ["reviewer_a", "outsider", "support"])
def test_only_managers_may_connect(qonto, org_a, persona, request) -> None:  # type: ignore[no-untyped-def]
    user = request.getfixturevalue(persona)
    with pytest.raises(PermissionDenied):
        services.start_connect(org_a, user, "qonto", services.callback_uri("qonto"))
    login, secret = _api_key(qonto)
    with pytest.raises(PermissionDenied):
        services.connect_api_key(org_a, user, "qonto", login, secret)
    assert not Connection.objects.for_org(org_a).exists()


def test_accountant_of_the_firm_may_connect(qonto, org_a, accountant) -> None:
    connection = connect_qonto(org_a, accountant)
    assert connection.status == Connection.Status.ACTIVE


def test_refused_consent_leaves_nothing_active(qonto, org_a, owner_a) -> None:
    connection, url = services.start_connect(org_a, owner_a, "qonto", services.callback_uri("qonto"))
    back = callback_query(consent(url, decision="deny"))
    assert back["error"] == "access_denied"
    message = services.cancel_connect(connection, owner_a, back["state"], back["error"], back.get("error_description", ""))
    assert "nothing was connected" in message
    connection.refresh_from_db()
    assert connection.status == Connection.Status.PENDING
    assert "access_token" not in connection.credentials and oauth.PENDING_KEY not in connection.credentials
    assert token_grants(qonto, "authorization_code") == 0


def test_provider_failing_to_identify_keeps_the_connection_inactive(qonto, org_a, owner_a) -> None:
    connection, url = services.start_connect(org_a, owner_a, "qonto", services.callback_uri("qonto"))
    back = callback_query(consent(url))
    qonto.inject_fault(503, times=None, path_prefix="/v2/organization")
    with pytest.raises(services.ConnectError, match="Try connecting again"):
        services.finish_connect(connection, owner_a, back["code"], back["state"], back)
    connection.refresh_from_db()
    assert connection.status == Connection.Status.PENDING
    assert connection.last_error


def test_on_connect_failure_keeps_the_connection_active_with_the_error(
    qonto, org_a, owner_a, monkeypatch
) -> None:
    def broken(self) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("webhook subscription refused")

    monkeypatch.setattr(QontoConnector, "on_connect", broken)
    connection = connect_qonto(org_a, owner_a)
    connection.refresh_from_db()
    assert connection.status == Connection.Status.ACTIVE
    assert "webhook subscription refused" in connection.last_error


# --- API key ----------------------------------------------------------------------------------
def test_connect_with_a_good_api_key(qonto, org_a, owner_a) -> None:
    login, secret = _api_key(qonto)
    connection = services.connect_api_key(org_a, owner_a, "qonto", login, secret)
    connection.refresh_from_db()
    assert connection.status == Connection.Status.ACTIVE
    assert connection.auth_method == "api_key"
    assert connection.external_account_id == qonto.organization_slug
    assert connection.credentials == {"login": login, "secret_key": secret}
    assert secret not in raw_column(connection, "credentials")


def test_bad_api_key_is_refused_and_nothing_is_saved(qonto, org_a, owner_a) -> None:
    login, _ = _api_key(qonto)
    with pytest.raises(services.ConnectError, match="refused this login and secret key"):
        services.connect_api_key(org_a, owner_a, "qonto", login, "0" * 32)
    with pytest.raises(services.ConnectError, match="Enter both"):
        services.connect_api_key(org_a, owner_a, "qonto", login, "  ")
    assert not Connection.objects.for_org(org_a).exists()


# --- disconnect and reconnect ------------------------------------------------------------------
def test_disconnect_revokes_with_the_provider_and_keeps_the_data(
    qonto, connected, owner_a, monkeypatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(QontoConnector, "on_disconnect", lambda self: calls.append(self.connection.pk))
    _synced_data(connected)
    endpoint = connected.webhook_endpoint
    access = connected.credentials["access_token"]
    refresh_token = connected.credentials["refresh_token"]

    connection = services.disconnect(connected, owner_a)

    assert calls == [connected.pk]
    assert qonto.calls("POST", "/oauth2/revoke") >= 1
    assert qonto.verify_access_token(access)[0] is None
    assert qonto.refresh_tokens[refresh_token].grant.revoked
    assert connection.status == Connection.Status.DISCONNECTED
    assert connection.credentials == {} and connection.token_expires_at is None
    assert connection.disconnected_at is not None and connection.last_error == ""
    assert connection.webhook_endpoint == endpoint
    assert SyncCursor.objects.filter(connection=connection).count() == 1
    assert BankAccount.objects.filter(connection=connection).count() == 1


def test_disconnect_goes_through_when_the_provider_cannot_revoke(qonto, connected, owner_a) -> None:
    qonto.inject_fault(400, times=None, path_prefix="/oauth2/revoke")
    connection = services.disconnect(connected, owner_a)
    assert connection.status == Connection.Status.DISCONNECTED
    assert connection.credentials == {}
    assert "could not revoke" in connection.last_error


def test_reviewer_cannot_disconnect(qonto, connected, reviewer_a) -> None:
    with pytest.raises(PermissionDenied):
        services.disconnect(connected, reviewer_a)
    connected.refresh_from_db()
    assert connected.status == Connection.Status.ACTIVE


def test_reconnect_reuses_the_same_row_and_its_cursors(qonto, connected, owner_a) -> None:
    _synced_data(connected)
    qonto.revoke_all_tokens()
    with pytest.raises(AuthRevoked):
        connected.connector().identify()
    connected.refresh_from_db()
    assert connected.status == Connection.Status.NEEDS_ATTENTION

    url = services.reconnect(connected, owner_a, services.callback_uri("qonto"))
    back = callback_query(consent(url))
    connection = services.finish_connect(connected, owner_a, back["code"], back["state"], back)

    assert connection.pk == connected.pk
    assert Connection.objects.for_org(connected.organization_id).count() == 1
    connection.refresh_from_db()
    assert connection.status == Connection.Status.ACTIVE and connection.last_error == ""
    assert SyncCursor.objects.get(connection=connection).value == "2026-03-01T00:00:00Z"
    assert connection.connector().identify()[0] == qonto.organization_slug


def test_connecting_again_after_disconnect_lands_on_the_old_row(qonto, connected, owner_a, org_a) -> None:
    _synced_data(connected)
    services.disconnect(connected, owner_a)
    connection = connect_qonto(org_a, owner_a)
    assert connection.pk == connected.pk
    assert Connection.objects.for_org(org_a).count() == 1
    assert SyncCursor.objects.filter(connection=connection).count() == 1
    connection.refresh_from_db()
    assert connection.status == Connection.Status.ACTIVE


def test_reconnect_with_another_account_is_refused(qonto, connected, owner_a) -> None:
    Connection.objects.filter(pk=connected.pk).update(external_account_id="someone-else-0001")
    connected.refresh_from_db()
    url = services.reconnect(connected, owner_a, services.callback_uri("qonto"))
    back = callback_query(consent(url))
    with pytest.raises(services.ConnectError, match="belongs to someone-else-0001"):
        services.finish_connect(connected, owner_a, back["code"], back["state"], back)
    connected.refresh_from_db()
    assert connected.status == Connection.Status.NEEDS_ATTENTION
    assert connected.credentials == {}


def test_api_key_connection_reconnects_with_a_new_key(qonto, org_a, owner_a) -> None:
    login, secret = _api_key(qonto)
    connection = services.connect_api_key(org_a, owner_a, "qonto", login, secret)
    with pytest.raises(services.ConnectError, match="enter a new key"):
        services.reconnect(connection, owner_a, services.callback_uri("qonto"))
    new_login, new_secret = qonto.rotate_api_key().partition(":")[::2]
    again = services.connect_api_key(org_a, owner_a, "qonto", new_login, new_secret)
    assert again.pk == connection.pk


# --- firm connections (the firm's accounting software, no organisation) ---------------------------
def test_firm_connection_is_managed_by_firm_members(qonto, org_a, accountant, owner_a) -> None:
    firm_connection = Connection.objects.create(firm=org_a.firm, provider="qonto", status="needs_attention")
    with pytest.raises(PermissionDenied):
        services.reconnect(firm_connection, owner_a, services.callback_uri("qonto"))
    url = services.reconnect(firm_connection, accountant, services.callback_uri("qonto"))
    back = callback_query(consent(url))
    payload = oauth.read_state(back["state"])
    assert (payload.organization_id, payload.firm_id) == (None, org_a.firm_id)
    connection = services.finish_connect(firm_connection, accountant, back["code"], back["state"], back)
    assert connection.pk == firm_connection.pk and connection.status == Connection.Status.ACTIVE
    with pytest.raises(PermissionDenied):
        services.disconnect(connection, owner_a)
    assert services.disconnect(connection, accountant).status == Connection.Status.DISCONNECTED


def test_a_firm_level_provider_cannot_be_connected_to_one_organisation(owner_a, org_a):
    with pytest.raises(services.ConnectError, match="association wizard"):
        services.connect_api_key(org_a, owner_a, "pennylane", "firm", "pl-firm-dev-token")
    assert not Connection.objects.filter(provider="pennylane").exists()
