"""The sync engine: read a connection's streams page by page into the mirror tables.

One call, :func:`sync_connection`, does a whole run and leaves a :class:`SyncRun` row whatever
happens (record before you act, house rule 8):

* **Lease.** A conditional ``UPDATE`` on ``Connection.lease_owner``/``lease_expires_at`` lets one
  sync per connection run at a time across every worker; a second sync ends ``SKIPPED``. The lease
  is renewed with every page, so a crashed worker's lease simply runs out.
* **Cursor.** Each stream starts from its :class:`SyncCursor`: ``value`` (the incremental marker
  of the last completed run; ignored by a full resync) and ``position`` (where an interrupted run
  stopped). Each page's rows and the position that follows the page are written in **one**
  transaction, so a crash after page N resumes at page N+1: no duplicate, no gap.
* **Upsert.** Rows are upserted on ``(connection, stream, external_id)``. A SHA-256 fingerprint of
  the canonical JSON of what would be stored (raw payload and promoted columns) lets unchanged
  rows be skipped without a write; including the promoted columns means a mapping change shows up
  as an update on the next full resync instead of being masked by an unchanged payload.
* **Failures.** A record that cannot be converted becomes a ``SyncEvent(kind=failed)`` and the
  run goes on (outcome ``PARTIAL``). A permanent :class:`~connectors.base.ConnectorError` (revoked
  grant, forbidden…) flips the connection to ``needs_attention`` (house rule 4) and fails the
  run; a transient one (already retried by ``connectors.http``) fails the run only.

Streams may define ``save_related(connector, saved)`` — called inside the page transaction with
``[(mirror instance, Row)]`` for the rows just created or updated — to write child rows such as
document lines; the instances carry their ids unless the stream sets ``related_needs_ids =
False`` (which saves a query per page). It is optional so that most streams stay two methods long.

Speed: a stream that starts with no rows in the mirror (a first sync, or a new stream) keeps the
fingerprints it wrote in memory instead of reading them back page by page — on PostgreSQL a
freshly filled table has no statistics yet and that read degrades to an index range scan.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import traceback
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.db import connections, models, router, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from connectors.base import ConnectorError, CursorState, Page, Row, Stream
from connectors.models import Connection, SyncCursor, SyncEvent, SyncRun

logger = logging.getLogger(__name__)

#: How long a lease lasts without renewal; every page renews it. A worker that dies mid-run
#: blocks its connection at most this long.
LEASE_SECONDS = 15 * 60

#: Key under which the engine keeps its own bookkeeping inside ``SyncCursor.position``; the rest
#: of the position belongs to the stream and is handed back to it untouched.
ENGINE_KEY = "_sync"

#: Columns the engine sets itself; a stream's ``Row.fields`` may not override them.
ENGINE_FIELDS = frozenset({"organization", "organization_id", "connection", "connection_id", "stream",
                           "external_id", "raw", "fingerprint", "synced_at", "id", "pk"})


class LeaseLost(Exception):
    """Another worker took the connection's lease (ours had expired): stop without writing."""


# --- Fingerprints ----------------------------------------------------------------------------
def _canonical_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # str() keeps a Decimal exact; the same payload always maps to the same Decimal.
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, Decimals and datetimes as strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_canonical_default)


def fingerprint(row: Row) -> str:
    """SHA-256 of the canonical JSON of what the row would store."""
    document = {"raw": row.raw, "fields": row.fields}
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()


# --- High-water marks ------------------------------------------------------------------------
def later(a: str | None, b: str | None) -> str | None:
    """The later of two incremental markers; ISO timestamps are compared as instants."""
    if a is None or a == "":
        return b or None
    if b is None or b == "":
        return a
    da, db = parse_datetime(a), parse_datetime(b)
    if da is not None and db is not None and (da.tzinfo is None) == (db.tzinfo is None):
        return a if da >= db else b
    return a if a >= b else b


# --- The run ---------------------------------------------------------------------------------
def sync_connection(
    connection_id: int,
    *,
    trigger: str,
    streams: Sequence[str] | None = None,
    full: bool = False,
) -> SyncRun:
    """Sync ``streams`` (default: all) of one connection and return its run.

    ``run.created + run.updated`` (also ``run.changed``) says whether new or changed records
    arrived, which is what a caller needs to decide whether to reconcile.
    """
    if trigger not in SyncRun.Trigger.values:
        raise ValueError(f"unknown trigger {trigger!r}; one of {', '.join(SyncRun.Trigger.values)}")
    connection = Connection.objects.get(pk=connection_id)
    if connection.organization_id is None:
        raise ValueError(
            f"connection {connection.pk} belongs to a firm, not an organisation: sync runs and mirror "
            "rows are per organisation"
        )
    connector = connection.connector()
    # A caller naming a stream the provider lacks is a bug: fail loudly, before any bookkeeping.
    stream_objects = _select_streams(connector, streams)
    run = SyncRun.objects.create(
        organization_id=connection.organization_id,
        connection=connection,
        trigger=trigger,
        full=full,
        streams=[stream.name for stream in stream_objects],
    )
    started = time.monotonic()

    skip_reason = _why_not_syncable(connection)
    if skip_reason:
        return _finish(run, started, SyncRun.Outcome.SKIPPED, error=skip_reason)

    owner = f"run {run.pk} on {socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"[:64]
    if not _claim_lease(connection, owner):
        holder = Connection.objects.filter(pk=connection.pk).values("lease_owner", "lease_expires_at").first()
        if holder is None or holder["lease_owner"] == "":
            # The claim failed because the status changed between our read and the update.
            connection.refresh_from_db(fields=["status", "last_error"])
            reason = _why_not_syncable(connection) or "the connection changed while the sync started"
        else:
            until = holder["lease_expires_at"]
            reason = (
                f"Another sync ({holder['lease_owner'].rsplit(':', 1)[0]}) is running on this connection "
                f"(lease until {until:%Y-%m-%d %H:%M:%S %Z}); this one was skipped and the next one "
                "picks up where it stops."
            )
        return _finish(run, started, SyncRun.Outcome.SKIPPED, error=reason)

    try:
        _prepare_credentials(connector)
        for stream in stream_objects:
            _sync_stream(connector, stream, run, owner, full=full)
    except ConnectorError as exc:
        _count_http(run, connector)
        if exc.permanent:
            connection.mark_needs_attention(f"{run.current_stream or 'sync'}: {exc}")
        else:
            _note_error(connection, f"{run.current_stream or 'sync'}: {exc}")
        return _finish(run, started, SyncRun.Outcome.FAILED, error=_describe(exc, run), tb=traceback.format_exc())
    except LeaseLost as exc:
        _count_http(run, connector)
        return _finish(run, started, SyncRun.Outcome.FAILED, error=str(exc), tb=traceback.format_exc())
    except Exception as exc:  # noqa: BLE001 - a bug must still leave a finished run behind
        logger.exception("sync run %s of connection %s crashed", run.pk, connection.pk)
        _count_http(run, connector)
        _note_error(connection, f"{run.current_stream or 'sync'}: {type(exc).__name__}: {exc}")
        return _finish(
            run, started, SyncRun.Outcome.FAILED,
            error=f"Internal error while syncing {run.current_stream or 'the connection'}: "
                  f"{type(exc).__name__}: {exc}",
            tb=traceback.format_exc(),
        )
    finally:
        _release_lease(connection, owner)

    _count_http(run, connector)
    now = timezone.now()
    Connection.objects.filter(pk=connection.pk).update(
        last_sync_at=now, last_error="", last_error_at=None, updated_at=now
    )
    outcome = SyncRun.Outcome.PARTIAL if run.failed else SyncRun.Outcome.SUCCEEDED
    error = f"{run.failed} record(s) could not be read; see the run's failed events." if run.failed else ""
    return _finish(run, started, outcome, error=error)


def _why_not_syncable(connection: Connection) -> str:
    status = connection.status
    if status == Connection.Status.ACTIVE:
        return ""
    if status == Connection.Status.DISCONNECTED:
        return "The connection is disconnected; reconnect it to sync again."
    if status == Connection.Status.NEEDS_ATTENTION:
        detail = f" Last error: {connection.last_error}" if connection.last_error else ""
        return f"The connection needs attention (a person must reconnect it) and is not synced.{detail}"
    return "The connection is not active yet (its authorisation was not completed)."


def _prepare_credentials(connector: Any) -> None:
    """Renew an access token about to expire, and allow one refresh-and-retry on a 401."""
    from connectors.oauth import ensure_fresh, install_refresh_hook

    install_refresh_hook(connector)
    ensure_fresh(connector.connection)


def _claim_lease(connection: Connection, owner: str) -> bool:
    """Take the lease if it is free or expired, in one conditional UPDATE (atomic everywhere)."""
    now = timezone.now()
    claimed = (
        Connection.objects.filter(pk=connection.pk, status=Connection.Status.ACTIVE)
        .filter(Q(lease_owner="") | Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
        .update(lease_owner=owner, lease_expires_at=now + timedelta(seconds=LEASE_SECONDS))
    )
    return claimed == 1


def _renew_lease(connection: Connection, owner: str) -> None:
    renewed = Connection.objects.filter(pk=connection.pk, lease_owner=owner).update(
        lease_expires_at=timezone.now() + timedelta(seconds=LEASE_SECONDS)
    )
    if renewed != 1:
        raise LeaseLost(
            "This sync lost its lease on the connection (it ran longer than the lease without "
            "renewing and another sync took over); it stopped without writing its last page."
        )


def _release_lease(connection: Connection, owner: str) -> None:
    Connection.objects.filter(pk=connection.pk, lease_owner=owner).update(lease_owner="", lease_expires_at=None)


def _select_streams(connector: Any, names: Sequence[str] | None) -> list[Stream]:
    declared = [stream_class() for stream_class in connector.streams]
    if not names:
        return declared
    known = {stream.name for stream in declared}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"{connector.slug} has no stream {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}"
        )
    # Declared order, not the caller's: later streams may read what earlier ones wrote.
    return [stream for stream in declared if stream.name in names]


def _sync_stream(connector: Any, stream: Stream, run: SyncRun, owner: str, *, full: bool) -> None:
    connection: Connection = connector.connection
    run.current_stream = stream.name
    run.save(update_fields=["current_stream"])
    cursor, _ = SyncCursor.objects.get_or_create(connection=connection, stream=stream.name)

    saved = dict(cursor.position or {})
    engine = saved.pop(ENGINE_KEY, {}) if isinstance(saved.get(ENGINE_KEY), dict) else {}
    if saved and bool(engine.get("full")) != full:
        # A position saved by a full resync means nothing to an incremental run (and the other
        # way round): the two read different lists. Start the stream afresh.
        saved, engine = {}, {}
    value = None if full else (cursor.value or None)
    high_water: str | None = engine.get("high_water")
    state = CursorState(value=value, position=saved)
    model = apps.get_model(stream.model)
    # Under the lease nobody else writes this stream's rows: if there are none yet, the rows in
    # the mirror are exactly those this run writes, and their fingerprints can be kept here.
    known: dict[str, str] | None = (
        None if model.objects.filter(connection=connection, stream=stream.name).exists() else {}
    )

    for page in stream.pages(connector, state):
        high_water = later(high_water, page.high_water)
        position = dict(page.position or {})
        position[ENGINE_KEY] = {"full": full, "high_water": high_water, "run": run.pk}
        with transaction.atomic():
            _renew_lease(connection, owner)
            _save_page(connector, stream, model, run, page, known=known)
            SyncCursor.objects.filter(pk=cursor.pk).update(position=position, updated_at=timezone.now())
            _count_http(run, connector)
            run.save(update_fields=["read", "created", "updated", "unchanged", "failed", "requests", "retries"])

    now = timezone.now()
    with transaction.atomic():
        _renew_lease(connection, owner)
        SyncCursor.objects.filter(pk=cursor.pk).update(
            # A full resync may lower the marker (records deleted remotely, a bad marker): its
            # own high-water mark is the truth. An incremental run only moves it forward.
            value=(high_water or cursor.value) if full else (later(cursor.value or None, high_water) or ""),
            position={},
            last_success_at=now,
            updated_at=now,
        )
    stream.after_sync(connector, run)


def _save_page(
    connector: Any,
    stream: Stream,
    model: type[models.Model],
    run: SyncRun,
    page: Page,
    known: dict[str, str] | None = None,
) -> None:
    """Convert and upsert one page's records (caller holds the transaction).

    ``known``, when given, holds every fingerprint of the stream's rows (see ``_sync_stream``)
    and is kept up to date; otherwise the fingerprints are read from the database.
    """
    connection: Connection = connector.connection
    rows: dict[str, tuple[Row, str]] = {}
    for record in page.records:
        run.read += 1
        try:
            row = stream.to_row(connector, record)
            if not row.external_id:
                raise ValueError("the record has no identifier")
            bad = ENGINE_FIELDS.intersection(row.fields)
            if bad:
                raise ValueError(f"the mapping sets engine columns {sorted(bad)}")
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the run
            run.failed += 1
            _record_failure(run, connection, stream, record, exc)
            continue
        # The last occurrence wins if a page repeats a record.
        rows[row.external_id] = (row, fingerprint(row))
    if not rows:
        return

    if known is not None:
        existing = {external_id: known[external_id] for external_id in rows if external_id in known}
    else:
        existing = dict(
            model.objects.filter(
                connection=connection, stream=stream.name, external_id__in=list(rows)
            ).values_list("external_id", "fingerprint")
        )
    now = timezone.now()
    changed: list[tuple[Row, str]] = []
    for external_id, (row, digest) in rows.items():
        previous = existing.get(external_id)
        if previous == digest:
            run.unchanged += 1
            continue
        if previous is None:
            run.created += 1
        else:
            run.updated += 1
        changed.append((row, digest))
    if not changed:
        return
    if known is not None:
        known.update((row.external_id, digest) for row, digest in changed)

    saved: list[tuple[models.Model, Row]] = []
    for field_names, group in _group_by_fields(changed):
        objects = [
            model(
                organization_id=connection.organization_id,
                connection_id=connection.pk,
                stream=stream.name,
                external_id=row.external_id,
                raw=row.raw,
                fingerprint=digest,
                synced_at=now,
                **row.fields,
            )
            for row, digest in group
        ]
        upsert(model, objects, update_fields=["raw", "fingerprint", "synced_at", *field_names])
        saved.extend(zip(objects, (row for row, _ in group), strict=True))

    save_related = getattr(stream, "save_related", None)
    if save_related is not None:
        if getattr(stream, "related_needs_ids", True):
            assign_ids(model, connection, stream.name, saved)
        save_related(connector, saved)


def assign_ids(model: type[models.Model], connection: Connection, stream: str, saved: Sequence[tuple[Any, Row]]) -> None:
    """Set the database ids of rows just upserted (one query), for streams writing child rows."""
    ids = dict(
        model.objects.filter(
            connection=connection, stream=stream, external_id__in=[row.external_id for _, row in saved]
        ).values_list("external_id", "pk")
    )
    for obj, row in saved:
        obj.pk = ids[row.external_id]


def _group_by_fields(changed: Iterable[tuple[Row, str]]) -> list[tuple[list[str], list[tuple[Row, str]]]]:
    """Rows that set the same columns, together: an upsert updates one column list."""
    groups: dict[tuple[str, ...], list[tuple[Row, str]]] = {}
    for row, digest in changed:
        groups.setdefault(tuple(sorted(row.fields)), []).append((row, digest))
    return [(list(key), group) for key, group in groups.items()]


#: Columns whose Python values (from our own mappings) go to the driver as they are; every other
#: type (JSON, Decimal, datetimes, encrypted text) goes through its field's own preparation.
_PLAIN_FIELD_TYPES = (
    models.CharField, models.TextField, models.IntegerField, models.BigIntegerField,
    models.PositiveIntegerField, models.PositiveBigIntegerField, models.BooleanField,
)


def upsert(
    model: type[models.Model],
    objects: Sequence[models.Model],
    *,
    update_fields: Sequence[str],
    unique_fields: Sequence[str] = ("connection", "stream", "external_id"),
) -> None:
    """``INSERT … ON CONFLICT (unique_fields) DO UPDATE`` of ``objects`` as one ``executemany``.

    What ``bulk_create(update_conflicts=True)`` does, without its per-value SQL compilation
    (which was most of a 50,000-transaction sync; on PostgreSQL it also dumps every column as an
    array for ``UNNEST``). Both SQLite (3.24+) and PostgreSQL speak this statement. Objects' ids
    are not set; auto-now fields are not supported (mirror models have none).
    """
    if not objects:
        return
    db = connections[router.db_for_write(model)]
    opts = model._meta
    fields = [f for f in opts.concrete_fields if not f.primary_key]
    assert not any(getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False) for f in fields)
    quote = db.ops.quote_name
    writers = [
        (f.attname, None if type(f) in _PLAIN_FIELD_TYPES or f.is_relation else f)
        for f in fields
    ]
    update_columns = [opts.get_field(name).column for name in update_fields]
    sql = (
        f"INSERT INTO {quote(opts.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}) "
        f"ON CONFLICT ({', '.join(quote(opts.get_field(name).column) for name in unique_fields)}) "
        f"DO UPDATE SET {', '.join(f'{quote(c)} = EXCLUDED.{quote(c)}' for c in update_columns)}"
    )
    params = [
        [
            getattr(obj, attname) if field is None else field.get_db_prep_save(getattr(obj, attname), db)
            for attname, field in writers
        ]
        for obj in objects
    ]
    with db.cursor() as cursor:
        cursor.executemany(sql, params)


def _record_failure(run: SyncRun, connection: Connection, stream: Stream, record: Any, exc: Exception) -> None:
    external_id = ""
    if isinstance(record, dict):
        external_id = str(record.get("id") or record.get("Id") or "")
    reason = (
        f"The {stream.name} record {external_id or '(without id)'} could not be read and was skipped: "
        f"{exc}. Check the record in the provider; it is read again when it changes there, "
        "or by a full resync once the cause is fixed."
    )
    SyncEvent.objects.create(
        organization_id=connection.organization_id,
        run=run,
        connection=connection,
        stream=stream.name,
        external_id=external_id[:200],
        kind=SyncEvent.Kind.FAILED,
        reason=reason,
        data={"error": f"{type(exc).__name__}: {exc}", "record": record if isinstance(record, dict) else repr(record)},
    )


def _count_http(run: SyncRun, connector: Any) -> None:
    run.requests = connector.http.requests_sent
    run.retries = connector.http.retries


def _note_error(connection: Connection, message: str) -> None:
    Connection.objects.filter(pk=connection.pk).update(
        last_error=message[:2000], last_error_at=timezone.now(), updated_at=timezone.now()
    )


def _describe(exc: ConnectorError, run: SyncRun) -> str:
    where = f"while reading {run.current_stream}" if run.current_stream else "while syncing"
    if exc.permanent:
        return (
            f"{type(exc).__name__} {where}: {exc}. The provider refused the request for a reason "
            "retrying will not change; the connection was marked as needing attention."
        )
    return f"{type(exc).__name__} {where}: {exc}. Retried without success; the next sync tries again."


def _finish(run: SyncRun, started: float, outcome: str, *, error: str = "", tb: str = "") -> SyncRun:
    run.outcome = outcome
    run.error = error
    run.traceback = tb
    run.finished_at = timezone.now()
    run.duration_ms = int((time.monotonic() - started) * 1000)
    run.save(
        update_fields=[
            "outcome", "error", "traceback", "finished_at", "duration_ms", "streams", "current_stream",
            "read", "created", "updated", "unchanged", "failed", "requests", "retries",
        ]
    )
    return run
