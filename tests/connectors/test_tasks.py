"""Scheduled connector jobs: proactive token refresh, history pruning, after-sync hooks."""

from datetime import timedelta

import pytest
from django.utils import timezone

from connectors import tasks
from connectors.models import Connection, SyncEvent, SyncRun
from tests.connectors.oauth_support import SMALL_QONTO, connect_qonto, token_grants

pytestmark = pytest.mark.django_db


def test_tokens_about_to_expire_are_refreshed_once(sandbox_for, owner_a, org_a):
    api = sandbox_for("qonto", **SMALL_QONTO)
    connection = connect_qonto(org_a, owner_a)
    old_access = connection.credentials["access_token"]
    assert tasks.refresh_due_tokens() == 0  # a fresh 1 h token is not due

    Connection.objects.filter(pk=connection.pk).update(token_expires_at=timezone.now() + timedelta(minutes=3))
    assert tasks.refresh_due_tokens() == 1
    connection.refresh_from_db()
    assert connection.credentials["access_token"] != old_access
    assert token_grants(api, "refresh_token") == 1
    assert tasks.refresh_due_tokens() == 0  # now good for another hour


def test_a_revoked_grant_found_by_the_refresh_job_flags_the_connection(sandbox_for, owner_a, org_a):
    api = sandbox_for("qonto", **SMALL_QONTO)
    connection = connect_qonto(org_a, owner_a)
    api.revoke_all_tokens()
    Connection.objects.filter(pk=connection.pk).update(token_expires_at=timezone.now() + timedelta(minutes=1))
    assert tasks.refresh_due_tokens() == 0
    connection.refresh_from_db()
    assert connection.status == Connection.Status.NEEDS_ATTENTION
    assert connection.last_error


def test_old_history_is_pruned_and_recent_history_kept(org_a):
    connection = Connection.objects.create(organization=org_a, provider="qonto", status="active")
    old = SyncRun.objects.create(organization=org_a, connection=connection, trigger="schedule", outcome="succeeded")
    SyncRun.objects.filter(pk=old.pk).update(started_at=timezone.now() - timedelta(days=200))
    SyncEvent.objects.create(
        organization=org_a, run=old, connection=connection, kind="failed", reason="old", created_at=timezone.now() - timedelta(days=200)
    )
    recent = SyncRun.objects.create(organization=org_a, connection=connection, trigger="schedule", outcome="succeeded")
    counts = tasks.prune_history(days=90)
    assert counts["runs"] == 1 and counts["events"] == 1
    assert list(SyncRun.objects.all()) == [recent]


def test_after_sync_tasks_run_only_when_records_changed(monkeypatch, settings, org_a):
    calls = []
    settings.AFTER_SYNC_TASKS = ["tests.connectors.test_tasks.record_call"]
    monkeypatch.setattr("tests.connectors.test_tasks.CALLS", calls)
    connection = Connection.objects.create(organization=org_a, provider="qonto", status="active")

    def fake_sync(connection_id, trigger, full):
        return SyncRun(pk=1, organization=org_a, connection=connection, outcome="succeeded", created=changed)

    monkeypatch.setattr(tasks, "sync_connection", fake_sync)
    changed = 0
    tasks.sync_connection_task(connection.pk)
    assert calls == []
    changed = 3
    tasks.sync_connection_task(connection.pk)
    assert calls == [(connection.pk, 3)]


CALLS: list = []


def record_call(connection_id, changed):
    CALLS.append((connection_id, changed))
