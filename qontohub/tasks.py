"""Core django-q2 tasks. Tasks are plain functions taking ids, safe to run twice."""

from __future__ import annotations

from django.utils import timezone

from qontohub.models import Heartbeat

SCHEDULER_HEARTBEAT = "scheduler"


def heartbeat(name: str = SCHEDULER_HEARTBEAT) -> str:
    """Prove that the scheduler enqueued, the broker delivered and a worker ran a task."""
    now = timezone.now()
    Heartbeat.objects.update_or_create(name=name, defaults={"beat_at": now})
    return now.isoformat()
