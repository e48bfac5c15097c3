"""QuickBooks bills → Qonto supplier invoices: extract, enrich, score, post (issue 5).

The connector (``connectors/quickbooks``) has already *extracted* each bill into a ``Document``
(kind ``bill``) with the integration page's field mapping. This module does the rest for one
QuickBooks connection, and is the ``quickbooks_bills`` route's poster:

1. **Enrich** each bill against the organisation's history (:func:`enrich`): the vendor's legal
   entity and tax identifier (validated with python-stdnum: EU VAT with its check key, SIREN,
   SIRET, US EIN), web domain (web address, else e-mail domain), the ledger account used for this
   vendor on its other bills, how many of its bills were posted before, and whether Qonto already
   knows the supplier (same tax id or name among the Qonto supplier invoices).
2. **Score** (:func:`score_bill`). The reconciliation engine matches the bill, read as a payment-like
   line (``routes.bill_line``), against the Qonto supplier invoices still free (counterparty name,
   amount, date proximity, currency, reference — the engine's features). Each existing invoice is
   a candidate with the engine's calibrated confidence. Posting the bill as a *new* supplier invoice
   is one more candidate, whose confidence is the bill's quality — field completeness, counterparty
   strength, policy fit — times the engine's probability that no existing invoice is this bill.
   The best candidate decides with the organisation's policy: ≥ auto (85) posts (or links to the
   existing Qonto entry), review (55) to auto waits in the review queue with the ranked
   alternatives, below is refused with the candidates kept (a person may approve one or pin an
   invoice by hand).
3. **Post** (:func:`post_match`, also what ``services.decide`` calls through the route). Linked to
   an existing invoice: a ``RecordLink`` says so, nothing is uploaded. New: the QuickBooks
   attachment's bytes when the bill has a PDF or image, else a PDF rendered from the bill with
   Factur-X data (``connectors.quickbooks.pdf``), go into the Qonto connection's outbox as a
   ``supplier_invoice.upload`` push to ``/v2/supplier_invoices/bulk`` (qonto-api.md §3.10). Its
   idempotency key is derived from the realmId and the bill Id only, never from its SyncToken or
   content, so a re-import, a rewound cursor or an edit produces the same key: the outbox's unique
   key makes enqueuing twice a no-op and Qonto answers a key it has seen with the first invoice.
   The push is done only once Qonto's answer names the created invoice (``connectors.qonto.writes``);
   :func:`settle_uploads` then writes that invoice's id on the ``RecordLink``
   (quickbooks bill ↔ qonto supplier invoice), the second line of dedup: a bill with a link is
   never uploaded again. An edited bill whose invoice exists is *recorded as updated* on its link
   (Qonto's API has no supplier-invoice update, §3.10), which the admin shows.

Disconnecting QuickBooks (``QuickBooksConnector.on_disconnect``) revokes the grant; this flow then
stops: nothing is scored or posted for a connection that is not active, approvals are refused, and
uploads not yet sent are cancelled (``connectors.quickbooks.connector.hold_uploads``). What was written and the review items
stay. Reconnecting resumes from the saved cursors, and the next run sends the held uploads again.

Entry points: :func:`run_flow` (one QuickBooks connection), :func:`after_sync` (named in
``settings.AFTER_SYNC_TASKS``) and :func:`post_match` (the route's poster).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_date
from stdnum.eu import vat as eu_vat
from stdnum.fr import siren as fr_siren
from stdnum.fr import siret as fr_siret
from stdnum.us import ein as us_ein

from connectors import outbox
from connectors.base import ConnectorError
from connectors.models import Connection, Counterparty, Document, DocumentLine, Push, RecordLink
from connectors.quickbooks.pdf import bill_data, render_bill_pdf
from reconciliation import engine
from reconciliation.models import Decision, Match, MatchLink
from reconciliation.routes import bill_line, document_target, qonto_supplier_invoices

logger = logging.getLogger(__name__)

ROUTE = "quickbooks_bills"
FLOW_VERSION = "qbo-flow 1.0"
ACTION = "supplier_invoice.upload"
SOURCE_TYPE = "quickbooks_bill"
LINK_SOURCE_TYPE = "bill"
LINK_TARGET_TYPE = "supplier_invoice"
#: Namespace of the upload idempotency keys (uuid5 of "quickbooks:<realmId>:bill:<Id>").
KEY_NAMESPACE = uuid.UUID("6f1c5a4e-2b7d-4c59-9a0e-5f2d8c3b7a11")
#: File types Qonto's bulk upload takes (§3.10: PDF and images); anything else is rendered.
UPLOADABLE_TYPES = ("application/pdf", "image/jpeg", "image/png")
#: §3.10: the whole upload is at most 15 MB.
MAX_UPLOAD_BYTES = 15 * 1024 * 1024
NEW_LABEL = "New supplier invoice in Qonto"
#: Weights of the bill's quality (they add up to 1 within each group).
COMPLETENESS = {
    "amount": 0.25,
    "vendor": 0.20,
    "number": 0.15,
    "issue_date": 0.15,
    "currency": 0.10,
    "due_date": 0.05,
    "tax": 0.05,
    "lines": 0.05,
}
STRENGTH = {"tax_id": 0.45, "legal_name": 0.15, "domain": 0.10, "ledger_account": 0.10, "history": 0.20}
QUALITY_SPLIT = (0.6, 0.4)  # completeness, counterparty strength


class PostingRefused(RuntimeError):
    """A bill cannot be posted now; the message says why and what to do."""


# --- enrichment ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Enrichment:
    """What the organisation's history says about a bill's vendor."""

    vendor_id: str = ""
    legal_name: str = ""
    tax_id: str = ""
    tax_id_kind: str = ""  # "EU VAT", "SIREN", "SIRET", "US EIN" when valid, else ""
    siren: str = ""
    domain: str = ""
    ledger_account: str = ""
    ledger_account_name: str = ""
    posted_before: int = 0
    known_in_qonto: int = 0
    duplicate_numbers: int = 0
    active: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_tax_id(value: str, country: str = "") -> tuple[str, str]:
    """(kind, SIREN) of a valid tax identifier, or ("", "") (python-stdnum check digits)."""
    compact = re.sub(r"[\s.\-]", "", value or "").upper()
    if not compact:
        return "", ""
    if compact[:2].isalpha():
        if eu_vat.is_valid(compact):
            siren = compact[4:13] if compact.startswith("FR") and len(compact) == 13 else ""
            return "EU VAT", siren
        return "", ""
    if country in ("", "FR") and fr_siret.is_valid(compact):
        return "SIRET", compact[:9]
    if country in ("", "FR") and fr_siren.is_valid(compact):
        return "SIREN", compact
    if country in ("", "US") and us_ein.is_valid(compact):
        return "US EIN", ""
    return "", ""


def web_domain(website: str, email: str = "") -> str:
    for candidate in (website, f"//{email.split('@', 1)[1]}" if "@" in (email or "") else ""):
        if not candidate:
            continue
        netloc = urlsplit(candidate if "//" in candidate else f"//{candidate}").netloc.lower()
        netloc = netloc.split("@")[-1].split(":")[0]
        if netloc.startswith("www."):
            netloc = netloc[4:]
        if "." in netloc:
            return netloc
    return ""


def enrich(connection: Connection, bills: Sequence[Document]) -> dict[int, Enrichment]:
    """Enrichment per bill pk, from a handful of queries whatever the number of bills."""
    vendor_ids = {b.counterparty_external_id for b in bills if b.counterparty_external_id}
    vendors = {
        v.external_id: v
        for v in Counterparty.objects.filter(
            connection=connection, stream="vendors", external_id__in=vendor_ids
        )
    }
    all_bills = Document.objects.filter(connection=connection, stream="bills").exclude(status="deleted")
    # Ledger accounts of each vendor's bill lines, and each bill's own (to count only the others).
    usage = (
        DocumentLine.objects.filter(document__in=all_bills, document__counterparty_external_id__in=vendor_ids)
        .exclude(account_code="")
        .values_list("document__counterparty_external_id", "account_code")
        .annotate(n=Count("id"))
    )
    per_vendor: dict[str, Counter[str]] = defaultdict(Counter)
    for vendor_id, account, n in usage:
        per_vendor[vendor_id][account] += n
    own: dict[int, Counter[str]] = defaultdict(Counter)
    names: dict[str, str] = {}
    for doc_id, account in (
        DocumentLine.objects.filter(document__in=[b.pk for b in bills])
        .exclude(account_code="")
        .values_list("document_id", "account_code")
    ):
        own[doc_id][account] += 1
    for bill in bills:
        for line in (bill.raw or {}).get("Line") or []:
            ref = (
                ((line.get("AccountBasedExpenseLineDetail") or {}).get("AccountRef") or {})
                if isinstance(line, dict)
                else {}
            )
            if ref.get("value") and ref.get("name"):
                names[str(ref["value"])] = str(ref["name"])
    posted = Counter(
        Match.objects.filter(
            route=ROUTE, status__in=Match.POSTED, document__connection=connection
        ).values_list("document__counterparty_external_id", flat=True)
    )
    numbers = Counter(
        (vendor, number)
        for vendor, number in all_bills.exclude(number="").values_list("counterparty_external_id", "number")
    )
    qonto_parties = Counter()
    qonto_names = Counter()
    for name, tax in qonto_supplier_invoices(connection.organization_id).values_list(
        "counterparty_name", "counterparty_tax_id"
    ):
        if tax:
            qonto_parties[re.sub(r"\W", "", tax).upper()] += 1
        if name:
            qonto_names[engine.normalize_name(name).norm] += 1

    out: dict[int, Enrichment] = {}
    for bill in bills:
        vendor = vendors.get(bill.counterparty_external_id)
        tax_id = (vendor.tax_id if vendor else "") or bill.counterparty_tax_id
        kind, siren = validate_tax_id(tax_id, vendor.country if vendor else "")
        accounts = per_vendor.get(bill.counterparty_external_id, Counter()) - own.get(bill.pk, Counter())
        account = accounts.most_common(1)[0][0] if accounts else ""
        name = (vendor.name if vendor else "") or bill.counterparty_name
        compact_tax = re.sub(r"\W", "", tax_id or "").upper()
        known = qonto_parties.get(compact_tax, 0) if compact_tax else 0
        if not known and name:
            known = qonto_names.get(engine.normalize_name(name).norm, 0)
        out[bill.pk] = Enrichment(
            vendor_id=bill.counterparty_external_id,
            legal_name=(vendor.legal_name if vendor else "") or "",
            tax_id=tax_id or "",
            tax_id_kind=kind,
            siren=siren,
            domain=web_domain(vendor.website if vendor else "", vendor.email if vendor else ""),
            ledger_account=account,
            ledger_account_name=names.get(account, ""),
            posted_before=posted.get(bill.counterparty_external_id, 0),
            known_in_qonto=known,
            duplicate_numbers=max(0, numbers.get((bill.counterparty_external_id, bill.number), 0) - 1)
            if bill.number
            else 0,
            active=bool((vendor.raw or {}).get("Active", True)) if vendor else True,
        )
    return out


# --- scoring ------------------------------------------------------------------------------------
@dataclass
class Scored:
    bill: Document
    confidence: int
    band: str  # Match.Band
    candidates: list[dict[str, Any]]
    fingerprint: str
    enrichment: Enrichment


def _feature(name: str, score: float, explanation: str) -> dict[str, Any]:
    return {"name": name, "score": round(score, 2), "explanation": explanation}


def quality(
    bill: Document, info: Enrichment, *, today: date, history_start: date | None
) -> tuple[float, list[dict[str, Any]]]:
    """The bill's fitness to be posted as a new supplier invoice (0–1) and why."""
    present = {
        "amount": bill.total_amount > 0,
        "vendor": bool(bill.counterparty_name),
        "number": bool(bill.number),
        "issue_date": bill.issue_date is not None,
        "currency": bool(bill.currency),
        "due_date": bill.due_date is not None,
        "tax": bill.tax_amount is not None,
        "lines": bool((bill.raw or {}).get("Line")),
    }
    completeness = sum(w for k, w in COMPLETENESS.items() if present[k])
    missing = [k.replace("_", " ") for k, ok in present.items() if not ok]
    features = [
        _feature(
            "completeness",
            completeness,
            "every field present" if not missing else f"missing: {', '.join(missing)}",
        )
    ]

    strong = {
        "tax_id": bool(info.tax_id_kind),
        "legal_name": bool(info.legal_name),
        "domain": bool(info.domain),
        "ledger_account": bool(info.ledger_account),
        "history": bool(info.posted_before or info.known_in_qonto),
    }
    strength = sum(w for k, w in STRENGTH.items() if strong[k])
    said = []
    if info.tax_id_kind:
        said.append(f"{info.tax_id_kind} {info.tax_id} valid")
    elif info.tax_id:
        said.append(f"tax id {info.tax_id} fails its check digits")
    else:
        said.append("no tax id")
    if info.legal_name:
        said.append(f"legal entity {info.legal_name}")
    if info.domain:
        said.append(f"web domain {info.domain}")
    if info.ledger_account:
        said.append(f"usual ledger account {info.ledger_account_name or info.ledger_account}")
    if info.posted_before:
        said.append(f"{info.posted_before} bill(s) of this vendor posted before")
    if info.known_in_qonto:
        said.append(f"supplier known in Qonto ({info.known_in_qonto} invoice(s))")
    features.append(_feature("counterparty", strength, "; ".join(said)))

    fit = 1.0
    problems = []
    if bill.total_amount <= 0:
        fit *= 0.3
        problems.append("the amount is not positive (a credit, not an invoice)")
    if bill.issue_date and bill.issue_date > today + timedelta(days=1):
        fit *= 0.6
        problems.append(f"dated in the future ({bill.issue_date})")
    if history_start and bill.issue_date and bill.issue_date < history_start:
        fit *= 0.3
        problems.append(f"dated before the history start {history_start}")
    if info.duplicate_numbers:
        fit *= 0.7
        problems.append(
            f"{info.duplicate_numbers} other bill(s) of this vendor carry the number {bill.number}"
        )
    if not info.active:
        fit *= 0.85
        problems.append("the vendor is inactive in QuickBooks")
    lines_total = sum(
        (
            Decimal(str(line.get("Amount") or 0))
            for line in (bill.raw or {}).get("Line") or []
            if isinstance(line, dict) and line.get("DetailType") != "SubTotalLineDetail"
        ),
        Decimal("0"),
    )
    if lines_total and abs(lines_total + (bill.tax_amount or 0) - bill.total_amount) > Decimal("0.02"):
        fit *= 0.85
        problems.append(f"lines ({lines_total}) plus tax do not add up to the total ({bill.total_amount})")
    features.append(_feature("policy", fit, "; ".join(problems) if problems else "fits the posting policy"))
    value = fit * (QUALITY_SPLIT[0] * completeness + QUALITY_SPLIT[1] * strength)
    return value, features


def _engine_candidate(candidate: engine.Candidate, targets: Mapping[int, Document]) -> dict[str, Any]:
    ids = [int(i) for i in candidate.document_ids]
    return {
        "target_ids": ids,
        "labels": [(targets[i].number or targets[i].external_id) if i in targets else str(i) for i in ids],
        "allocations": [str(a) for a in candidate.allocations],
        "confidence": int(candidate.confidence),
        "features": [_feature(f.name, f.score, f.explanation) for f in candidate.features],
    }


def score_bills(
    connection: Connection,
    bills: Sequence[Document],
    targets: Sequence[Document],
    *,
    auto: int,
    review: int,
    history_start: date | None,
) -> list[Scored]:
    """Score every bill against the free Qonto supplier invoices in one engine call."""
    if not bills:
        return []
    info = enrich(connection, bills)
    by_pk = {t.pk: t for t in targets}
    docs = [document_target(t, t.total_amount) for t in targets]
    results = engine.reconcile(
        [bill_line(b) for b in bills], docs, auto_threshold=auto, review_threshold=review
    )
    today = timezone.localdate()
    out = []
    for bill, result in zip(bills, results, strict=True):
        enrichment = info[bill.pk]
        existing = [_engine_candidate(c, by_pk) for c in result.candidates[:4]]
        taken = sum(c["confidence"] for c in existing) / 100
        value, features = quality(bill, enrichment, today=today, history_start=history_start)
        none_left = max(0.0, 1.0 - taken)
        features.append(
            _feature(
                "no_existing_invoice",
                none_left,
                "no Qonto supplier invoice resembles this bill"
                if not existing
                else f"{round(none_left * 100)} % likely that none of the {len(existing)} Qonto invoice(s) is this bill",
            )
        )
        new = {
            "target_ids": [],
            "labels": [NEW_LABEL],
            "allocations": [],
            "confidence": min(99, int(round(100 * value * none_left))),
            "features": features,
            "new": True,
            "enrichment": enrichment.as_dict(),
        }
        candidates = sorted([new, *existing], key=lambda c: -c["confidence"])
        best = candidates[0]
        confidence = int(best["confidence"])
        # Two answers within 10 points of each other are never taken without a person.
        if len(candidates) > 1 and confidence - candidates[1]["confidence"] < 10 and confidence >= auto:
            confidence = auto - 1
        if best is not new and result.decision != "auto" and confidence >= auto:
            confidence = auto - 1  # the engine itself was not sure enough to link
        band = (
            Match.Band.AUTO
            if confidence >= auto
            else Match.Band.REVIEW
            if confidence >= review
            else Match.Band.REFUSED
        )
        digest = hashlib.sha256(
            repr(
                (
                    FLOW_VERSION,
                    engine.ENGINE_VERSION,
                    auto,
                    review,
                    bill.fingerprint,
                    # What the scores came out as, not the counts behind them: another bill of
                    # the vendor being posted must not re-score (and re-version) this one.
                    [(c["target_ids"], c["confidence"]) for c in candidates],
                )
            ).encode()
        ).hexdigest()
        out.append(Scored(bill, confidence, band, candidates, digest, enrichment))
    return out


# --- the run ------------------------------------------------------------------------------------
@dataclass
class FlowSummary:
    connection_id: int
    skipped: str = ""
    bills: int = 0
    scored: int = 0
    unchanged: int = 0
    auto_posted: int = 0
    linked: int = 0
    proposed: int = 0
    refused: int = 0
    uploads_enqueued: int = 0
    uploads_done: int = 0
    updates_recorded: int = 0
    resumed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def history_start_of(connection: Connection) -> date | None:
    raw = (connection.options or {}).get("history_start")
    return parse_date(str(raw)[:10]) if raw else None


def qonto_connection_for(organization_id: int) -> Connection | None:
    return (
        Connection.objects.for_org(organization_id)
        .filter(provider="qonto", status=Connection.Status.ACTIVE)
        .order_by("pk")
        .first()
    )


def eligible_bills(connection: Connection) -> Any:
    bills = Document.objects.filter(connection=connection, stream="bills", kind=Document.Kind.BILL).exclude(
        status="deleted"
    )
    start = history_start_of(connection)
    if start:
        # The history the person chose to import; an old bill edited later stays out.
        bills = bills.filter(Q(issue_date__gte=start) | Q(issue_date__isnull=True))
    return bills


def bills_to_consider(connection: Connection) -> Any:
    """Eligible bills the flow has work for: never scored, still undecided, or read again from
    QuickBooks since their match was decided (an edit to record). A decided bill that did not
    change is not even loaded, so an hourly run costs what changed, not the whole history."""
    match = Match.objects.filter(route=ROUTE, document=OuterRef("pk"))
    return (
        eligible_bills(connection)
        .annotate(
            match_status=Subquery(match.values("status")[:1]),
            match_at=Subquery(match.annotate(at=Coalesce("decided_at", "scored_at")).values("at")[:1]),
        )
        .filter(
            Q(match_status__isnull=True)
            | Q(match_status__in=Match.UNDECIDED)
            | Q(match_status__in=Match.POSTED, synced_at__gt=F("match_at"))
        )
    )


def free_targets(organization_id: int) -> list[Document]:
    """Qonto supplier invoices no bill is tied to yet (by a posted match or a record link)."""
    linked_ids = set(
        bill_links(organization_id)
        .exclude(target_id="")
        .values_list("target_id", flat=True)
    )
    used = set(
        MatchLink.objects.for_org(organization_id)
        .filter(route=ROUTE, document__isnull=False)
        .values_list("document_id", flat=True)
    )
    return [
        t
        for t in qonto_supplier_invoices(organization_id).order_by("pk")
        if t.pk not in used and t.external_id not in linked_ids and t.total_amount > 0
    ]


def run_flow(connection_id: int, *, send: bool = True) -> FlowSummary:
    """Score and post the bills of one QuickBooks connection; safe to run twice.

    ``send=False`` leaves the uploads to the outbox drain.
    """
    started = time.perf_counter()
    summary = FlowSummary(connection_id=connection_id)
    connection = Connection.objects.get(pk=connection_id)
    if connection.provider != "quickbooks" or connection.organization_id is None:
        summary.skipped = "not an organisation's QuickBooks connection"
        return summary
    if connection.status != Connection.Status.ACTIVE:
        summary.skipped = f"the QuickBooks connection is {connection.get_status_display().lower()}"
        return summary
    qonto = qonto_connection_for(connection.organization_id)
    if qonto is None:
        summary.skipped = "the organisation has no active Qonto connection to post to"
        return summary
    summary.uploads_done = settle_uploads(connection)
    summary.resumed = resume_uploads(connection, send=send)

    from reconciliation.services import policy_for

    policy = policy_for(connection.organization_id)
    considered = bills_to_consider(connection)
    bills = list(considered.order_by("pk"))
    summary.bills = len(bills)
    matches = {
        m.document_id: m for m in Match.objects.filter(route=ROUTE, document__in=considered.values("pk"))
    }
    summary.updates_recorded = record_edits(
        connection, [b for b in bills if b.pk in matches and matches[b.pk].status in Match.POSTED]
    )
    to_score = [b for b in bills if b.pk not in matches or matches[b.pk].status in Match.UNDECIDED]
    summary.seconds["load"] = round(time.perf_counter() - started, 3)

    t0 = time.perf_counter()
    scored = score_bills(
        connection,
        to_score,
        free_targets(connection.organization_id),
        auto=policy.auto_threshold,
        review=policy.review_threshold,
        history_start=history_start_of(connection),
    )
    summary.scored = len(scored)
    summary.seconds["score"] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    pushes = write_matches(
        connection,
        qonto,
        scored,
        matches,
        summary,
        auto_note=(f"confidence ≥ auto threshold {policy.auto_threshold}"),
    )
    summary.seconds["write"] = round(time.perf_counter() - t0, 3)
    if send and pushes:
        t0 = time.perf_counter()
        for push_id in pushes:
            send_upload(push_id)
        summary.uploads_done += settle_uploads(connection)
        summary.seconds["send"] = round(time.perf_counter() - t0, 3)
    summary.seconds["total"] = round(time.perf_counter() - started, 3)
    return summary


def _match_values(scored: Scored) -> dict[str, Any]:
    bill = scored.bill
    return {
        "status": {
            Match.Band.AUTO: Match.Status.AUTO_POSTED,
            Match.Band.REVIEW: Match.Status.PROPOSED,
            Match.Band.REFUSED: Match.Status.REFUSED,
        }[scored.band],
        "band": scored.band,
        "confidence": scored.confidence,
        "candidates": scored.candidates,
        "engine_version": f"{engine.ENGINE_VERSION} + {FLOW_VERSION}"[:40],
        "fingerprint": scored.fingerprint,
        "scored_at": timezone.now(),
        "amount": -abs(bill.total_amount),
        "currency": bill.currency or "EUR",
        "counterparty": bill.counterparty_name[:300],
        "label": (bill.number or f"QuickBooks bill {bill.external_id}")[:500],
        "occurred_on": bill.issue_date or bill.due_date or timezone.localdate(bill.synced_at),
    }


def write_matches(
    connection: Connection,
    qonto: Connection,
    scored: Sequence[Scored],
    existing: Mapping[int, Match],
    summary: FlowSummary,
    *,
    auto_note: str,
) -> list[int]:
    """Write the matches that changed; auto ones are posted. Returns the pushes to send."""
    creates: list[Match] = []
    updates: list[Match] = []
    autos: list[tuple[Match, Scored]] = []
    for s in scored:
        current = existing.get(s.bill.pk)
        if current is not None and current.fingerprint == s.fingerprint:
            summary.unchanged += 1
            continue
        values = _match_values(s)
        if current is None:
            match = Match(organization_id=connection.organization_id, route=ROUTE, document=s.bill, **values)
            creates.append(match)
        else:
            match = current
            for name, value in values.items():
                setattr(match, name, value)
            match.version += 1
            updates.append(match)
        if values["status"] == Match.Status.AUTO_POSTED:
            autos.append((match, s))
        summary.proposed += values["status"] == Match.Status.PROPOSED
        summary.refused += values["status"] == Match.Status.REFUSED
    # Files are fetched or rendered before the transaction: no network call holds its locks.
    prepared = prepare(connection, [s.bill for _, s in autos]) if autos else None
    files = {
        s.bill.pk: upload_file(connection, s.bill, prepared)
        for _, s in autos
        if not s.candidates[0]["target_ids"] and source_id_of(connection, s.bill) not in prepared.links  # type: ignore[union-attr]
    }
    pushes: list[int] = []
    with transaction.atomic():
        if creates:
            Match.objects.bulk_create(creates, batch_size=500)
        if updates:
            Match.objects.bulk_update(
                updates,
                [
                    "status",
                    "band",
                    "confidence",
                    "candidates",
                    "engine_version",
                    "fingerprint",
                    "scored_at",
                    "amount",
                    "currency",
                    "counterparty",
                    "label",
                    "occurred_on",
                    "version",
                ],
                batch_size=500,
            )
        if autos:
            now = timezone.now()
            links: list[MatchLink] = []
            decisions: list[Decision] = []
            for match, s in autos:
                best = s.candidates[0]
                for target_id, allocation in zip(best["target_ids"], best["allocations"], strict=True):
                    links.append(
                        MatchLink(
                            organization_id=match.organization_id,
                            match=match,
                            route=ROUTE,
                            document_id=target_id,
                            allocated_amount=Decimal(allocation),
                        )
                    )
                decisions.append(
                    Decision(
                        organization_id=match.organization_id,
                        match=match,
                        action=Decision.Action.AUTO,
                        at=now,
                        engine_version=match.engine_version,
                        confidence=s.confidence,
                        candidate=best,
                        from_status="",
                        to_status=Match.Status.AUTO_POSTED,
                        note=auto_note,
                    )
                )
            MatchLink.objects.bulk_create(links, batch_size=500)
            Decision.objects.bulk_create(decisions, batch_size=500)
            for match, s in autos:
                push = _post(connection, qonto, match, s.bill, files.get(s.bill.pk), prepared)
                if s.candidates[0]["target_ids"]:
                    summary.linked += 1
                else:
                    summary.auto_posted += 1
                if push is not None:
                    pushes.append(push.pk)
                    summary.uploads_enqueued += 1
    return pushes


# --- posting ------------------------------------------------------------------------------------
def idempotency_key(connection: Connection, bill: Document) -> str:
    """uuid5 of the realm and the bill Id: the same bill always gets the same key."""
    realm = (connection.options or {}).get("realmId") or f"connection-{connection.pk}"
    return str(uuid.uuid5(KEY_NAMESPACE, f"quickbooks:{realm}:bill:{bill.external_id}"))


@dataclass
class Prepared:
    """What posting a batch of bills reads, loaded once (vendors, files, existing links)."""

    connector: Any
    buyer: str
    vendors: dict[str, Counterparty]
    attachments: dict[str, Any]
    links: dict[str, RecordLink]


def prepare(connection: Connection, bills: Sequence[Document]) -> Prepared:
    from connectors.models import Attachment

    vendor_ids = {b.counterparty_external_id for b in bills}
    attachment_ids = {b.attachment_external_id for b in bills if b.attachment_external_id}
    return Prepared(
        connector=connection.connector(),
        buyer=connection.organization.name if connection.organization_id else "",
        vendors={
            v.external_id: v
            for v in Counterparty.objects.filter(
                connection=connection, stream="vendors", external_id__in=vendor_ids
            )
        },
        attachments={
            a.external_id: a
            for a in Attachment.objects.filter(
                connection=connection, stream="attachments", external_id__in=attachment_ids
            )
        },
        links={
            link.source_id: link
            for link in bill_links(connection.organization_id).filter(
                source_id__in=[source_id_of(connection, b) for b in bills]
            )
        },
    )


def upload_file(
    connection: Connection, bill: Document, prepared: Prepared | None = None
) -> tuple[str, bytes, str, str]:
    """(file name, bytes, content type, origin) of what Qonto receives for ``bill``.

    The QuickBooks attachment when the bill has an uploadable one (§1.7: fetched now through a
    short-lived URL), else the rendered Factur-X PDF. A file that cannot be fetched falls back to
    the rendering, so a bill is never held back by its attachment.
    """
    prepared = prepared or prepare(connection, [bill])
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", bill.number or f"bill-{bill.external_id}").strip("-") or "bill"
    attachment = (
        prepared.attachments.get(bill.attachment_external_id) if bill.attachment_external_id else None
    )
    if attachment is not None and (attachment.size or 0) <= MAX_UPLOAD_BYTES:
        try:
            download = prepared.connector.download_attachment(attachment.external_id)
            content, content_type = download.content, download.content_type
        except ConnectorError as exc:
            logger.warning(
                "bill %s: attachment %s could not be fetched (%s); rendering a PDF instead",
                bill.pk,
                attachment.external_id,
                exc,
            )
        else:
            kind = (content_type or attachment.content_type or "").lower()
            if kind == "application/octet-stream":
                kind = (attachment.content_type or "").lower()
            if kind in UPLOADABLE_TYPES and 0 < len(content) <= MAX_UPLOAD_BYTES:
                return attachment.file_name or f"{safe}.pdf", content, kind, "quickbooks_attachment"
    vendor = prepared.vendors.get(bill.counterparty_external_id)
    pdf = render_bill_pdf(bill_data(bill, vendor, prepared.buyer))
    return f"{safe}.pdf", pdf, "application/pdf", "rendered_facturx"


def bill_links(organization: int | Collection[int]) -> QuerySet[RecordLink]:
    """Bill → Qonto supplier invoice links of one organisation or several (the flow's second
    line of dedup), looked up by their natural key's fields."""
    scope = {"organization_id__in": organization} if isinstance(organization, Collection) else {
        "organization_id": organization}
    return RecordLink.objects.filter(
        **scope,
        source_provider="quickbooks",
        source_type=LINK_SOURCE_TYPE,
        target_provider="qonto",
        target_type=LINK_TARGET_TYPE,
    )


def _link(connection: Connection, bill: Document) -> RecordLink | None:
    return bill_links(connection.organization_id).filter(source_id=source_id_of(connection, bill)).first()


def _save_link(connection: Connection, bill: Document, target_id: str, data: dict[str, Any]) -> None:
    RecordLink.objects.update_or_create(
        organization_id=connection.organization_id,
        source_provider="quickbooks",
        source_type=LINK_SOURCE_TYPE,
        source_id=source_id_of(connection, bill),
        target_provider="qonto",
        target_type=LINK_TARGET_TYPE,
        defaults={"target_id": target_id, "data": data},
    )


def source_id_of(connection: Connection, bill: Document) -> str:
    """The record link's source id of a bill: ``<realmId>:<bill Id>`` (QuickBooks ids are per company)."""
    realm = (connection.options or {}).get("realmId") or f"connection-{connection.pk}"
    return f"{realm}:{bill.external_id}"


def _bill_state(bill: Document) -> dict[str, Any]:
    raw = bill.raw or {}
    return {
        "sync_token": str(raw.get("SyncToken", "")),
        "fingerprint": bill.fingerprint,
        "number": bill.number,
        "total": str(bill.total_amount),
        "currency": bill.currency,
        "issue_date": bill.issue_date.isoformat() if bill.issue_date else None,
        "due_date": bill.due_date.isoformat() if bill.due_date else None,
    }


def _post(
    connection: Connection,
    qonto: Connection,
    match: Match,
    bill: Document,
    file: tuple[str, bytes, str, str] | None = None,
    prepared: Prepared | None = None,
) -> Push | None:
    """Carry out a posted match (inside the caller's transaction); the upload push, if any."""
    if connection.status != Connection.Status.ACTIVE:
        raise PostingRefused(
            "The QuickBooks connection is disconnected: nothing is posted to Qonto until it is reconnected."
        )
    existing = prepared.links.get(source_id_of(connection, bill)) if prepared else _link(connection, bill)
    target_links = list(
        MatchLink.objects.filter(match=match, document__isnull=False).select_related("document")
    )
    state = _bill_state(bill)
    if target_links:
        invoice = target_links[0].document
        data = {
            **(existing.data if existing else {}),
            "mode": "linked",
            "match": match.pk,
            "bill": state,
            "bill_pk": bill.pk,
            "qonto_document": invoice.pk,
            "quickbooks_connection": connection.pk,
        }
        _save_link(connection, bill, invoice.external_id, data)
        return None
    if existing is not None and (existing.target_id or existing.data.get("push")):
        # Second line of dedup: this bill already became (or is becoming) a Qonto invoice.
        existing.data = {**existing.data, "match": match.pk}
        existing.save(update_fields=["data", "updated_at"])
        return Push.objects.filter(pk=existing.data.get("push"), status__in=[Push.Status.PENDING]).first()
    name, content, content_type, origin = file or upload_file(connection, bill, prepared)
    realm = (connection.options or {}).get("realmId", "")
    push = outbox.enqueue_push(
        qonto,
        ACTION,
        idempotency_key(connection, bill),
        {
            "file_name": name,
            "content_type": content_type,
            "source": "integration",
            "meta": {"integration_type": "quickbooks", "connector": "qontohub"},
            "quickbooks": {
                "connection": connection.pk,
                "realm": realm,
                "bill": bill.external_id,
                "bill_pk": bill.pk,
                "file": origin,
            },
        },
        file=ContentFile(content, name=name),
        source=(SOURCE_TYPE, str(bill.pk)),
    )
    _save_link(connection, bill, push.remote_id or "", {
        "mode": "uploaded",
        "match": match.pk,
        "push": push.pk,
        "file": origin,
        "bill": state,
        "bill_pk": bill.pk,
        "quickbooks_connection": connection.pk,
    })
    return push if push.status == Push.Status.PENDING else None


def post_match(match: Match) -> None:
    """The ``quickbooks_bills`` route's poster: called by ``services.decide`` (approve, pin).

    Runs inside the decision's transaction; the upload is sent once it commits.
    """
    bill = match.document
    if bill is None:
        raise PostingRefused("This match has no QuickBooks bill.")
    connection = Connection.objects.get(pk=bill.connection_id)
    qonto = qonto_connection_for(match.organization_id)
    if qonto is None:
        raise PostingRefused(
            "The organisation has no active Qonto connection: connect Qonto, then decide again."
        )
    push = _post(connection, qonto, match, bill)
    if push is not None:
        from django_q.tasks import async_task

        transaction.on_commit(lambda: async_task("reconciliation.quickbooks_flow.send_upload_task", push.pk))


def send_upload(push_id: int) -> Push:
    """Send one upload through the outbox, then record what Qonto created."""
    push = outbox.send_push(push_id)
    if push.status == Push.Status.DONE:
        _settle(push)
    return push


def send_upload_task(push_id: int) -> str:
    return send_upload(push_id).status


def _settle(push: Push) -> bool:
    info = (push.payload or {}).get("quickbooks") or {}
    # The link's natural key (indexed by its unique constraint), then the push it waits for.
    source_id = f"{info.get('realm') or 'connection-' + str(info.get('connection'))}:{info.get('bill')}"
    updated = bill_links(push.organization_id).filter(source_id=source_id, data__push=push.pk, target_id="").update(target_id=push.remote_id, updated_at=timezone.now())
    if updated:
        logger.info("quickbooks bill %s became Qonto supplier invoice %s", info.get("bill"), push.remote_id)
    return bool(updated)


def settle_uploads(connection: Connection) -> int:
    """Write the Qonto invoice id of every finished upload on its record link; how many."""
    pending = bill_links(connection.organization_id).filter(
        target_id="", data__quickbooks_connection=connection.pk
    ).values_list("data__push", flat=True)
    done = Push.objects.filter(pk__in=[p for p in pending if p], status=Push.Status.DONE)
    return sum(_settle(push) for push in done)


def resume_uploads(connection: Connection, *, send: bool = True) -> int:
    """After a reconnect: uploads cancelled by the disconnect go out again; how many."""
    ids = list(
        Push.objects.filter(
            source_type=SOURCE_TYPE,
            payload__quickbooks__connection=connection.pk,
            status=Push.Status.CANCELLED,
        ).values_list("pk", flat=True)
    )
    if not ids:
        return 0
    Push.objects.filter(pk__in=ids).update(
        status=Push.Status.PENDING, attempts=0, next_attempt_at=timezone.now(), last_error=""
    )
    if send:
        for push_id in ids:
            send_upload(push_id)
    return len(ids)


def record_edits(connection: Connection, bills: Iterable[Document]) -> int:
    """Bills edited in QuickBooks after they were posted: recorded on their link, not re-posted.

    Qonto's API cannot update a supplier invoice (§3.10 lists create, read, mark as paid), so the
    existing entry stays the one Qonto shows and the link keeps the history of what changed.
    """
    bills = list(bills)
    if not bills:
        return 0
    links = {
        link.source_id: link
        for link in bill_links(connection.organization_id).filter(
            source_id__in=[source_id_of(connection, b) for b in bills]
        )
    }
    recorded = 0
    for bill in bills:
        link = links.get(source_id_of(connection, bill))
        if link is None:
            continue
        before = (link.data or {}).get("bill") or {}
        if before.get("fingerprint") == bill.fingerprint:
            continue
        after = _bill_state(bill)
        changes = {
            k: [before.get(k), v] for k, v in after.items() if k != "fingerprint" and before.get(k) != v
        }
        history = list((link.data or {}).get("updates") or [])
        history.append({"at": timezone.now().isoformat(), "changes": changes})
        link.data = {**link.data, "bill": after, "updates": history[-20:], "updated_in_quickbooks": True}
        link.save(update_fields=["data", "updated_at"])
        recorded += 1
    return recorded


# --- after a sync -------------------------------------------------------------------------------
def after_sync(connection_id: int, changed: Any = None) -> list[dict[str, Any]]:
    """Named in ``settings.AFTER_SYNC_TASKS``: run the flow after a sync with new data.

    A QuickBooks sync runs its connection's flow; a Qonto sync (new supplier invoices to match
    against) runs the flow of every active QuickBooks connection of the organisation.
    """
    if not changed:
        return []
    row = Connection.objects.filter(pk=connection_id).values("provider", "organization_id").first()
    if row is None or row["organization_id"] is None:
        return []
    if row["provider"] == "quickbooks":
        ids = [connection_id]
    elif row["provider"] == "qonto":
        ids = list(
            Connection.objects.for_org(row["organization_id"])
            .filter(provider="quickbooks", status=Connection.Status.ACTIVE)
            .values_list("pk", flat=True)
        )
    else:
        return []
    return [run_flow(pk).as_dict() for pk in ids]
