"""REST sync status: scoped to the caller's organisations, filterable, never leaking secrets."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from connectors.models import Connection, SyncCursor, SyncEvent, SyncRun
from qontohub.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def conn_a(org_a):
    conn = Connection.objects.create(
        organization=org_a,
        provider="qonto",
        auth_method="api_key",
        display_name="Atelier Lumière",
        external_account_id="atelier-lumiere-4821",
        status="active",
        credentials={"login": "atelier-lumiere-4821", "secret_key": "sk-very-secret"},
    )
    SyncCursor.objects.create(connection=conn, stream="transactions", value="2026-12-01T10:00:00Z", last_success_at=timezone.now())
    old = SyncRun.objects.create(organization=org_a, connection=conn, trigger="schedule", outcome="succeeded", read=10, created=10)
    old.started_at = timezone.now() - timedelta(days=2)
    old.save()
    run = SyncRun.objects.create(organization=org_a, connection=conn, trigger="button", outcome="partial", read=5, failed=1)
    SyncEvent.objects.create(organization=org_a, run=run, connection=conn, stream="transactions", external_id="tx-9", kind="failed", reason="amount missing: Qonto sent no amount for this line")
    return conn


def client_as(user) -> APIClient:
    _, key = ApiToken.issue(user, "test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_owner_lists_connections_and_status(owner_a, conn_a):
    client = client_as(owner_a)
    listing = client.get("/api/v1/connections/").json()
    assert [c["id"] for c in listing["results"]] == [conn_a.pk]
    assert "sk-very-secret" not in str(listing) and "credentials" not in listing["results"][0]

    status = client.get(f"/api/v1/connections/{conn_a.pk}/status/").json()
    assert status["status"] == "active"
    assert status["last_run"]["outcome"] == "partial"
    assert status["streams"] == [
        {"stream": "transactions", "cursor": "2026-12-01T10:00:00Z", "last_success_at": status["streams"][0]["last_success_at"], "resuming": False}
    ]


def test_runs_are_filterable_and_show_their_events(owner_a, conn_a):
    client = client_as(owner_a)
    assert len(client.get("/api/v1/sync-runs/").json()["results"]) == 2
    partial = client.get("/api/v1/sync-runs/?outcome=partial").json()["results"]
    assert len(partial) == 1
    recent = client.get("/api/v1/sync-runs/", {"started_after": (timezone.now() - timedelta(days=1)).isoformat()}).json()["results"]
    assert [r["id"] for r in recent] == [partial[0]["id"]]
    events = client.get(f"/api/v1/sync-runs/{partial[0]['id']}/events/").json()["results"]
    assert events[0]["reason"].startswith("amount missing")


def test_bad_filter_values_get_a_clear_error(owner_a, conn_a):
    response = client_as(owner_a).get("/api/v1/sync-runs/?started_after=yesterday")
    assert response.status_code == 400
    assert "ISO 8601" in response.json()["started_after"]


def test_outsider_gets_404_or_nothing(outsider, conn_a):
    client = client_as(outsider)
    run = SyncRun.objects.filter(connection=conn_a).first()
    assert client.get("/api/v1/connections/").json()["results"] == []
    assert client.get(f"/api/v1/connections/{conn_a.pk}/").status_code == 404
    assert client.get(f"/api/v1/connections/{conn_a.pk}/status/").status_code == 404
    assert client.get("/api/v1/sync-runs/").json()["results"] == []
    assert client.get(f"/api/v1/sync-runs/{run.pk}/").status_code == 404
    assert client.get(f"/api/v1/sync-runs/{run.pk}/events/").status_code == 404
    assert client.get(f"/api/v1/sync-runs/?organization={conn_a.organization_id}").json()["results"] == []


def test_support_reads_every_organisation(support, conn_a):
    client = client_as(support)
    assert client.get(f"/api/v1/connections/{conn_a.pk}/status/").status_code == 200
