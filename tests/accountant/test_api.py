"""GET /api/v1/client-files/: status, last push and last error per file, for the firm and the
client organisation only; another firm's accountant and other organisations get nothing."""

from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accountant.models import ClientFile
from connectors.models import Connection
from qontohub.models import ApiToken, FirmMembership
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def client_as(user) -> APIClient:  # type: ignore[no-untyped-def]
    _, key = ApiToken.issue(user, "test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def client_file(org_a):  # type: ignore[no-untyped-def]
    connection = Connection.objects.create(firm=org_a.firm, provider="pennylane", auth_method="api_key",
                                           status="active", credentials={"api_key": "pl-secret"})
    return ClientFile.objects.create(
        organization=org_a, firm=org_a.firm, connection=connection, remote_company_id="731901",
        remote_company_name="Atelier Lumière SAS", status=ClientFile.Status.ERROR, sync_frequency="daily",
        last_push_at=timezone.now(), last_error="QH-ACH-000001: HTTP 503: Pennylane error",
    )


def test_the_firm_and_the_client_see_status_last_push_and_last_error(client_file, accountant, owner_a):
    for user in (accountant, owner_a):
        body = client_as(user).get("/api/v1/client-files/").json()
        rows = body["results"] if isinstance(body, dict) else body
        assert [r["id"] for r in rows] == [client_file.pk]
        row = rows[0]
        assert row["status"] == "error" and row["sync_frequency"] == "daily"
        assert row["last_push_at"] and row["last_error"].startswith("QH-ACH-000001")
        assert row["remote_company_name"] == "Atelier Lumière SAS"
        assert row["entries_pushed"] == 0
        assert "pl-secret" not in str(body)
    detail = client_as(accountant).get(f"/api/v1/client-files/{client_file.pk}/")
    assert detail.status_code == 200


def test_status_filter(client_file, accountant):
    api = client_as(accountant)
    assert len(_rows(api.get("/api/v1/client-files/?status=active").json())) == 0
    assert len(_rows(api.get("/api/v1/client-files/?status=error").json())) == 1


def test_outsiders_get_nothing(client_file, outsider, org_b):
    rival = make_user("rival@example.test")
    FirmMembership.objects.create(firm=org_b.firm, user=rival)
    for user in (outsider, rival):
        api = client_as(user)
        assert _rows(api.get("/api/v1/client-files/").json()) == []
        assert api.get(f"/api/v1/client-files/{client_file.pk}/").status_code == 404
    assert _rows(client_as(rival).get("/api/v1/client-files/", {"organization": client_file.organization_id}).json()) == []


def test_firm_connection_is_listed_for_firm_members_only(client_file, accountant, outsider):
    rows = _rows(client_as(accountant).get("/api/v1/connections/").json())
    assert [(r["firm"], r["provider"]) for r in rows] == [(client_file.firm_id, "pennylane")]
    assert _rows(client_as(outsider).get("/api/v1/connections/").json()) == []


def test_unauthenticated_is_refused(client_file):
    assert APIClient().get("/api/v1/client-files/").status_code in (401, 403)


def _rows(body):  # type: ignore[no-untyped-def]
    return body["results"] if isinstance(body, dict) else body
