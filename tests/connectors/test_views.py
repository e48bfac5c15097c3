"""Tests of the connection views: the browser's path through OAuth, the API-key form, disconnect,
reconnect, and who gets a 404 or a 403."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.messages import get_messages
from django.urls import reverse

from connectors import services
from connectors.models import Connection
from tests.connectors.oauth_support import SMALL_QONTO, callback_query, connect_qonto, consent


@pytest.fixture
def qonto(sandbox_for):  # type: ignore[no-untyped-def]
    return sandbox_for("qonto", **SMALL_QONTO)


@pytest.fixture
def connected(qonto, org_a, owner_a) -> Connection:  # type: ignore[no-untyped-def]
    return connect_qonto(org_a, owner_a)


def connect_url(org) -> str:  # type: ignore[no-untyped-def]
    return reverse("connectors:connect", args=["qonto"]) + f"?organization={org.pk}"


def api_key_url(org) -> str:  # type: ignore[no-untyped-def]
    return reverse("connectors:api-key", args=["qonto"]) + f"?organization={org.pk}"


def local(url: str) -> str:
    """The path and query of an absolute hub URL, for the test client."""
    assert url.startswith(settings.HUB_BASE_URL)
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def texts(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(m) for m in get_messages(response.wsgi_request)]


def change_page(connection: Connection) -> str:
    return reverse("admin:connectors_connection_change", args=[connection.pk])


# --- OAuth through the browser ------------------------------------------------------------------
def test_connect_by_oauth_end_to_end(qonto, client_for, owner_a, org_a) -> None:
    client = client_for(owner_a)
    response = client.post(connect_url(org_a))
    assert response.status_code == 302
    authorize = response["Location"]
    assert authorize.startswith(settings.PROVIDERS["qonto"]["oauth_base_url"] + "/oauth2/auth?")

    back = consent(authorize)
    assert back.startswith(services.callback_uri("qonto") + "?")
    response = client.get(local(back))

    connection = Connection.objects.get(organization=org_a, provider="qonto")
    assert response.status_code == 302 and response["Location"] == change_page(connection)
    assert f"Connected to Qonto as {qonto.legal_name}." in texts(response)
    assert connection.status == Connection.Status.ACTIVE
    assert connection.external_account_id == qonto.organization_slug
    assert connection.credentials["access_token"].startswith("ory_at_")


def test_access_denied_shows_a_message_and_activates_nothing(qonto, client_for, owner_a, org_a) -> None:
    client = client_for(owner_a)
    back = consent(client.post(connect_url(org_a))["Location"], decision="deny")
    response = client.get(local(back))
    connection = Connection.objects.get(organization=org_a, provider="qonto")
    assert response["Location"] == change_page(connection)
    assert any("nothing was connected" in text for text in texts(response))
    assert connection.status == Connection.Status.PENDING
    assert "access_token" not in connection.credentials


def test_tampered_state_is_refused(qonto, client_for, owner_a, org_a) -> None:
    client = client_for(owner_a)
    back = callback_query(consent(client.post(connect_url(org_a))["Location"]))
    path = reverse("connectors:callback", args=["qonto"])
    response = client.get(path, {"code": back["code"], "state": back["state"][:-3] + "abc"})
    assert response.status_code == 302
    assert any("could not be verified" in text for text in texts(response))
    assert not Connection.objects.filter(status=Connection.Status.ACTIVE).exists()


def test_state_of_another_user_is_refused(qonto, client, client_for, owner_a, accountant, org_a) -> None:
    # The accountant may see org A's connection, but did not start this authorisation.
    back = consent(client_for(owner_a).post(connect_url(org_a))["Location"])
    response = client_for(accountant).get(local(back))
    assert response.status_code == 302
    assert any("another person" in text for text in texts(response))
    assert not Connection.objects.filter(status=Connection.Status.ACTIVE).exists()


# --- API key form ------------------------------------------------------------------------------
def test_api_key_form_connects_with_a_good_key(qonto, client_for, owner_a, org_a) -> None:
    client = client_for(owner_a)
    page = client.get(api_key_url(org_a))
    assert page.status_code == 200
    assert b"Secret key" in page.content and b"site-name" in page.content  # the admin's frame
    login, _, secret = qonto.api_key_header.partition(":")
    response = client.post(api_key_url(org_a), {"login": login, "secret_key": secret})
    connection = Connection.objects.get(organization=org_a, provider="qonto")
    assert response.status_code == 302 and response["Location"] == change_page(connection)
    assert connection.status == Connection.Status.ACTIVE and connection.auth_method == "api_key"


def test_api_key_form_refuses_a_bad_key_without_echoing_it(qonto, client_for, owner_a, org_a) -> None:
    login, _, _ = qonto.api_key_header.partition(":")
    response = client_for(owner_a).post(api_key_url(org_a), {"login": login, "secret_key": "wrong-secret-123"})
    assert response.status_code == 400
    assert b"refused this login and secret key" in response.content
    assert b"wrong-secret-123" not in response.content
    assert not Connection.objects.exists()


def test_reviewer_cannot_connect(qonto, client_for, reviewer_a, org_a) -> None:
    client = client_for(reviewer_a)
    assert client.post(connect_url(org_a)).status_code == 403
    assert client.get(api_key_url(org_a)).status_code == 403
    login, _, secret = qonto.api_key_header.partition(":")
    assert client.post(api_key_url(org_a), {"login": login, "secret_key": secret}).status_code == 403
    assert not Connection.objects.exists()


# --- disconnect and reconnect ------------------------------------------------------------------
def test_disconnect_button(qonto, client_for, owner_a, connected) -> None:
    access = connected.credentials["access_token"]
    response = client_for(owner_a).post(reverse("connectors:disconnect", args=[connected.pk]))
    assert response.status_code == 302 and response["Location"] == change_page(connected)
    connected.refresh_from_db()
    assert connected.status == Connection.Status.DISCONNECTED
    assert qonto.verify_access_token(access)[0] is None


def test_reconnect_button_sends_to_the_consent_page_for_the_same_row(
    qonto, client_for, owner_a, connected
) -> None:
    client = client_for(owner_a)
    client.post(reverse("connectors:disconnect", args=[connected.pk]))
    response = client.post(reverse("connectors:reconnect", args=[connected.pk]))
    assert response.status_code == 302
    client.get(local(consent(response["Location"])))
    assert Connection.objects.count() == 1
    connected.refresh_from_db()
    assert connected.status == Connection.Status.ACTIVE


def test_reviewer_cannot_disconnect_or_reconnect(qonto, client_for, reviewer_a, connected) -> None:
    client = client_for(reviewer_a)
    assert client.post(reverse("connectors:disconnect", args=[connected.pk])).status_code == 403
    assert client.post(reverse("connectors:reconnect", args=[connected.pk])).status_code == 403
    connected.refresh_from_db()
    assert connected.status == Connection.Status.ACTIVE


# --- outsiders and strangers -------------------------------------------------------------------
def test_outsider_gets_404_on_every_view_for_org_a(qonto, client_for, owner_a, outsider, org_a, connected) -> None:
    # A callback for org A's connection, started by its owner, replayed by the outsider.
    back = consent(client_for(owner_a).post(connect_url(org_a))["Location"])
    before = set(Connection.objects.values_list("pk", "status"))
    client = client_for(outsider)
    login, _, secret = qonto.api_key_header.partition(":")
    answers = {
        "connect": client.post(connect_url(org_a)).status_code,
        "api-key GET": client.get(api_key_url(org_a)).status_code,
        "api-key POST": client.post(api_key_url(org_a), {"login": login, "secret_key": secret}).status_code,
        "callback": client.get(local(back)).status_code,
        "disconnect": client.post(reverse("connectors:disconnect", args=[connected.pk])).status_code,
        "reconnect": client.post(reverse("connectors:reconnect", args=[connected.pk])).status_code,
    }
    assert answers == dict.fromkeys(answers, 404)
    assert set(Connection.objects.values_list("pk", "status")) == before


def test_unknown_provider_is_404(client_for, owner_a, org_a) -> None:
    client = client_for(owner_a)
    assert client.post(f"/connections/nope/connect/?organization={org_a.pk}").status_code == 404
    assert client.get("/connections/nope/callback/?state=x").status_code == 404


def test_anonymous_is_sent_to_login(client, org_a) -> None:
    response = client.post(connect_url(org_a))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
