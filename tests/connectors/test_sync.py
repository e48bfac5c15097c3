"""The sync engine against the toy provider: lease, cursor, upsert, failures, resume."""

from __future__ import annotations

import gc
import json
import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from django.db import connection as db_connection
from django.db import connections
from django.utils import timezone

from connectors import sync
from connectors.base import AuthRevoked, TransientError
from connectors.models import Connection, RemoteRecord, SyncCursor, SyncEvent, SyncRun
from connectors.sync import sync_connection
from tests.connectors import toy


@pytest.fixture
def conn(org_a, monkeypatch):  # type: ignore[no-untyped-def]
    toy.install(monkeypatch)
    return toy.make_connection(org_a)


def rows() -> dict[str, dict]:
    return {r.external_id: r.raw for r in RemoteRecord.objects.all()}


def test_full_sync_reads_every_page_and_finishes_the_cursor(conn):
    toy.REMOTE.extend(toy.remote(5))
    run = sync_connection(conn.pk, trigger="schedule")
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    assert (run.read, run.created, run.updated, run.unchanged, run.failed) == (5, 5, 0, 0, 0)
    assert run.requests == 3 and run.changed == 5
    assert set(rows()) == {"r1", "r2", "r3", "r4", "r5"}
    cursor = SyncCursor.objects.get(connection=conn, stream="things")
    assert cursor.value == "2026-01-01T00:00:05Z"
    assert cursor.position == {} and cursor.last_success_at is not None
    conn.refresh_from_db()
    assert conn.last_sync_at is not None and conn.lease_owner == ""
    assert RemoteRecord.objects.filter(organization=conn.organization).count() == 5


def test_unchanged_rows_are_skipped_and_changed_ones_updated(conn):
    toy.REMOTE.extend(toy.remote(3))
    sync_connection(conn.pk, trigger="schedule", full=True)
    before = {r.external_id: r.synced_at for r in RemoteRecord.objects.all()}
    toy.REMOTE[1]["name"] = "Renamed"
    run = sync_connection(conn.pk, trigger="schedule", full=True)
    assert (run.created, run.updated, run.unchanged) == (0, 1, 2)
    after = {r.external_id: r.synced_at for r in RemoteRecord.objects.all()}
    assert after["r1"] == before["r1"] and after["r2"] > before["r2"]
    assert rows()["r2"]["name"] == "Renamed"


def test_incremental_sync_starts_from_the_cursor_value_and_full_ignores_it(conn):
    toy.REMOTE.extend(toy.remote(4))
    sync_connection(conn.pk, trigger="schedule")
    toy.REMOTE.extend(toy.remote(1, start=9))
    toy.PAGES_READ.clear()
    run = sync_connection(conn.pk, trigger="schedule")
    # From r4 (the marker is inclusive) onwards: r4 unchanged, r9 new.
    assert (run.read, run.created, run.unchanged) == (2, 1, 1)
    run = sync_connection(conn.pk, trigger="button", full=True)
    assert run.read == 5 and run.full


def test_a_record_that_cannot_be_converted_is_an_event_and_the_run_goes_on(conn):
    toy.REMOTE.extend(toy.remote(4))
    toy.REMOTE[2]["amount"] = "bad"
    run = sync_connection(conn.pk, trigger="schedule")
    assert run.outcome == SyncRun.Outcome.PARTIAL
    assert (run.read, run.created, run.failed) == (4, 3, 1)
    event = SyncEvent.objects.get(run=run)
    assert event.kind == SyncEvent.Kind.FAILED and event.external_id == "r3"
    assert "amount 'bad' is not a number" in event.reason and "full resync" in event.reason
    assert event.data["record"]["id"] == "r3"


def test_a_run_killed_after_page_n_resumes_at_n_plus_1_without_duplicate_or_gap(conn):
    toy.REMOTE.extend(toy.remote(7))
    toy.FAIL_ON_PAGE[3] = RuntimeError("worker killed")
    run = sync_connection(conn.pk, trigger="schedule")
    assert run.outcome == SyncRun.Outcome.FAILED and "worker killed" in run.error and run.traceback
    assert set(rows()) == {"r1", "r2", "r3", "r4"}
    cursor = SyncCursor.objects.get(connection=conn, stream="things")
    assert cursor.position["page"] == 2 and cursor.value == ""
    conn.refresh_from_db()
    assert conn.status == Connection.Status.ACTIVE and conn.lease_owner == ""

    toy.PAGES_READ.clear()
    run = sync_connection(conn.pk, trigger="schedule")
    assert run.outcome == SyncRun.Outcome.SUCCEEDED
    assert toy.PAGES_READ == [3, 4]
    assert (run.read, run.created, run.unchanged) == (3, 3, 0)
    assert set(rows()) == {f"r{i}" for i in range(1, 8)}
    cursor.refresh_from_db()
    # The high-water mark of the pages read before the crash survived in the position.
    assert cursor.value == "2026-01-01T00:00:07Z" and cursor.position == {}


def test_a_crash_inside_the_page_transaction_writes_neither_rows_nor_cursor(conn, monkeypatch):
    toy.REMOTE.extend(toy.remote(6))
    real_save = sync._save_page
    calls = {"n": 0}

    def save_then_die(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        real_save(*args, **kwargs)
        if calls["n"] == 2:
            raise RuntimeError("killed between the upsert and the commit")

    monkeypatch.setattr(sync, "_save_page", save_then_die)
    run = sync_connection(conn.pk, trigger="schedule")
    assert run.outcome == SyncRun.Outcome.FAILED
    assert set(rows()) == {"r1", "r2"}
    assert SyncCursor.objects.get(connection=conn, stream="things").position["page"] == 1
    monkeypatch.setattr(sync, "_save_page", real_save)
    toy.PAGES_READ.clear()
    run = sync_connection(conn.pk, trigger="schedule")
    assert toy.PAGES_READ == [2, 3, 4] and run.created == 4
    assert len(rows()) == 6


def test_a_second_sync_while_the_lease_is_held_is_skipped(conn):
    Connection.objects.filter(pk=conn.pk).update(
        lease_owner="run 99 on worker-2:77:abcdef", lease_expires_at=timezone.now() + timedelta(minutes=5)
    )
    toy.REMOTE.extend(toy.remote(2))
    run = sync_connection(conn.pk, trigger="schedule")
    assert run.outcome == SyncRun.Outcome.SKIPPED and "Another sync (run 99 on worker-2:77)" in run.error
    assert not RemoteRecord.objects.exists() and run.finished_at is not None
    # An expired lease (its worker died) is taken over.
    Connection.objects.filter(pk=conn.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert sync_connection(conn.pk, trigger="schedule").outcome == SyncRun.Outcome.SUCCEEDED


def test_a_sync_that_lost_its_lease_stops_without_writing(conn, monkeypatch):
    # Each page its own transaction: the lease is renewed (and its row locked) as a transaction
    # starts, so it can only be lost between two of them.
    monkeypatch.setattr(sync, "COMMIT_SECONDS", 0.0)
    toy.REMOTE.extend(toy.remote(4))
    real_save = sync._save_page

    def steal_then_save(connector, *args, **kwargs):  # type: ignore[no-untyped-def]
        real_save(connector, *args, **kwargs)
        Connection.objects.filter(pk=conn.pk).update(lease_owner="someone else")

    monkeypatch.setattr(sync, "_save_page", steal_then_save)
    run = sync_connection(conn.pk, trigger="schedule")
    # The first page is written under the lease; the second finds it gone and is rolled back.
    assert run.outcome == SyncRun.Outcome.FAILED and "lost its lease" in run.error
    assert set(rows()) == {"r1", "r2"}
    assert Connection.objects.get(pk=conn.pk).lease_owner == "someone else"


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (Connection.Status.DISCONNECTED, "disconnected"),
        (Connection.Status.NEEDS_ATTENTION, "needs attention"),
        (Connection.Status.PENDING, "not active yet"),
    ],
)
def test_connections_that_are_not_active_are_skipped_with_a_reason(conn, status, words):
    Connection.objects.filter(pk=conn.pk).update(status=status, last_error="token revoked")
    run = sync_connection(conn.pk, trigger="schedule")
    assert run.outcome == SyncRun.Outcome.SKIPPED and words in run.error
    assert toy.PAGES_READ == []


def test_a_permanent_error_flips_the_connection_and_fails_the_run(conn):
    toy.REMOTE.extend(toy.remote(4))
    toy.FAIL_ON_PAGE[2] = AuthRevoked("the API key was regenerated", status=401)
    run = sync_connection(conn.pk, trigger="schedule")
    assert run.outcome == SyncRun.Outcome.FAILED
    assert "AuthRevoked while reading things" in run.error and "needing attention" in run.error
    assert "AuthRevoked" in run.traceback
    conn.refresh_from_db()
    assert conn.status == Connection.Status.NEEDS_ATTENTION
    assert "the API key was regenerated" in conn.last_error and conn.lease_owner == ""


def test_a_transient_error_fails_the_run_but_leaves_the_connection_active(conn):
    toy.REMOTE.extend(toy.remote(4))
    toy.FAIL_ON_PAGE[1] = TransientError("provider error: Service Unavailable", status=503)
    run = sync_connection(conn.pk, trigger="schedule")
    assert run.outcome == SyncRun.Outcome.FAILED and "next sync tries again" in run.error
    conn.refresh_from_db()
    assert conn.status == Connection.Status.ACTIVE and "503" in conn.last_error
    assert sync_connection(conn.pk, trigger="schedule").outcome == SyncRun.Outcome.SUCCEEDED
    conn.refresh_from_db()
    assert conn.last_error == ""


def test_unknown_streams_and_triggers_are_refused_before_any_bookkeeping(conn):
    with pytest.raises(ValueError, match="no stream 'nope'"):
        sync_connection(conn.pk, trigger="schedule", streams=["nope"])
    with pytest.raises(ValueError, match="unknown trigger"):
        sync_connection(conn.pk, trigger="cron")
    assert not SyncRun.objects.exists()


def test_progress_is_saved_with_each_commit(conn, monkeypatch):
    monkeypatch.setattr(sync, "COMMIT_SECONDS", 0.0)  # a commit after every page
    toy.REMOTE.extend(toy.remote(6))
    seen: list[int] = []
    real_save = sync._save_page

    def watch(connector, stream, model, run, page, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(SyncRun.objects.get(pk=run.pk).read)
        real_save(connector, stream, model, run, page, **kwargs)

    monkeypatch.setattr(sync, "_save_page", watch)
    sync_connection(conn.pk, trigger="schedule")
    # What another process (the admin) reads before each page: the counts of the pages committed.
    assert seen[:3] == [0, 2, 4]


def test_a_batch_of_pages_renews_the_lease_and_saves_the_cursor_once(conn, monkeypatch):
    from django.test.utils import CaptureQueriesContext

    monkeypatch.setattr(sync, "COMMIT_SECONDS", 3600.0)  # every page in one transaction
    toy.REMOTE.extend(toy.remote(6))
    with CaptureQueriesContext(db_connection) as queries:
        run = sync_connection(conn.pk, trigger="schedule")
    assert run.outcome == SyncRun.Outcome.SUCCEEDED and run.created == 6
    statements = [q["sql"] for q in queries]
    # The lease: renewed as the batch starts and once more as the stream ends.
    assert sum('SET "lease_expires_at"' in sql for sql in statements) == 2
    # The cursor's position after the last page, with the run's counts, just before the commit.
    assert sum(sql.startswith('UPDATE "connectors_synccursor" SET "position"') for sql in statements) == 1
    assert sum(sql.startswith('UPDATE "connectors_syncrun" SET "read"') for sql in statements) == 1
    assert SyncRun.objects.get(pk=run.pk).read == 6


def test_upsert_keeps_one_row_per_natural_key_per_connection(conn, org_a):
    other = toy.make_connection(org_a, external_account_id="toy-account-2")
    toy.REMOTE.extend(toy.remote(2))
    sync_connection(conn.pk, trigger="schedule")
    sync_connection(other.pk, trigger="schedule")
    sync_connection(conn.pk, trigger="schedule", full=True)
    assert RemoteRecord.objects.count() == 4
    assert RemoteRecord.objects.filter(connection=conn).count() == 2


@pytest.mark.parametrize("variables", [None, 30])
def test_upsert_rows_in_several_statements_inserts_and_updates_every_row(conn, monkeypatch, variables):
    if variables is not None:  # a driver allowing few parameters: many small multi-row statements
        monkeypatch.setattr(sync._Table, "_max_variables", lambda self: variables)

    def batch(label: str, ids: range) -> list[dict]:
        return [
            {"organization_id": conn.organization_id, "connection_id": conn.pk, "stream": "toy",
             "external_id": str(n), "raw": {"label": f"{label} {n}", "n": n}, "fingerprint": label}
            for n in ids
        ]

    sync.upsert_rows(RemoteRecord, batch("first", range(250)), update_fields=["raw", "fingerprint"])
    sync.upsert_rows(RemoteRecord, batch("second", range(200, 300)), update_fields=["raw", "fingerprint"])
    stored = {r.external_id: r for r in RemoteRecord.objects.filter(connection=conn)}
    assert len(stored) == 300
    assert stored["0"].raw == {"label": "first 0", "n": 0} and stored["0"].fingerprint == "first"
    assert stored["220"].raw == {"label": "second 220", "n": 220} and stored["299"].fingerprint == "second"


def test_fingerprint_is_canonical():
    a = toy.Row(external_id="1", fields={"x": 1}, raw={"b": 1, "a": [1, 2]})
    b = toy.Row(external_id="1", fields={"x": 1}, raw={"a": [1, 2], "b": 1})
    assert sync.fingerprint(a) == sync.fingerprint(b)
    assert sync.later("2026-01-01T00:00:00Z", "2026-01-01T01:00:00+02:00") == "2026-01-01T00:00:00Z"
    assert sync.later(None, "x") == "x"
    # Alike UTC texts compare as text; anything else as instants.
    assert sync.later("2026-01-02T03:04:05.120Z", "2026-01-02T03:04:05.099Z") == "2026-01-02T03:04:05.120Z"
    assert sync.later("2026-01-02T03:04:05.099Z", "2026-01-02T03:04:05.120Z") == "2026-01-02T03:04:05.120Z"
    assert sync.later("2026-01-02T03:04:05.9Z", "2026-01-02T03:04:05.10Z") == "2026-01-02T03:04:05.9Z"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_for_the_lease_get_one_run_each_way(org_a, monkeypatch):
    """Two threads (two connections to PostgreSQL) start a sync at once: one runs, one skips."""
    import threading

    from django.db import connections

    toy.install(monkeypatch)
    conn = toy.make_connection(org_a)
    toy.REMOTE.extend(toy.remote(6))
    barrier = threading.Barrier(2)
    real_claim = sync._claim_lease
    outcomes: list[str] = []

    def claim(connection, owner):  # type: ignore[no-untyped-def]
        barrier.wait(timeout=10)
        return real_claim(connection, owner)

    monkeypatch.setattr(sync, "_claim_lease", claim)

    def worker() -> None:
        try:
            outcomes.append(sync_connection(conn.pk, trigger="schedule").outcome)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == [SyncRun.Outcome.SKIPPED, SyncRun.Outcome.SUCCEEDED]
    assert RemoteRecord.objects.count() == 6
    assert db_connection.vendor == "postgresql"


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [1, 2.5, -0.0, "é\u2028\x1f\"\\/"], "n": None, "t": True},
        {"amount": Decimal("1.10"), "at": datetime(2026, 1, 2, 3, 4, 5, 120, tzinfo=UTC), "day": date(2026, 1, 2)},
        {"at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=ZoneInfo("Europe/Paris")), "naive": datetime(2026, 1, 2)},
        {"big": 2**70, "nested": {"z": [{"y": 1, "x": 2}]}},
        {1: "int keys", 2: "are the standard library's job"},
        {"lone": "\ud800"},
    ],
)
def test_canonical_json_is_what_the_standard_library_writes(value):
    # Fingerprints stored by an earlier version (json.dumps) stay valid: no mass rewrite on upgrade.
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=sync._canonical_default)
    assert sync.canonical_json(value) == expected


def _connector(refresh_hook=None):  # type: ignore[no-untyped-def]
    return SimpleNamespace(http=SimpleNamespace(refresh_hook=refresh_hook))


def test_pipelined_pages_come_in_order_and_stop_at_the_last():
    def step(page: int) -> tuple[str, int | None]:
        return f"page {page}", (page + 1 if page < 7 else None)

    assert list(sync.pipelined(_connector(), 1, step, depth=2)) == [f"page {n}" for n in range(1, 8)]
    converted = list(sync.pipelined(_connector(), 1, step, depth=2, then=str.upper))
    assert converted == [f"PAGE {n}" for n in range(1, 8)]


def test_a_conversion_error_surfaces_after_the_pages_before_it():
    def step(page: int) -> tuple[int, int | None]:
        return page, (page + 1 if page < 5 else None)

    def convert(page: int) -> int:
        if page == 3:
            raise ValueError("page 3 has no transactions list")
        return page * 10

    got: list[int] = []
    with pytest.raises(ValueError, match="page 3"):
        for item in sync.pipelined(_connector(), 1, step, then=convert):
            got.append(item)
    assert got == [10, 20]


def test_a_pipelined_error_surfaces_in_the_consumer_after_the_pages_before_it():
    def step(page: int) -> tuple[int, int]:
        if page == 3:
            raise TimeoutError("the provider did not answer page 3")
        return page, page + 1

    got: list[int] = []
    with pytest.raises(TimeoutError, match="page 3"):
        for item in sync.pipelined(_connector(), 1, step):
            got.append(item)
    assert got == [1, 2]


@pytest.mark.parametrize("then", [None, str], ids=["fetch-only", "fetch-and-convert"])
def test_a_pipelined_page_that_needs_a_token_refresh_is_fetched_in_the_callers_thread(then):
    refreshed_in: list[str] = []
    token = {"expired_at_page": 2}

    def refresh() -> bool:
        refreshed_in.append(threading.current_thread().name)
        token.clear()
        return True

    connector = _connector(refresh)

    def step(page: int) -> tuple[int, int | None]:
        if token.get("expired_at_page") == page:
            connector.http.refresh_hook()  # what HttpClient does on a 401
        return page, (page + 1 if page < 4 else None)

    expected = [1, 2, 3, 4] if then is None else ["1", "2", "3", "4"]
    assert list(sync.pipelined(connector, 1, step, then=then)) == expected
    assert refreshed_in == [threading.current_thread().name]


def test_closing_a_pipeline_early_stops_its_thread():
    started: list[int] = []

    def step(page: int) -> tuple[int, int]:
        started.append(page)
        return page, page + 1  # endless

    pages = sync.pipelined(_connector(), 1, step, depth=2)
    assert next(pages) == 1
    pages.close()
    count = len(started)
    # Closing waited for the pipeline's threads: none is left to request another page.
    assert not [t for t in threading.enumerate() if t.name.startswith("sync-pipeline")]
    assert len(started) == count and count <= 5


def test_pipelined_pages_waiting_for_a_slow_consumer_come_merged_in_order():
    fetching = threading.Condition()
    asked = [0]  # the last page the fetcher asked for

    def step(page: int) -> tuple[list[int], int | None]:
        with fetching:
            asked[0] = page
            fetching.notify_all()
        return [page], (page + 1 if page < 20 else None)

    got: list[list[int]] = []
    for item in sync.pipelined(_connector(), 1, step, depth=4, merge=lambda items: [n for i in items for n in i]):
        got.append(item)
        # A slow writer: it asks again once the fetcher is a full queue (4 pages) ahead of it.
        ahead = min(20, item[-1] + 5)
        with fetching:
            assert fetching.wait_for(lambda ahead=ahead: asked[0] >= ahead, timeout=10)
    assert [n for item in got for n in item] == list(range(1, 21))  # nothing lost, nothing twice, in order
    assert len(got) < 20 and max(len(item) for item in got) <= 4


def test_pipelined_merge_stops_at_an_error_and_hands_over_the_pages_before_it():
    def step(page: int) -> tuple[list[int], int]:
        if page == 4:
            raise TimeoutError("the provider did not answer page 4")
        return [page], page + 1

    got: list[int] = []
    pages = sync.pipelined(_connector(), 1, step, depth=8, merge=lambda items: [n for i in items for n in i])
    got.extend(next(pages))
    # The fetcher ends once it has queued the error: then the pages before it and the error wait.
    for thread in threading.enumerate():
        if thread.name == "sync-pipeline":
            thread.join(timeout=10)
    with pytest.raises(TimeoutError, match="page 4"):
        for item in pages:
            got.extend(item)
    assert got == [1, 2, 3]


@pytest.mark.django_db
def test_background_checkpoints_keep_the_wal_small_and_restore_the_setting(tmp_path, monkeypatch):
    from django.db.backends.sqlite3.base import DatabaseWrapper

    db = DatabaseWrapper({**connections["default"].settings_dict, "ENGINE": "django.db.backends.sqlite3",
                          "NAME": str(tmp_path / "hub.sqlite3"), "OPTIONS": {}}, alias="checkpoint-test")
    db.ensure_connection()
    raw = db.connection
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, payload TEXT)")
    raw.commit()
    wal = tmp_path / "hub.sqlite3-wal"
    monkeypatch.setattr(sync, "CHECKPOINT_EVERY", 0.05)  # this test writes 16 MB in about a second
    try:
        with sync.background_checkpoints(db):
            assert raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # not in the writer's commits
            for _ in range(40):  # a sync's pace: a batch of pages per transaction
                raw.execute("BEGIN")
                raw.executemany("INSERT INTO rows (payload) VALUES (?)", [("x" * 2000,)] * 200)
                raw.execute("COMMIT")
                time.sleep(0.02)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                busy, log, copied = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if log == copied:
                    break
            # The other connection copied the log back while the writer went on: the file holds
            # every row, and the log was reused instead of growing to the size of all writes.
        assert raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        assert raw.execute("SELECT count(*) FROM rows").fetchone()[0] == 8000
        assert wal.stat().st_size < 16 * 1024 * 1024 / 2  # 16 MB were written through it
    finally:
        db.close()


@pytest.mark.django_db
def test_background_checkpoints_do_nothing_on_an_in_memory_database_or_postgresql():
    db = connections["default"]  # the test database: SQLite in memory, or PostgreSQL
    with sync.background_checkpoints(db):
        assert not any(t.name == "sync-checkpoint" for t in threading.enumerate())


def test_fewer_collections_during_syncs_and_the_thresholds_restored_after():
    before = gc.get_threshold()
    with sync.fewer_collections(threshold=12_345):
        assert gc.get_threshold()[0] == max(12_345, before[0])
        with sync.fewer_collections(threshold=12_345):  # a second sync in another thread
            pass
        assert gc.get_threshold()[0] == max(12_345, before[0])  # still one running
    assert gc.get_threshold() == before


def test_quicker_thread_switches_during_syncs_and_the_interval_restored_after(conn, monkeypatch):
    import sys

    from django.conf import settings

    before = sys.getswitchinterval()
    assert 0 < settings.SYNC_SWITCH_INTERVAL < before
    with sync.quicker_thread_switches(interval=0):  # switched off
        assert sys.getswitchinterval() == before
    with sync.quicker_thread_switches():
        assert sys.getswitchinterval() == pytest.approx(min(settings.SYNC_SWITCH_INTERVAL, before))
        with sync.quicker_thread_switches():  # a second sync in another thread
            pass
        assert sys.getswitchinterval() == pytest.approx(min(settings.SYNC_SWITCH_INTERVAL, before))  # still one running
    assert sys.getswitchinterval() == before
    # A sync runs with it, and gives the process its interval back however it ends.
    seen: list[float] = []
    real_save = sync._save_page

    def watch(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(sys.getswitchinterval())
        real_save(*args, **kwargs)

    monkeypatch.setattr(sync, "_save_page", watch)
    toy.REMOTE.extend(toy.remote(3))
    assert sync_connection(conn.pk, trigger="schedule").outcome == SyncRun.Outcome.SUCCEEDED
    assert seen and all(value == pytest.approx(min(settings.SYNC_SWITCH_INTERVAL, before)) for value in seen)
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 2, 3, 4, 5, 120_000, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no fraction written
        datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=UTC),
        datetime(999, 1, 1, tzinfo=UTC),
        datetime(2026, 6, 1, 12, tzinfo=ZoneInfo("UTC")),
    ],
)
def test_sqlite_utc_text_is_what_djangos_sqlite_backend_stores(moment):
    from django.db.backends.sqlite3.operations import DatabaseOperations

    class UTCConnection(SimpleNamespace):
        timezone = UTC

    expected = DatabaseOperations(UTCConnection()).adapt_datetimefield_value(moment)
    assert sync.sqlite_utc_text(moment) == expected


def test_a_mapping_that_sets_an_engine_column_fails_its_record_every_time():
    class Sloppy:
        name = "sloppy"

        def to_row(self, connector, record):  # type: ignore[no-untyped-def]
            fields = {"label": record["label"]}
            if record.get("sloppy"):
                fields["connection_id"] = 99  # the engine's column, not the mapping's
            return toy.Row(external_id=record["id"], fields=fields, raw=record)

    records = [{"id": "1", "label": "a"}, {"id": "2", "label": "b", "sloppy": True}, {"id": "3", "label": "c", "sloppy": True}]
    prepared = sync.prepare_records(None, Sloppy(), records)
    errors = [error for _, _, _, _, error in prepared]
    assert errors[0] is None
    # Checked per record, not once per field list: the same sloppy fields fail again.
    assert all(isinstance(e, ValueError) and "engine columns ['connection_id']" in str(e) for e in errors[1:])
