"""Every django-q2 schedule of the hub, declared once, as data.

``install_schedules()`` runs after every ``migrate`` (see ``qontohub.apps``): it creates or
updates each schedule by name and deletes any schedule of ours (name starting with ``PREFIX``)
that is no longer declared here. Running it twice changes nothing. Schedules only fan out: a
scheduled job enqueues one task per due connection or file, so a slow provider never holds up
the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PREFIX = "qontohub:"


@dataclass(frozen=True)
class Declared:
    name: str
    func: str
    schedule_type: str  # one of the type codes below
    minutes: int | None = None
    cron: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return PREFIX + self.name


# django_q.models.Schedule's type codes, spelled out so this module imports nothing at load.
MINUTES, HOURLY, DAILY, WEEKLY, CRON = "I", "H", "D", "W", "C"

SCHEDULES: list[Declared] = [
    Declared("heartbeat", "qontohub.tasks.heartbeat", MINUTES, minutes=1),
    Declared("qonto-sync", "connectors.tasks.sync_due_connections", MINUTES, minutes=15, kwargs={"provider": "qonto"}),
    Declared("outbox-drain", "connectors.tasks.drain_outbox", MINUTES, minutes=1),
    Declared("token-refresh", "connectors.tasks.refresh_due_tokens", MINUTES, minutes=5),
    Declared("history-prune", "connectors.tasks.prune_history", DAILY),
    Declared("accountant-realtime", "accountant.tasks.realtime_tick", MINUTES, minutes=5),
    Declared("accountant-daily-push", "accountant.tasks.daily_tick", HOURLY),
    Declared("accountant-weekly-accounts", "accountant.tasks.weekly_reference_sync", WEEKLY),
    # QuickBooks Online is polled every hour, 24 syncs a day (issue 5); its flow runs after each.
    Declared("quickbooks-sync", "connectors.tasks.sync_due_connections", HOURLY, kwargs={"provider": "quickbooks"}),
    # Tax advisers' document pull (issue 6): paid documents of the last open year, PDFs, matches.
    Declared("tax-documents-pull", "reconciliation.tasks.pull_tax_documents", DAILY),
]


def declared() -> list[Declared]:
    return list(SCHEDULES)


def install_schedules(verbosity: int = 0) -> dict[str, int]:
    """Upsert every declared schedule by name; delete ours that are no longer declared."""
    from django.utils import timezone
    from django_q.models import Schedule

    counts = {"created": 0, "updated": 0, "unchanged": 0, "deleted": 0}
    wanted = {spec.full_name: spec for spec in declared()}
    for name, spec in wanted.items():
        values = {
            "func": spec.func,
            "schedule_type": spec.schedule_type,
            "minutes": spec.minutes,
            "cron": spec.cron,
            # django-q2 stores kwargs as the text inside ``dict(...)``.
            "kwargs": ", ".join(f"{k}={v!r}" for k, v in sorted(spec.kwargs.items())) or None,
            "repeats": -1,
        }
        existing = Schedule.objects.filter(name=name).first()
        if existing is None:
            Schedule.objects.create(name=name, next_run=timezone.now(), **values)
            counts["created"] += 1
        elif any(getattr(existing, key) != value for key, value in values.items()):
            for key, value in values.items():
                setattr(existing, key, value)
            existing.save()
            counts["updated"] += 1
        else:
            counts["unchanged"] += 1
    stale = Schedule.objects.filter(name__startswith=PREFIX).exclude(name__in=wanted)
    counts["deleted"] = stale.count()
    stale.delete()
    return counts
