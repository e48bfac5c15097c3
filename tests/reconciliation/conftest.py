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
