"""Demo data of the accountant hub (``seed_demo`` calls ``seed_accountant`` via DEMO_SEEDERS).

Gives the demo organisation A a client file of the demo firm (inactive and not yet associated:
the wizard is there to show) with a French chart, journals, last year's fiscal year (closed,
as the books of a past year are) and this year's (open), and a full year of balanced entries
for last year: purchases from suppliers, sales to customers, their bank settlements and the
monthly bank fees. ``manage.py export_fec atelier-lumiere-4821 <last year>`` then writes a valid
FEC. Deterministic and idempotent: a second run adds nothing.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from accountant import services
from accountant.models import Account, ClientFile, FiscalYear, Journal, JournalEntry

CENT = Decimal("0.01")

# (number, label, kind) — the subset of the PCG the demo flows use (anchors.md §4.5), numbered
# as Pennylane shows them, plus the demo suppliers' and customers' auxiliaries.
CHART: tuple[tuple[str, str, str], ...] = (
    ("401000", "Fournisseurs", Account.Kind.GENERAL),
    ("411000", "Clients", Account.Kind.GENERAL),
    ("445660", "TVA déductible sur autres biens et services", Account.Kind.GENERAL),
    ("445710", "TVA collectée", Account.Kind.GENERAL),
    ("512000", "Banque", Account.Kind.GENERAL),
    ("606100", "Fournitures non stockables (eau, énergie)", Account.Kind.GENERAL),
    ("606400", "Fournitures administratives", Account.Kind.GENERAL),
    ("626000", "Frais postaux et de télécommunications", Account.Kind.GENERAL),
    ("627000", "Services bancaires et assimilés", Account.Kind.GENERAL),
    ("706000", "Prestations de services", Account.Kind.GENERAL),
    ("401EDF", "EDF", Account.Kind.SUPPLIER),
    ("401ORANGE", "Orange", Account.Kind.SUPPLIER),
    ("401OVH", "OVHcloud", Account.Kind.SUPPLIER),
    ("401VAUBAN", "Imprimerie Vauban", Account.Kind.SUPPLIER),
    ("401LEROY", "Leroy Merlin Pro", Account.Kind.SUPPLIER),
    ("411HOTELBEL", "Hôtel Bellecour", Account.Kind.CUSTOMER),
    ("411MAIRIEVIL", "Mairie de Villeurbanne", Account.Kind.CUSTOMER),
    ("411100344", "Sophie Girard", Account.Kind.CUSTOMER),
)
JOURNALS = (("ACH", "Achats", Journal.Kind.PURCHASE), ("VT", "Ventes", Journal.Kind.SALE),
            ("BQ1", "Banque Qonto", Journal.Kind.BANK))
# supplier auxiliary → expense account and a typical monthly net amount range (euros)
SUPPLIER_SPEND = {
    "401EDF": ("606100", (90, 240)),
    "401ORANGE": ("626000", (45, 90)),
    "401OVH": ("626000", (20, 60)),
    "401VAUBAN": ("606400", (150, 900)),
    "401LEROY": ("606400", (60, 400)),
}
CUSTOMERS = ("411HOTELBEL", "411MAIRIEVIL", "411100344")


def seed_accountant(demo: dict[str, Any], stdout: Any = None) -> ClientFile:
    org, firm = demo["org_a"], demo["firm"]
    year = timezone.localdate().year - 1
    with transaction.atomic():
        client_file, _ = ClientFile.objects.get_or_create(
            organization=org,
            defaults={"firm": firm, "connection": services.firm_connection(firm), "software": "pennylane"},
        )
        accounts = {}
        for number, label, kind in CHART:
            accounts[number], _ = Account.objects.get_or_create(
                client_file=client_file,
                number=number,
                defaults={"label": label, "kind": kind, "organization_id": org.pk},
            )
        journals = {}
        for code, label, kind in JOURNALS:
            journals[kind], _ = Journal.objects.get_or_create(
                client_file=client_file, code=code, defaults={"label": label, "kind": kind, "organization_id": org.pk}
            )
        for start, end, status in (
            (date(year, 1, 1), date(year, 12, 31), FiscalYear.Status.CLOSED),
            (date(year + 1, 1, 1), date(year + 1, 12, 31), FiscalYear.Status.OPEN),
        ):
            FiscalYear.objects.get_or_create(
                client_file=client_file, start=start,
                defaults={"end": end, "status": status, "organization_id": org.pk},
            )
        created = 0
        if not JournalEntry.objects.filter(client_file=client_file, date__year=year).exists():
            created = _seed_year(client_file, year, accounts, journals)
    if stdout is not None:
        stdout.write(
            f"Accountant demo: {org.name} has {created or 'its'} entries for {year}; "
            f"try: python manage.py export_fec {org.qonto_slug} {year} --output var/exports"
        )
    return client_file


def _money(low: float, high: float, rng: random.Random) -> Decimal:
    return (Decimal(rng.randint(int(low * 100), int(high * 100))) / 100).quantize(CENT)


def _seed_year(client_file: ClientFile, year: int, accounts: dict[str, Account], journals: dict[str, Journal]) -> int:
    rng = random.Random(year)
    validated = timezone.make_aware(datetime(year, 12, 31, 18, 0))
    count = 0

    def add(kind: str, journal: Journal, day: date, label: str, reference: str, lines: list[services.LineSpec]) -> None:
        nonlocal count
        count += 1
        services.save_entry(
            client_file, lines, journal=journal, kind=kind, date=day, label=label, reference=reference,
            piece_number=f"DEMO-{year}-{count:05d}", status=JournalEntry.Status.VALIDATED,
            validated_at=validated,
        )

    for month in range(1, 13):
        for aux_number, (expense, (low, high)) in SUPPLIER_SPEND.items():
            day = date(year, month, rng.randint(1, 20))
            net = _money(low, high, rng)
            vat = (net * Decimal("0.20")).quantize(CENT)
            supplier = accounts[aux_number]
            number = f"F{year}{month:02d}-{rng.randint(100, 999)}"
            add(JournalEntry.Kind.PURCHASE, journals[Journal.Kind.PURCHASE], day, f"Facture {number} {supplier.label}",
                number, [
                    services.LineSpec(accounts[expense], debit=net, label=supplier.label),
                    services.LineSpec(accounts["445660"], debit=vat, label="TVA déductible 20%"),
                    services.LineSpec(accounts["401000"], aux_account=supplier, credit=net + vat, label=supplier.label),
                ])
            paid = day + timedelta(days=rng.randint(5, 25))
            if paid.year == year:
                add(JournalEntry.Kind.BANK, journals[Journal.Kind.BANK], paid, f"Paiement {supplier.label}", number, [
                    services.LineSpec(accounts["401000"], aux_account=supplier, debit=net + vat, label=supplier.label),
                    services.LineSpec(accounts["512000"], credit=net + vat, label=f"Paiement {supplier.label}"),
                ])
        for aux_number in CUSTOMERS:
            day = date(year, month, rng.randint(1, 25))
            net = _money(400, 4200, rng)
            vat = (net * Decimal("0.20")).quantize(CENT)
            customer = accounts[aux_number]
            number = f"FA-{year}-{month:02d}{rng.randint(10, 99)}"
            add(JournalEntry.Kind.SALE, journals[Journal.Kind.SALE], day, f"Facture {number} {customer.label}", number, [
                services.LineSpec(accounts["411000"], aux_account=customer, debit=net + vat, label=customer.label),
                services.LineSpec(accounts["706000"], credit=net, label=customer.label),
                services.LineSpec(accounts["445710"], credit=vat, label="TVA collectée 20%"),
            ])
            paid = day + timedelta(days=rng.randint(10, 40))
            if paid.year == year:
                add(JournalEntry.Kind.BANK, journals[Journal.Kind.BANK], paid, f"Encaissement {customer.label}", number, [
                    services.LineSpec(accounts["512000"], debit=net + vat, label=f"Encaissement {customer.label}"),
                    services.LineSpec(accounts["411000"], aux_account=customer, credit=net + vat, label=customer.label),
                ])
        fee = _money(9, 29, rng)
        add(JournalEntry.Kind.BANK, journals[Journal.Kind.BANK], date(year, month, 28), "Frais bancaires Qonto",
            f"QONTO-{year}{month:02d}", [
                services.LineSpec(accounts["627000"], debit=fee, label="Abonnement Qonto"),
                services.LineSpec(accounts["512000"], credit=fee, label="Abonnement Qonto"),
            ])
    return count
