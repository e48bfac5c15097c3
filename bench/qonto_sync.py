"""Benchmark: a first Qonto sync of 50,000 transactions over loopback HTTP, beside a bare paging loop.

``python bench/run.py qonto`` (the harness writes the returned markdown into bench/RESULTS.md);
``python -m bench.qonto_sync`` prints the same without touching RESULTS.md.

Processes (each with its own environment, so nothing leaks into the harness process):

* **sandbox** — ``QontoSandbox(seed, transactions=50000)`` served by
  ``connectors.sandbox.server.serve`` on a free loopback port, rate limits off
  (``set_rate_limits([])``: the figures measure the hub, not Qonto's quota) and its clock frozen
  (pending lines do not settle mid-bench, so the re-sync really has nothing new). It lives until
  its stdin closes.
* **worker**, once per repetition — a fresh database (a new SQLite file under ``var/bench``, or,
  when ``DATABASE_URL`` is set, a database ``<name>_bench_qonto`` recreated on that server),
  migrated, with one organisation and one API-key ``Connection`` pointed at the sandbox through
  ``QONTO_API_BASE_URL`` (i.e. ``settings.PROVIDERS["qonto"]``). In that process, in this order:

  1. the **bare paging loop**: a plain ``requests.Session`` reading exactly the pages the sync
     reads (``/v2/organization``, then ``/v2/transactions`` per bank account with the same
     ``status[]``, ``includes[]``, ``sort_by`` and ``per_page=100``, then the four invoicing
     lists), parsing each body as JSON and following ``meta.next_page``; nothing else;
  2. the **full sync**: ``sync_connection(connection, trigger="connect")``, every stream;
  3. a **no-change re-sync**: ``sync_connection`` again; the requests it sends are counted per
     stream (and per bank account for transactions) by a counting session installed through
     ``connectors.http.session_factory``, and checked against ``SyncRun.requests``;
  4. the **bare paging loop** again.

The ratio is full sync / the mean of the two bare loops of the same repetition (the machine's
speed drifts within seconds: a loop on one side only measured the sync against another moment);
the table gives every repetition and the median, because the machine (2 cores) is shared with
other test runs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench"
SEED = int(os.environ.get("QONTO_BENCH_SEED", "4711"))
TRANSACTIONS = int(os.environ.get("QONTO_BENCH_TRANSACTIONS", "50000"))
REPEATS = int(os.environ.get("QONTO_BENCH_REPEATS", "5"))
TARGET_RATIO = 1.5
TARGET_SECONDS = 60.0
TARGET_RESYNC = 2

#: Which stream a request path belongs to (what the re-sync table is keyed on).
PATH_STREAMS = {
    "/v2/organization": "bank_accounts",
    "/v2/transactions": "transactions",
    "/v2/clients": "clients",
    "/v2/client_invoices": "client_invoices",
    "/v2/credit_notes": "credit_notes",
    "/v2/supplier_invoices": "supplier_invoices",
}


# --- sandbox process ---------------------------------------------------------------------------
def sandbox_process(seed: int, transactions: int, freeze: bool = True, **options: Any) -> None:
    """Serve the sandbox until stdin closes; each stdin line ``add`` adds one transaction now
    (answered with its JSON on stdout), for benchmarks that need a change to sync."""
    sys.path.insert(0, str(ROOT))
    from connectors.qonto.sandbox import QontoSandbox
    from connectors.sandbox.server import serve

    started = time.perf_counter()
    api = QontoSandbox(seed, transactions=transactions, **options)
    api.set_rate_limits([])
    if freeze:
        api.freeze()
    seeded = time.perf_counter() - started
    server, base_url = serve(api)
    accounts = {account_id: len(api.transactions_of(bank_account_id=account_id)) for account_id in api.accounts}
    print(
        json.dumps(
            {
                "url": base_url,
                "seeded_s": seeded,
                "accounts": accounts,
                "account_names": {a.id: a.name for a in api.accounts.values()},
                "transactions": api.count_transactions(),
                "login": api.organization_slug,
                "secret": api.secret_key,
            }
        ),
        flush=True,
    )
    try:
        for line in sys.stdin:  # the parent closes our stdin when it is done
            if line.strip() == "add":
                print(json.dumps(api.add_transactions(1)[0]), flush=True)
    finally:
        server.shutdown()


# --- worker process ------------------------------------------------------------------------------
def fresh_database(name: str) -> tuple[str, str]:
    """A new empty database called ``name``; returns (DATABASE_URL, engine label).

    SQLite (the default): ``var/bench/<name>.sqlite3``, deleted first. With a PostgreSQL
    ``DATABASE_URL``: the database ``<its name>_<name>`` on that server, dropped and recreated, so
    the database the URL names is never touched.
    """
    given = os.environ.get("DATABASE_URL", "")
    if not given or given.startswith("sqlite"):
        path = VAR / f"{name}.sqlite3"
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}", "SQLite"
    import psycopg

    parts = urlsplit(given)
    database = f"{parts.path.lstrip('/')}_{name}"
    admin = parts._replace(path="/postgres").geturl().replace("postgresql+psycopg://", "postgresql://")
    admin = admin.replace("postgres://", "postgresql://", 1) if admin.startswith("postgres://") else admin
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}"')
        conn.execute(f'CREATE DATABASE "{database}"')
        version = conn.execute("SHOW server_version").fetchone()[0]
    return parts._replace(path="/" + database).geturl(), f"PostgreSQL {version.split()[0]}"


def command_line(section: str) -> str:
    """The command that produced a section, with the DATABASE_URL it ran against (no password)."""
    given = os.environ.get("DATABASE_URL", "")
    prefix = ""
    if given and not given.startswith("sqlite"):
        parts = urlsplit(given)
        netloc = parts.netloc.split("@", 1)
        if len(netloc) == 2 and ":" in netloc[0]:
            netloc[0] = netloc[0].split(":", 1)[0] + ":…"
        prefix = f"DATABASE_URL={parts._replace(netloc='@'.join(netloc)).geturl()} "
    return f"{prefix}.venv/bin/python bench/run.py {section}"


class _Counted:
    """Counts the hub's requests by (stream, bank account) — the re-sync figure."""

    counts: Counter[tuple[str, str]] = Counter()

    @classmethod
    def session(cls, provider: str) -> Any:
        from connectors.http import new_session

        session = new_session()  # the hub's own session class, with a counting request()
        real = session.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            params = kwargs.get("params") or []
            items = params.items() if isinstance(params, dict) else params
            account = next((str(v) for k, v in items if k == "bank_account_id"), "")
            parts = urlsplit(url)
            account = account or (parse_qs(parts.query).get("bank_account_id") or [""])[0]
            cls.counts[(PATH_STREAMS.get(parts.path, parts.path), account)] += 1
            return real(method, url, *args, **kwargs)

        session.request = request  # type: ignore[method-assign]
        return session


def bare_loop(base_url: str, auth: str, account_ids: list[str]) -> tuple[float, int, int]:
    """The same pages as the sync, read with plain requests; returns (seconds, requests, records)."""
    import requests

    from connectors.qonto.streams import PER_PAGE, TRANSACTION_STATUSES

    session = requests.Session()
    cpu = time.process_time()
    headers = {"Accept": "application/json", "User-Agent": "QontoHub-bench/1.0", "Authorization": auth}
    sent = records = 0
    started = time.perf_counter()

    def get(path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        nonlocal sent
        sent += 1
        response = session.get(base_url + path, params=params, headers=headers, timeout=(5, 30))
        response.raise_for_status()
        return response.json()

    def paged(path: str, key: str, extra: list[tuple[str, str]]) -> None:
        nonlocal records
        page = 1
        while True:
            body = get(path, [*extra, ("page", str(page)), ("per_page", str(PER_PAGE))])
            records += len(body[key])
            following = (body.get("meta") or {}).get("next_page")
            if not isinstance(following, int) or following <= page:
                return
            page = following

    organization = get("/v2/organization", [("include_external_accounts", "true")])
    records += len(organization["organization"]["bank_accounts"])
    for account_id in account_ids:
        paged(
            "/v2/transactions",
            "transactions",
            [
                ("bank_account_id", account_id),
                *[("status[]", status) for status in TRANSACTION_STATUSES],
                ("includes[]", "attachments"),
                ("sort_by", "created_at:asc"),
            ],
        )
    for path in ("/v2/clients", "/v2/client_invoices", "/v2/credit_notes", "/v2/supplier_invoices"):
        paged(path, path.rsplit("/", 1)[1], [("sort_by", "created_at:asc")])
    return time.perf_counter() - started, sent, records, time.process_time() - cpu


def worker_process(rep: int, sandbox: dict[str, Any]) -> None:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection as db

    from connectors import http
    from connectors.models import BankTransaction, Connection, SyncRun
    from connectors.sync import sync_connection
    from qontohub.models import Organization

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    migrated = time.perf_counter() - started
    http.session_factory = _Counted.session
    http.reset_sessions()

    organization = Organization.objects.create(name="Atelier Bench SAS", qonto_slug=sandbox["login"], siren="732829320")
    connection = Connection.objects.create(
        organization=organization,
        provider="qonto",
        auth_method=Connection.AuthMethod.API_KEY,
        status=Connection.Status.ACTIVE,
        external_account_id=sandbox["login"],
        credentials={"login": sandbox["login"], "secret_key": sandbox["secret"]},
    )
    accounts = sorted(sandbox["accounts"])
    auth = f"{sandbox['login']}:{sandbox['secret']}"
    before_s, bare_requests, bare_records, before_cpu = bare_loop(sandbox["url"], auth, accounts)

    _Counted.counts.clear()
    profile_to = os.environ.get("QONTO_BENCH_PROFILE")  # a path: write a pyinstrument profile there
    profiler = None
    if profile_to:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
    t0, c0 = time.perf_counter(), time.process_time()
    first = sync_connection(connection.pk, trigger=SyncRun.Trigger.CONNECT)
    sync_s, sync_cpu = time.perf_counter() - t0, time.process_time() - c0
    if profiler is not None:
        profiler.stop()
        Path(profile_to).write_text(profiler.output_text(unicode=True, color=False, show_all=False))
    first_counts = dict(_Counted.counts)
    assert first.outcome == SyncRun.Outcome.SUCCEEDED, (first.outcome, first.error)
    mirrored = BankTransaction.objects.filter(connection=connection).count()

    _Counted.counts.clear()
    t0 = time.perf_counter()
    again = sync_connection(connection.pk, trigger=SyncRun.Trigger.SCHEDULE)
    resync_s = time.perf_counter() - t0
    assert again.outcome == SyncRun.Outcome.SUCCEEDED, (again.outcome, again.error)
    resync = {f"{stream}|{account}": n for (stream, account), n in _Counted.counts.items()}
    # The bare loop again: the machine's speed drifts within seconds, so the sync is compared with
    # the mean of the loops just before and just after it.
    after_s, _, _, after_cpu = bare_loop(sandbox["url"], auth, accounts)
    bare_s, bare_cpu = (before_s + after_s) / 2, (before_cpu + after_cpu) / 2
    print(
        json.dumps(
            {
                "rep": rep,
                "engine": os.environ.get("BENCH_ENGINE", db.vendor),
                "migrate_s": migrated,
                "bare_s": bare_s,
                "bare_before_s": before_s,
                "bare_after_s": after_s,
                "bare_requests": bare_requests,
                "bare_records": bare_records,
                "bare_cpu": bare_cpu,
                "sync_cpu": sync_cpu,
                "sync_s": sync_s,
                "sync_requests": first.requests,
                "sync_requests_counted": sum(first_counts.values()),
                "read": first.read,
                "created": first.created,
                "mirrored_transactions": mirrored,
                "resync_s": resync_s,
                "resync_requests": again.requests,
                "resync_changed": again.created + again.updated,
                "resync": resync,
                "switch_interval": settings.SYNC_SWITCH_INTERVAL,
            }
        ),
        flush=True,
    )


# --- orchestration -------------------------------------------------------------------------------
def _start_sandbox() -> tuple[subprocess.Popen[str], dict[str, Any]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.qonto_sync", "sandbox", str(SEED), str(TRANSACTIONS)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=10)
        raise RuntimeError("the sandbox process exited before serving")
    return process, json.loads(line)


def _run_worker(rep: int, sandbox: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    url, engine = fresh_database(f"qonto_sync_{rep}")
    env.update(
        DATABASE_URL=url,
        BENCH_ENGINE=engine,
        DJANGO_SETTINGS_MODULE="qontohub.settings",
        DEBUG="false",
        QONTO_API_BASE_URL=sandbox["url"],
        QONTO_OAUTH_BASE_URL=sandbox["url"],
        QONTO_STAGING_TOKEN="",
        PYTHONPATH=str(ROOT),
    )
    done = subprocess.run(
        [sys.executable, "-m", "bench.qonto_sync", "worker", str(rep), json.dumps(sandbox)],
        cwd=ROOT, env=env, text=True, capture_output=True, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {rep} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> str:
    VAR.mkdir(parents=True, exist_ok=True)
    process, sandbox = _start_sandbox()
    runs: list[dict[str, Any]] = []
    try:
        for rep in range(1, REPEATS + 1):
            result = _run_worker(rep, sandbox)
            print(
                f"qonto rep {rep} ({result['engine']}): bare {result['bare_s']:.2f} s, sync {result['sync_s']:.2f} s "
                f"(×{result['sync_s'] / result['bare_s']:.2f}), re-sync {result['resync_requests']} requests",
                flush=True,
            )
            runs.append(result)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=30)
    return report(runs, sandbox)


def report(runs: list[dict[str, Any]], sandbox: dict[str, Any]) -> str:
    engine = runs[0]["engine"]
    bare = [r["bare_s"] for r in runs]
    sync = [r["sync_s"] for r in runs]
    ratios = [r["sync_s"] / r["bare_s"] for r in runs]
    rows_per_s = [r["created"] / r["sync_s"] for r in runs]
    tx = sandbox["transactions"]
    last = runs[-1]
    median_ratio = statistics.median(ratios)
    median_sync = statistics.median(sync)

    def cells(values: list[float], fmt: str, unit: str = "") -> str:
        return " | ".join(format(v, fmt) + unit for v in values)

    reps = " | ".join(f"run {r['rep']}" for r in runs)
    cores = statistics.median([r["sync_cpu"] for r in runs]) / median_sync
    interval = last.get("switch_interval", 0)
    switching = (
        f"threads hand the interpreter lock over every {interval * 1000:g} ms (`SYNC_SWITCH_INTERVAL`; at "
        "Python's default, 5 ms, the writing thread waited that long after each statement)"
        if interval > 0
        else "threads switch at Python's default interval, 5 ms (`SYNC_SWITCH_INTERVAL=0`)"
    )
    lines = [
        f"Qonto sandbox (seed {SEED}) with {tx:,} transactions on {len(sandbox['accounts'])} bank accounts "
        f"(one external), served over loopback HTTP by `connectors.sandbox.server.serve` in its own process; "
        f"**rate limits off** (`set_rate_limits([])`), sandbox clock frozen. {engine}, a fresh database per run "
        f"(migrated before timing). API-key connection; `per_page=100`. {len(runs)} runs, each: bare loop, the "
        "full sync, a no-change re-sync, the bare loop again; the sync is compared with the mean of the two "
        "bare loops around it. The machine has 2 cores, shared with other test runs, so every run is shown "
        "and the median is the figure.",
        "",
        f"| figure | {reps} | median | target |",
        "| --- | " + " | ".join("---" for _ in runs) + " | --- | --- |",
        "| bare loop just before / just after the sync | "
        + " | ".join(f"{r['bare_before_s']:.2f} / {r['bare_after_s']:.2f} s" for r in runs)
        + " | | |",
        f"| (a) bare paging loop, mean of the two, plain `requests` ({last['bare_requests']} requests, {last['bare_records']:,} records) "
        f"| {cells(bare, '.2f', ' s')} | {statistics.median(bare):.2f} s | |",
        f"| (b) full sync, `sync_connection` ({last['sync_requests']} requests, {last['read']:,} records read) "
        f"| {cells(sync, '.2f', ' s')} | **{median_sync:.2f} s** | ≤ {TARGET_SECONDS:.0f} s |",
        f"| (c) ratio sync / bare loop | {cells(ratios, '.2f')} | **{median_ratio:.2f}×** | ≤ {TARGET_RATIO}× |",
        f"| (e) rows written per second (full sync) | {cells(rows_per_s, ',.0f')} | {statistics.median(rows_per_s):,.0f} | |",
        "| CPU of the hub's process: bare loop (mean) / full sync (all its threads) | "
        + " | ".join(f"{r['bare_cpu']:.1f} / {r['sync_cpu']:.1f} s" for r in runs)
        + f" | {statistics.median([r['bare_cpu'] for r in runs]):.1f} / {statistics.median([r['sync_cpu'] for r in runs]):.1f} s | |",
        f"| no-change re-sync: time | {cells([r['resync_s'] for r in runs], '.2f', ' s')} | "
        f"{statistics.median([r['resync_s'] for r in runs]):.2f} s | |",
        "",
        f"Every run mirrored {last['mirrored_transactions']:,} transactions ({last['created']:,} rows created in all "
        f"streams); the sync sent the same {last['sync_requests']} requests as the bare loop "
        f"({'same count' if all(r['sync_requests'] == r['bare_requests'] for r in runs) else 'COUNTS DIFFER'}).",
        "",
        "Where the time goes: the bare loop is `requests` + `response.json()` (the standard library's "
        "parser) and nothing else. The sync is one Python process: a thread requests the pages one after the "
        "other, up to eight ahead, and parses them with orjson; a second converts them (`to_row`, canonical "
        "JSON, fingerprints, the statement's column values, the receipts' rows); the sync's own thread "
        "writes them (multi-row `INSERT … ON CONFLICT` on SQLite, `COPY` on PostgreSQL), several waiting pages "
        "in one savepoint, with the lease renewed as each batch transaction starts and the cursor and counts "
        "written once before it commits (every 0.25 s); a fourth thread copies SQLite's write-ahead log back "
        "into the database (passive checkpoints) so that no commit does it. While a sync runs the garbage "
        f"collector runs less often and {switching}. The hub's process keeps about {cores:.1f} cores busy "
        "(CPU row above over the sync's time) while the sandbox serving the pages is another busy process on "
        "the same two cores. The machine's speed drifts by ±15 % within a minute, hence five runs and the median.",
        "",
        "(d) Requests sent by the no-change re-sync (last run; counted on the hub's side by a counting "
        f"session, total {last['resync_requests']} = `SyncRun.requests`; {last['resync_changed']} rows changed):",
        "",
        "| stream | bank account | transactions on it | requests | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    per_stream: Counter[str] = Counter()
    for key, count in last["resync"].items():
        per_stream[key.split("|", 1)[0]] += count
    names = sandbox["account_names"]
    for key, count in sorted(last["resync"].items()):
        stream, account = key.split("|", 1)
        if stream == "transactions":
            lines.append(
                f"| transactions | {names.get(account, account)} (`{account[:8]}…`) | "
                f"{sandbox['accounts'].get(account, 0):,} | {count} | ≤ {TARGET_RESYNC} |"
            )
    for stream, count in per_stream.items():
        if stream == "transactions":
            budget = TARGET_RESYNC * len(sandbox["accounts"])
            lines.append(f"| **transactions, all accounts** | {len(sandbox['accounts'])} accounts | {tx:,} | {count} | ≤ {budget} ({TARGET_RESYNC} per account) |")
        else:
            lines.append(f"| {stream} | | | {count} | ≤ {TARGET_RESYNC} |")
    met = median_ratio <= TARGET_RATIO and median_sync <= TARGET_SECONDS and all(
        count <= TARGET_RESYNC for count in last["resync"].values()
    )
    lines += [
        "",
        f"Targets (ARCHITECTURE §8): {'**met**' if met else '**not met**'} on the median.",
        "",
        f"Command: `{command_line('qonto')}`",
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else "main"
    if role == "sandbox":
        sandbox_process(int(sys.argv[2]), int(sys.argv[3]), freeze=sys.argv[4:5] != ["live"])
    elif role == "worker":
        worker_process(int(sys.argv[2]), json.loads(sys.argv[3]))
    else:
        main()
