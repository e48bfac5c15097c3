"""Connections admin: status at a glance, buttons for managers, read-only for support,
404 for outsiders, credentials never shown."""

import pytest

from connectors.models import Connection, Push, SyncEvent, SyncRun, WebhookEvent

pytestmark = pytest.mark.django_db

SECRET = "sk-very-secret-value"


@pytest.fixture
def conn_a(org_a):
    conn = Connection.objects.create(
        organization=org_a,
        provider="qonto",
        auth_method="api_key",
        display_name="Atelier Lumière",
        external_account_id="atelier-lumiere-4821",
        status="needs_attention",
        last_error="Qonto refused the API key: regenerate it in Qonto and reconnect",
        credentials={"login": "atelier-lumiere-4821", "secret_key": SECRET},
        webhook_secret="whsec-" + SECRET,
    )
    run = SyncRun.objects.create(organization=org_a, connection=conn, trigger="schedule", outcome="failed", error="boom")
    SyncEvent.objects.create(organization=org_a, run=run, connection=conn, kind="failed", reason="bad record")
    WebhookEvent.objects.create(organization=org_a, connection=conn, provider="qonto", event_id="ev1", status="rejected", reason="forged")
    Push.objects.create(organization=org_a, connection=conn, action="client.create", idempotency_key="k1", status="dead", last_error="422")
    return conn


ADMIN_PAGES = ["connection", "syncrun", "syncevent", "webhookevent", "push"]


def object_urls(conn):
    return {
        "connection": conn.pk,
        "syncrun": SyncRun.objects.get(connection=conn).pk,
        "syncevent": SyncEvent.objects.get(connection=conn).pk,
        "webhookevent": WebhookEvent.objects.get(connection=conn).pk,
        "push": Push.objects.get(connection=conn).pk,
    }


def test_owner_sees_status_and_error_at_a_glance(client_for, owner_a, conn_a):
    page = client_for(owner_a).get("/admin/connectors/connection/")
    assert page.status_code == 200
    assert "Needs attention" in page.text and "regenerate it in Qonto" in page.text
    detail = client_for(owner_a).get(f"/admin/connectors/connection/{conn_a.pk}/change/")
    assert "/do/disconnect/" in detail.text and "/do/sync/" in detail.text
    assert SECRET not in detail.text


def test_outsider_gets_404_on_every_page_of_org_a(client_for, outsider, conn_a):
    client = client_for(outsider)
    for model, pk in object_urls(conn_a).items():
        assert client.get(f"/admin/connectors/{model}/{pk}/change/").status_code == 404, model
        listing = client.get(f"/admin/connectors/{model}/")
        assert listing.status_code in (200, 403), model
        if listing.status_code == 200:
            assert "0 " in listing.text or "atelier" not in listing.text.lower(), model
    response = client.post(f"/admin/connectors/connection/{conn_a.pk}/do/sync/")
    assert response.status_code == 404


def test_support_reads_everything_but_has_no_buttons(client_for, support, conn_a):
    client = client_for(support)
    for model, pk in object_urls(conn_a).items():
        page = client.get(f"/admin/connectors/{model}/{pk}/change/")
        assert page.status_code == 200, model
        assert SECRET not in page.text
    detail = client.get(f"/admin/connectors/connection/{conn_a.pk}/change/")
    assert "/do/sync/" not in detail.text and "/do/disconnect/" not in detail.text
    assert client.post(f"/admin/connectors/connection/{conn_a.pk}/do/disconnect/").status_code == 404
    conn_a.refresh_from_db()
    assert conn_a.status == "needs_attention"


def test_connect_page_lists_the_organisations_the_user_manages(client_for, owner_a, org_a):
    page = client_for(owner_a).get("/admin/connectors/connection/connect/")
    assert page.status_code == 200
    assert "Connect with Qonto" in page.text and org_a.name in page.text


def test_reviewer_cannot_open_the_connect_page(client_for, reviewer_a, org_a):
    assert client_for(reviewer_a).get("/admin/connectors/connection/connect/").status_code == 404
