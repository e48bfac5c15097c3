"""The webhook view and its processing, against the toy provider."""

from __future__ import annotations

import json
import uuid

import pytest
from django.urls import reverse

from connectors import webhooks
from connectors.base import TransientError
from connectors.models import Connection, RemoteRecord, SyncRun, WebhookEvent
from tests.connectors import toy


@pytest.fixture
def conn(org_a, monkeypatch):  # type: ignore[no-untyped-def]
    toy.install(monkeypatch)
    toy.REMOTE.extend(toy.remote(3))
    return toy.make_connection(org_a)


def url(conn) -> str:  # type: ignore[no-untyped-def]
    return reverse("webhook", kwargs={"slug": conn.provider, "endpoint": conn.webhook_endpoint})


def post(client, conn, payload, *, secret: str = "toy-webhook-secret", **headers):  # type: ignore[no-untyped-def]
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
    return client.post(
        url(conn), data=body, content_type="application/json",
        HTTP_X_TOY_SIGNATURE=toy.sign(secret, body), HTTP_AUTHORIZATION="Bearer secret", **extra,
    )


def test_a_valid_event_is_stored_accepted_and_processed(client, conn):
    response = post(client, conn, {"id": "evt-1"})
    assert response.status_code == 202 and response.json() == {"status": "accepted", "event_id": "evt-1"}
    event = WebhookEvent.objects.get()
    assert event.accepted and event.status == WebhookEvent.Status.PROCESSED
    assert event.streams == ["things"] and event.event_type == "toy"
    assert event.run.trigger == SyncRun.Trigger.WEBHOOK and event.run.outcome == SyncRun.Outcome.SUCCEEDED
    assert RemoteRecord.objects.count() == 3
    # Stored without the secrets a request may carry, with the raw body.
    assert "Authorization" not in event.headers and "X-Toy-Signature" in event.headers
    assert json.loads(event.body) == {"id": "evt-1"}


def test_a_forged_event_is_kept_rejected_and_answered_401(client, conn):
    response = post(client, conn, {"id": "evt-1"}, secret="guess")
    assert response.status_code == 401
    event = WebhookEvent.objects.get()
    assert event.status == WebhookEvent.Status.REJECTED and not event.accepted
    assert event.reason == "signature does not match" and not SyncRun.objects.exists()


def test_a_stale_event_is_rejected(client, conn):
    assert post(client, conn, {"id": "evt-1"}, **{"X-Toy-Stale": "1"}).status_code == 401
    assert WebhookEvent.objects.get().reason == "timestamp too old"


def test_a_malformed_event_is_invalid_with_a_clear_error(client, conn):
    response = post(client, conn, b"not json")
    assert response.status_code == 400 and "not JSON" in response.json()["error"]
    event = WebhookEvent.objects.get()
    assert event.status == WebhookEvent.Status.INVALID and event.reason == "Malformed payload: the body is not JSON"
    assert post(client, conn, {"no": "id"}).status_code == 400
    assert "carries no id" in WebhookEvent.objects.order_by("-pk").first().reason


def test_a_duplicate_event_is_acknowledged_and_not_processed_again(client, conn):
    assert post(client, conn, {"id": "evt-1"}).status_code == 202
    response = post(client, conn, {"id": "evt-1"})
    assert response.status_code == 200 and response.json()["status"] == "duplicate"
    first, second = WebhookEvent.objects.order_by("pk")
    assert second.status == WebhookEvent.Status.DUPLICATE and not second.accepted
    assert f"#{first.pk}" in second.reason
    assert SyncRun.objects.count() == 1


def test_the_unique_constraint_is_the_dedup_guarantee(conn):
    # Two deliveries that both passed verification at the same moment: the database decides.
    first = WebhookEvent.objects.create(
        organization=conn.organization, connection=conn, provider="toy", event_id="evt-9", accepted=True
    )
    late = WebhookEvent.objects.create(organization=conn.organization, connection=conn, provider="toy")
    check = webhooks.verify_event(late, conn, {"X-Toy-Signature": toy.sign("toy-webhook-secret", b'{"id":"evt-9"}')},
                                  b'{"id":"evt-9"}')
    assert check is None and late.status == WebhookEvent.Status.DUPLICATE and first.accepted


def test_unknown_endpoints_and_other_methods(client, conn):
    bad = reverse("webhook", kwargs={"slug": "toy", "endpoint": uuid.uuid4()})
    assert client.post(bad, data=b"{}", content_type="application/json").status_code == 404
    wrong_provider = reverse("webhook", kwargs={"slug": "qonto", "endpoint": conn.webhook_endpoint})
    assert client.post(wrong_provider, data=b"{}", content_type="application/json").status_code == 404
    assert client.get(url(conn)).status_code == 405
    assert not WebhookEvent.objects.exists()


def test_processing_failure_is_recorded_and_replay_succeeds_later(client, conn):
    toy.FAIL_ON_PAGE[1] = TransientError("provider error: Bad Gateway", status=502)
    post(client, conn, {"id": "evt-1"})
    event = WebhookEvent.objects.get()
    assert event.status == WebhookEvent.Status.FAILED and "Bad Gateway" in event.reason
    event = webhooks.replay_webhook(event.pk)
    assert event.status == WebhookEvent.Status.PROCESSED and RemoteRecord.objects.count() == 3
    assert SyncRun.objects.filter(trigger="webhook").count() == 2


def test_rejected_events_cannot_be_replayed(client, conn):
    post(client, conn, {"id": "evt-1"}, secret="guess")
    with pytest.raises(ValueError, match="cannot be replayed"):
        webhooks.replay_webhook(WebhookEvent.objects.get().pk)


def test_processing_twice_does_nothing_the_second_time(client, conn):
    post(client, conn, {"id": "evt-1"})
    event = webhooks.process_webhook(WebhookEvent.objects.get().pk)
    assert event.status == WebhookEvent.Status.PROCESSED and SyncRun.objects.count() == 1


def test_an_event_for_a_disconnected_connection_fails_with_the_reason(client, conn, monkeypatch):
    monkeypatch.setattr(webhooks, "LEASE_WAIT_SECONDS", 0)
    Connection.objects.filter(pk=conn.pk).update(status=Connection.Status.DISCONNECTED)
    assert post(client, conn, {"id": "evt-1"}).status_code == 202
    event = WebhookEvent.objects.get()
    assert event.status == WebhookEvent.Status.FAILED and "disconnected" in event.reason


def test_a_webhook_that_brought_new_rows_hands_them_on_like_a_sync(client, conn, settings, monkeypatch):
    from tests.connectors import test_tasks

    calls: list = []
    monkeypatch.setattr(test_tasks, "CALLS", calls)
    settings.AFTER_SYNC_TASKS = ["tests.connectors.test_tasks.record_call"]
    post(client, conn, {"id": "evt-1"})
    assert calls == [(conn.pk, 3)]
    post(client, conn, {"id": "evt-2"})  # nothing new: nothing handed on
    assert calls == [(conn.pk, 3)]
