"""QuickBooks bills → Qonto supplier invoices, against both sandboxes (issue 5's "done when").

Every test runs the QuickBooks sandbox and the Qonto sandbox in-process behind the hub's one HTTP
door; the hub syncs QuickBooks, the flow scores with the engine and posts through the outbox to
Qonto's ``/v2/supplier_invoices/bulk``; what Qonto holds is read back from its sandbox.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import facturx
import pytest
from django.db import connections
from django.utils import timezone
from rest_framework.test import APIClient
from stdnum.fr import siren as fr_siren

from connectors import http, oauth, outbox, services
from connectors.models import Connection, Document, Push, RecordLink, SyncCursor, SyncRun
from connectors.sync import sync_connection
from connectors.tasks import sync_connection_task, sync_due_connections
from qontohub.models import ApiToken
from qontohub.schedules import HOURLY, PREFIX, install_schedules
from reconciliation import quickbooks_flow as flow
from reconciliation import services as decisions
from reconciliation.models import Decision, Match
from tests.connectors.quickbooks.test_connector import quickbooks_connection

pytestmark = pytest.mark.django_db

BULK = "/v2/supplier_invoices/bulk"
QBO_SMALL = {
    "vendors": 4,
    "customers": 2,
    "bills": 0,
    "invoices": 0,
    "credit_memos": 0,
    "purchase_orders": 0,
    "purchases": 0,
}
QONTO_SMALL = {
    "transactions": 30,
    "pending": 0,
    "declined": 0,
    "external_transactions": 0,
    "clients": 2,
    "client_invoices": 2,
    "supplier_invoices": 6,
}
#: SIRENs with a valid Luhn key (their VAT numbers pass python-stdnum).
SIRENS = ("404833048", "552100554", "936044502", "732829320", "542051180")


def vat(siren: str) -> str:
    return "FR" + fr_siren.to_tva(siren)


@pytest.fixture
def world(sandbox_for: Any, org_a: Any) -> SimpleNamespace:
    qonto_api = sandbox_for("qonto", 1, **QONTO_SMALL)
    qbo_api = sandbox_for("quickbooks", 1, **QBO_SMALL)
    qonto = Connection.objects.create(
        organization=org_a,
        provider="qonto",
        auth_method=Connection.AuthMethod.API_KEY,
        status=Connection.Status.ACTIVE,
        external_account_id=qonto_api.organization_slug,
        credentials={"login": qonto_api.organization_slug, "secret_key": qonto_api.secret_key},
    )
    assert sync_connection(qonto.pk, trigger="schedule", streams=["supplier_invoices"]).outcome == "succeeded"
    qbo = quickbooks_connection(qbo_api, org_a)
    return SimpleNamespace(qonto_api=qonto_api, qbo_api=qbo_api, qonto=qonto, qbo=qbo, org=org_a)


def vendor(
    w: SimpleNamespace, name: str, *, tax_id: str | None = None, website: bool = True
) -> dict[str, Any]:
    slug = name.lower().replace(" ", "-")
    return w.qbo_api.add_entity(
        "Vendor",
        DisplayName=name,
        CompanyName=name,
        TaxIdentifier=tax_id,
        Active=True,
        WebAddr={"URI": f"https://{slug}.example"} if website else None,
        PrimaryEmailAddr={"Address": f"billing@{slug}.example"} if website else None,
        CurrencyRef={"value": "EUR", "name": "Euro"},
        BillAddr={"Line1": "12 rue des Tanneurs", "City": "Lyon", "PostalCode": "69002", "Country": "FR"},
    )


def bill(w: SimpleNamespace, who: dict[str, Any], number: str | None, **fields: Any) -> dict[str, Any]:
    return w.qbo_api.add_bill(
        VendorRef={"value": who["Id"], "name": who["DisplayName"]}, DocNumber=number, **fields
    )


def cycle(w: SimpleNamespace) -> dict[str, Any]:
    """The hourly poll of one connection: sync, then (AFTER_SYNC_TASKS) the flow.

    The QuickBooks clock moves on first: a poll comes after the edits it reads (records of the
    very second of a read are read again by the next poll, see ``streams.sync_mark``).
    """
    w.qbo_api.advance(2)
    return sync_connection_task(w.qbo.pk)


def uploads(w: SimpleNamespace) -> list[dict[str, Any]]:
    return [r for r in w.qonto_api.supplier_invoices.values() if r["source_type"] == "direct_upload"]


def match_of(w: SimpleNamespace, qbo_bill: dict[str, Any]) -> Match:
    return Match.objects.get(
        route=flow.ROUTE, document__connection=w.qbo, document__external_id=qbo_bill["Id"]
    )


def link_of(w: SimpleNamespace, qbo_bill: dict[str, Any]) -> RecordLink:
    return RecordLink.objects.get(
        source_provider="quickbooks", source_id=f"{w.qbo.options['realmId']}:{qbo_bill['Id']}"
    )


def consent(url: str, realm: str) -> dict[str, str]:
    """Play the person on Intuit's consent page; returns the callback's query."""
    session = http.session_for("quickbooks")
    query = dict(parse_qsl(urlsplit(url).query))
    answer = session.post(
        url.split("?")[0], data={**query, "decision": "authorize", "realmId": realm}, allow_redirects=False
    )
    return dict(parse_qsl(urlsplit(answer.headers["Location"]).query))


# --- schedule -----------------------------------------------------------------------------------
def test_hourly_poll_is_installed_and_runs_the_flow(world: SimpleNamespace) -> None:
    from django_q.models import Schedule

    install_schedules()
    schedule = Schedule.objects.get(name=f"{PREFIX}quickbooks-sync")
    assert (
        schedule.func == "connectors.tasks.sync_due_connections"
        and schedule.kwargs == "provider='quickbooks'"
    )
    # Hourly: 24 syncs a day.
    assert schedule.schedule_type == HOURLY == Schedule.HOURLY and schedule.repeats == -1
    who = vendor(world, "Atelier Nordlys SARL", tax_id=vat(SIRENS[0]))
    new = bill(world, who, "NORD-2026-001")

    assert sync_due_connections("quickbooks") == 1  # tasks run inline in tests

    match = match_of(world, new)
    assert match.status == Match.Status.AUTO_POSTED and len(uploads(world)) == 1, (
        match.confidence,
        match.candidates[0]["features"],
    )


# --- the bands ----------------------------------------------------------------------------------
def test_a_bill_at_85_or_more_appears_once_in_qonto_with_its_pdf(world: SimpleNamespace) -> None:
    who = vendor(world, "Atelier Nordlys SARL", tax_id=vat(SIRENS[0]))
    new = bill(world, who, "NORD-2026-001", PrivateNote="Studio rent March")

    summary = cycle(world)

    match = match_of(world, new)
    assert match.status == Match.Status.AUTO_POSTED and match.confidence >= 85, match.candidates
    assert match.candidates[0]["target_ids"] == [] and match.candidates[0]["labels"] == [flow.NEW_LABEL]
    explanations = " ".join(f["explanation"] for f in match.candidates[0]["features"])
    assert "EU VAT" in explanations and "atelier-nordlys-sarl.example" in explanations
    assert match.decisions.get().action == Decision.Action.AUTO
    [invoice] = uploads(world)
    pdf = world.qonto_api.attachments[invoice["attachment_id"]].data
    assert pdf.startswith(b"%PDF")
    name, xml = facturx.get_xml_from_pdf(pdf, check_xsd=True)
    assert (
        name == "factur-x.xml"
        and b"NORD-2026-001" in xml
        and b"120.00" in xml
        and vat(SIRENS[0]).encode() in xml
    )
    assert link_of(world, new).target_id == invoice["id"]
    assert summary["outcome"] == SyncRun.Outcome.SUCCEEDED

    # The next polls change nothing: still exactly one invoice, one push.
    cycle(world)
    flow.run_flow(world.qbo.pk)
    assert len(uploads(world)) == 1 and Push.objects.count() == 1


def test_the_quickbooks_attachment_is_uploaded_as_is(world: SimpleNamespace) -> None:
    who = vendor(world, "Imprimerie Vauban SAS", tax_id=vat(SIRENS[1]))
    new = bill(world, who, "VAU-77")
    original = b"%PDF-1.4\n% the supplier's own invoice\n%%EOF\n"
    world.qbo_api.attach_file("Bill", new["Id"], "VAU-77.pdf", original)

    cycle(world)

    [invoice] = uploads(world)
    assert world.qonto_api.attachments[invoice["attachment_id"]].data == original
    assert (
        invoice["file_name"] == "VAU-77.pdf" and link_of(world, new).data["file"] == "quickbooks_attachment"
    )


def test_a_bill_between_55_and_85_waits_for_review_and_posts_once_approved(
    world: SimpleNamespace, reviewer_a: Any, django_capture_on_commit_callbacks: Any
) -> None:
    who = vendor(world, "Studio Sans Papiers", website=False)  # no tax id, no web domain
    new = bill(world, who, "SSP-12")

    cycle(world)

    match = match_of(world, new)
    assert match.status == Match.Status.PROPOSED and 55 <= match.confidence < 85, match.candidates
    assert "no tax id" in " ".join(f["explanation"] for f in match.candidates[0]["features"])
    assert uploads(world) == [] and not Push.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        decisions.decide(match.pk, reviewer_a, "approve", candidate=0, expected_version=match.version)
    match.refresh_from_db()
    assert match.status == Match.Status.APPROVED
    [invoice] = uploads(world)
    assert link_of(world, new).target_id == invoice["id"]
    cycle(world)
    flow.run_flow(world.qbo.pk)
    assert len(uploads(world)) == 1


def test_a_bill_below_55_is_refused_with_candidates_and_can_be_pinned(
    world: SimpleNamespace, reviewer_a: Any, django_capture_on_commit_callbacks: Any
) -> None:
    qonto_invoice = (
        Document.objects.filter(connection=world.qonto, kind="supplier_invoice").order_by("pk").first()
    )
    who = vendor(world, qonto_invoice.counterparty_name, website=False)
    future = (timezone.localdate() + timedelta(days=40)).isoformat()
    new = bill(world, who, None, TxnDate=future, DueDate=None)  # no number, no due date, dated ahead

    cycle(world)

    match = match_of(world, new)
    assert match.status == Match.Status.REFUSED and match.confidence < 55, match.candidates
    assert match.candidates and "dated in the future" in str(match.candidates)
    assert uploads(world) == []
    # Pinned by hand to the invoice Qonto already has: linked, nothing uploaded.
    with django_capture_on_commit_callbacks(execute=True):
        decisions.decide(match.pk, reviewer_a, "pin", document_ids=[qonto_invoice.pk])
    link = link_of(world, new)
    assert link.target_id == qonto_invoice.external_id and link.data["mode"] == "linked"
    assert uploads(world) == [] and not Push.objects.exists()


def test_a_bill_qonto_already_has_is_linked_not_uploaded(world: SimpleNamespace) -> None:
    qonto_invoice = (
        Document.objects.filter(connection=world.qonto, kind="supplier_invoice")
        .exclude(number="")
        .order_by("pk")
        .first()
    )
    raw = qonto_invoice.raw
    who = vendor(world, qonto_invoice.counterparty_name, tax_id=raw["vat_number"])
    net = Decimal(raw["total_amount_excluding_taxes"]["value"])
    tax = Decimal(raw["total_tax_amount"]["value"])
    new = bill(
        world,
        who,
        qonto_invoice.number,
        TxnDate=qonto_invoice.issue_date.isoformat(),
        Line=[
            {
                "Id": "1",
                "LineNum": 1,
                "Description": "Services",
                "Amount": float(net),
                "DetailType": "AccountBasedExpenseLineDetail",
                "AccountBasedExpenseLineDetail": {"AccountRef": {"value": "7", "name": "Rent"}},
            }
        ],
        TxnTaxDetail={"TotalTax": float(tax)},
    )

    cycle(world)

    match = match_of(world, new)
    assert match.status == Match.Status.AUTO_POSTED, match.candidates
    assert match.candidates[0]["target_ids"] == [qonto_invoice.pk]
    assert list(match.links.values_list("document_id", flat=True)) == [qonto_invoice.pk]
    link = link_of(world, new)
    assert link.target_id == qonto_invoice.external_id and link.data["mode"] == "linked"
    assert uploads(world) == [] and not Push.objects.exists()


# --- no duplicates ------------------------------------------------------------------------------
def test_an_edited_bill_is_recorded_as_updated_instead_of_duplicated(world: SimpleNamespace) -> None:
    who = vendor(world, "Atelier Nordlys SARL", tax_id=vat(SIRENS[0]))
    new = bill(world, who, "NORD-2026-002")
    cycle(world)
    [invoice] = uploads(world)

    world.qbo_api.edit_bill(new["Id"], DueDate="2030-01-31", TxnTaxDetail={"TotalTax": 30.0})
    cycle(world)

    assert uploads(world) == [invoice] and Push.objects.count() == 1
    link = link_of(world, new)
    assert link.target_id == invoice["id"] and link.data["updated_in_quickbooks"]
    changes = link.data["updates"][-1]["changes"]
    assert changes["total"] == ["120.00", "130.00"] and changes["due_date"][1] == "2030-01-31"
    assert match_of(world, new).status == Match.Status.AUTO_POSTED


def test_a_rewound_cursor_creates_no_duplicate(world: SimpleNamespace) -> None:
    who = vendor(world, "Atelier Nordlys SARL", tax_id=vat(SIRENS[0]))
    posted = [bill(world, who, f"NORD-2026-1{i}") for i in range(3)]
    cycle(world)
    assert len(uploads(world)) == 3

    SyncCursor.objects.filter(connection=world.qbo).update(value="", position={})
    run = sync_connection(world.qbo.pk, trigger="schedule", full=True)
    assert run.read > 0 and run.created == 0
    flow.run_flow(world.qbo.pk)
    # Even with the decision lost, the record link and the idempotency key hold.
    match_of(world, posted[0]).delete()
    summary = flow.run_flow(world.qbo.pk)
    assert summary.scored == 1 and summary.uploads_enqueued == 0
    assert len(uploads(world)) == 3 and Push.objects.count() == 3


def test_a_throttled_or_failing_upload_is_retried_and_never_posted_twice(world: SimpleNamespace) -> None:
    who = vendor(world, "Atelier Nordlys SARL", tax_id=vat(SIRENS[0]))
    first = bill(world, who, "NORD-2026-201")
    world.qonto_api.inject_fault(429, times=2, path_prefix=BULK, retry_after=1)
    cycle(world)
    push = Push.objects.get()
    assert push.status == Push.Status.DONE and len(uploads(world)) == 1
    assert world.qonto_api.calls("POST", BULK) == 3

    second = bill(world, who, "NORD-2026-202")
    world.qonto_api.inject_fault(503, times=None, path_prefix=BULK)
    cycle(world)
    failing = Push.objects.get(source_id=str(match_of(world, second).document_id))
    assert failing.status == Push.Status.FAILED and failing.next_attempt_at > timezone.now()
    assert len(uploads(world)) == 1 and link_of(world, second).target_id == ""

    world.qonto_api.clear_faults()
    # An attempt that reached Qonto but whose answer was lost (the worker died): Qonto has it.
    world.qonto.connector().push_supplier_invoice_upload(failing)
    assert len(uploads(world)) == 2
    Push.objects.filter(pk=failing.pk).update(next_attempt_at=timezone.now())
    assert outbox.drain_outbox() == 1  # the minute's drain sends it again (inline in tests)
    flow.run_flow(world.qbo.pk)
    failing.refresh_from_db()
    assert failing.status == Push.Status.DONE and link_of(world, second).target_id == failing.remote_id
    # Same idempotency key, same invoice: never posted twice.
    assert len(uploads(world)) == 2 and {u["id"] for u in uploads(world)} == {
        push.remote_id,
        failing.remote_id,
    }
    assert link_of(world, first).target_id == push.remote_id


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_refresh_token_rotation_survives_two_concurrent_workers(sandbox_for: Any, org_a: Any) -> None:
    api = sandbox_for("quickbooks", 1, **QBO_SMALL)
    api.set_refresh_rotation(every=1, grace_seconds=0, invalidate_on_successor_use=True)
    connection = quickbooks_connection(api, org_a)
    api.expire_access_tokens()
    Connection.objects.filter(pk=connection.pk).update(token_expires_at=timezone.now() - timedelta(minutes=1))
    barrier = threading.Barrier(2)
    outcomes: list[Any] = []

    def worker() -> None:
        try:
            row = Connection.objects.get(pk=connection.pk)
            barrier.wait(timeout=10)
            oauth.ensure_fresh(row)
            outcomes.append(row.connector().identify())
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcomes.append(exc)
        finally:
            connections.close_all()  # this thread's own database connection

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    realm = connection.options["realmId"]
    assert outcomes == [(realm, api.company().name)] * 2
    refreshes = [
        r
        for r in api.requests_made
        if r.route == "POST /oauth2/v1/tokens/bearer" and b"grant_type=refresh_token" in r.body
    ]
    assert len(refreshes) == 1
    connection.refresh_from_db()
    assert connection.status == Connection.Status.ACTIVE
    # The rotated refresh token was saved: it still works.
    assert oauth.refresh(connection.pk, force=True)
    assert sync_connection(connection.pk, trigger="schedule").outcome == SyncRun.Outcome.SUCCEEDED


# --- disconnect and reconnect -------------------------------------------------------------------
def test_disconnect_revokes_and_stops_writes_reconnect_resumes(
    world: SimpleNamespace, owner_a: Any, reviewer_a: Any, django_capture_on_commit_callbacks: Any
) -> None:
    strong = vendor(world, "Atelier Nordlys SARL", tax_id=vat(SIRENS[0]))
    weak = vendor(world, "Studio Sans Papiers", website=False)
    posted = bill(world, strong, "NORD-2026-301")
    cycle(world)
    waiting = bill(world, weak, "SSP-301")
    stuck = bill(world, strong, "NORD-2026-302")
    world.qonto_api.inject_fault(503, times=None, path_prefix=BULK)
    cycle(world)
    world.qonto_api.clear_faults()
    review = match_of(world, waiting)
    assert review.status == Match.Status.PROPOSED
    held = Push.objects.get(source_id=str(match_of(world, stuck).document_id))
    assert held.status == Push.Status.FAILED

    connection = services.disconnect(world.qbo, owner_a)

    assert connection.status == Connection.Status.DISCONNECTED and connection.last_error == ""
    assert [r.status for r in world.qbo_api.requests_made if r.route == "POST /v2/oauth2/tokens/revoke"] == [
        200
    ]
    held.refresh_from_db()
    assert held.status == Push.Status.CANCELLED
    # What was written and the review items stay.
    assert len(uploads(world)) == 1 and link_of(world, posted).target_id
    review.refresh_from_db()
    assert review.status == Match.Status.PROPOSED
    # No further writes: no sync, no flow, no approval.
    assert flow.run_flow(world.qbo.pk).skipped
    assert sync_connection(world.qbo.pk, trigger="schedule").outcome == SyncRun.Outcome.SKIPPED
    with pytest.raises(flow.PostingRefused, match="disconnected"):
        decisions.decide(review.pk, reviewer_a, "approve")
    review.refresh_from_db()
    assert review.status == Match.Status.PROPOSED and len(uploads(world)) == 1

    url = services.reconnect(connection, owner_a, services.callback_uri("quickbooks"))
    params = consent(url, world.qbo.options["realmId"])
    again = services.finish_connect(connection, owner_a, params["code"], params["state"], params)
    assert again.pk == world.qbo.pk and again.status == Connection.Status.ACTIVE
    later = bill(world, strong, "NORD-2026-303")
    world.qbo_api.advance(2)
    run = sync_connection(world.qbo.pk, trigger="schedule", streams=["bills"])
    # Resumed from the saved cursor: only the new bill was read.
    assert run.outcome == SyncRun.Outcome.SUCCEEDED and run.read == 1
    summary = flow.run_flow(world.qbo.pk)
    assert summary.resumed == 1
    held.refresh_from_db()
    assert held.status == Push.Status.DONE
    assert match_of(world, later).status == Match.Status.AUTO_POSTED
    assert sorted(u["id"] for u in uploads(world)) == sorted(
        link_of(world, b).target_id for b in (posted, stuck, later)
    )
    with django_capture_on_commit_callbacks(execute=True):
        decisions.decide(review.pk, reviewer_a, "approve")
    assert len(uploads(world)) == 4


# --- who sees it --------------------------------------------------------------------------------
def test_the_admin_shows_what_the_hub_did_and_the_outsider_sees_none_of_it(
    world: SimpleNamespace, client_for: Any, owner_a: Any, outsider: Any
) -> None:
    strong = vendor(world, "Atelier Nordlys SARL", tax_id=vat(SIRENS[0]))
    weak = vendor(world, "Studio Sans Papiers", website=False)
    posted = bill(world, strong, "NORD-2026-401")
    waiting = bill(world, weak, "SSP-401")
    cycle(world)
    world.qbo_api.edit_bill(posted["Id"], DueDate="2030-02-28")
    cycle(world)
    listing = "/admin/reconciliation/quickbooksbill/"
    detail = f"{listing}{match_of(world, posted).document_id}/change/"

    page = client_for(owner_a).get(listing)
    assert page.status_code == 200
    assert "NORD-2026-401" in page.text and "SSP-401" in page.text
    assert "posted; edited in QuickBooks since (recorded)" in page.text and "in review" in page.text
    assert link_of(world, posted).target_id in page.text
    shown = client_for(owner_a).get(detail)
    assert shown.status_code == 200 and "EU VAT" in shown.text and "due_date" in shown.text
    assert client_for(owner_a).get(f"{listing}?outcome=proposed").text.count("SSP-401") >= 1

    client = client_for(outsider)
    assert client.get(detail).status_code == 404
    other = client.get(listing)
    assert other.status_code == 200 and "NORD-2026-401" not in other.text and "SSP-401" not in other.text
    _, key = ApiToken.issue(outsider, "script")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    for endpoint in ("/api/v1/matches/", "/api/v1/review-items/"):
        answer = api.get(endpoint)
        assert answer.status_code == 200
        body = answer.json()
        assert (body["results"] if isinstance(body, dict) else body) == []
    assert api.get(f"/api/v1/matches/{match_of(world, waiting).pk}/").status_code == 404


def test_owners_set_the_history_start_and_mapping_overrides_in_the_admin(
    world: SimpleNamespace, client_for: Any, owner_a: Any, outsider: Any
) -> None:
    from connectors.quickbooks.mapping import mapping_for

    url = f"/admin/reconciliation/quickbookssettings/{world.qbo.pk}/change/"
    form = {
        "history_start": "2026-01-01",
        "mappings-TOTAL_FORMS": "1",
        "mappings-INITIAL_FORMS": "0",
        "mappings-MIN_NUM_FORMS": "0",
        "mappings-MAX_NUM_FORMS": "1000",
        "mappings-0-source_value": "Bill.PrivateNote",
        "mappings-0-target_value": "invoice_number",
        "mappings-0-note": "our numbers live in the memo",
    }
    assert client_for(outsider).post(url, form).status_code == 404
    response = client_for(owner_a).post(url, form)
    assert response.status_code == 302, response.content[:2000]
    world.qbo.refresh_from_db()
    assert world.qbo.options["history_start"] == "2026-01-01" and world.qbo.options["realmId"]
    mapping = mapping_for(world.qbo)
    assert mapping.version == 2 and mapping.path("Bill", "invoice_number") == "PrivateNote"
    page = client_for(owner_a).get(url)
    assert "Bill.PrivateNote" in page.text and "2026-01-01" in page.text
