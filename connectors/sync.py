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
False`` (which saves a query per page), and a stream that only reads the rows sets
``related_needs_instances = False`` to get ``(None, Row)`` pairs. It is optional so that most
streams stay two methods long.

Speed: a stream that starts with no rows in the mirror (a first sync, or a new stream) keeps the
fingerprints it wrote in memory instead of reading them back page by page — on PostgreSQL a
freshly filled table has no statistics yet and that read degrades to an index range scan.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import queue
import socket
import sqlite3
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from operator import itemgetter
from typing import Any, TypeVar

import orjson
from django.apps import apps
from django.conf import settings
from django.db import connections, models, router, transaction
from django.db.models import Q
from django.db.models.base import ModelState
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from connectors.base import ConnectorError, CursorState, Page, Row, Stream
from connectors.models import Connection, SyncCursor, SyncEvent, SyncRun

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a lease lasts without renewal; every page renews it. A worker that dies mid-run
#: blocks its connection at most this long.
LEASE_SECONDS = 15 * 60

#: Longest time the pages written are kept in one open transaction before a commit (see _PageBatch).
COMMIT_SECONDS = 0.25

#: Key under which the engine keeps its own bookkeeping inside ``SyncCursor.position``; the rest
#: of the position belongs to the stream and is handed back to it untouched.
ENGINE_KEY = "_sync"

#: The natural key of mirror rows (``MirrorRecord.natural_key_constraint``): what an upsert conflicts on.
NATURAL_KEY = ("connection", "stream", "external_id")

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
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    return str(value)


#: Sorted keys, no whitespace, UTF-8 as it is. orjson writes dates and datetimes as their
#: ``isoformat()`` (tested); dataclasses go through ``_canonical_default`` as with the standard library.
_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS


def _canonical_json_stdlib(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_canonical_default)


def canonical_bytes(value: Any) -> bytes:
    """:func:`canonical_json` as UTF-8 bytes.

    orjson writes it, about ten times faster than ``json.dumps`` (a first sync serialises every
    payload it reads), and byte for byte as ``json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`` would, except for floats in exponent notation (``1e16`` where Python
    writes ``1e+16``: the same number). What orjson refuses — integers beyond 64 bits, keys that
    are not strings, lone surrogates — the standard library writes. Either way the same value
    always gives the same text, which is what a fingerprint needs.
    """
    try:
        return orjson.dumps(value, default=_canonical_default, option=_ORJSON_OPTIONS)
    except TypeError:
        return _canonical_json_stdlib(value).encode("utf-8", "surrogatepass")


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, Decimals and datetimes as strings."""
    return canonical_bytes(value).decode("utf-8", "surrogatepass")


def fingerprint(row: Row) -> str:
    """SHA-256 of the canonical JSON of what the row would store."""
    document = {"raw": row.raw, "fields": row.fields}
    return hashlib.sha256(canonical_bytes(document)).hexdigest()


# --- High-water marks ------------------------------------------------------------------------
def utc_texts_alike(texts: Sequence[str]) -> bool:
    """Whether non-empty ISO timestamps are all UTC and written alike (``2026-01-02T03:04:05.123Z``,
    Qonto's way): then their text sorts as their instants, with no parsing."""
    first = len(texts[0])
    return all(len(text) == first and text[-1] == "Z" and text[10] == "T" for text in texts)


def later(a: str | None, b: str | None) -> str | None:
    """The later of two incremental markers; ISO timestamps are compared as instants."""
    if a is None or a == "":
        return b or None
    if b is None or b == "":
        return a
    if utc_texts_alike((a, b)):
        return a if a >= b else b
    da, db = parse_datetime(a), parse_datetime(b)
    if da is not None and db is not None and (da.tzinfo is None) == (db.tzinfo is None):
        return a if da >= db else b
    return a if a >= b else b


# --- Reading ahead ---------------------------------------------------------------------------
class _NeedsCallerThread(Exception):
    """Raised inside a pipeline thread by work that must run in the sync's own thread."""


_read_ahead_local = threading.local()


def pipelined(
    connector: Any,
    first: Any,
    step: Callable[[Any], tuple[Any, Any]],
    depth: int = 8,
    then: Callable[[Any], T] | None = None,
    merge: Callable[[list[T]], T] | None = None,
) -> Iterator[T]:
    """The items of a paged read, fetched by a background thread up to ``depth`` pages ahead.

    ``step(position)`` fetches one page and returns ``(item, next position or None)``; ``then``,
    if given, turns each item into what is yielded (e.g. :func:`prepare_records`) in a second
    thread. The fetching thread goes on to the next page as soon as it knows it, so requests
    follow each other while pages are converted and the engine writes the ones before (the
    provider's answer time, the conversion and the database's own work overlap). The engine still
    saves each page with its cursor before it takes the next, so a crash resumes after the last
    saved page. With ``merge``, the items already waiting when the caller asks for the next one
    (at most ``depth``) are handed over as ``merge(items)``, one item standing for consecutive
    pages (the caller saves them, and the position after the last, together).

    The threads run outside the sync's database connection and transaction: ``step`` and
    ``then`` must only talk HTTP through the connector's client and convert. A 401 that calls
    for a token refresh (which writes to the database) is not handled there: that page is fetched
    again in the caller's thread, where the client's one refresh-and-retry runs as usual, and the
    threads resume after it. Closing the generator stops the threads and waits for the request in
    flight.
    """
    _guard_refresh_hook(connector)
    stop = threading.Event()

    def put(into: queue.Queue[tuple[str, Any, Any]], entry: tuple[str, Any, Any]) -> bool:
        while not stop.is_set():
            try:
                into.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def take(source: queue.Queue[tuple[str, Any, Any]]) -> tuple[str, Any, Any] | None:
        while not stop.is_set():
            try:
                return source.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def fetch(position: Any, out: queue.Queue[tuple[str, Any, Any]]) -> None:
        _read_ahead_local.active = True
        try:
            while position is not None and not stop.is_set():
                try:
                    item, following = step(position)
                except _NeedsCallerThread:
                    put(out, ("caller", position, None))
                    return
                if not put(out, ("item", item, following)):
                    return
                position = following
            put(out, ("end", None, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put(out, ("error", exc, None))
        finally:
            _read_ahead_local.active = False

    def convert(source: queue.Queue[tuple[str, Any, Any]], out: queue.Queue[tuple[str, Any, Any]]) -> None:
        assert then is not None
        _read_ahead_local.active = True
        try:
            while True:
                entry = take(source)
                if entry is None:
                    return
                kind, value, following = entry
                if kind == "item":
                    try:
                        entry = (kind, then(value), following)
                    except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                        put(out, ("error", exc, None))
                        return
                if not put(out, entry) or kind != "item":
                    return
        finally:
            _read_ahead_local.active = False

    def start(position: Any) -> tuple[queue.Queue[tuple[str, Any, Any]], list[threading.Thread]]:
        fetched: queue.Queue[tuple[str, Any, Any]] = queue.Queue(maxsize=depth)
        threads = [threading.Thread(target=fetch, args=(position, fetched), name="sync-pipeline", daemon=True)]
        ready = fetched
        if then is not None:
            ready = queue.Queue(maxsize=depth)
            threads.append(
                threading.Thread(target=convert, args=(fetched, ready), name="sync-pipeline-convert", daemon=True)
            )
        for thread in threads:
            thread.start()
        return ready, threads

    ready, threads = start(first)
    waiting: tuple[str, Any, Any] | None = None  # an entry taken while gathering, not yet handled
    try:
        while True:
            if waiting is not None:
                (kind, value, following), waiting = waiting, None
            else:
                kind, value, following = ready.get()
            if kind == "item" and merge is not None:
                # The pages already waiting go to the caller as one: when the writer is the
                # slower side, its per-page work (savepoint, cursor, statements) is paid once.
                gathered = [value]
                while len(gathered) < depth:
                    try:
                        entry = ready.get_nowait()
                    except queue.Empty:
                        break
                    if entry[0] != "item":
                        waiting = entry
                        break
                    gathered.append(entry[1])
                if len(gathered) > 1:
                    value = merge(gathered)
            if kind == "end":
                return
            if kind == "error":
                raise value
            if kind == "caller":
                for thread in threads:
                    thread.join()
                item, following = step(value)  # here the client may refresh the token
                yield then(item) if then is not None else item
                if following is None:
                    return
                ready, threads = start(following)
                continue
            yield value
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def _guard_refresh_hook(connector: Any) -> None:
    hook = connector.http.refresh_hook
    if hook is None or getattr(hook, "_caller_thread_only", False):
        return

    def refresh_in_caller_thread() -> bool:
        if getattr(_read_ahead_local, "active", False):
            raise _NeedsCallerThread("a token refresh must run in the sync's thread")
        return hook()

    refresh_in_caller_thread._caller_thread_only = True  # type: ignore[attr-defined]
    connector.http.refresh_hook = refresh_in_caller_thread


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
        with fewer_collections(), quicker_thread_switches(), background_checkpoints(
            connections[router.db_for_write(SyncCursor)]
        ):
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


#: How often the checkpointing thread of :func:`background_checkpoints` copies the WAL back: about
#: once per commit of a sync (see COMMIT_SECONDS); each checkpoint syncs the files to disk.
CHECKPOINT_EVERY = 0.25


@contextmanager
def background_checkpoints(db: Any) -> Iterator[None]:
    """On a SQLite database in WAL mode, checkpoint from a thread of its own while a sync writes.

    SQLite copies the write-ahead log back into the database file ("checkpoints") inside the
    commit that takes the log past ``wal_autocheckpoint`` pages, in the committing thread: a
    first sync writes the whole mirror through the log, so its writing thread spent about a
    tenth of its time there. Inside, that connection's automatic checkpoints are off and a thread
    with its own connection runs a passive checkpoint every :data:`CHECKPOINT_EVERY` seconds
    (SQLite does the copying without the interpreter lock, on the other core); at the end a last
    checkpoint runs and the connection's setting is restored. A passive checkpoint never blocks
    the writer nor a reader, and the log cannot run away: with a single writer every committed
    page can be copied. Elsewhere (PostgreSQL, an in-memory or non-WAL SQLite) nothing changes.
    """
    if db.vendor != "sqlite" or db.is_in_memory_db():
        yield
        return
    db.ensure_connection()
    raw = db.connection
    if str(raw.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
        yield
        return
    saved = int(raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
    raw.execute("PRAGMA wal_autocheckpoint=0")
    stop = threading.Event()
    path = str(db.settings_dict["NAME"])
    failed: list[BaseException] = []

    def checkpoint() -> None:
        try:
            other = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            failed.append(exc)
            return
        try:
            while True:
                stopping = stop.wait(CHECKPOINT_EVERY)
                other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                if stopping:
                    return
        except sqlite3.Error as exc:  # the sync's own commits checkpoint again (below)
            failed.append(exc)
        finally:
            other.close()

    thread = threading.Thread(target=checkpoint, name="sync-checkpoint", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if failed:
            logger.warning("background WAL checkpoints stopped: %s", failed[0])
        try:
            raw.execute(f"PRAGMA wal_autocheckpoint={saved}")
        except sqlite3.Error:  # the connection broke: Django reconnects with the default
            logger.warning("could not restore wal_autocheckpoint on the sync's connection", exc_info=True)


class _ProcessSetting:
    """An interpreter-wide setting changed while any sync of the process runs, restored when the
    last one ends (syncs in several threads share it)."""

    def __init__(self, get: Callable[[], Any], put: Callable[[Any], None]) -> None:
        self._get, self._put = get, put
        self._lock = threading.Lock()
        self._users = 0
        self._saved: Any = None

    @contextmanager
    def changed(self, value: Callable[[Any], Any]) -> Iterator[None]:
        """``value(current setting)`` while inside."""
        with self._lock:
            if self._users == 0:
                self._saved = self._get()
                self._put(value(self._saved))
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._put(self._saved)
                    self._saved = None


_collection_thresholds = _ProcessSetting(gc.get_threshold, lambda thresholds: gc.set_threshold(*thresholds))
_switch_interval = _ProcessSetting(sys.getswitchinterval, sys.setswitchinterval)


def fewer_collections(threshold: int = 10_000) -> Any:
    """Run the cyclic garbage collector less often while a sync runs.

    A sync allocates millions of short-lived objects (parsed JSON, rows, statement parameters)
    and frees them by reference counting; at Python's default thresholds (700, 10, 10) the
    collector still ran every few records, and its full collections scanned every object of the
    process each time: about 8 % of a first sync. Inside, the youngest generation is collected
    every ``threshold`` allocations.
    """
    return _collection_thresholds.changed(lambda saved: (max(threshold, saved[0]), *saved[1:]))


def quicker_thread_switches(interval: float | None = None) -> Any:
    """Hand the interpreter lock between threads more often while a sync runs.

    The writing thread gives the lock up during each SQLite or network call and must take it
    back from the converting and fetching threads, which are busy in Python; at the default
    interval (5 ms) it waited up to that long after every statement, several per page. Inside,
    it waits ``interval`` at most (default ``settings.SYNC_SWITCH_INTERVAL``, 0.2 ms; 0 changes
    nothing): in the Qonto benchmark a first sync went from 1.53× to 1.42× the bare paging loop
    (medians of five runs each, ``SYNC_SWITCH_INTERVAL=0`` against the default).
    """
    if interval is None:
        interval = settings.SYNC_SWITCH_INTERVAL
    if interval <= 0:
        return nullcontext()
    return _switch_interval.changed(lambda saved: min(interval, saved))


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


class _PageBook:
    """The bookkeeping of a batch of pages — the lease renewed as its transaction starts, the
    cursor position and the run's counts written before it commits — as three UPDATEs compiled
    once per stream: through the ORM, and once per page, they cost more than a tenth of a first
    sync's time."""

    def __init__(self, connection: Connection, owner: str, cursor_id: int, run_id: int) -> None:
        self.db = connections[router.db_for_write(SyncCursor)]
        quote = self.db.ops.quote_name

        def update(model: type[models.Model], names: Sequence[str], where: Sequence[str]) -> str:
            column = model._meta.get_field
            assignments = ", ".join(f"{quote(column(name).column)} = %s" for name in names)
            condition = " AND ".join(f"{quote(column(name).column)} = %s" for name in where)
            return f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {condition}"

        self.connection_id, self.owner, self.cursor_id, self.run_id = connection.pk, owner, cursor_id, run_id
        self.lease_sql = update(Connection, ["lease_expires_at"], ["id", "lease_owner"])
        self.cursor_sql = update(SyncCursor, ["position", "updated_at"], ["id"])
        self.counts = ["read", "created", "updated", "unchanged", "failed", "requests", "retries"]
        self.run_sql = update(SyncRun, self.counts, ["id"])
        self.expiry = Connection._meta.get_field("lease_expires_at")
        self.position = SyncCursor._meta.get_field("position")
        self.updated_at = SyncCursor._meta.get_field("updated_at")

    def renew_lease(self) -> None:
        until = self.expiry.get_db_prep_save(timezone.now() + timedelta(seconds=LEASE_SECONDS), self.db)
        with self.db.cursor() as cursor:
            cursor.execute(self.lease_sql, [until, self.connection_id, self.owner])
            renewed = cursor.rowcount
        if renewed != 1:
            raise LeaseLost(
                "This sync lost its lease on the connection (it ran longer than the lease without "
                "renewing and another sync took over); it stopped without writing its last page."
            )

    def save_page(self, position: dict[str, Any], run: SyncRun) -> None:
        with self.db.cursor() as cursor:
            cursor.execute(
                self.cursor_sql,
                [
                    self.position.get_db_prep_save(position, self.db),
                    self.updated_at.get_db_prep_save(timezone.now(), self.db),
                    self.cursor_id,
                ],
            )
            cursor.execute(self.run_sql, [*(getattr(run, name) for name in self.counts), self.run_id])


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

    pages = stream.pages(connector, state)
    book = _PageBook(connection, owner, cursor.pk, run.pk)
    saved_position: dict[str, Any] = {}

    def before_commit() -> None:
        # The cursor after the last page saved, and the run's counts, with those pages.
        _count_http(run, connector)
        book.save_page(saved_position, run)

    batch = _PageBatch(before_commit)
    try:
        for page in pages:
            high_water = later(high_water, page.high_water)
            position = dict(page.position or {})
            position[ENGINE_KEY] = {"full": full, "high_water": high_water, "run": run.pk}
            if batch.begin():
                # Renewed as each transaction starts: the lease row stays locked by it until it
                # commits, so no other worker can take the lease while its pages are written.
                book.renew_lease()
            with batch.page():
                _save_page(connector, stream, model, run, page, known=known)
            saved_position = position
            batch.page_done()
        batch.commit()
    except BaseException:
        # Whatever stopped the run (a provider error, a bad page, a lost lease), the pages saved
        # before it stay saved, each whole with its cursor: the next run resumes after them.
        batch.commit_after_failure()
        raise
    finally:
        # A stream reading ahead (see pipelined) waits here for its request in flight, so
        # nothing of this run is still talking to the provider once the stream has ended.
        close = getattr(pages, "close", None)
        if close is not None:
            close()

    now = timezone.now()
    with transaction.atomic():
        book.renew_lease()
        SyncCursor.objects.filter(pk=cursor.pk).update(
            # A full resync may lower the marker (records deleted remotely, a bad marker): its
            # own high-water mark is the truth. An incremental run only moves it forward.
            value=(high_water or cursor.value) if full else (later(cursor.value or None, high_water) or ""),
            position={},
            last_success_at=now,
            updated_at=now,
        )
    stream.after_sync(connector, run)


class _PageBatch:
    """Commits several pages at a time; each page is one savepoint inside.

    A page's rows are written in one savepoint, so a page is saved whole or not at all; the
    cursor position after the last page saved and the run's counts are written just before each
    commit (``before_commit``), in the same transaction as the pages. The enclosing transaction
    is committed once it has been open :data:`COMMIT_SECONDS` (and when the stream ends or
    fails): on SQLite and PostgreSQL a commit costs a WAL write of every page touched (the
    natural-key index is hit at random), so one per page was a quarter of a first sync. A crash
    loses at most the pages of the open batch — rows and cursor together — and the next run
    reads them again: no duplicate, no gap. A Python exception commits the pages before it
    (:meth:`commit_after_failure`).
    """

    def __init__(self, before_commit: Callable[[], None]) -> None:
        self._before_commit = before_commit
        self._outer: Any = None
        self._opened = 0.0
        self._saved = 0  # pages saved in the open transaction

    def begin(self) -> bool:
        """Open the batch's transaction if none is open; True if this call opened it."""
        if self._outer is not None:
            return False
        self._outer = transaction.atomic()
        self._outer.__enter__()
        self._opened = time.monotonic()
        self._saved = 0
        return True

    def page(self) -> Any:
        self.begin()
        return transaction.atomic()

    def page_done(self) -> None:
        self._saved += 1
        if time.monotonic() - self._opened >= COMMIT_SECONDS:
            self.commit()

    def commit(self) -> None:
        outer, self._outer = self._outer, None
        if outer is None:
            return
        try:
            if self._saved:
                self._before_commit()
        except BaseException as exc:
            outer.__exit__(type(exc), exc, exc.__traceback__)  # rolls the batch back
            raise
        outer.__exit__(None, None, None)

    def commit_after_failure(self) -> None:
        try:
            self.commit()
        except Exception:  # noqa: BLE001 - the original error is the one to report
            logger.exception("could not commit the pages saved before a sync failure")


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
    prepared = page.prepared if isinstance(page, PreparedPage) and page.prepared is not None else None
    if prepared is None:
        prepared = prepare_records(connector, stream, page.records)
    # Column values the stream worked out with the conversion (see db_values_for), if it did.
    precomputed = page.db_values if isinstance(page, PreparedPage) and page.db_values is not None else None
    rows: dict[str, tuple[Row, str, str]] = {}
    values_of: dict[str, list[Any]] = {}
    for index, (record, row, raw_json, digest, error) in enumerate(prepared):
        run.read += 1
        if error is not None or row is None:
            run.failed += 1
            _record_failure(run, connection, stream, record, error or ValueError("not converted"))
            continue
        # The last occurrence wins if a page repeats a record.
        rows[row.external_id] = (row, raw_json, digest)
        if precomputed is not None and precomputed[index] is not None:
            values_of[row.external_id] = precomputed[index]
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
    created: list[tuple[Row, str, str]] = []
    updated: list[tuple[Row, str, str]] = []
    for external_id, entry in rows.items():
        previous = existing.get(external_id)
        if previous == entry[2]:
            run.unchanged += 1
        elif previous is None:
            created.append(entry)
        else:
            updated.append(entry)
    run.created += len(created)
    run.updated += len(updated)
    if not created and not updated:
        return
    if known is not None:
        known.update((row.external_id, digest) for row, _, digest in created)
        known.update((row.external_id, digest) for row, _, digest in updated)

    table = _table(model, connections[router.db_for_write(model)])
    now = timezone.now()
    engine_values = {
        "organization_id": connection.organization_id,
        "connection_id": connection.pk,
        "stream": stream.name,
        "synced_at": now,
    }
    save_related = getattr(stream, "save_related", None)
    saved: list[tuple[models.Model, Row]] = []
    # Rows the mirror does not have are inserted; under the lease nobody else writes this
    # stream, so they cannot conflict (if something did, the insert fails and the run with it).
    for insert_only, entries in ((True, created), (False, updated)):
        for names, group in _group_by_fields(entries):
            if values_of and all(row.external_id in values_of for row, _, _ in group):
                params = (table.layout(tuple(names), True).order, [values_of[row.external_id] for row, _, _ in group])
            else:
                params = table.page_params(engine_values, names, group)
            table.write(
                params,
                update_fields=["raw", "fingerprint", "synced_at", *names],
                unique_fields=NATURAL_KEY,
                insert_only=insert_only,
            )
            if save_related is None:
                continue
            if getattr(stream, "related_needs_instances", True):
                saved.extend((table.instance(engine_values, row, digest), row) for row, _, digest in group)
            else:
                saved.extend((None, row) for row, _, _ in group)

    if save_related is not None:
        if getattr(stream, "related_needs_ids", True):
            assign_ids(model, connection, stream.name, saved)
        save_related(connector, saved)


#: One record of a page, converted: (record, row, canonical JSON of its raw payload, fingerprint,
#: error). ``row`` is None and ``error`` set when the record could not be converted.
Prepared = tuple[Any, Row | None, str, str, Exception | None]


@dataclass
class PreparedPage(Page):
    """A page whose records the stream already converted with :func:`prepare_records` — in its
    reading thread (:func:`pipelined`), while the engine was writing the pages before."""

    prepared: list[Prepared] | None = None
    #: Optional, from :func:`db_values_for`: each prepared record's column values, ready to write.
    db_values: list[list[Any] | None] | None = None


def db_values_for(connector: Any, stream: Stream, prepared: list[Prepared]) -> list[list[Any] | None]:
    """Each converted record's columns as the database takes them, in the order of the engine's
    statement for the record's fields (None for a record that failed).

    The last step of saving a page that needs no database connection (only its vendor and
    zone): a stream converting its pages in its reading thread does it there too, so that the
    sync's own thread, which writes, has less to do. ``synced_at`` is the time of conversion.
    """
    model = apps.get_model(stream.model)
    table = _table(model, connections[router.db_for_write(model)])
    connection = connector.connection
    synced_at = table.prepare(table.position["synced_at"], timezone.now())
    head = (connection.organization_id, connection.pk, stream.name)
    values: list[list[Any] | None] = []
    for _, row, raw_json, digest, error in prepared:
        if row is None or error is not None:
            values.append(None)
            continue
        layout = table.layout(field_names(row.fields), True)
        values.append(layout.fill(table, [*head, row.external_id, raw_json, digest, synced_at], row.fields))
    return values


def prepare_records(connector: Any, stream: Stream, records: Iterable[Any]) -> list[Prepared]:
    """The part of saving a page that needs no database: ``to_row``, its checks, the canonical
    JSON of the raw payload (serialised once: it is both hashed and stored) and the fingerprint.

    A stream may run it in its reading thread (:func:`pipelined`) and yield a
    :class:`PreparedPage`, provided its ``to_row`` reads no database and keeps no state another
    thread uses; a record that fails is recorded by the engine, in its own thread.
    """
    prepared: list[Prepared] = []
    to_row = stream.to_row
    for record in records:
        try:
            row = to_row(connector, record)
            if not row.external_id:
                raise ValueError("the record has no identifier")
            names = field_names(row.fields)
            if names not in _mapped_names:  # checked once per field list that passes
                clash = ENGINE_FIELDS.intersection(names)
                if clash:
                    raise ValueError(f"the mapping sets engine columns {sorted(clash)}")
                _remember(_mapped_names, names)
            raw_json = canonical_bytes(row.raw)
            digest = hashlib.sha256(b'{"fields":%b,"raw":%b}' % (canonical_bytes(row.fields), raw_json)).hexdigest()
            prepared.append((record, row, raw_json.decode("utf-8", "surrogatepass"), digest, None))
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the run
            prepared.append((record, None, "", "", exc))
    return prepared


def assign_ids(model: type[models.Model], connection: Connection, stream: str, saved: Sequence[tuple[Any, Row]]) -> None:
    """Set the database ids of rows just upserted (one query), for streams writing child rows."""
    ids = dict(
        model.objects.filter(
            connection=connection, stream=stream, external_id__in=[row.external_id for _, row in saved]
        ).values_list("external_id", "pk")
    )
    for obj, row in saved:
        obj.pk = ids[row.external_id]


def field_names(fields: Mapping[str, Any]) -> tuple[str, ...]:
    """The sorted names of the fields a row sets (what its statement's layout is keyed on).

    A stream's rows list their fields in the same order, so the sorted tuple is remembered for
    the order they come in: one small tuple per row instead of a sort.
    """
    given = tuple(fields)
    names = _sorted_names.get(given)
    if names is None:
        names = tuple(sorted(given))
        _remember(_sorted_names, given, names)
    return names


#: Per-process memos of field-name lists, kept small (a process sees a few dozen lists).
_sorted_names: dict[tuple[str, ...], tuple[str, ...]] = {}
#: Field-name lists known to leave the engine's columns alone.
_mapped_names: dict[tuple[str, ...], None] = {}


def _remember(memo: dict[Any, Any], key: Any, value: Any = None, limit: int = 1024) -> None:
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value


def _group_by_fields(changed: Iterable[tuple[Row, str, str]]) -> list[tuple[list[str], list[tuple[Row, str, str]]]]:
    """Rows that set the same columns, together: an upsert updates one column list."""
    groups: dict[tuple[str, ...], list[tuple[Row, str, str]]] = {}
    for entry in changed:
        groups.setdefault(field_names(entry[0].fields), []).append(entry)
    return [(list(key), group) for key, group in groups.items()]


# --- Writing rows ----------------------------------------------------------------------------
#: Columns whose Python values (from our own mappings) go to the driver as they are; every other
#: type (JSON, Decimal, datetimes, encrypted text) goes through its field's own preparation
#: unless it has a fast path below.
_PLAIN_FIELD_TYPES = (
    models.CharField, models.TextField, models.IntegerField, models.BigIntegerField,
    models.PositiveIntegerField, models.PositiveBigIntegerField, models.BooleanField,
)

#: Columns set by the engine from the run, in the order every upsert statement lists them first.
_ENGINE_COLUMNS = ("organization_id", "connection_id", "stream", "external_id", "raw", "fingerprint", "synced_at")


class _JSONText(str):
    """JSON already serialised (the canonical text of a raw payload): stored as it is."""

    __slots__ = ()


def json_text(value: Any) -> str:
    """``value`` serialised now, for a JSON column of a row given to :func:`upsert_rows`: written as
    it is instead of serialised there (a stream converting pages in its reading thread does the
    work there, off the thread that writes)."""
    return _JSONText(canonical_json(value))


class _Layout:
    """How rows that set one list of fields become statement parameters.

    ``order`` is the statement's column order (as positions in ``_Table.fields``): the engine
    columns first (for a stream page), then the columns the rows set, then the others, which
    get their defaults. ``get`` takes the set values out of a row's mapping in one call.
    """

    __slots__ = ("adapt", "callable_defaults", "defaults", "get", "order", "single")

    def __init__(self, table: _Table, db: Any, field_names: tuple[str, ...], engine_first: bool) -> None:
        unknown = [name for name in field_names if name not in table.by_key]
        if unknown:
            raise TypeError(f"{table.model.__name__} has no field {', '.join(map(repr, unknown))}")
        chosen = {table.by_key[name].attname: name for name in field_names}
        lead = [table.position[name] for name in _ENGINE_COLUMNS] if engine_first else []
        skip = set(_ENGINE_COLUMNS) if engine_first else set()
        keys: list[str] = []
        given: list[int] = []
        missing: list[int] = []
        for index, f in enumerate(table.fields):
            if f.attname in skip:
                continue
            if f.attname in chosen:
                keys.append(chosen[f.attname])
                given.append(index)
            else:
                missing.append(index)
        self.order = lead + given + missing
        self.single = len(keys) == 1
        self.get = itemgetter(*keys) if keys else None
        #: (slot in the parameter list, adapter or None, the value is a related instance)
        self.adapt = [
            (len(lead) + slot, table.adapters[index], table.fields[index].is_relation and key == table.fields[index].name)
            for slot, (key, index) in enumerate(zip(keys, given, strict=True))
            if table.adapters[index] is not None
            or (table.fields[index].is_relation and key == table.fields[index].name)
        ]
        first_default = len(lead) + len(given)
        self.defaults = [None if callable(table.fields[i].default) else table.prepare(i, table.fields[i].get_default()) for i in missing]
        self.callable_defaults = [
            (first_default + slot, index) for slot, index in enumerate(missing) if callable(table.fields[index].default)
        ]

    def fill(self, table: _Table, values: list[Any], given: Mapping[str, Any]) -> list[Any]:
        """Append the row's set values and the defaults to ``values`` (prepared for the driver)."""
        if self.get is not None:
            if self.single:
                values.append(self.get(given))
            else:
                values.extend(self.get(given))
        for slot, adapter, related in self.adapt:
            value = values[slot]
            if value is not None:
                if related:
                    value = value.pk
                values[slot] = value if adapter is None else adapter(value)
        values.extend(self.defaults)
        for slot, index in self.callable_defaults:
            values[slot] = table.prepare(index, table.fields[index].get_default())
        return values


def sqlite_utc_text(moment: datetime) -> str:
    """``str(moment)`` without its ``+00:00``, for a datetime in UTC: what Django's SQLite backend
    stores (``2026-01-02 03:04:05.120000``, no fraction when there are no microseconds).

    orjson writes the same digits in ISO form (``"2026-01-02T03:04:05.120000+00:00"``) in a
    third of the time ``str`` takes, and a first sync writes three or four datetimes per row.
    """
    text = orjson.dumps(moment).decode()
    return f"{text[1:11]} {text[12:-7]}"


class _Table:
    """How one mirror model's rows are written to one database, prepared once per process.

    Every statement lists every column but the primary key; a column a row does not set gets
    its default on insert and is left alone on update (it is not in ``update_fields``).

    * PostgreSQL: rows known to be new are ``COPY``-ed straight into the table; an upsert
      ``COPY``-es into a session-local temporary table and moves the rows with one
      ``INSERT … SELECT … ON CONFLICT DO UPDATE`` (an ``executemany`` costs a statement per row).
    * SQLite and the rest: one ``executemany`` of ``INSERT … ON CONFLICT DO UPDATE``.

    Values are prepared per column type, as Django would send them: datetimes as naive text in
    the connection's zone on SQLite and aware datetimes on PostgreSQL, Decimals and plain types
    as they are, JSON as text on SQLite (a raw payload as its canonical JSON); anything else
    through its field's ``get_db_prep_save``, as ``bulk_create`` does.
    """

    def __init__(self, model: type[models.Model], db: Any) -> None:
        opts = model._meta
        self.model = model
        self.opts = opts
        self.db = db
        by_attname = {f.attname: f for f in opts.concrete_fields if not f.primary_key}
        ordered = [by_attname[name] for name in _ENGINE_COLUMNS if name in by_attname]
        ordered += [f for name, f in by_attname.items() if name not in _ENGINE_COLUMNS]
        assert not any(getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False) for f in ordered)
        self.fields = ordered
        self.attnames = [f.attname for f in ordered]
        self.position = {f.attname: index for index, f in enumerate(ordered)}
        #: A row's field key (name or attname) → its field.
        self.by_key: dict[str, models.Field] = {}
        for f in ordered:
            self.by_key[f.attname] = f
            self.by_key[f.name] = f
        self.vendor = db.vendor
        self.adapters = [self._adapter(f) for f in ordered]
        self._layouts: dict[tuple[tuple[str, ...], bool], _Layout] = {}
        self._sql: dict[tuple[tuple[int, ...], tuple[str, ...], tuple[str, ...]], tuple[str, ...]] = {}
        self._multi_sql: dict[tuple[str, int], str] = {}
        self._variables: int | None = None

    # -- values ------------------------------------------------------------------------------
    def _adapter(self, field: models.Field) -> Callable[[Any], Any] | None:
        """A function from a (non-null) Python value to a driver parameter; None: as it is."""
        if field.is_relation or type(field) in _PLAIN_FIELD_TYPES:
            return None
        db = self.db
        prep = field.get_db_prep_save
        if isinstance(field, models.DateTimeField):
            if self.vendor == "postgresql":
                return lambda value: value if type(value) is datetime and value.tzinfo is not None else prep(value, db)
            if self.vendor == "sqlite" and settings.USE_TZ:
                zone = db.timezone
                # Zones that are the connection's zone: a datetime in one of them is written as is.
                same = {zone, UTC} if getattr(zone, "key", None) == "UTC" or zone is UTC else {zone}

                def adapt_sqlite_datetime(value: Any) -> Any:
                    # SQLite's adapt_datetimefield_value: naive text in the connection's zone.
                    if type(value) is datetime:
                        if value.tzinfo in same:
                            return sqlite_utc_text(value)
                        if value.tzinfo is not None:
                            return str(value.astimezone(zone).replace(tzinfo=None))
                    return prep(value, db)

                return adapt_sqlite_datetime
        elif isinstance(field, models.DecimalField):
            if self.vendor == "sqlite":
                # The text Django's SQLite backend binds for a Decimal (its adapter is str):
                # made here, in the converting thread, not in the writer's statement.
                return lambda value: str(value) if type(value) is Decimal else prep(value, db)
            return lambda value: value if type(value) is Decimal else prep(value, db)
        elif isinstance(field, models.JSONField):
            if self.vendor == "postgresql":
                return lambda value: str(value) if type(value) is _JSONText else prep(value, db)
            if self.vendor == "sqlite":
                encoder = field.encoder

                def adapt_sqlite_json(value: Any) -> Any:
                    # SQLite's adapt_json_value is json.dumps(value, cls=encoder); orjson writes the
                    # same value faster (without the spaces) and leaves what it does not know to it.
                    if type(value) is _JSONText:
                        return str(value)
                    try:
                        return orjson.dumps(value).decode()
                    except TypeError:
                        return json.dumps(value, cls=encoder)

                return adapt_sqlite_json
        return lambda value: prep(value, db)

    def prepare(self, index: int, value: Any) -> Any:
        adapter = self.adapters[index]
        return value if adapter is None or value is None else adapter(value)

    def layout(self, field_names: tuple[str, ...], engine_first: bool) -> _Layout:
        layout = self._layouts.get((field_names, engine_first))
        if layout is None:
            layout = self._layouts[(field_names, engine_first)] = _Layout(self, self.db, field_names, engine_first)
        return layout

    def page_params(
        self, engine_values: dict[str, Any], field_names: Sequence[str], group: Sequence[tuple[Row, str, str]]
    ) -> tuple[list[int], list[list[Any]]]:
        """Column order and driver parameters of one group of a stream page's rows: (row,
        canonical raw JSON, fingerprint), each setting ``field_names``."""
        layout = self.layout(tuple(field_names), True)
        synced_at = self.prepare(self.position["synced_at"], engine_values["synced_at"])
        organization_id, connection_id, stream = (
            engine_values["organization_id"], engine_values["connection_id"], engine_values["stream"],
        )
        fill = layout.fill
        params = [
            fill(self, [organization_id, connection_id, stream, row.external_id, raw_json, digest, synced_at], row.fields)
            for row, raw_json, digest in group
        ]
        return layout.order, params

    def instance(self, engine_values: dict[str, Any], row: Row, digest: str) -> models.Model:
        """The model instance of a row just written, as ``Model(**values)`` would build it (for
        ``save_related``) without running ``__init__`` field by field; its id is not set."""
        obj = self.model.__new__(self.model)
        state = ModelState()
        state.adding = False
        state.db = self.db.alias
        values = obj.__dict__
        values["_state"] = state
        values[self.opts.pk.attname] = None
        values.update(engine_values)
        values["external_id"] = row.external_id
        values["raw"] = row.raw
        values["fingerprint"] = digest
        given = row.fields
        for f in self.fields:
            name = f.attname
            if name in _ENGINE_COLUMNS:
                continue
            if name in given:
                values[name] = given[name]
            elif f.name in given:
                value = given[f.name]
                if f.is_relation:
                    values[name] = None if value is None else value.pk
                    if value is not None:
                        f.set_cached_value(obj, value)
                else:
                    values[name] = value
            else:
                values[name] = f.get_default()
        return obj

    # -- statements --------------------------------------------------------------------------
    def write(
        self,
        columns_and_params: tuple[list[int], list[list[Any]]],
        *,
        update_fields: Sequence[str],
        unique_fields: Sequence[str],
        insert_only: bool = False,
    ) -> None:
        """Write rows; ``insert_only`` promises that none of them is in the table yet."""
        order, params = columns_and_params
        if not params:
            return
        db = self.db
        key = (tuple(order), tuple(update_fields), tuple(unique_fields))
        statements = self._sql.get(key)
        if statements is None:
            statements = self._sql[key] = self._statements(order, update_fields, unique_fields)
        # The staging table empties at commit: its steps must share one transaction.
        with transaction.atomic(using=db.alias, savepoint=False), db.cursor() as cursor:
            if self.vendor == "postgresql":
                create, copy_stage, move, clear, copy_table = statements
                if insert_only:
                    steps: tuple[str, ...] = (copy_table,)
                else:
                    cursor.execute(create)
                    steps = (copy_stage, move, clear)
                with cursor.cursor.copy(steps[0]) as stream:
                    for values in params:
                        stream.write_row(values)
                for statement in steps[1:]:
                    cursor.execute(statement)
            else:
                self._insert_rows(cursor, statements[0], params)

    def _insert_rows(self, cursor: Any, statement: str, params: list[list[Any]]) -> None:
        """Rows in multi-row ``INSERT … VALUES (…), (…) ON CONFLICT …`` statements on SQLite.

        ``executemany`` steps SQLite once per row, releasing and taking back the interpreter lock
        each time: with the pipeline threads busy, a first sync waited for the lock between rows
        about as long as it spent writing them. One statement per batch of rows steps once.
        """
        if self.vendor != "sqlite" or len(params) == 1:
            cursor.executemany(statement, params)
            return
        per_statement = max(1, self._max_variables() // len(params[0]))
        head, values, tail = self._split_values(statement)
        for start in range(0, len(params), per_statement):
            chunk = params[start:start + per_statement]
            key = (statement, len(chunk))
            sql = self._multi_sql.get(key)
            if sql is None:
                # In the driver's own placeholder style: Django's SQLite cursor would rewrite
                # every statement's thousands of %s with a regular expression at each call.
                sql = f"{head}{', '.join([values] * len(chunk))}{tail}".replace("%s", "?")
                _remember(self._multi_sql, key, sql, limit=256)  # one text per batch size
            sqlite3.Cursor.execute(cursor.cursor, sql, [value for row in chunk for value in row])

    def _max_variables(self) -> int:
        """How many parameters one SQLite statement may take (999 where the driver cannot say)."""
        if self._variables is None:
            limit = 999
            getlimit = getattr(getattr(self.db, "connection", None), "getlimit", None)
            if getlimit is not None:
                limit = getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            self._variables = min(limit, 32766)
        return self._variables

    @staticmethod
    def _split_values(statement: str) -> tuple[str, str, str]:
        """``INSERT … VALUES `` / ``(%s, …)`` / `` ON CONFLICT …`` of a one-row statement."""
        head, rest = statement.split(" VALUES ", 1)
        values, tail = rest.split(")", 1)
        return head + " VALUES ", values + ")", tail

    def _statements(self, order: Sequence[int], update_fields: Sequence[str], unique_fields: Sequence[str]) -> tuple[str, ...]:
        quote = self.db.ops.quote_name
        opts = self.opts
        all_columns = ", ".join(quote(f.column) for f in self.fields)
        columns = ", ".join(quote(self.fields[index].column) for index in order)
        update_columns = [opts.get_field(name).column for name in update_fields]
        conflict = (
            f"ON CONFLICT ({', '.join(quote(opts.get_field(name).column) for name in unique_fields)}) "
            f"DO UPDATE SET {', '.join(f'{quote(c)} = EXCLUDED.{quote(c)}' for c in update_columns)}"
        )
        table = quote(opts.db_table)
        if self.vendor == "postgresql":
            stage = quote(f"sync_stage_{opts.db_table}"[:63])
            return (
                # Temporary: private to this database session, gone with it (or with a rollback
                # of the transaction that created it, hence IF NOT EXISTS before every use), and
                # emptied at each commit; within a transaction each batch deletes its rows.
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
                f"SELECT {all_columns} FROM {table} WITH NO DATA",
                f"COPY {stage} ({columns}) FROM STDIN",
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} {conflict}",
                f"DELETE FROM {stage}",
                f"COPY {table} ({columns}) FROM STDIN",
            )
        return (f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(order))}) {conflict}",)


#: Per thread, like Django's database connections the tables are bound to.
_tables = threading.local()


def _table(model: type[models.Model], db: Any) -> _Table:
    cache: dict[tuple[type[models.Model], str, int], _Table] | None = getattr(_tables, "cache", None)
    if cache is None:
        cache = _tables.cache = {}
    key = (model, db.alias, id(db))
    table = cache.get(key)
    if table is None or table.db is not db:
        table = cache[key] = _Table(model, db)
    return table


def upsert(
    model: type[models.Model],
    objects: Sequence[models.Model],
    *,
    update_fields: Sequence[str],
    unique_fields: Sequence[str] = NATURAL_KEY,
) -> None:
    """``INSERT … ON CONFLICT (unique_fields) DO UPDATE`` of model instances in one batch.

    What ``bulk_create(update_conflicts=True)`` does, without its per-value SQL compilation
    (see :class:`_Table`). If two objects share a natural key the last one wins. Objects' ids
    are not set; auto-now fields are not supported (mirror models have none).
    """
    if not objects:
        return
    attnames = [f.attname for f in model._meta.concrete_fields if not f.primary_key]
    upsert_rows(
        model,
        [{name: getattr(obj, name) for name in attnames} for obj in objects],
        update_fields=update_fields,
        unique_fields=unique_fields,
    )


#: One row of :func:`prepare_rows`: (its natural key, the names of the fields it sets, the
#: driver's values of every column in its statement's order).
PreparedRow = tuple[tuple[Any, ...], tuple[str, ...], list[Any]]


def upsert_rows(
    model: type[models.Model],
    rows: Sequence[Mapping[str, Any]],
    *,
    update_fields: Sequence[str],
    unique_fields: Sequence[str] = NATURAL_KEY,
) -> None:
    """:func:`upsert` of rows given as ``{field name or attname: value}``, without building model
    instances; a field a row leaves out gets its default on insert. The last row of a natural
    key wins."""
    if rows:
        write_prepared_rows(
            model, prepare_rows(model, rows, unique_fields), update_fields=update_fields, unique_fields=unique_fields
        )


def prepare_rows(
    model: type[models.Model], rows: Iterable[Mapping[str, Any]], unique_fields: Sequence[str] = NATURAL_KEY
) -> list[PreparedRow]:
    """The part of :func:`upsert_rows` that needs no database connection (only its vendor and
    zone): a stream converting pages in its reading thread prepares its child rows there."""
    table = _table(model, connections[router.db_for_write(model)])
    key_fields = [model._meta.get_field(name) for name in unique_fields]
    prepared: list[PreparedRow] = []
    for row in rows:
        key = []
        for f in key_fields:
            value = row[f.attname] if f.attname in row else row[f.name]
            key.append(value.pk if f.is_relation and isinstance(value, models.Model) else value)
        names = field_names(row)
        prepared.append((tuple(key), names, table.layout(names, False).fill(table, [], row)))
    return prepared


def write_prepared_rows(
    model: type[models.Model],
    prepared: Iterable[PreparedRow],
    *,
    update_fields: Sequence[str],
    unique_fields: Sequence[str] = NATURAL_KEY,
) -> None:
    """Upsert rows from :func:`prepare_rows` (made for the same model and ``unique_fields``); the
    last row of a natural key wins."""
    latest = {key: (names, values) for key, names, values in prepared}
    if not latest:
        return
    table = _table(model, connections[router.db_for_write(model)])
    groups: dict[tuple[str, ...], list[list[Any]]] = {}
    for names, values in latest.values():
        groups.setdefault(names, []).append(values)
    for names, group in groups.items():
        order = table.layout(names, False).order
        table.write((order, group), update_fields=update_fields, unique_fields=unique_fields)


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
