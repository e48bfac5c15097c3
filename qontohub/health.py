"""What /healthz reports: database, broker and scheduler heartbeat, each ok or down."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from qontohub.models import Heartbeat
from qontohub.tasks import SCHEDULER_HEARTBEAT


def check_database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "down"; the message says which
        return {"status": "down", "error": f"{type(exc).__name__}: {exc}"}
    return {"status": "ok", "vendor": connection.vendor}


def check_broker() -> dict[str, Any]:
    from django_q.brokers import get_broker

    try:
        broker = get_broker()
        if settings.Q_CLUSTER.get("redis"):
            broker.ping()
            kind = "redis"
        else:
            kind = "orm"
        queued = broker.queue_size()
    except Exception as exc:
        return {"status": "down", "error": f"{type(exc).__name__}: {exc}"}
    return {"status": "ok", "kind": kind, "queued": queued}


def check_scheduler() -> dict[str, Any]:
    try:
        beat = Heartbeat.objects.filter(name=SCHEDULER_HEARTBEAT).first()
    except Exception as exc:
        return {"status": "down", "error": f"{type(exc).__name__}: {exc}"}
    if beat is None:
        return {"status": "down", "error": "no heartbeat yet: is the django-q2 cluster running?"}
    age = (timezone.now() - beat.beat_at).total_seconds()
    status = "ok" if age <= settings.HEARTBEAT_MAX_AGE_SECONDS else "down"
    result: dict[str, Any] = {"status": status, "last_beat": beat.beat_at.isoformat(), "age_seconds": round(age)}
    if status == "down":
        result["error"] = (
            f"last heartbeat {round(age)} s ago (limit {settings.HEARTBEAT_MAX_AGE_SECONDS} s): "
            "the scheduler or the workers have stopped"
        )
    return result


def report() -> tuple[bool, dict[str, Any]]:
    checks = {
        "database": check_database(),
        "broker": check_broker(),
        "scheduler": check_scheduler(),
    }
    healthy = all(item["status"] == "ok" for item in checks.values())
    return healthy, {"status": "ok" if healthy else "down", "checks": checks}
