"""accountant.models: the database itself refuses unbalanced entries and malformed lines."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, InternalError, transaction
from django.utils import timezone

from accountant import services
from accountant.models import Account, ClientFile, EntryLine, Journal, JournalEntry
from qontohub.models import Firm

pytestmark = pytest.mark.django_db


@pytest.fixture
def book(org_a):  # type: ignore[no-untyped-def]
    client_file = ClientFile.objects.create(organization=org_a, firm=org_a.firm)
    journal = Journal.objects.create(client_file=client_file, code="BQ", label="Banque", kind="bank")
    fees = Account.objects.create(client_file=client_file, number="627000", label="Frais bancaires")
    bank = Account.objects.create(client_file=client_file, number="512000", label="Banque")
    return client_file, journal, fees, bank


def entry(book, piece: str = "P1"):  # type: ignore[no-untyped-def]
    client_file, journal, fees, bank = book
    return services.save_entry(
        client_file,
        [services.LineSpec(fees, debit=Decimal("12.50")), services.LineSpec(bank, credit=Decimal("12.50"))],
        journal=journal, date=timezone.localdate(), label="Frais", piece_number=piece,
    )


def test_children_take_the_organisation_of_their_file(book, org_a):
    client_file, journal, fees, _ = book
    assert journal.organization_id == fees.organization_id == org_a.pk
    assert entry(book).organization_id == org_a.pk


def test_a_client_file_belongs_to_its_organisations_firm(book):
    client_file = book[0]
    client_file.firm = Firm.objects.create(name="Autre", slug="autre")
    with pytest.raises(ValidationError):
        client_file.full_clean()


def test_totals_must_be_equal(book):
    made = entry(book)
    with pytest.raises(IntegrityError), transaction.atomic():
        JournalEntry.objects.filter(pk=made.pk).update(total_debit=Decimal("13.00"))


def test_piece_numbers_are_unique_per_file(book):
    entry(book, "SAME")
    with pytest.raises(IntegrityError), transaction.atomic():
        entry(book, "SAME")


def test_a_line_has_exactly_one_positive_side(book):
    made = entry(book)
    fees = book[2]
    for debit, credit in (("1", "1"), ("0", "0"), ("-1", "0"), ("0", "-2")):
        with pytest.raises(IntegrityError), transaction.atomic():
            EntryLine.objects.create(entry=made, account=fees, debit=Decimal(debit), credit=Decimal(credit))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_postgres_refuses_lines_that_no_longer_add_up_to_the_totals(book):
    """The deferred constraint trigger (migration 0002) checks at commit, whoever writes.

    A transactional test: each ``atomic()`` below is a real transaction that commits (or not).
    """
    made = entry(book)
    fees = book[2]
    with pytest.raises((IntegrityError, InternalError)), transaction.atomic():
        EntryLine.objects.create(entry=made, account=fees, debit=Decimal("5"))
    with pytest.raises((IntegrityError, InternalError)), transaction.atomic():
        EntryLine.objects.filter(entry=made, debit__gt=0).update(debit=Decimal("12.49"))
    # Rewriting through the service (lines and totals together) commits fine.
    services.save_entry(book[0], [services.LineSpec(fees, debit=Decimal("20")),
                                  services.LineSpec(book[3], credit=Decimal("20"))], entry=made)
    made.refresh_from_db()
    assert made.total_debit == Decimal("20.00")
