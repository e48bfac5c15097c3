"""The sync engine's speed-ups kept honest: reading ahead, converting in the pipeline's threads,
the running-balance check of a first sync done from memory, and pages committed in batches."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection as db_connection
from django.utils import timezone

from connectors import sync
from connectors.models import Attachment, BankTransaction, SyncEvent, SyncRun
from connectors.qonto import streams as qonto_streams
from connectors.sync import sync_connection
from tests.connectors.qonto.test_connector import SMALL, api_key_connection


@pytest.fixture
def api(sandbox_for):  # type: ignore[no-untyped-def]
    return sandbox_for("qonto", 7, **SMALL)


@pytest.fixture
def conn(api, org_a):  # type: ignore[no-untyped-def]
    return api_key_connection(api, org_a)


def test_transactions_are_converted_ahead_and_their_receipts_saved(api, conn):
    seen: list[str] = []
    real = qonto_streams.prepare_records

    def watch(connector, stream, records):  # type: ignore[no-untyped-def]
        seen.append(threading.current_thread().name)
        return real(connector, stream, records)

    qonto_streams.prepare_records = watch
    try:
        run = sync_connection(conn.pk, trigger="connect")
    finally:
        qonto_streams.prepare_records = real
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    # Pages are read and converted by the pipeline thread, never in the sync's own thread.
    assert seen and all(name.startswith("sync-pipeline") for name in seen)
    assert BankTransaction.objects.filter(connection=conn).count() == api.count_transactions()
    embedded = {str(a) for account in api.accounts for t in api.transactions_of(account) for a in t["attachment_ids"]}
    stored = Attachment.objects.filter(connection=conn, stream="attachments")
    assert set(stored.values_list("external_id", flat=True)) == embedded
    assert not any("X-Amz" in str(raw) for raw in stored.values_list("raw", flat=True))
    assert not any(
        "X-Amz" in str(raw) for raw in BankTransaction.objects.filter(connection=conn).values_list("raw", flat=True)
    )


def test_a_gap_in_a_first_sync_is_flagged_without_reading_the_account_back(api, conn, monkeypatch):
    history = api.transactions_of(status="completed")
    lost, after = history[-6], history[-5]
    real = qonto_streams.prepare_records

    def lose_one(connector, stream, records):  # type: ignore[no-untyped-def]
        return real(connector, stream, [r for r in records if r.get("id") != lost["id"]])

    monkeypatch.setattr(qonto_streams, "prepare_records", lose_one)
    run = sync_connection(conn.pk, trigger="connect")
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    warning = SyncEvent.objects.get(run=run, kind=SyncEvent.Kind.WARNING)
    assert warning.external_id == after["id"] and history[-7]["id"] in warning.reason
    missing = Decimal(lost["amount_cents"] * (1 if lost["side"] == "credit" else -1)) / 100
    assert Decimal(warning.data["difference"]) == missing
    # The same history read back from the database (a full resync) finds the same gap.
    monkeypatch.setattr(qonto_streams, "prepare_records", real)
    again = sync_connection(conn.pk, trigger="button", full=True)
    assert again.created == 1  # the lost line, now read
    assert not SyncEvent.objects.filter(run=again, kind=SyncEvent.Kind.WARNING).exists()


def test_pages_before_a_failure_stay_saved_when_pages_are_committed_together(api, conn, monkeypatch):
    monkeypatch.setattr(sync, "COMMIT_SECONDS", 3600.0)  # one batch for the whole stream
    sync_connection(conn.pk, trigger="schedule", streams=["bank_accounts"])
    main = api.main_account_id
    real_save = sync._save_page

    def die_past_page_two(connector, stream, model, run, page, **kwargs):  # type: ignore[no-untyped-def]
        # Pages waiting for the writer are saved together: the first save reaching beyond page 2
        # writes its rows, then the worker dies before its cursor.
        if page.position.get("account") == main and page.position["page"] > 2:
            real_save(connector, stream, model, run, page, **kwargs)
            raise RuntimeError("killed between the rows and the cursor")
        real_save(connector, stream, model, run, page, **kwargs)

    monkeypatch.setattr(sync, "_save_page", die_past_page_two)
    first = sync_connection(conn.pk, trigger="schedule", streams=["transactions"])
    assert first.outcome == SyncRun.Outcome.FAILED
    position = conn.cursors.get(stream="transactions").position
    saved_pages = position["page"] if position.get("account") == main else 0
    # The pages saved before the failure stay (with their cursor); the failed save's rows do not.
    assert saved_pages <= 2
    assert BankTransaction.objects.filter(connection=conn, bank_account_external_id=main).count() == 100 * saved_pages
    monkeypatch.setattr(sync, "_save_page", real_save)
    second = sync_connection(conn.pk, trigger="schedule", streams=["transactions"])
    assert second.outcome == SyncRun.Outcome.SUCCEEDED and second.unchanged == 0
    assert BankTransaction.objects.filter(connection=conn).count() == api.count_transactions()


def test_rows_written_without_model_instances_read_back_as_the_orm_wrote_them(api, conn):
    run = sync_connection(conn.pk, trigger="connect")
    assert run.outcome == SyncRun.Outcome.SUCCEEDED
    record = api.transactions_of(status="completed")[3]
    row = BankTransaction.objects.get(connection=conn, external_id=record["id"])
    sign = -1 if record["side"] == "debit" else 1
    assert row.amount == sign * Decimal(record["amount_cents"]) / 100
    assert row.settled_at is not None and row.settled_at.utcoffset().total_seconds() == 0
    assert qonto_streams.parse_timestamp(record["settled_at"], "settled_at") == row.settled_at
    # The list embeds the receipts (includes[]=attachments); the single record does not.
    assert {k: v for k, v in row.raw.items() if k != "attachments"} == record
    assert row.attachment_ids == [str(a) for a in record.get("attachment_ids") or []]
    assert BankTransaction.objects.filter(connection=conn, settled_at__gte=row.settled_at).exists()


def test_upsert_rows_fills_defaults_and_keeps_the_last_row_of_a_key(conn):
    rows: list[dict[str, Any]] = [
        {"organization_id": conn.organization_id, "connection_id": conn.pk, "stream": "attachments",
         "external_id": "a1", "raw": {"v": 1}, "fingerprint": "", "file_name": "first.pdf"},
        {"organization_id": conn.organization_id, "connection_id": conn.pk, "stream": "attachments",
         "external_id": "a1", "raw": {"v": 2}, "fingerprint": "", "file_name": "second.pdf"},
    ]
    sync.upsert_rows(Attachment, rows, update_fields=["raw", "file_name"])
    stored = Attachment.objects.get(connection=conn, external_id="a1")
    assert (stored.file_name, stored.raw, stored.size, stored.content_type) == ("second.pdf", {"v": 2}, None, "")
    assert stored.synced_at is not None


def test_column_values_worked_out_while_reading_are_what_the_writer_would_write(api, conn, monkeypatch):
    # Two ways to the same statement parameters: the reading thread's (db_values_for) and the
    # writing thread's (page_params). A difference would write other values on a first sync.
    moment = timezone.now()
    monkeypatch.setattr(sync.timezone, "now", lambda: moment)
    stream = qonto_streams.TransactionsStream()
    connector = conn.connector()
    records = api.transactions_of(api.main_account_id)[:60]
    records.append({"id": "broken", "side": "sideways"})  # a record that does not convert
    prepared = sync.prepare_records(connector, stream, records)
    values = sync.db_values_for(connector, stream, prepared)
    assert values[-1] is None and all(v is not None for v in values[:-1])
    table = sync._table(BankTransaction, db_connection)
    engine_values = {"organization_id": conn.organization_id, "connection_id": conn.pk,
                     "stream": stream.name, "synced_at": moment}
    entries = [(row, raw_json, digest) for _, row, raw_json, digest, error in prepared if error is None]
    by_id = {row.external_id: v for (_, row, _, _, _), v in zip(prepared, values, strict=True) if row is not None}
    for field_names, group in sync._group_by_fields(entries):
        order, params = table.page_params(engine_values, field_names, group)
        assert order == table.layout(tuple(field_names), True).order
        assert plain(params) == plain([by_id[row.external_id] for row, _, _ in group])


def plain(rows: list[list[Any]]) -> list[list[Any]]:
    """Driver wrappers (psycopg's Jsonb) have no equality of their own: compare what they wrap."""
    return [[getattr(value, "obj", value) for value in row] for row in rows]


def test_receipts_of_rows_straight_from_to_row_are_saved_by_save_related(api, conn, monkeypatch):
    moment = timezone.now()
    monkeypatch.setattr(qonto_streams.timezone, "now", lambda: moment)
    stream = qonto_streams.TransactionsStream()
    connector = conn.connector()
    listed = qonto_streams.get_json(
        connector, "/v2/transactions",
        params=[("bank_account_id", api.main_account_id), ("includes[]", "attachments"), ("per_page", "100")],
    )["transactions"]
    with_receipts = [t for t in listed if t["attachment_ids"]][:5]
    rows = [stream.to_row(connector, record) for record in with_receipts]
    assert with_receipts and all(row.receipts for row in rows)
    # Rows straight from to_row (not through the pipeline) carry their receipts ready to write,
    # one Attachment row per embedded receipt, and save_related writes them.
    assert [len(row.receipts) for row in rows] == [len(t["attachment_ids"]) for t in with_receipts]
    stream.save_related(connector, [(None, row) for row in rows])
    stored = set(Attachment.objects.filter(connection=conn, stream="attachments").values_list("external_id", flat=True))
    assert stored == {str(a) for t in with_receipts for a in t["attachment_ids"]}
    one = Attachment.objects.get(connection=conn, external_id=str(with_receipts[0]["attachment_ids"][0]))
    assert one.parent_external_id == with_receipts[0]["id"] and one.synced_at == moment
