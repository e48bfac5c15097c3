from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _install_schedules(sender: AppConfig, **kwargs: Any) -> None:
    from qontohub.schedules import install_schedules

    counts = install_schedules()
    if kwargs.get("verbosity", 1) >= 1 and (counts["created"] or counts["updated"] or counts["deleted"]):
        print(
            "Schedules: {created} created, {updated} updated, {deleted} deleted, "
            "{unchanged} unchanged".format(**counts)
        )


class QontohubConfig(AppConfig):
    name = "qontohub"
    verbose_name = "QontoHub"

    def ready(self) -> None:
        from qontohub import checks  # noqa: F401  (registers the start-up checks)

        # Schedules are data: they are brought in line with qontohub/schedules.py after every
        # migrate, once django_q's tables exist.
        post_migrate.connect(_install_schedules, sender=self, dispatch_uid="qontohub-schedules")
