"""Mirror rows for reconciliation tests, created directly (no sync engine involved).

``mirror(org)`` gives a small factory bound to one organisation's Qonto (and QuickBooks)
connection: ``m.tx(...)`` a settled bank transaction, ``m.doc(...)`` a document.
"""

from __future__ import annotations

import itertools
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from connectors.models import BankTransaction, Connection, Document

_ids = itertools.count(1)


class Mirror:
    def __init__(self, organization: Any) -> None:
        self.organization = organization
        self.qonto = Connection.objects.create(
            organization=organization, provider="qonto", status="active",
            external_account_id=f"qonto-{organization.pk}",
        )
        self.quickbooks = Connection.objects.create(
            organization=organization, provider="quickbooks", status="active",
            external_account_id=f"qbo-{organization.pk}",
        )

    def tx(self, amount: str, counterparty: str, on: date, label: str = "", reference: str = "", **extra: Any) -> BankTransaction:
        value = Decimal(amount)
        settled = timezone.make_aware(datetime.combine(on, time(12)))
        return BankTransaction.objects.create(
            organization=self.organization, connection=self.qonto, stream="transactions",
            external_id=f"tx-{next(_ids)}", fingerprint="x", bank_account_external_id="acc-1",
            amount=value, currency=extra.pop("currency", "EUR"), side="debit" if value < 0 else "credit",
            status=extra.pop("status", "completed"), counterparty_name=counterparty,
            label=label or counterparty, reference=reference, settled_at=settled, emitted_at=settled, **extra,
        )

    def doc(self, kind: str, number: str, amount: str, counterparty: str, issued: date, **extra: Any) -> Document:
        connection = self.quickbooks if kind == "bill" else self.qonto
        return Document.objects.create(
            organization=self.organization, connection=connection, stream=f"{kind}s",
            external_id=f"doc-{next(_ids)}", fingerprint="x", kind=kind, number=number,
            counterparty_name=counterparty, total_amount=Decimal(amount), currency=extra.pop("currency", "EUR"),
            issue_date=issued, due_date=extra.pop("due_date", issued), status=extra.pop("status", "unpaid"), **extra,
        )


@pytest.fixture
def mirror_a(org_a: Any) -> Mirror:
    return Mirror(org_a)


@pytest.fixture
def mirror_b(org_b: Any) -> Mirror:
    return Mirror(org_b)


def review_item(mirror: Mirror, confidence: int = 72, amount: str = "800.00", counterparty: str = "LEROY CONSEIL",
                on: date = date(2026, 3, 12), status: str = "proposed") -> tuple[Any, BankTransaction, list[Document]]:
    """A queue item made by hand: a transaction and two candidate invoices with explanations.

    Admin, API and browser tests are about the queue, not about the engine's weights (which
    another engineer tunes), so their items do not depend on the engine's current numbers.
    """
    from reconciliation.models import Match

    tx = mirror.tx(amount, counterparty, on, label=f"VIR {counterparty}")
    docs = [
        mirror.doc("client_invoice", f"C-{next(_ids):04d}", amount, counterparty.title(), on.replace(day=1)),
        mirror.doc("client_invoice", f"C-{next(_ids):04d}", amount, counterparty.title(), on.replace(day=2)),
    ]
    candidates = [
        {
            "target_ids": [doc.pk],
            "labels": [doc.number],
            "allocations": [amount],
            "confidence": confidence - 30 * rank,
            "features": [
                {"name": "amount", "score": 6.1, "explanation": "amount equal"},
                {"name": "name", "score": 2.4, "explanation": f"name 92% similar ({counterparty} / {doc.counterparty_name})"},
                {"name": "date", "score": 1.5 - rank, "explanation": f"paid {11 - rank} days after due date"},
            ],
        }
        for rank, doc in enumerate(docs)
    ]
    band = "auto" if confidence >= 85 else "review" if confidence >= 55 else "refused"
    match = Match.objects.create(
        organization=mirror.organization, route="qonto_transactions", transaction=tx, status=status, band=band,
        confidence=confidence, candidates=candidates, engine_version="test-engine", fingerprint="f",
        amount=tx.amount, currency="EUR", counterparty=counterparty, label=tx.label, occurred_on=on,
    )
    return match, tx, docs
