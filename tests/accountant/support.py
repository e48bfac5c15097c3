"""Shared set-up of the accountant tests: a firm connected to the Pennylane sandbox, org A's
client file associated and active, and Qonto mirror rows to turn into entries."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from accountant import services
from accountant.models import ClientFile
from connectors.models import BankTransaction, Connection, Document
from connectors.pennylane.sandbox import DEV_FIRM_TOKEN, OTHER_FIRM_TOKEN
from qontohub.models import Organization, User

__all__ = ["DEV_FIRM_TOKEN", "OTHER_FIRM_TOKEN", "PDF", "fetch_pdf", "connect", "active_file", "qonto_connection",
           "supplier_invoice", "client_invoice", "bank_debit", "open_day"]

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def fetch_pdf(source: Any) -> tuple[str, bytes]:
    """Stands in for the Qonto attachment download: every source has a one-page PDF."""
    number = getattr(source, "number", "") or getattr(source, "external_id", "piece")
    return f"{number}.pdf", PDF


def connect(org: Organization, user: User) -> Connection:
    return services.connect_software(org.firm, user, DEV_FIRM_TOKEN)


def active_file(org: Organization, user: User, frequency: str = ClientFile.Frequency.MANUAL) -> ClientFile:
    """Connect, associate org with its Pennylane company (by SIREN), activate."""
    connect(org, user)
    pairs = {p.client_file.organization_id: p for p in services.suggest_pairs(org.firm)}
    pair = pairs[org.pk]
    client_file = services.associate(pair.client_file, pair.company, user)
    client_file.sync_frequency = frequency
    client_file.save()
    return services.activate(client_file, user)


def open_day(api: Any, client_file: ClientFile, back: int = 3) -> date:
    """A day inside the company's open fiscal year (the sandbox's current year)."""
    years = [fy for fy in api.fiscal_years(int(client_file.remote_company_id)) if fy["status"] == "open"]
    start, finish = date.fromisoformat(years[0]["start"]), date.fromisoformat(years[0]["finish"])
    day = min(timezone.localdate(), finish) - timedelta(days=back)
    return max(day, start)


def qonto_connection(org: Organization) -> Connection:
    connection, _ = Connection.objects.get_or_create(
        organization=org, provider="qonto", external_account_id=org.qonto_slug,
        defaults={"status": Connection.Status.ACTIVE, "auth_method": Connection.AuthMethod.API_KEY},
    )
    return connection


def supplier_invoice(org: Organization, day: date, *, number: str = "F-2026-0412", name: str = "Imprimerie Vauban",
                     total: str = "420.00", vat: str = "70.00", status: str = "to_pay") -> Document:
    connection = qonto_connection(org)
    return Document.objects.create(
        organization=org, connection=connection, stream="supplier_invoices", external_id=f"si-{number}",
        raw={"id": number}, fingerprint=number, kind=Document.Kind.SUPPLIER_INVOICE, number=number,
        counterparty_name=name, total_amount=Decimal(total), tax_amount=Decimal(vat), issue_date=day,
        due_date=day + timedelta(days=30), status=status, attachment_external_id=f"att-{number}",
    )


def client_invoice(org: Organization, day: date, *, number: str = "FA-2026-0001", name: str = "Hôtel Bellecour",
                   total: str = "1200.00", vat: str = "200.00") -> Document:
    connection = qonto_connection(org)
    return Document.objects.create(
        organization=org, connection=connection, stream="client_invoices", external_id=f"ci-{number}",
        raw={"id": number}, fingerprint=number, kind=Document.Kind.CLIENT_INVOICE, number=number,
        counterparty_name=name, total_amount=Decimal(total), tax_amount=Decimal(vat), issue_date=day,
        status="unpaid", attachment_external_id=f"att-{number}",
    )


def bank_debit(org: Organization, day: date, *, name: str = "Imprimerie Vauban", amount: str = "-420.00",
               ref: str = "tx-1") -> BankTransaction:
    connection = qonto_connection(org)
    settled = timezone.make_aware(datetime.combine(day, datetime.min.time())) + timedelta(hours=12)
    return BankTransaction.objects.create(
        organization=org, connection=connection, stream="transactions", external_id=ref, raw={"id": ref},
        fingerprint=ref, bank_account_external_id="acc-1", amount=Decimal(amount), currency="EUR",
        side=BankTransaction.Side.DEBIT if Decimal(amount) < 0 else BankTransaction.Side.CREDIT,
        status="completed", counterparty_name=name, label=name, settled_at=settled,
    )
