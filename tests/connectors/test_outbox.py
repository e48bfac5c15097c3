"""The outbox against the toy provider: enqueue once, claim, verify, back off, give up, retry."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from connectors import outbox
from connectors.base import AuthRevoked, RateLimited, TransientError, ValidationFailed
from connectors.models import Connection, Push
from tests.connectors import toy


@pytest.fixture
def conn(org_a, monkeypatch, settings, tmp_path):  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = tmp_path
    toy.install(monkeypatch)
    return toy.make_connection(org_a)


def enqueue(conn, key: str = "k-1", **extra):  # type: ignore[no-untyped-def]
    return outbox.enqueue_push(conn, "toy.create", key, {"name": "Acme"}, source=("crm.relation", 42), **extra)


def test_enqueuing_twice_is_a_no_op(conn):
    first = enqueue(conn)
    again = outbox.enqueue_push(conn, "toy.create", "k-1", {"name": "Other"})
    assert again.pk == first.pk and again.payload == {"name": "Acme"}
    assert Push.objects.count() == 1
    assert (first.source_type, first.source_id, first.organization_id) == ("crm.relation", "42", conn.organization_id)
    with pytest.raises(ValueError):
        outbox.enqueue_push(conn, "toy.create", "", {})


def test_a_verified_push_is_done_with_its_remote_id_and_its_file_is_released(conn):
    push = enqueue(conn, file=ContentFile(b"%PDF-1.4 x", name="bill.pdf"))
    assert push.file.name.endswith(".pdf")
    path = push.file.path
    toy.PUSH_SCRIPT.append(("remote-77", {"id": "remote-77"}))
    push = outbox.send_push(push.pk)
    assert push.status == Push.Status.DONE and push.remote_id == "remote-77"
    assert push.response == {"id": "remote-77"} and push.done_at and push.attempts == 1
    assert not push.file
    import os

    assert not os.path.exists(path)
    # Done is final: sending again does nothing.
    assert outbox.send_push(push.pk).attempts == 1 and toy.PUSHES_SENT == ["k-1"]


def test_transient_failures_back_off_exponentially_then_die(conn, monkeypatch):
    monkeypatch.setattr(outbox, "MAX_ATTEMPTS", 3)
    push = enqueue(conn)
    delays = []
    for attempt in range(1, 4):
        toy.PUSH_SCRIPT.append(TransientError("provider error: Bad Gateway", status=502))
        before = timezone.now()
        push = outbox.send_push(push.pk)
        assert push.attempts == attempt
        if attempt < 3:
            assert push.status == Push.Status.FAILED and "Bad Gateway" in push.last_error
            delays.append((push.next_attempt_at - before).total_seconds())
            # Not due yet: a drain or a second worker leaves it alone.
            assert outbox.send_push(push.pk).attempts == attempt
            Push.objects.filter(pk=push.pk).update(next_attempt_at=timezone.now())
    assert push.status == Push.Status.DEAD and "Gave up after 3 attempts" in push.last_error
    assert 40 <= delays[0] <= 80 and 90 <= delays[1] <= 150


def test_retry_after_is_honoured(conn):
    push = enqueue(conn)
    toy.PUSH_SCRIPT.append(RateLimited("slow down", status=429, retry_after=900))
    push = outbox.send_push(push.pk)
    assert push.status == Push.Status.FAILED
    assert push.next_attempt_at >= timezone.now() + timedelta(seconds=890)


def test_a_permanent_error_is_dead_at_once_with_the_providers_reason(conn):
    push = enqueue(conn)
    toy.PUSH_SCRIPT.append(ValidationFailed("rejected: File type not supported", status=422))
    push = outbox.send_push(push.pk)
    assert push.status == Push.Status.DEAD and "File type not supported" in push.last_error
    assert Connection.objects.get(pk=conn.pk).status == Connection.Status.ACTIVE


def test_a_revoked_grant_parks_the_push_and_flags_the_connection(conn):
    push = enqueue(conn)
    toy.PUSH_SCRIPT.append(AuthRevoked("forbidden", status=403))
    push = outbox.send_push(push.pk)
    assert push.status == Push.Status.FAILED and push.attempts == 0
    assert Connection.objects.get(pk=conn.pk).status == Connection.Status.NEEDS_ATTENTION
    # While the connection needs attention nothing is sent and the drain skips it.
    Push.objects.filter(pk=push.pk).update(next_attempt_at=timezone.now())
    assert outbox.send_push(push.pk).status == Push.Status.FAILED
    assert not outbox.due_pushes().exists()


def test_a_crash_is_retried_with_its_traceback(conn):
    push = enqueue(conn)
    toy.PUSH_SCRIPT.append(KeyError("client"))
    push = outbox.send_push(push.pk)
    assert push.status == Push.Status.FAILED and "KeyError" in push.last_error and "Traceback" in push.last_error


def test_an_unknown_action_is_dead(conn):
    push = outbox.enqueue_push(conn, "toy.fly", "k-2", {})
    push = outbox.send_push(push.pk)
    assert push.status == Push.Status.DEAD and "no push_toy_fly method" in push.last_error


def test_a_claim_blocks_a_second_sender_until_it_expires(conn):
    push = enqueue(conn)
    Push.objects.filter(pk=push.pk).update(
        status=Push.Status.SENDING, attempts=1, next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    assert outbox.send_push(push.pk).status == Push.Status.SENDING and toy.PUSHES_SENT == []
    Push.objects.filter(pk=push.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert outbox.due_pushes().filter(pk=push.pk).exists()
    push = outbox.send_push(push.pk)
    assert push.status == Push.Status.DONE and push.attempts == 2


def test_retry_button_brings_a_dead_push_back_and_sends_it(conn):
    push = enqueue(conn)
    toy.PUSH_SCRIPT.append(ValidationFailed("rejected", status=422))
    outbox.send_push(push.pk)
    toy.PUSH_SCRIPT.append(("remote-9", {}))
    # Tasks run inline in tests (Conf.SYNC), so "queued again" is also "sent".
    push = outbox.retry_push(push.pk)
    assert push.status == Push.Status.DONE and push.remote_id == "remote-9"
    assert outbox.retry_push(push.pk).status == Push.Status.DONE  # done stays done


def test_drain_sends_every_due_push_once(conn, org_b):
    for i in range(3):
        enqueue(conn, key=f"k-{i}")
    later = enqueue(conn, key="later")
    Push.objects.filter(pk=later.pk).update(next_attempt_at=timezone.now() + timedelta(hours=1))
    asleep = toy.make_connection(org_b, status=Connection.Status.DISCONNECTED)
    outbox.enqueue_push(asleep, "toy.create", "k-0", {})
    assert outbox.drain_outbox() == 3
    assert sorted(toy.PUSHES_SENT) == ["k-0", "k-1", "k-2"]
    assert Push.objects.filter(status=Push.Status.DONE).count() == 3
    assert outbox.drain_outbox() == 0


def test_a_push_on_a_firm_connection_belongs_to_the_client_organisation(org_a):
    from connectors.models import Connection
    from connectors.outbox import enqueue_push

    firm_connection = Connection.objects.create(firm=org_a.firm, provider="pennylane", status="active")
    with pytest.raises(ValueError, match="which client organisation"):
        enqueue_push(firm_connection, "ledger_entry.create", "k-1", {})
    push = enqueue_push(firm_connection, "ledger_entry.create", "k-1", {}, organization_id=org_a.pk)
    assert push.organization_id == org_a.pk
