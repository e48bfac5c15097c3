"""The connectors' tasks fan out and delegate; schedules declare the Qonto jobs."""

from __future__ import annotations

import pytest

from connectors import tasks
from connectors.models import Connection, SyncRun
from qontohub import schedules
from tests.connectors import toy


@pytest.fixture
def conn(org_a, monkeypatch):  # type: ignore[no-untyped-def]
    toy.install(monkeypatch)
    toy.REMOTE.extend(toy.remote(2))
    return toy.make_connection(org_a)


def test_sync_due_connections_fans_out_one_task_per_active_connection(conn, org_b):
    toy.make_connection(org_b, status=Connection.Status.NEEDS_ATTENTION)
    toy.make_connection(org_b, external_account_id="other", status=Connection.Status.ACTIVE)
    assert tasks.sync_due_connections("toy") == 2
    assert SyncRun.objects.filter(trigger="schedule", outcome="succeeded").count() == 2
    assert tasks.sync_due_connections("qonto") == 0


def test_enqueue_sync_and_the_task_summary(conn):
    tasks.enqueue_sync(conn, trigger="button", full=True)
    run = SyncRun.objects.get()
    assert run.trigger == "button" and run.full and run.created == 2
    summary = tasks.sync_connection_task(conn.pk)
    assert summary["outcome"] == "succeeded" and summary["changed"] == 0
    with pytest.raises(ValueError):
        tasks.enqueue_sync(conn, trigger="nope")


def test_qonto_schedules_are_declared():
    names = {spec.name: spec for spec in schedules.declared()}
    assert names["qonto-sync"].func == "connectors.tasks.sync_due_connections"
    assert names["qonto-sync"].kwargs == {"provider": "qonto"} and names["qonto-sync"].minutes == 15
    assert names["outbox-drain"].func == "connectors.tasks.drain_outbox" and names["outbox-drain"].minutes == 1
