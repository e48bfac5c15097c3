"""Reconciliation services: load → engine → proposals, and the reviewers' decisions.

``reconcile_organization`` reads one organisation's subjects and open targets for a route (through
``for_org``), turns them into engine records, runs the pure engine with the organisation's policy
and history, and writes ``Match`` rows in bulk:

* best candidate at or above the auto threshold (and not tied) → ``auto_posted``: MatchLinks, a
  ``Decision(auto)`` and the route's poster;
* between the thresholds → ``proposed`` (the review queue) with up to five ranked candidates;
* below the review threshold → ``refused``, candidates kept for a reviewer who looks anyway.

Only undecided matches (proposed, refused) are ever re-scored, and only when their inputs changed:
each match stores a fingerprint of the engine inputs behind it, so a run with nothing new writes
nothing. A decided match (auto-posted, approved, pinned, rejected, unmatched) is never changed by
a run. Every re-score bumps ``version``, so a reviewer's form built on the old candidates fails
with ``DecisionConflict`` instead of approving a candidate that moved.

``decide`` applies one person's decision: it checks the person's role in the match's
organisation, locks the row (``select_for_update``), checks status and version (two reviewers on
one item: exactly one wins, the other gets ``DecisionConflict`` naming who decided and when),
writes links and the audit row, and runs the route's poster in the same transaction.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction as db_transaction
from django.db.models import Exists, OuterRef, Q, QuerySet, Sum
from django.utils import timezone

from connectors.models import BankTransaction, Document
from qontohub.models import Organization
from qontohub.tenancy import REVIEW_ROLES, Role, role_in
from reconciliation import engine
from reconciliation.models import Decision, Match, MatchLink, MatchPolicy
from reconciliation.routes import DOCUMENT, TRANSACTION, Route, document_target, get_route

MAX_CANDIDATES = 5
# Rounding slack when adding allocations in two currencies' cents.
CENT = Decimal("0.01")
CHUNK = 900  # ids per IN (...) list: below SQLite's historical 999-parameter limit


class DecisionError(Exception):
    """A decision that cannot be applied; the message is shown to the reviewer as is."""


class DecisionConflict(DecisionError):
    """Someone else decided (or the engine re-scored) the item since the reviewer loaded it."""


class InvalidDecision(DecisionError):
    """The request itself is wrong: unknown action, candidate or documents."""


class Action:
    APPROVE = "approve"
    PIN = "pin"
    REJECT = "reject"
    UNMATCH = "unmatch"
    ALL = ("approve", "pin", "reject", "unmatch")


S = Match.Status
# Which statuses each action may start from. Approve and pin also re-open an unmatched item (its
# candidates are kept); only a posted match can be unmatched.
ALLOWED_FROM: dict[str, frozenset[str]] = {
    Action.APPROVE: frozenset({S.PROPOSED, S.REFUSED, S.UNMATCHED}),
    Action.PIN: frozenset({S.PROPOSED, S.REFUSED, S.REJECTED, S.UNMATCHED}),
    Action.REJECT: frozenset({S.PROPOSED, S.REFUSED, S.UNMATCHED}),
    Action.UNMATCH: frozenset({S.AUTO_POSTED, S.APPROVED, S.PINNED}),
}
RESULT_STATUS = {
    Action.APPROVE: S.APPROVED,
    Action.PIN: S.PINNED,
    Action.REJECT: S.REJECTED,
    Action.UNMATCH: S.UNMATCHED,
}


# What a re-score writes on an undecided match.
RESCORED_FIELDS = [
    "status", "band", "confidence", "candidates", "engine_version", "fingerprint", "scored_at",
    "amount", "currency", "counterparty", "label", "occurred_on", "version", "decided_at",
]


@dataclass
class ReconcileSummary:
    organization_id: int
    route: str
    engine_version: str
    subjects: int = 0  # eligible subjects without a decision
    targets: int = 0  # open targets offered to the engine
    scored: int = 0  # lines the engine scored
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    auto_posted: int = 0
    proposed: int = 0
    refused: int = 0
    held_for_review: int = 0  # auto band on a route without poster, or a target already taken
    withdrawn: int = 0  # undecided matches whose subject is no longer eligible (full runs)
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- policy -----------------------------------------------------------------------------------
def policy_for(organization: Organization | int) -> MatchPolicy:
    """The organisation's policy, created with the defaults (85 / 55) on first use."""
    org_id = organization if isinstance(organization, int) else organization.pk
    policy, _ = MatchPolicy.objects.get_or_create(organization_id=org_id)
    return policy


# --- helpers ----------------------------------------------------------------------------------
def _chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _subject_field(route: Route) -> str:
    return "transaction" if route.subject_kind == TRANSACTION else "document"


def _target_model(route: Route) -> type[BankTransaction] | type[Document]:
    return BankTransaction if route.target_kind == TRANSACTION else Document


def _target_label(obj: Any) -> str:
    if isinstance(obj, Document):
        return obj.number or obj.external_id
    day = obj.settled_at or obj.emitted_at
    when = timezone.localdate(day).isoformat() if day else ""
    return f"{when} {obj.counterparty_name or obj.label}".strip()


def _signed_document_amount(doc: Document) -> Decimal:
    # Money the organisation pays is negative, like a debit on the bank side.
    if doc.kind in (Document.Kind.SUPPLIER_INVOICE, Document.Kind.BILL, Document.Kind.EXPENSE):
        return -abs(doc.total_amount)
    return abs(doc.total_amount)


def _denormalised(route: Route, subject: Any) -> dict[str, Any]:
    """The queue's columns, copied from the subject."""
    if isinstance(subject, BankTransaction):
        return {
            "amount": subject.amount,
            "currency": subject.currency or "EUR",
            "counterparty": subject.counterparty_name[:300],
            "label": subject.label[:500],
            "occurred_on": route.line(subject).date,
        }
    paid_on = timezone.localdate(subject.paid_at) if subject.paid_at else None
    return {
        "amount": _signed_document_amount(subject),
        "currency": subject.currency or "EUR",
        "counterparty": subject.counterparty_name[:300],
        "label": (subject.number or subject.external_id)[:500],
        "occurred_on": paid_on or subject.issue_date or subject.due_date or timezone.localdate(subject.synced_at),
    }


def _fingerprint(auto: int, review: int, subject: Any, targets: Iterable[Any]) -> str:
    """Hash of what the engine saw for one subject: its record, its candidates' records, the
    policy and the engine version. Equal fingerprints → nothing to write."""
    text = repr((engine.ENGINE_VERSION, auto, review, subject, tuple(targets)))
    return hashlib.sha256(text.encode()).hexdigest()


def _allocated(org_id: int, family: Sequence[str], kind: str) -> dict[int, Decimal]:
    """Amount already settled per document (kind DOCUMENT) or transaction, by posted links."""
    column = "document_id" if kind == DOCUMENT else "transaction_id"
    rows = (
        MatchLink.objects.for_org(org_id)
        .filter(route__in=family, **{f"{column}__isnull": False})
        .values(column)
        .annotate(total=Sum("allocated_amount"))
    )
    return {row[column]: row["total"] or Decimal("0") for row in rows}


def _open_amount(obj: Any, allocated: dict[int, Decimal]) -> Decimal:
    total = abs(obj.total_amount if isinstance(obj, Document) else obj.amount)
    return total - allocated.get(obj.pk, Decimal("0"))


def _history(org_id: int, route: Route) -> engine.History:
    """Past human-confirmed matches: which party each bank-side name turned out to be."""
    rows = (
        MatchLink.objects.for_org(org_id)
        .filter(route__in=route.family, match__status__in=[S.APPROVED, S.PINNED], document__isnull=False)
        .values_list(
            "transaction__counterparty_name",
            "match__counterparty",
            "document__counterparty_name",
            "document__counterparty_tax_id",
        )
        .order_by("-pk")[:50_000]
    )
    history = engine.History()
    for tx_name, subject_name, legal_name, tax_id in rows:
        history.add(tx_name or subject_name or "", legal_name or "", tax_id or "")
    return history


def _serialise(candidate_ids: Sequence[str], allocations: Sequence[Decimal], confidence: int,
               features: Sequence[engine.Feature], targets: dict[int, Any]) -> dict[str, Any]:
    ids = [int(i) for i in candidate_ids]
    return {
        "target_ids": ids,
        "labels": [_target_label(targets[i]) if i in targets else str(i) for i in ids],
        "allocations": [str(a) for a in allocations],
        "confidence": int(confidence),
        "features": [{"name": f.name, "score": f.score, "explanation": f.explanation} for f in features],
    }


@dataclass
class _Scored:
    subject: Any
    decision: str  # engine band: auto | review | refused
    confidence: int
    candidates: list[dict[str, Any]]
    fingerprint: str
    touched_targets: set[int]


# --- reconcile --------------------------------------------------------------------------------
def reconcile_organization(
    organization_id: int,
    route: str = "qonto_transactions",
    touched_subject_ids: Iterable[int] | None = None,
    touched_document_ids: Iterable[int] | None = None,
    *,
    full: bool = False,
) -> ReconcileSummary:
    """Score one organisation's subjects for ``route`` and write the matches.

    Which subjects are written: new ones (no match yet) always; undecided ones whose id is in
    ``touched_subject_ids``; undecided ones whose old or new candidates include a target in
    ``touched_document_ids`` (the route's targets: documents, or transactions on
    ``tax_documents``); with ``full=True`` every undecided one whose inputs changed (the "Reconcile
    now" button, a sync that does not say what changed). Decided matches are never written.
    """
    started = time.perf_counter()
    r = get_route(route)
    org_id = int(organization_id)
    policy = policy_for(org_id)
    auto, review = policy.auto_threshold, policy.review_threshold
    summary = ReconcileSummary(organization_id=org_id, route=r.slug, engine_version=engine.ENGINE_VERSION)
    touched_subjects = set(touched_subject_ids or ())
    touched_targets = set(touched_document_ids or ())
    subject_field = _subject_field(r)

    # 1. What exists: matches of this route (one query), links of the route's family.
    existing: dict[int, dict[str, Any]] = {}
    wanted = ["pk", f"{subject_field}_id", "status", "fingerprint", "version"]
    if touched_targets:
        wanted.append("candidates")
    for row in Match.objects.for_org(org_id).filter(route=r.slug).values(*wanted):
        existing[row[f"{subject_field}_id"]] = row
    doc_alloc = _allocated(org_id, r.family, DOCUMENT)
    tx_alloc = _allocated(org_id, r.family, TRANSACTION)

    def allocated_for(kind: str) -> dict[int, Decimal]:
        return doc_alloc if kind == DOCUMENT else tx_alloc

    # 2. Subjects without a decision, minus those the family already settled in full.
    decided = Match.objects.filter(route=r.slug, status__in=[s for s in S.values if s not in Match.UNDECIDED])
    subjects_qs = r.subjects(org_id).annotate(
        _decided=Exists(decided.filter(**{subject_field: OuterRef("pk")}))
    ).filter(_decided=False)
    subject_alloc = allocated_for(r.subject_kind)
    subjects = [s for s in subjects_qs.order_by("pk") if _open_amount(s, subject_alloc) > 0]
    summary.subjects = len(subjects)

    # 3. Open targets: what is left to settle of each.
    target_alloc = allocated_for(r.target_kind)
    targets = [t for t in r.targets(org_id).order_by("pk") if _open_amount(t, target_alloc) > 0]
    summary.targets = len(targets)
    target_by_pk = {t.pk: t for t in targets}
    summary.seconds["load"] = round(time.perf_counter() - started, 3)

    # 4. Which subjects the engine must score, and which of them may be written.
    new_ids = {s.pk for s in subjects if s.pk not in existing}
    if full or touched_targets or r.pivot:
        # A touched target may become anyone's candidate; a pivoted route needs every subject
        # as a document so transactions choose among all of them.
        to_score = subjects
    else:
        to_score = [s for s in subjects if s.pk in new_ids or s.pk in touched_subjects]

    def writable(s: _Scored) -> bool:
        pk = s.subject.pk
        if full or pk in new_ids or pk in touched_subjects:
            return True
        if touched_targets:
            old = existing.get(pk, {}).get("candidates") or []
            old_targets = {t for c in old for t in c.get("target_ids", [])}
            return bool(touched_targets & (old_targets | s.touched_targets))
        return False

    t0 = time.perf_counter()
    history = _history(org_id, r)
    if r.pivot:
        scored = _score_pivot(r, to_score, targets, target_alloc, subject_alloc, history, auto, review)
    else:
        scored = _score_forward(r, to_score, targets, target_by_pk, target_alloc, subject_alloc, history, auto, review)
    summary.scored = len(to_score) if not r.pivot else len(targets)
    summary.seconds["engine"] = round(time.perf_counter() - t0, 3)

    # 5. Write.
    t0 = time.perf_counter()
    to_write = [s for s in scored if writable(s)]
    eligible_ids = {s.pk for s in subjects}
    stale = [row["pk"] for pk, row in existing.items() if full and row["status"] in Match.UNDECIDED and pk not in eligible_ids]
    _write(r, org_id, policy, to_write, stale, target_by_pk, summary)
    summary.seconds["write"] = round(time.perf_counter() - t0, 3)
    summary.seconds["total"] = round(time.perf_counter() - started, 3)
    return summary


def _open_lines(r: Route, records: Sequence[Any], allocated: dict[int, Decimal]) -> list[engine.Transaction]:
    """The route's engine lines of ``records``, each for what is still open of it (part may be
    settled already on the family's other route)."""
    lines = []
    for record in records:
        line = r.line(record)
        left = _open_amount(record, allocated)
        if left != abs(line.amount):
            line = replace(line, amount=left.copy_sign(line.amount))
        lines.append(line)
    return lines


def _score_forward(r: Route, subjects: Sequence[Any], targets: Sequence[Any], target_by_pk: dict[int, Any],
                   target_alloc: dict[int, Decimal], subject_alloc: dict[int, Decimal],
                   history: engine.History, auto: int, review: int) -> list[_Scored]:
    lines = _open_lines(r, subjects, subject_alloc)
    docs = [document_target(t, _open_amount(t, target_alloc)) for t in targets]
    doc_by_id = {d.id: d for d in docs}
    results = engine.reconcile(lines, docs, auto_threshold=auto, review_threshold=review, history=history)
    out = []
    for s, line, res in zip(subjects, lines, results, strict=True):
        cands = res.candidates[:MAX_CANDIDATES]
        seen = [doc_by_id[i] for c in cands for i in c.document_ids]
        out.append(_Scored(
            subject=s,
            decision=res.decision,
            confidence=res.confidence,
            candidates=[_serialise(c.document_ids, c.allocations, c.confidence, c.features, target_by_pk) for c in cands],
            fingerprint=_fingerprint(auto, review, line, seen),
            touched_targets={int(i) for c in cands for i in c.document_ids},
        ))
    return out


def _score_pivot(r: Route, subjects: Sequence[Any], targets: Sequence[Any], target_alloc: dict[int, Decimal],
                 subject_alloc: dict[int, Decimal], history: engine.History, auto: int, review: int) -> list[_Scored]:
    """Paid documents → transactions: the engine scores each transaction against the documents,
    then each document takes the transactions that proposed it, best first.

    A document is auto-posted only when the transaction's own answer is that document in the
    auto band and no other transaction claims it with review-level confidence; otherwise it
    stays below the auto threshold (two payers for one paid document need a person).
    """
    lines = _open_lines(r, targets, target_alloc)
    docs = [document_target(s, _open_amount(s, subject_alloc)) for s in subjects]
    line_by_id = {ln.id: ln for ln in lines}
    target_by_pk = {t.pk: t for t in targets}
    results = engine.reconcile(lines, docs, auto_threshold=auto, review_threshold=review, history=history)
    claims: dict[str, dict[str, tuple[int, Decimal, list[engine.Feature], bool]]] = defaultdict(dict)
    for res in results:
        for rank, c in enumerate(res.candidates):
            for doc_id, allocation in zip(c.document_ids, c.allocations, strict=True):
                first = rank == 0 and res.decision == "auto"
                known = claims[doc_id].get(res.transaction_id)
                if known is None or known[0] < c.confidence:
                    claims[doc_id][res.transaction_id] = (c.confidence, allocation, c.features, first)
    out = []
    for s, doc in zip(subjects, docs, strict=True):
        ranked = sorted(claims.get(doc.id, {}).items(), key=lambda kv: (-kv[1][0], int(kv[0])))[:MAX_CANDIDATES]
        candidates = [_serialise([tx_id], [alloc], conf, feats, target_by_pk) for tx_id, (conf, alloc, feats, _) in ranked]
        confidence = ranked[0][1][0] if ranked else 0
        clear = bool(ranked) and ranked[0][1][3] and not (len(ranked) > 1 and ranked[1][1][0] >= review)
        if confidence >= auto and not clear:
            confidence = auto - 1  # mirrors the engine's rule: an ambiguous answer is never auto
        decision = "auto" if confidence >= auto else "review" if confidence >= review else "refused"
        if candidates:
            candidates[0]["confidence"] = confidence
        out.append(_Scored(
            subject=s,
            decision=decision,
            confidence=confidence,
            candidates=candidates,
            fingerprint=_fingerprint(auto, review, doc, [line_by_id[tx_id] for tx_id, _ in ranked]),
            touched_targets={int(tx_id) for tx_id, _ in ranked},
        ))
    return out


def _links_for(r: Route, match: Match, subject: Any, candidate: dict[str, Any], targets: dict[int, Any]) -> list[MatchLink]:
    links = []
    for target_id, allocation in zip(candidate["target_ids"], candidate["allocations"], strict=True):
        target = targets[target_id]
        link = MatchLink(organization_id=match.organization_id, match=match, route=r.slug,
                         allocated_amount=Decimal(allocation))
        for obj in (subject, target):
            if isinstance(obj, BankTransaction):
                link.transaction = obj
            elif r.slug != "quickbooks_bills" or obj is target:
                # A QuickBooks bill is the subject, not a settled record: only the Qonto
                # invoice it turned out to be is linked.
                link.document = obj
        links.append(link)
    return links


def _write(r: Route, org_id: int, policy: MatchPolicy, scored: list[_Scored], stale: list[int],
           targets: dict[int, Any], summary: ReconcileSummary) -> None:
    subject_field = _subject_field(r)
    now = timezone.now()
    # Best first, so when two subjects claim one target in the auto band the better one posts.
    scored = sorted(scored, key=lambda s: (-s.confidence, s.subject.pk))
    with db_transaction.atomic():
        # One writer per organisation at a time: a second run (a task delivered twice, a
        # button pressed during a sync) waits here and then sees the first run's rows.
        list(MatchPolicy.objects.select_for_update().filter(pk=policy.pk).values_list("pk"))
        current: dict[int, dict[str, Any]] = {}
        ids = [s.subject.pk for s in scored]
        for chunk in _chunks(ids):
            rows = (
                Match.objects.select_for_update()
                .filter(organization_id=org_id, route=r.slug, **{f"{subject_field}_id__in": chunk})
                .values("pk", f"{subject_field}_id", "status", "version", "fingerprint")
            )
            for row in rows:
                current[row[f"{subject_field}_id"]] = row
        if stale:
            for chunk in _chunks(stale):
                summary.withdrawn += Match.objects.filter(pk__in=chunk, status__in=Match.UNDECIDED).delete()[1].get(
                    Match._meta.label, 0
                )
        # Targets used by auto-posts of this batch, on top of earlier links (already deducted
        # from the open amounts the engine saw).
        taken: dict[int, Decimal] = defaultdict(Decimal)
        creates: list[Match] = []
        updates: list[Match] = []
        posting: list[tuple[Match, _Scored]] = []
        for s in scored:
            row = current.get(s.subject.pk)
            if row is not None and (row["status"] not in Match.UNDECIDED):
                continue  # decided meanwhile: never changed by a run
            if row is not None and row["fingerprint"] == s.fingerprint:
                summary.unchanged += 1
                continue
            status, band = _status_for(r, s, targets, taken)
            if status == S.PROPOSED and s.decision == "auto":
                summary.held_for_review += 1
            values = {
                "status": status,
                "band": band,
                "confidence": s.confidence,
                "candidates": s.candidates,
                "engine_version": engine.ENGINE_VERSION,
                "fingerprint": s.fingerprint,
                "scored_at": now,
                **_denormalised(r, s.subject),
            }
            if row is None:
                match = Match(organization_id=org_id, route=r.slug, **{subject_field: s.subject}, **values)
                creates.append(match)
            else:
                match = Match(pk=row["pk"], organization_id=org_id, route=r.slug, version=row["version"] + 1,
                              **{subject_field: s.subject}, **values)
                updates.append(match)
            if status == S.AUTO_POSTED:
                # The engine decided: when is recorded, by whom stays empty ("the engine").
                match.decided_at = now
                posting.append((match, s))
            summary.auto_posted += status == S.AUTO_POSTED
            summary.proposed += status == S.PROPOSED
            summary.refused += status == S.REFUSED
        if creates:
            Match.objects.bulk_create(creates, batch_size=500)
        if updates:
            Match.objects.bulk_update(updates, RESCORED_FIELDS, batch_size=500)
        summary.created, summary.updated = len(creates), len(updates)
        if posting:
            links: list[MatchLink] = []
            decisions: list[Decision] = []
            for match, s in posting:
                best = s.candidates[0]
                links.extend(_links_for(r, match, s.subject, best, targets))
                decisions.append(Decision(
                    organization_id=org_id, match=match, action=Decision.Action.AUTO, at=now,
                    engine_version=engine.ENGINE_VERSION, confidence=s.confidence, candidate=best,
                    from_status="", to_status=S.AUTO_POSTED,
                    note=f"confidence {s.confidence} ≥ auto threshold {policy.auto_threshold}",
                ))
            MatchLink.objects.bulk_create(links, batch_size=500)
            Decision.objects.bulk_create(decisions, batch_size=500)
            r.on_post_many([m for m, _ in posting])


def _status_for(r: Route, s: _Scored, targets: dict[int, Any], taken: dict[int, Decimal]) -> tuple[str, str]:
    if s.decision == "auto" and s.candidates:
        best = s.candidates[0]
        fits = all(
            taken[t] + Decimal(a) <= _open_total(targets[t]) + CENT
            for t, a in zip(best["target_ids"], best["allocations"], strict=True)
        )
        if r.can_post and fits:
            for t, a in zip(best["target_ids"], best["allocations"], strict=True):
                taken[t] += Decimal(a)
            return S.AUTO_POSTED, Match.Band.AUTO
        # No poster on this route yet, or a better line of this batch took the target.
        return S.PROPOSED, Match.Band.AUTO
    if s.decision == "review":
        return S.PROPOSED, Match.Band.REVIEW
    return S.REFUSED, Match.Band.REFUSED


def _open_total(obj: Any) -> Decimal:
    return abs(obj.total_amount if isinstance(obj, Document) else obj.amount)


# --- search (pin) -----------------------------------------------------------------------------
def search_documents(organization: Organization | int, query: str, *, route: str = "qonto_transactions",
                     limit: int = 20) -> list[Any]:
    """Targets of ``route`` in the organisation matching a number, a counterparty or an amount.

    Documents on the payment and QuickBooks routes (paid ones included: pinning to an invoice
    Qonto already marked paid is common), transactions on ``tax_documents``.
    """
    r = get_route(route)
    org_id = organization if isinstance(organization, int) else organization.pk
    query = (query or "").strip()
    if not query:
        return []
    amount: Decimal | None
    try:
        amount = Decimal(query.replace(" ", "").replace("\u202f", "").replace(",", "."))
    except InvalidOperation:
        amount = None
    qs: QuerySet[Any] = _pinnable(r, org_id)
    if r.target_kind == DOCUMENT:
        cond = Q(number__icontains=query) | Q(counterparty_name__icontains=query) | Q(external_id=query)
        if amount is not None:
            cond |= Q(total_amount=abs(amount))
        qs = qs.filter(cond).order_by("-issue_date", "-pk")
    else:
        cond = Q(label__icontains=query) | Q(counterparty_name__icontains=query) | Q(reference__icontains=query)
        if amount is not None:
            cond |= Q(amount=abs(amount)) | Q(amount=-abs(amount))
        qs = qs.filter(cond).order_by("-settled_at", "-pk")
    return list(qs[:limit])


def _pinnable(r: Route, org_id: int) -> QuerySet[Any]:
    """What a person may pin on a route: its targets, whatever their payment status."""
    model = _target_model(r)
    qs = model.objects.for_org(org_id)
    if r.slug == "quickbooks_bills":
        return qs.filter(connection__provider="qonto", kind=Document.Kind.SUPPLIER_INVOICE)
    if r.target_kind == DOCUMENT:
        from reconciliation.routes import PAYABLE_KINDS, VOID_STATUSES

        return qs.filter(connection__provider="qonto", kind__in=PAYABLE_KINDS).exclude(status__in=VOID_STATUSES)
    return qs.filter(connection__provider="qonto")


# --- decide -----------------------------------------------------------------------------------
def can_decide(user: Any, organization: Organization | int) -> bool:
    """Owners, accountants and reviewers of the organisation (never support, never viewers)."""
    return role_in(user, organization, REVIEW_ROLES)


def _conflict_message(match: Match, action: str, expected_version: int | None) -> str:
    if match.status not in Match.UNDECIDED:
        who = match.decided_by.email if match.decided_by_id else "the engine (auto band)"
        when = timezone.localtime(match.decided_at).strftime("%Y-%m-%d %H:%M") if match.decided_at else "earlier"
        return (f"Cannot {action}: this item was already {match.get_status_display().lower()} by {who} "
                f"at {when}. Reload to see the current decision.")
    return (f"Cannot {action}: the candidates changed since you opened this item (version "
            f"{expected_version}, now {match.version}, re-scored at "
            f"{timezone.localtime(match.scored_at):%Y-%m-%d %H:%M}). Reload and decide again.")


def decide(
    match_id: int,
    user: Any,
    action: str,
    *,
    candidate: int = 0,
    document_ids: Sequence[int] | None = None,
    note: str = "",
    expected_version: int | None = None,
) -> Match:
    """Apply one decision to one match and record it; returns the updated match.

    ``approve`` takes candidate ``candidate`` (0 = best); ``pin`` links ``document_ids`` (the
    route's targets, found with ``search_documents``); ``reject`` says none of the candidates is
    right; ``unmatch`` undoes a posted match. ``expected_version`` is the version the person saw:
    if the item changed since, the decision is refused with ``DecisionConflict``.

    Raises ``PermissionDenied`` (not a reviewer of the organisation), ``Match.DoesNotExist``,
    ``DecisionConflict``, ``InvalidDecision``, or the route's ``RouteNotWired``.
    """
    if action not in Action.ALL:
        raise InvalidDecision(f"Unknown action {action!r}; use one of {', '.join(Action.ALL)}.")
    org_id = Match.objects.filter(pk=match_id).values_list("organization_id", flat=True).first()
    if org_id is None:
        raise Match.DoesNotExist(f"No match {match_id}.")
    if not can_decide(user, org_id):
        raise PermissionDenied(
            f"Deciding needs one of the roles {', '.join(sorted(Role(r).label for r in REVIEW_ROLES))} in this organisation."
        )
    with db_transaction.atomic():
        match = Match.objects.select_for_update().get(pk=match_id)
        if match.status not in ALLOWED_FROM[action] or (
            expected_version is not None and int(expected_version) != match.version
        ):
            if match.decided_by_id:
                match.decided_by  # noqa: B018 (load the decider for the message while locked)
            raise DecisionConflict(_conflict_message(match, action, expected_version))
        route = get_route(match.route)
        subject = match.transaction if match.transaction_id else match.document
        previous = match.status
        chosen: dict[str, Any] = {}
        if action == Action.APPROVE:
            if not (0 <= candidate < len(match.candidates)):
                raise InvalidDecision(f"This item has {len(match.candidates)} candidate(s); there is no candidate {candidate}.")
            chosen = match.candidates[candidate]
        elif action == Action.PIN:
            chosen = _pinned_candidate(route, match, subject, list(document_ids or ()))
        elif action == Action.REJECT:
            chosen = {"rejected": match.candidates[:MAX_CANDIDATES]}
        else:
            chosen = {"unmatched": [
                {"document_id": link.document_id, "transaction_id": link.transaction_id,
                 "allocated": str(link.allocated_amount)} for link in match.links.all()
            ]}

        if action in (Action.APPROVE, Action.PIN):
            targets = _load_targets(route, match.organization_id, chosen["target_ids"])
            _check_still_open(route, match, chosen, targets)
        now = timezone.now()
        if action == Action.UNMATCH:
            route.on_unpost(match)
            match.links.all().delete()
        match.status = RESULT_STATUS[action]
        match.decided_by = user
        match.decided_at = now
        match.note = note
        match.version += 1
        match.save(update_fields=["status", "decided_by", "decided_at", "note", "version"])
        if action in (Action.APPROVE, Action.PIN):
            MatchLink.objects.bulk_create(_links_for(route, match, subject, chosen, targets))
        Decision.objects.create(
            organization_id=match.organization_id, match=match, action=action, user=user, at=now, note=note,
            engine_version=match.engine_version if action != Action.PIN else engine.ENGINE_VERSION,
            confidence=int(chosen.get("confidence") or 0) if action == Action.APPROVE else 0,
            candidate=chosen, from_status=previous, to_status=match.status,
        )
        if action in (Action.APPROVE, Action.PIN):
            route.on_post(match)
    return match


def _load_targets(route: Route, org_id: int, ids: Sequence[int]) -> dict[int, Any]:
    model = _target_model(route)
    found = {obj.pk: obj for obj in model.objects.for_org(org_id).filter(pk__in=list(ids))}
    missing = [i for i in ids if i not in found]
    if missing:
        raise InvalidDecision(f"No such record in this organisation: {', '.join(map(str, missing))}.")
    return found


def _check_still_open(route: Route, match: Match, chosen: dict[str, Any], targets: dict[int, Any]) -> None:
    """Refuse to settle a target twice (another match took it since the candidates were made)."""
    column = "document_id" if route.target_kind == DOCUMENT else "transaction_id"
    used = dict(
        MatchLink.objects.for_org(match.organization_id)
        .filter(route__in=route.family, **{f"{column}__in": chosen["target_ids"]})
        .exclude(match=match)
        .values(column)
        .annotate(total=Sum("allocated_amount"))
        .values_list(column, "total")
    )
    for target_id, allocation in zip(chosen["target_ids"], chosen["allocations"], strict=True):
        already = used.get(target_id) or Decimal("0")
        if already + Decimal(allocation) > _open_total(targets[target_id]) + CENT:
            raise InvalidDecision(
                f"{_target_label(targets[target_id])} is already settled by another match "
                f"({already} of {_open_total(targets[target_id])}); unmatch that one first."
            )


def _pinned_candidate(route: Route, match: Match, subject: Any, ids: list[int]) -> dict[str, Any]:
    if not ids:
        raise InvalidDecision("Pick at least one document to pin.")
    allowed = {obj.pk: obj for obj in _pinnable(route, match.organization_id).filter(pk__in=ids)}
    missing = [i for i in ids if i not in allowed]
    if missing:
        raise InvalidDecision(f"No such record in this organisation: {', '.join(map(str, missing))}.")
    column = "document_id" if route.target_kind == DOCUMENT else "transaction_id"
    used = dict(
        MatchLink.objects.for_org(match.organization_id)
        .filter(route__in=route.family, **{f"{column}__in": ids})
        .exclude(match=match)
        .values(column).annotate(total=Sum("allocated_amount")).values_list(column, "total")
    )
    # Allocate in the order given, each target its open amount, until the subject is covered;
    # a target in another currency gets its whole open amount (no rate to compare with).
    remaining = abs(match.amount)
    allocations = []
    for i in ids:
        obj = allowed[i]
        left = _open_total(obj) - (used.get(i) or Decimal("0"))
        if left <= 0:
            raise InvalidDecision(f"{_target_label(obj)} is already settled by another match; unmatch that one first.")
        if (obj.currency or "EUR") == match.currency:
            part = min(left, remaining) if remaining > 0 else left
            remaining -= part
        else:
            part = left
        allocations.append(part)
    return {
        "target_ids": ids,
        "labels": [_target_label(allowed[i]) for i in ids],
        "allocations": [str(a) for a in allocations],
        "confidence": None,
        "features": [{"name": "pinned", "score": 0, "explanation": "chosen by hand"}],
    }


def approve_best(match_ids: Iterable[int], user: Any, note: str = "") -> tuple[list[Match], list[str]]:
    """The admin's bulk action: approve each item's best candidate; conflicts are reported."""
    done, problems = [], []
    for match_id in match_ids:
        try:
            done.append(decide(match_id, user, Action.APPROVE, candidate=0, note=note))
        except (DecisionError, PermissionDenied) as exc:
            problems.append(f"#{match_id}: {exc}")
    return done, problems
