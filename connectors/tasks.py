"""django-q2 tasks of the connectors: plain functions taking ids, safe to run twice.

Schedules (``qontohub/schedules.py``) only fan out: ``sync_due_connections`` enqueues one
``sync_connection_task`` per active connection and ``drain_outbox`` one ``send_push_task`` per
due push, so one slow provider account never holds up the others. The work itself lives in
``connectors.sync``, ``connectors.outbox`` and ``connectors.webhooks``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from django_q.tasks import async_task

from connectors import oauth, outbox, webhooks
from connectors.base import ConnectorError
from connectors.models import Connection, Push, SyncEvent, SyncRun, WebhookEvent
from connectors.sync import sync_connection


def sync_connection_task(connection_id: int, trigger: str = "schedule", full: bool = False) -> dict[str, Any]:
    """Run one sync; returns a summary that django-q2 keeps as the task result.

    When the run brought new or changed records, every task named in
    ``settings.AFTER_SYNC_TASKS`` is enqueued with ``(connection_id, changed)``: that is how
    the apps downstream (reconciliation) react to new data without this app knowing them.
    """
    run = sync_connection(connection_id, trigger=trigger, full=full)
    after_sync(connection_id, run)
    return {"run": run.pk, "outcome": run.outcome, "changed": run.changed, "error": run.error}


def after_sync(connection_id: int, run: SyncRun | None) -> None:
    """Enqueue ``settings.AFTER_SYNC_TASKS`` with ``(connection_id, changed)`` if ``run`` changed rows."""
    if run is not None and run.changed:
        for task in getattr(settings, "AFTER_SYNC_TASKS", []):
            async_task(task, connection_id, run.changed)


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
    """Re-read what a webhook event touched; new data is handed on like a scheduled sync's."""
    event = webhooks.process_webhook(event_id)
    after_sync(event.connection_id, event.run)
    return event.status


def send_push_task(push_id: int) -> str:
    return outbox.send_push(push_id).status


def drain_outbox() -> int:
    return outbox.drain_outbox()


def refresh_due_tokens() -> int:
    """Refresh OAuth access tokens that expire soon, so no sync starts on a dying token.

    Each refresh takes the connection's row lock (``oauth.refresh``), so this job and a sync
    refreshing the same token at once spend the refresh token only once.
    """
    refreshed = 0
    for connection_id in oauth.due_for_refresh():
        try:
            refreshed += bool(oauth.refresh(connection_id))
        except ConnectorError:
            # oauth.refresh already flagged the connection (needs_attention) with the reason.
            continue
    return refreshed


def prune_history(days: int | None = None) -> dict[str, int]:
    """Delete sync runs, events, webhook events and finished pushes older than the retention."""
    keep = days if days is not None else settings.HISTORY_RETENTION_DAYS
    cutoff = timezone.now() - timedelta(days=keep)
    return {
        "events": SyncEvent.objects.filter(created_at__lt=cutoff).delete()[0],
        "runs": SyncRun.objects.filter(started_at__lt=cutoff).exclude(outcome=SyncRun.Outcome.RUNNING).delete()[0],
        "webhooks": WebhookEvent.objects.filter(received_at__lt=cutoff).delete()[0],
        "pushes": Push.objects.filter(done_at__lt=cutoff, status=Push.Status.DONE).delete()[0],
    }
