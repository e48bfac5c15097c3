"""Schedules are data: installed by name after migrate, idempotent, removed when undeclared."""

import pytest
from django_q.models import Schedule

from qontohub import schedules

pytestmark = pytest.mark.django_db


def test_migrate_installed_every_declared_schedule():
    names = set(Schedule.objects.filter(name__startswith=schedules.PREFIX).values_list("name", flat=True))
    assert names == {spec.full_name for spec in schedules.declared()}
    beat = Schedule.objects.get(name="qontohub:heartbeat")
    assert beat.func == "qontohub.tasks.heartbeat"
    assert beat.schedule_type == Schedule.MINUTES and beat.minutes == 1


def test_installing_twice_changes_nothing():
    before = list(Schedule.objects.order_by("name").values())
    counts = schedules.install_schedules()
    assert counts["created"] == counts["updated"] == counts["deleted"] == 0
    assert list(Schedule.objects.order_by("name").values()) == before


def test_a_removed_schedule_disappears_and_a_changed_one_is_updated(monkeypatch):
    Schedule.objects.create(name="qontohub:retired-job", func="qontohub.tasks.heartbeat")
    Schedule.objects.create(name="someone-elses-job", func="qontohub.tasks.heartbeat")
    Schedule.objects.filter(name="qontohub:heartbeat").update(minutes=5)
    counts = schedules.install_schedules()
    assert counts["deleted"] == 1 and counts["updated"] == 1
    assert not Schedule.objects.filter(name="qontohub:retired-job").exists()
    assert Schedule.objects.filter(name="someone-elses-job").exists()
    assert Schedule.objects.get(name="qontohub:heartbeat").minutes == 1


def test_cluster_settings_never_run_a_task_twice_and_never_catch_up():
    from django.conf import settings

    assert settings.Q_CLUSTER["timeout"] < settings.Q_CLUSTER["retry"]
    assert settings.Q_CLUSTER["catch_up"] is False
