"""Benchmark: 10,000 QuickBooks bills through the whole flow into the Qonto sandbox (issue 5).

``python bench/run.py qbo`` (the harness writes the returned markdown into bench/RESULTS.md).

Both sandboxes are served over loopback HTTP (``connectors.sandbox.server.serve``) and the hub
reaches them through its one HTTP door, as it would reach Intuit and Qonto. A fresh SQLite
database under ``var/bench`` is used (or the ``DATABASE_URL`` given). Steps, each timed:

1. the first QuickBooks sync (every stream of a company with 10,000 bills, 30 % with a PDF);
2. the flow: enrich, score with the engine against Qonto's supplier invoices, post the auto band
   (QuickBooks attachment or rendered Factur-X PDF, one outbox push each, sent at once);
3. a reviewer approves every bill in the review band (``services.decide``), which posts them;
4. idempotence: the hourly poll again with nothing new, then the QuickBooks cursors rewound and a
   full resync followed by the flow — neither may upload anything.

Figures: time per step, HTTP requests per bill (each sandbox's own request log), and duplicates:
the Qonto sandbox's uploaded supplier invoices are counted against the bills posted as new, and
their idempotency keys must be distinct.

Sandbox settings: QuickBooks throttling (500 requests/min per realm) and Qonto's rate limits are
switched off, so the figures measure the hub, not the providers' quotas (at Intuit's 500/min the
attachment downloads alone would take about 6 minutes).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path

SECTION = "qbo"
ROOT = Path(__file__).resolve().parent.parent
BILLS = int(os.environ.get("QBO_BENCH_BILLS", "10000"))
SEED = 4711


def _setup_database() -> str:
    var = ROOT / "var" / "bench"
    var.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("DATABASE_URL"):
        path = var / "quickbooks_flow.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
    os.environ.setdefault("MEDIA_ROOT", str(var / "media"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qontohub.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return os.environ["DATABASE_URL"].split("://", 1)[0]


def main() -> str:
    engine_name = _setup_database()
    from django.conf import settings
    from django_q.conf import Conf

    from connectors import http
    from connectors.models import Connection, Document, Push, RecordLink, SyncCursor
    from connectors.qonto.sandbox import QontoSandbox
    from connectors.quickbooks.sandbox import QuickBooksSandbox
    from connectors.sandbox.server import serve
    from connectors.sync import sync_connection
    from qontohub.models import Membership, Organization, User
    from qontohub.tenancy import Role
    from reconciliation import quickbooks_flow as flow
    from reconciliation import services
    from reconciliation.models import Match

    Conf.SYNC = True  # tasks (the upload after an approval) run inline, as a worker would
    started_at = time.perf_counter()
    qbo_api = QuickBooksSandbox(
        SEED,
        bills=BILLS,
        vendors=40,
        customers=20,
        invoices=200,
        credit_memos=20,
        purchase_orders=40,
        purchases=300,
        throttle=False,
    )
    qonto_api = QontoSandbox(SEED, transactions=300, supplier_invoices=150, clients=10, client_invoices=20)
    qonto_api.set_rate_limits([])
    seeded = time.perf_counter() - started_at
    qbo_server, qbo_url = serve(qbo_api)
    qonto_server, qonto_url = serve(qonto_api)
    try:
        settings.PROVIDERS["quickbooks"].update(
            api_base_url=qbo_url,
            authorize_url=f"{qbo_url}/connect/oauth2",
            token_url=f"{qbo_url}/oauth2/v1/tokens/bearer",
            revoke_url=f"{qbo_url}/v2/oauth2/tokens/revoke",
        )
        settings.PROVIDERS["qonto"].update(api_base_url=qonto_url, oauth_base_url=qonto_url)
        http.reset_sessions()

        organization = Organization.objects.create(
            name="Atelier Lumière SAS", qonto_slug="bench", siren="732829320"
        )
        reviewer = User.objects.create_user(email="reviewer@bench.test", password="bench-bench-bench")
        Membership.objects.create(organization=organization, user=reviewer, role=Role.REVIEWER)
        qonto = Connection.objects.create(
            organization=organization,
            provider="qonto",
            auth_method="api_key",
            status="active",
            external_account_id=qonto_api.organization_slug,
            credentials={"login": qonto_api.organization_slug, "secret_key": qonto_api.secret_key},
        )
        token = qbo_api.connect()
        from datetime import timedelta

        from django.utils import timezone

        qbo = Connection.objects.create(
            organization=organization,
            provider="quickbooks",
            auth_method="oauth2",
            status="active",
            external_account_id=token["realmId"],
            options={"realmId": token["realmId"]},
            credentials={k: token[k] for k in ("access_token", "refresh_token", "token_type")},
            token_expires_at=timezone.now() + timedelta(seconds=token["expires_in"]),
        )
        qbo_api.clear_log()
        qonto_api.clear_log()
        timings: dict[str, float] = {}

        t0 = time.perf_counter()
        qonto_run = sync_connection(qonto.pk, trigger="schedule", streams=["supplier_invoices"])
        qbo_run = sync_connection(qbo.pk, trigger="connect")
        timings["QuickBooks first sync (+ Qonto supplier invoices)"] = time.perf_counter() - t0
        assert qbo_run.outcome == "succeeded" and qonto_run.outcome == "succeeded", (
            qbo_run.error,
            qonto_run.error,
        )
        sync_requests = sum(qbo_api.request_counts.values())

        t0 = time.perf_counter()
        flow.run_flow(qbo.pk)
        timings["flow: enrich, score, post the auto band"] = time.perf_counter() - t0
        bands = Counter(Match.objects.filter(route=flow.ROUTE).values_list("status", flat=True))

        t0 = time.perf_counter()
        review_ids = list(
            Match.objects.filter(route=flow.ROUTE, status=Match.Status.PROPOSED).values_list("pk", flat=True)
        )
        approved, problems = services.approve_best(
            review_ids, reviewer, note="bench: reviewer approves the best candidate"
        )
        timings[f"reviewer approves {len(review_ids):,} items (posts them)"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        sync_connection(qbo.pk, trigger="schedule")
        again = flow.run_flow(qbo.pk)
        timings["hourly poll with nothing new (sync + flow)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        SyncCursor.objects.filter(connection=qbo).update(value="", position={})
        sync_connection(qbo.pk, trigger="schedule", full=True)
        rewound = flow.run_flow(qbo.pk)
        timings["rewound cursors: full resync + flow"] = time.perf_counter() - t0
        total = time.perf_counter() - started_at

        uploads = [r for r in qonto_api.supplier_invoices.values() if r["source_type"] == "direct_upload"]
        keys = list(qonto_api._bulk_keys)
        links = RecordLink.objects.filter(source_provider="quickbooks", target_provider="qonto")
        as_new = links.filter(data__mode="uploaded").exclude(target_id="").count()
        linked = links.filter(data__mode="linked").count()
        pushes = Counter(Push.objects.values_list("status", flat=True))
        final = Counter(Match.objects.filter(route=flow.ROUTE).values_list("status", flat=True))
        qbo_requests = sum(qbo_api.request_counts.values())
        qonto_requests = sum(qonto_api.request_counts.values())
        bills = Document.objects.filter(connection=qbo, stream="bills").count()
        duplicates = (
            len(uploads)
            - len({u["id"] for u in uploads})
            + (len(uploads) - as_new)
            + (len(keys) - len(set(keys)))
        )
        files = Counter(link.data.get("file") for link in links.filter(data__mode="uploaded").only("data"))
    finally:
        qbo_server.shutdown()
        qonto_server.shutdown()

    lines = [
        f"{bills:,} QuickBooks bills (sandbox seed {SEED}, {len(qbo_api.entities('Vendor'))} vendors, "
        f"{len(qbo_api.entities('Attachable')):,} with a PDF attachment) against "
        f"{len(qonto_api.supplier_invoices) - len(uploads)} existing Qonto supplier invoices; both sandboxes over "
        f"loopback HTTP; {engine_name} database. Sandbox seeding took {seeded:.1f} s (not counted below).",
        "",
        "| step | time |",
        "| --- | --- |",
        *(f"| {label} | {seconds:.1f} s |" for label, seconds in timings.items()),
        f"| **whole run** | **{total - seeded:.1f} s** ({(total - seeded) / bills * 1000:.1f} ms per bill) |",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| first run: auto-posted / in review / refused | {bands.get('auto_posted', 0):,} / {bands.get('proposed', 0):,} / "
        f"{bands.get('refused', 0):,} |",
        f"| after the reviewer: posted as new / linked to an existing Qonto invoice | {as_new:,} / {linked:,} |",
        f"| final match statuses | {', '.join(f'{k} {v:,}' for k, v in sorted(final.items()))} |",
        f"| files uploaded: QuickBooks attachment / rendered Factur-X PDF | {files.get('quickbooks_attachment', 0):,} / "
        f"{files.get('rendered_facturx', 0):,} |",
        f"| Qonto sandbox: uploaded supplier invoices / distinct / bills posted as new | {len(uploads):,} / "
        f"{len({u['id'] for u in uploads}):,} / {as_new:,} |",
        f"| **duplicates** | **{duplicates}** |",
        f"| pushes by status | {dict(pushes)} |",
        f"| QuickBooks requests: first sync / whole run / per bill | {sync_requests:,} / {qbo_requests:,} / "
        f"{qbo_requests / bills:.3f} |",
        f"| Qonto requests: whole run / per bill | {qonto_requests:,} / {qonto_requests / bills:.3f} |",
        f"| requests per bill, both providers | {(qbo_requests + qonto_requests) / bills:.3f} |",
        f"| poll with nothing new: uploads / rewound cursors: uploads | {again.uploads_enqueued} / "
        f"{rewound.uploads_enqueued} |",
        f"| approval problems | {len(problems)} |",
        "",
        "Throttling off in both sandboxes (see `bench/quickbooks_flow.py`); the first run's split depends "
        "on the seeded data (vendors without a tax id or web address go to review).",
    ]
    print("\n".join(lines), flush=True)
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
