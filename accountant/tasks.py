"""django-q2 tasks of the accountant hub: plain functions taking ids, safe to run twice.

Schedules (``qontohub/schedules.py``) only fan out one task per due client file:

* ``after_sync`` (named in ``settings.AFTER_SYNC_TASKS``, not a schedule): right after a Qonto
  sync brought new records, the organisation's *realtime* file builds its entries, and
  ``services.build_entries`` pushes them as soon as they validate;
* ``realtime_tick`` (every few minutes): the same for every realtime file (a safety net for
  syncs whose hook failed) and settles every push the outbox finished or retried meanwhile;
* ``daily_tick`` (hourly): once a day, from ``EVENING_HOUR`` in the organisation's time zone,
  builds and pushes every *daily* file — hourly rather than a fixed-time schedule so that a
  worker that was down at that hour still pushes the same evening, and each file follows its
  own time zone;
* ``weekly_reference_sync`` (weekly): refreshes the chart, journals and fiscal years of every
  active file that has the weekly account sync on.

*Manual* files are pushed by the admin button only (``push_client_file`` with trigger "button").
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.utils import timezone
from django_q.tasks import async_task

from accountant import services
from accountant.models import ClientFile, JournalEntry

logger = logging.getLogger(__name__)

#: Local hour from which daily files are pushed ("a scheduled evening job").
EVENING_HOUR = 20


def _active(frequency: str | None = None) -> Any:
    files = ClientFile.objects.filter(status=ClientFile.Status.ACTIVE, connection__status="active")
    if frequency is not None:
        files = files.filter(sync_frequency=frequency)
    return files.select_related("organization")


def after_sync(connection_id: int, changed: int = 0) -> int:
    """Named in ``settings.AFTER_SYNC_TASKS``: a Qonto sync brought new data, so a realtime file
    of that organisation builds (and pushes) its new entries now rather than at the next tick."""
    from connectors.models import Connection

    connection = Connection.objects.filter(pk=connection_id, provider="qonto").first()
    if connection is None or connection.organization_id is None:
        return 0
    ids = list(
        _active(ClientFile.Frequency.REALTIME)
        .filter(organization_id=connection.organization_id)
        .values_list("pk", flat=True)
    )
    for file_id in ids:
        build_client_file(file_id)
    return len(ids)


def realtime_tick() -> int:
    """Fan out one build per realtime file, then settle pushes the outbox finished."""
    ids = list(_active(ClientFile.Frequency.REALTIME).values_list("pk", flat=True))
    for file_id in ids:
        async_task("accountant.tasks.build_client_file", file_id)
    services.settle_in_flight()
    return len(ids)


def daily_due(client_file: ClientFile, now: datetime | None = None) -> bool:
    """A daily file is due once per local day, from ``EVENING_HOUR`` in its organisation's zone."""
    local = (now or timezone.now()).astimezone(ZoneInfo(client_file.organization.time_zone or "Europe/Paris"))
    return local.hour >= EVENING_HOUR and client_file.daily_pushed_on != local.date()


def daily_tick(now: datetime | None = None) -> int:
    """Fan out one push per daily file whose evening has come and that was not pushed today."""
    due = [cf.pk for cf in _active(ClientFile.Frequency.DAILY) if daily_due(cf, now)]
    for file_id in due:
        async_task("accountant.tasks.push_client_file", file_id, "daily")
    return len(due)


def weekly_reference_sync() -> int:
    ids = list(_active().filter(weekly_account_sync=True).values_list("pk", flat=True))
    for file_id in ids:
        async_task("accountant.tasks.refresh_client_file", file_id)
    return len(ids)


def build_client_file(file_id: int) -> dict[str, int]:
    client_file = ClientFile.objects.select_related("organization", "connection").get(pk=file_id)
    if client_file.status != ClientFile.Status.ACTIVE:
        return {"created": 0}
    report = services.build_entries(client_file)
    return {"created": len(report.created), "blocked": report.blocked, "failed": len(report.failed)}


def push_client_file(file_id: int, trigger: str = "button") -> dict[str, Any]:
    """Build and push a file's pending entries; the evening run records its day."""
    client_file = ClientFile.objects.select_related("organization", "connection").get(pk=file_id)
    if client_file.status != ClientFile.Status.ACTIVE:
        return {"skipped": "inactive"}
    try:
        report = services.push_pending(client_file)
    except services.AccountantError as exc:
        return {"error": str(exc)}
    if trigger == "daily":
        local = timezone.now().astimezone(ZoneInfo(client_file.organization.time_zone or "Europe/Paris"))
        ClientFile.objects.filter(pk=file_id).update(daily_pushed_on=local.date())
    return {"pushed": report.pushed, "blocked": report.blocked, "failed": report.failed, "built": report.built}


def refresh_client_file(file_id: int) -> dict[str, Any]:
    client_file = ClientFile.objects.select_related("connection").get(pk=file_id)
    try:
        report = services.refresh_reference_data(client_file)
    except services.AccountantError as exc:
        services.record_error(client_file, str(exc))
        return {"error": str(exc)}
    return {"accounts_created": report.accounts_created, "accounts_updated": report.accounts_updated}


def send_entry_push(entry_id: int) -> str:
    entry = JournalEntry.objects.select_related("client_file").get(pk=entry_id)
    push = services.push_entry(entry)
    return push.status if push is not None else "blocked"
