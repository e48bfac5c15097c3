"""Routes: what is matched against what, and what a decision does — declared as data.

One queue, one policy and one audit trail serve every flow; a route only says

* which records are *subjects* (one ``Match`` each) and which are *targets* (the candidates),
  both read through ``for_org`` so a route can never mix organisations;
* how each record becomes an engine record (``reconciliation.engine`` knows nothing of Django);
* which routes share links (``family``): a Qonto transaction settled on one payment route is
  settled on the other too, and a document's open amount counts the links of the whole family;
* what posting a decision does (``poster``), as a dotted path resolved when called, so a flow
  owned by another app can be wired in without that app importing reconciliation.

Hook interface
--------------
``Route.on_post(match)`` runs inside the decision's database transaction after the match's
``MatchLink`` rows are written (``match.links``); raising rolls the decision back. The poster is a
function ``poster(match: Match) -> None`` named by ``Route.poster``; ``Route.batch_poster`` may
name ``poster_many(matches: Sequence[Match]) -> None`` for bulk auto-posting. ``on_unpost(match)``
is the reverse, called before an unmatch deletes the links. A route without a poster raises
``RouteNotWired``: nothing is ever "posted" by a silent no-op. The services never auto-post on
such a route (its auto band is held for review) so only a person's decision meets the error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.module_loading import import_string

from connectors.models import BankTransaction, Document
from reconciliation import engine

if TYPE_CHECKING:
    from reconciliation.models import Match

TRANSACTION = "transaction"
DOCUMENT = "document"

# Document statuses that mean "nothing is left to pay" or "this document does not count".
# Qonto client invoices: draft, unpaid, paid, canceled; supplier invoices: to_review, to_approve,
# awaiting_payment, to_pay, scheduled, paid, archived, rejected, pending.
CLOSED_STATUSES = ("paid", "canceled", "cancelled", "archived", "rejected", "draft", "void", "deleted")
VOID_STATUSES = ("canceled", "cancelled", "rejected", "void", "deleted")
PAYABLE_KINDS = (
    Document.Kind.CLIENT_INVOICE,
    Document.Kind.SUPPLIER_INVOICE,
    Document.Kind.CREDIT_NOTE,
)


class RouteNotWired(RuntimeError):
    """A decision needs a route's poster (or unposter) and none is declared."""


class UnknownRoute(ValueError):
    pass


def _day(value: Any, *fallbacks: Any) -> date:
    for v in (value, *fallbacks):
        if v is None:
            continue
        if hasattr(v, "tzinfo"):
            # Aware datetimes are read in the hub's time zone: a payment settled at 00:30 in
            # Paris happened on that Paris day, which is what the documents' dates use.
            return timezone.localdate(v) if timezone.is_aware(v) else v.date()
        return v
    return timezone.localdate()


# --- engine records ---------------------------------------------------------------------------
def transaction_line(tx: BankTransaction) -> engine.Transaction:
    return engine.Transaction(
        id=str(tx.pk),
        amount=tx.amount,
        currency=tx.currency or "EUR",
        side=tx.side,
        date=_day(tx.settled_at, tx.emitted_at, tx.synced_at),
        counterparty=tx.counterparty_name,
        label=tx.label,
        reference=tx.reference,
    )


def bill_line(doc: Document) -> engine.Transaction:
    """A QuickBooks bill read as a payment-like line: money owed to the supplier (a debit).

    The bill's number (QuickBooks DocNumber, usually the supplier's own invoice number) is its
    reference, which is what finds the same invoice on the Qonto side.
    """
    return engine.Transaction(
        id=str(doc.pk),
        amount=-abs(doc.total_amount),
        currency=doc.currency or "EUR",
        side="debit",
        date=_day(doc.issue_date, doc.due_date, doc.synced_at),
        counterparty=doc.counterparty_name,
        label=doc.number,
        reference=doc.number,
        counterparty_tax_id=doc.counterparty_tax_id,
        iban=doc.counterparty_iban,
    )


def document_target(doc: Document, open_amount: Decimal) -> engine.Document:
    issued = _day(doc.issue_date, doc.due_date, doc.synced_at)
    return engine.Document(
        id=str(doc.pk),
        kind=doc.kind,
        number=doc.number,
        counterparty=doc.counterparty_name,
        counterparty_tax_id=doc.counterparty_tax_id,
        amount=abs(open_amount),
        currency=doc.currency or "EUR",
        issue_date=issued,
        due_date=doc.due_date or issued,
        iban=doc.counterparty_iban,
    )


# --- what each route reads --------------------------------------------------------------------
def qonto_transactions(org_id: int) -> QuerySet[BankTransaction]:
    # Pending lines may still change amount or be declined; only settled ones are matched.
    return BankTransaction.objects.for_org(org_id).filter(connection__provider="qonto", status="completed")


def open_qonto_documents(org_id: int) -> QuerySet[Document]:
    return (
        Document.objects.for_org(org_id)
        .filter(connection__provider="qonto", kind__in=PAYABLE_KINDS)
        .exclude(status__in=CLOSED_STATUSES)
    )


def paid_qonto_documents(org_id: int) -> QuerySet[Document]:
    return (
        Document.objects.for_org(org_id)
        .filter(connection__provider="qonto", kind__in=PAYABLE_KINDS)
        .filter(Q(status="paid") | Q(paid_at__isnull=False))
        .exclude(status__in=VOID_STATUSES)
    )


def quickbooks_bills(org_id: int) -> QuerySet[Document]:
    return (
        Document.objects.for_org(org_id)
        .filter(connection__provider="quickbooks", kind=Document.Kind.BILL)
        .exclude(status__in=VOID_STATUSES)
    )


def qonto_supplier_invoices(org_id: int) -> QuerySet[Document]:
    # Paid ones count: a bill entered in QuickBooks after the invoice was paid in Qonto is
    # still the same invoice.
    return (
        Document.objects.for_org(org_id)
        .filter(connection__provider="qonto", kind=Document.Kind.SUPPLIER_INVOICE)
        .exclude(status__in=VOID_STATUSES)
    )


@dataclass(frozen=True)
class Route:
    slug: str
    label: str
    description: str
    subject_kind: str  # TRANSACTION | DOCUMENT: which Match FK holds the subject
    target_kind: str  # DOCUMENT | TRANSACTION: what the candidates are
    subjects: Callable[[int], QuerySet[Any]]
    targets: Callable[[int], QuerySet[Any]]
    # Engine line of a subject (forward routes) or of a target (pivoted routes).
    line: Callable[[Any], engine.Transaction]
    # Providers whose syncs bring new subjects or targets (after_sync picks routes by them).
    providers: tuple[str, ...]
    # Routes whose links settle the same records (open amounts, settled transactions, history).
    family: tuple[str, ...]
    # True: the engine runs the targets as lines against the subjects as documents and the
    # results are pivoted per subject (paid documents → the transactions that paid them).
    pivot: bool = False
    poster: str | None = None
    batch_poster: str | None = None
    unposter: str | None = None

    @property
    def can_post(self) -> bool:
        return bool(self.poster or self.batch_poster)

    def on_post(self, match: Match) -> None:
        """Carry out a posted match's effect (see the module docstring for the contract)."""
        if self.poster:
            import_string(self.poster)(match)
        elif self.batch_poster:
            import_string(self.batch_poster)([match])
        else:
            raise RouteNotWired(
                f"Route {self.slug!r} ({self.label}) has no poster yet, so a decision cannot be "
                f"posted. Declare Route.poster in reconciliation/routes.py (a function "
                f"poster(match) -> None)."
            )

    def on_post_many(self, matches: Sequence[Match]) -> None:
        if not matches:
            return
        if self.batch_poster:
            import_string(self.batch_poster)(list(matches))
            return
        for match in matches:
            self.on_post(match)

    def on_unpost(self, match: Match) -> None:
        if self.unposter:
            import_string(self.unposter)(match)
            return
        raise RouteNotWired(
            f"Route {self.slug!r} ({self.label}) cannot undo a posted match: declare "
            f"Route.unposter in reconciliation/routes.py (a function unposter(match) -> None)."
        )


PAYMENT_FAMILY = ("qonto_transactions", "tax_documents")

ROUTES: dict[str, Route] = {
    route.slug: route
    for route in (
        Route(
            slug="qonto_transactions",
            label="Qonto transactions → documents",
            description="Each settled Qonto transaction against the open client and supplier "
            "invoices and credit notes of the same organisation; a decision links them.",
            subject_kind=TRANSACTION,
            target_kind=DOCUMENT,
            subjects=qonto_transactions,
            targets=open_qonto_documents,
            line=transaction_line,
            providers=("qonto",),
            family=PAYMENT_FAMILY,
            batch_poster="reconciliation.posting.record_payment_links",
            unposter="reconciliation.posting.remove_payment_links",
        ),
        Route(
            slug="quickbooks_bills",
            label="QuickBooks bills → Qonto supplier invoices",
            description="Each QuickBooks bill against the supplier invoices already in Qonto; a "
            "decision says the bill is that invoice (the QuickBooks flow's poster acts on it).",
            subject_kind=DOCUMENT,
            target_kind=DOCUMENT,
            subjects=quickbooks_bills,
            targets=qonto_supplier_invoices,
            line=bill_line,
            # Scored by reconciliation.quickbooks_flow (its own AFTER_SYNC_TASKS entry), which
            # adds "post as a new invoice" to the engine's candidates: the generic run after a
            # sync leaves this route alone.
            providers=(),
            family=("quickbooks_bills",),
            poster="reconciliation.quickbooks_flow.post_match",
        ),
        Route(
            slug="tax_documents",
            label="Paid documents → Qonto transactions",
            description="Each paid Qonto document against the transactions that may have paid "
            "it (the first route in reverse), for the accountant's document pull.",
            subject_kind=DOCUMENT,
            target_kind=TRANSACTION,
            subjects=paid_qonto_documents,
            targets=qonto_transactions,
            line=transaction_line,
            providers=("qonto",),
            family=PAYMENT_FAMILY,
            pivot=True,
            batch_poster="reconciliation.posting.record_payment_links",
            unposter="reconciliation.posting.remove_payment_links",
        ),
    )
}

ROUTE_CHOICES = [(route.slug, route.label) for route in ROUTES.values()]


def get_route(slug: str) -> Route:
    try:
        return ROUTES[slug]
    except KeyError:
        raise UnknownRoute(f"Unknown route {slug!r}; routes are {', '.join(ROUTES)}.") from None


def routes_for_provider(provider: str) -> list[Route]:
    return [route for route in ROUTES.values() if provider in route.providers]
