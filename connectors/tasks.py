"""django-q2 tasks of the connectors: plain functions taking ids, safe to run twice.

Schedules (``qontohub/schedules.py``) only fan out: ``sync_due_connections`` enqueues one
``sync_connection_task`` per active connection and ``drain_outbox`` one ``send_push_task`` per
due push, so one slow provider account never holds up the others. The work itself lives in
``connectors.sync``, ``connectors.outbox`` and ``connectors.webhooks``.
"""

from __future__ import annotations

from typing import Any

from django_q.tasks import async_task

from connectors import outbox, webhooks
from connectors.models import Connection, SyncRun
from connectors.sync import sync_connection


def sync_connection_task(connection_id: int, trigger: str = "schedule", full: bool = False) -> dict[str, Any]:
    """Run one sync; returns a summary that django-q2 keeps as the task result."""
    run = sync_connection(connection_id, trigger=trigger, full=full)
    return {"run": run.pk, "outcome": run.outcome, "changed": run.changed, "error": run.error}


def sync_due_connections(provider: str) -> int:
    """Fan out one sync task per active connection of ``provider``; returns how many."""
    ids = list(
        Connection.objects.active().filter(provider=provider).order_by("pk").values_list("pk", flat=True)
    )
    for connection_id in ids:
        async_task("connectors.tasks.sync_connection_task", connection_id, trigger=SyncRun.Trigger.SCHEDULE)
    return len(ids)


def enqueue_sync(connection: Connection, trigger: str, full: bool = False) -> str:
    """Queue a sync of ``connection`` (the admin's "sync now" / "full resync", connect); task id."""
    if trigger not in SyncRun.Trigger.values:
        raise ValueError(f"unknown trigger {trigger!r}")
    return async_task("connectors.tasks.sync_connection_task", connection.pk, trigger=trigger, full=full)


def process_webhook(event_id: int) -> str:
    return webhooks.process_webhook(event_id).status


def send_push_task(push_id: int) -> str:
    return outbox.send_push(push_id).status


def drain_outbox() -> int:
    return outbox.drain_outbox()
