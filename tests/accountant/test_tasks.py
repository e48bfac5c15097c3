"""accountant.tasks: the hooks and schedules fan out per due file and do what their name says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.utils import timezone

from accountant import services, tasks
from accountant.models import ClientFile, JournalEntry
from connectors.models import Push
from qontohub.schedules import declared
from tests.accountant.support import active_file, open_day, qonto_connection, supplier_invoice


def test_schedules_are_declared():
    names = {d.name: d for d in declared()}
    assert names["accountant-realtime"].func == "accountant.tasks.realtime_tick"
    assert names["accountant-daily-push"].func == "accountant.tasks.daily_tick"
    assert names["accountant-weekly-accounts"].func == "accountant.tasks.weekly_reference_sync"


def test_a_qonto_sync_makes_a_realtime_file_push_at_once(api, org_a, accountant, settings):
    assert "accountant.tasks.after_sync" in settings.AFTER_SYNC_TASKS
    client_file = active_file(org_a, accountant, ClientFile.Frequency.REALTIME)
    supplier_invoice(org_a, open_day(api, client_file))
    # Without a reachable Qonto attachment the entry keeps its reference and is pushed without PDF.
    assert tasks.after_sync(qonto_connection(org_a).pk, 1) == 1
    entry = JournalEntry.objects.get()
    assert entry.status == JournalEntry.Status.PUSHED
    assert len(api.entries(int(client_file.remote_company_id))) == 1


def test_after_sync_ignores_other_files(api, org_a, accountant):
    client_file = active_file(org_a, accountant, ClientFile.Frequency.DAILY)
    supplier_invoice(org_a, open_day(api, client_file))
    assert tasks.after_sync(qonto_connection(org_a).pk, 1) == 0
    assert not JournalEntry.objects.exists()


def test_daily_due_follows_the_organisations_evening_once_a_day(db, org_a):
    client_file = ClientFile(organization=org_a, firm=org_a.firm)
    winter = datetime(2026, 1, 15, 18, 59, tzinfo=UTC)  # 19:59 in Paris
    assert not tasks.daily_due(client_file, winter)
    assert tasks.daily_due(client_file, winter + timedelta(minutes=1))
    client_file.daily_pushed_on = (winter + timedelta(minutes=1)).date()
    assert not tasks.daily_due(client_file, winter + timedelta(hours=2))
    assert tasks.daily_due(client_file, winter + timedelta(days=1, hours=1))


def test_weekly_sync_refreshes_files_that_want_it(api, org_a, accountant):
    client_file = active_file(org_a, accountant)
    api.add_ledger_account(int(client_file.remote_company_id), "401WEEKLY", "Fournisseur de la semaine")
    ClientFile.objects.filter(pk=client_file.pk).update(weekly_account_sync=False)
    assert tasks.weekly_reference_sync() == 0
    ClientFile.objects.filter(pk=client_file.pk).update(weekly_account_sync=True)
    assert tasks.weekly_reference_sync() == 1
    assert client_file.accounts.filter(number="401WEEKLY").exists()


def test_realtime_tick_settles_a_push_the_outbox_retried(api, org_a, accountant):
    client_file = active_file(org_a, accountant)
    supplier_invoice(org_a, open_day(api, client_file))
    entry = services.build_entries(client_file).created[0]
    api.inject_fault(503, times=1, method="POST",
                     path_prefix=f"/api/external/firm/v1/companies/{client_file.remote_company_id}/ledger_entries")
    push = services.push_entry(entry)
    assert push.status == Push.Status.FAILED
    # The outbox's own drain retries it later…
    from connectors.outbox import send_push

    Push.objects.filter(pk=push.pk).update(next_attempt_at=timezone.now())
    assert send_push(push.pk).status == Push.Status.DONE
    entry.refresh_from_db()
    assert entry.status == JournalEntry.Status.VALIDATED
    # …and the next tick copies the outcome onto the entry and the file.
    tasks.realtime_tick()
    entry.refresh_from_db()
    client_file.refresh_from_db()
    assert entry.status == JournalEntry.Status.PUSHED and client_file.last_error == ""
