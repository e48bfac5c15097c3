"""accountant.services against the Pennylane sandbox: association, reference data, entries,
rules, pushes (never twice), frequencies, disabling, and the paid-documents listing."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accountant import services
from accountant.models import Account, ClientFile, EntryLine, FiscalYear, JournalEntry
from connectors.models import Attachment, Connection, Document, Push
from connectors.pennylane.connector import RemoteCompany
from qontohub.models import Firm, FirmMembership, Organization
from tests.accountant.support import (
    DEV_FIRM_TOKEN,
    PDF,
    active_file,
    bank_debit,
    client_invoice,
    connect,
    fetch_pdf,
    open_day,
    qonto_connection,
    supplier_invoice,
)


def company_id(client_file: ClientFile) -> int:
    return int(client_file.remote_company_id)


# --- connection and association ------------------------------------------------------------------
def test_connecting_the_firm_checks_the_token_and_keeps_it_encrypted_on_a_firm_connection(api, org_a, accountant):
    with pytest.raises(services.AccountantError, match="refused"):
        services.connect_software(org_a.firm, accountant, "not-a-token")
    assert not Connection.objects.filter(firm=org_a.firm).exists()
    connection = connect(org_a, accountant)
    assert (connection.firm_id, connection.organization_id, connection.status) == (org_a.firm_id, None, "active")
    assert connection.credentials == {"api_key": DEV_FIRM_TOKEN}
    from django.db import connection as db

    with db.cursor() as cursor:
        cursor.execute("SELECT credentials FROM connectors_connection WHERE id = %s", [connection.pk])
        assert DEV_FIRM_TOKEN not in str(cursor.fetchone()[0])
    # Connecting again updates the same row.
    assert connect(org_a, accountant).pk == connection.pk


def test_only_firm_members_connect_or_associate(api, org_a, owner_a, outsider):
    for user in (owner_a, outsider):
        with pytest.raises(PermissionDenied):
            services.connect_software(org_a.firm, user, DEV_FIRM_TOKEN)


def test_pairs_are_suggested_by_siren_first_then_by_name(api, org_a, accountant):
    firm = org_a.firm
    # Another client of the firm, without SIREN, whose name resembles a Pennylane company.
    garage = Organization.objects.create(name="Garage Dupuis et Fils", firm=firm)
    # And one nobody resembles: left unmatched.
    Organization.objects.create(name="Zèbre Quantique", firm=firm)
    connect(org_a, accountant)
    pairs = {p.client_file.organization.name: p for p in services.suggest_pairs(firm)}
    assert pairs["Atelier Lumière SAS"].reason == "siren"
    assert pairs["Atelier Lumière SAS"].company.siren == org_a.siren
    assert pairs["Garage Dupuis et Fils"].reason == "name"
    assert pairs["Garage Dupuis et Fils"].company.siren == "812345676"
    assert "Zèbre Quantique" not in pairs
    assert ClientFile.objects.filter(firm=firm).count() == 3  # every client has its file
    assert garage.pk in set(ClientFile.objects.values_list("organization_id", flat=True))


def test_names_are_compared_without_accents_punctuation_or_legal_forms():
    assert services.normalise_name("Boulangerie Martin SARL") == "boulangerie martin"
    assert services.normalise_name("Hôtel  Bellecour S.A.S.") == "hotel bellecour"


def test_a_name_tie_is_left_to_the_person(db, org_a):
    twins = [RemoteCompany("1", "Atelier Lumière Lyon", "", ""), RemoteCompany("2", "Atelier Lumière Paris", "", "")]
    Organization.objects.filter(pk=org_a.pk).update(siren="")
    assert services.suggest_pairs(org_a.firm, twins) == []
    pairs = services.suggest_pairs(org_a.firm, twins[:1])
    assert [(p.company.id, p.reason) for p in pairs] == [("1", "name")]


def test_another_firms_companies_are_never_offered(api, org_a, accountant):
    connect(org_a, accountant)
    sirens = {c.siren for c in services.remote_companies(org_a.firm)}
    assert org_a.siren in sirens
    assert "902118736" not in sirens  # Cabinet Rive Gauche's client in the sandbox


def test_one_company_backs_one_file(api, org_a, accountant):
    connect(org_a, accountant)
    other = Organization.objects.create(name="Autre client", firm=org_a.firm)
    files = {cf.organization_id: cf for cf in services.ensure_client_files(org_a.firm)}
    company = next(c for c in services.remote_companies(org_a.firm) if c.siren == org_a.siren)
    services.associate(files[org_a.pk], company, accountant)
    with pytest.raises(services.AccountantError, match="already associated"):
        services.associate(files[other.pk], company, accountant)


def test_activation_pulls_the_chart_with_auxiliaries_journals_and_fiscal_years(api, org_a, accountant):
    client_file = active_file(org_a, accountant)
    assert client_file.status == ClientFile.Status.ACTIVE
    accounts = {a.number: a for a in Account.objects.filter(client_file=client_file)}
    assert accounts["401000"].kind == Account.Kind.GENERAL
    assert accounts["401VAUBAN"].kind == Account.Kind.SUPPLIER
    assert accounts["411HOTELBEL"].kind == Account.Kind.CUSTOMER
    # An individual customer's all-digit auxiliary is recognised through the customer list.
    assert accounts["411100344"].kind == Account.Kind.CUSTOMER
    assert all(a.remote_id for a in accounts.values())
    assert set(client_file.journals.values_list("code", flat=True)) >= {"ACH", "VT", "BQ", "BQ1", "OD"}
    years = list(client_file.fiscal_years.order_by("start").values_list("status", flat=True))
    assert years == [FiscalYear.Status.CLOSED, FiscalYear.Status.OPEN]


def test_a_new_remote_account_appears_at_once_on_refresh(api, org_a, accountant):
    client_file = active_file(org_a, accountant)
    api.add_ledger_account(company_id(client_file), "401NOUVEAU", "Nouveau Fournisseur")
    report = services.refresh_reference_data(client_file)
    assert report.new_account_numbers == ["401NOUVEAU"]
    assert Account.objects.get(client_file=client_file, number="401NOUVEAU").kind == Account.Kind.SUPPLIER
    assert services.refresh_reference_data(client_file).accounts_created == 0


def test_activation_failure_puts_the_file_in_error_with_the_reason(api, org_a, accountant):
    connect(org_a, accountant)
    pair = next(p for p in services.suggest_pairs(org_a.firm) if p.client_file.organization_id == org_a.pk)
    client_file = services.associate(pair.client_file, pair.company, accountant)
    api.inject_fault(403, times=None, path_prefix=f"/api/external/firm/v1/companies/{pair.company.id}/ledger_accounts")
    with pytest.raises(services.AccountantError, match="permission"):
        services.activate(client_file, accountant)
    client_file.refresh_from_db()
    assert client_file.status == ClientFile.Status.ERROR and "permission" in client_file.last_error


# --- entries ----------------------------------------------------------------------------------
def test_a_validated_supplier_invoice_becomes_one_balanced_entry_in_pennylane_with_its_pdf(api, org_a, accountant):
    client_file = active_file(org_a, accountant)
    day = open_day(api, client_file)
    supplier_invoice(org_a, day)
    supplier_invoice(org_a, day, number="F-DRAFT", status="to_review")  # not validated: ignored

    report = services.build_entries(client_file, fetch_pdf=fetch_pdf)
    assert len(report.created) == 1
    entry = report.created[0]
    assert entry.status == JournalEntry.Status.VALIDATED and entry.violations == []
    assert (entry.total_debit, entry.total_credit) == (Decimal("420.00"), Decimal("420.00"))
    lines = [(ln.account.number, ln.aux_account.number if ln.aux_account else "", ln.debit, ln.credit)
             for ln in entry.lines.order_by("position")]
    assert lines == [
        ("606100", "", Decimal("350.00"), Decimal("0.00")),
        ("445660", "", Decimal("70.00"), Decimal("0.00")),
        ("401000", "401VAUBAN", Decimal("0.00"), Decimal("420.00")),
    ]
    assert entry.journal.code == "ACH" and entry.supporting_file

    push = services.push_entry(entry)
    assert push.status == Push.Status.DONE
    entry.refresh_from_db()
    assert entry.status == JournalEntry.Status.PUSHED and entry.remote_id
    pushed = api.entries(company_id(client_file))
    assert len(pushed) == 1
    remote = pushed[0]
    assert remote["piece_number"] == entry.piece_number == f"QH-ACH-{entry.source_document_id:06d}"
    assert remote["attachment_filename"] == "F-2026-0412.pdf"
    assert [(ln["account_number"], ln["debit"], ln["credit"]) for ln in remote["lines"]] == [
        ("606100", "350.00", "0.00"), ("445660", "70.00", "0.00"), ("401VAUBAN", "0.00", "420.00")]
    assert [a["data"] for a in api.attachments(company_id(client_file)) if a["id"] == remote["file_attachment_id"]] == [PDF]
    client_file.refresh_from_db()
    assert client_file.last_push_at is not None and client_file.last_error == ""


def test_it_is_never_pushed_twice(api, org_a, accountant):
    client_file = active_file(org_a, accountant)
    supplier_invoice(org_a, open_day(api, client_file))
    entry = services.build_entries(client_file, fetch_pdf=fetch_pdf).created[0]
    services.push_entry(entry)
    # Re-running everything: no new entry is built, no new push row, nothing new in Pennylane.
    assert services.build_entries(client_file, fetch_pdf=fetch_pdf).created == []
    services.push_entry(entry)
    report = services.push_pending(client_file, fetch_pdf=fetch_pdf)
    assert report.pushed == 0
    assert Push.objects.count() == 1
    assert len(api.entries(company_id(client_file))) == 1
    # The database refuses a second entry for the same source.
    with pytest.raises(IntegrityError), transaction.atomic():
        JournalEntry.objects.create(client_file=client_file, organization=org_a, journal=entry.journal,
                                    date=entry.date, label="x", piece_number="other",
                                    source_document=entry.source_document)


def test_a_503_is_retried_and_still_gives_exactly_one_entry(api, org_a, accountant):
    client_file = active_file(org_a, accountant)
    supplier_invoice(org_a, open_day(api, client_file))
    entry = services.build_entries(client_file, fetch_pdf=fetch_pdf).created[0]
    path = f"/api/external/firm/v1/companies/{client_file.remote_company_id}/ledger_entries"
    api.inject_fault(503, times=1, path_prefix=path, method="POST")

    push = services.push_entry(entry)
    assert push.status == Push.Status.FAILED and "503" in push.last_error
    entry.refresh_from_db()
    assert entry.status == JournalEntry.Status.VALIDATED and "Will retry" in entry.push_error
    client_file.refresh_from_db()
    assert "503" in client_file.last_error  # visible while failing
    assert api.entries(company_id(client_file)) == []
    uploads = len(api.attachments(company_id(client_file)))

    push = services.push_entry(entry)  # the retry (button, evening job or outbox drain)
    assert push.status == Push.Status.DONE and push.attempts == 2
    entry.refresh_from_db()
    assert entry.status == JournalEntry.Status.PUSHED
    assert len(api.entries(company_id(client_file))) == 1
    # The PDF uploaded by the first attempt was reused, not uploaded again.
    assert len(api.attachments(company_id(client_file))) == uploads


def test_an_entry_created_whose_answer_was_lost_is_found_by_its_piece_number(api, org_a, accountant):
    client_file = active_file(org_a, accountant)
    supplier_invoice(org_a, open_day(api, client_file))
    entry = services.build_entries(client_file, fetch_pdf=fetch_pdf).created[0]
    # Pennylane created it, but our worker died before recording the answer.
    push = services._enqueue(entry)
    from connectors.registry import connector_class

    connector = connector_class("pennylane")(client_file.connection)
    connector.push_ledger_entry_create(push)
    assert len(api.entries(company_id(client_file))) == 1
    pushed = services.push_entry(entry)
    assert pushed.status == Push.Status.DONE and pushed.response["existing"] is True
    assert len(api.entries(company_id(client_file))) == 1


def test_sales_and_bank_entries_are_balanced(api, org_a, accountant):
    client_file = active_file(org_a, accountant)
    day = open_day(api, client_file)
    client_invoice(org_a, day)
    bank_debit(org_a, day)
    bank_debit(org_a, day, name="Inconnu SARL", amount="-12.00", ref="tx-2")
    entries = {e.kind: e for e in services.build_entries(client_file, fetch_pdf=fetch_pdf).created}
    sale = entries[JournalEntry.Kind.SALE]
    assert [(ln.account.number, ln.aux_account.number if ln.aux_account else "", ln.debit, ln.credit)
            for ln in sale.lines.order_by("position")] == [
        ("411000", "411HOTELBEL", Decimal("1200.00"), Decimal("0.00")),
        ("706000", "", Decimal("0.00"), Decimal("1000.00")),
        ("445710", "", Decimal("0.00"), Decimal("200.00")),
    ]
    banks = JournalEntry.objects.filter(client_file=client_file, kind=JournalEntry.Kind.BANK)
    for bank in banks:
        assert bank.total_debit == bank.total_credit
        assert bank.journal.kind == "bank"
    numbers = {tuple(sorted(ln.account.number for ln in b.lines.all())) for b in banks}
    assert numbers == {("401000", "512000"), ("471000", "512000")}  # unknown payee → suspense


def test_a_new_supplier_gets_an_auxiliary_that_the_push_creates_in_pennylane(api, org_a, accountant):
    client_file = active_file(org_a, accountant)
    supplier_invoice(org_a, open_day(api, client_file), number="F-77", name="Papeterie Nouvelle")
    entry = services.build_entries(client_file, fetch_pdf=fetch_pdf).created[0]
    aux = entry.lines.get(aux_account__isnull=False).aux_account
    assert (aux.number, aux.remote_id) == ("401PAPETERIEN", "")
    services.push_entry(entry)
    aux.refresh_from_db()
    assert aux.remote_id == str(api.account_id_for(company_id(client_file), "401PAPETERIEN"))


def test_save_entry_refuses_unbalanced_lines_and_the_database_refuses_them_too(api, org_a, accountant):
    client_file = active_file(org_a, accountant)
    bank, fees = (Account.objects.get(client_file=client_file, number=n) for n in ("512000", "627000"))
    journal = client_file.journals.get(code="BQ")
    with pytest.raises(services.UnbalancedEntry):
        services.save_entry(client_file, [services.LineSpec(fees, debit=Decimal("10")),
                                          services.LineSpec(bank, credit=Decimal("9.99"))],
                            journal=journal, date=timezone.localdate(), label="x", piece_number="X1")
    with pytest.raises(services.UnbalancedEntry):
        services.save_entry(client_file, [services.LineSpec(fees, debit=Decimal("10"), credit=Decimal("10")),
                                          services.LineSpec(bank, credit=Decimal("0"))],
                            journal=journal, date=timezone.localdate(), label="x", piece_number="X1")
    with pytest.raises(IntegrityError), transaction.atomic():
        JournalEntry.objects.create(client_file=client_file, organization=org_a, journal=journal,
                                    date=timezone.localdate(), label="x", piece_number="X2",
                                    total_debit=Decimal("10"), total_credit=Decimal("9"))
    entry = services.save_entry(client_file, [services.LineSpec(fees, debit=Decimal("10")),
                                              services.LineSpec(bank, credit=Decimal("10"))],
                                journal=journal, date=timezone.localdate(), label="x", piece_number="X3")
    with pytest.raises(IntegrityError), transaction.atomic():
        EntryLine.objects.create(entry=entry, account=fees, debit=Decimal("1"), credit=Decimal("1"))
    with pytest.raises(IntegrityError), transaction.atomic():
        EntryLine.objects.create(entry=entry, account=fees, debit=Decimal("-1"))


# --- rules ------------------------------------------------------------------------------------
def test_a_rule_violation_blocks_the_push_with_a_readable_reason(api, org_a, accountant):
    client_file = active_file(org_a, accountant)
    day = open_day(api, client_file)
    supplier_invoice(org_a, day)
    entry = services.build_entries(client_file, fetch_pdf=fetch_pdf).created[0]
    # The accountant closes the year in Pennylane; the hub learns it on refresh.
    api.close_fiscal_year(company_id(client_file), on=day)
    services.refresh_reference_data(client_file)

    assert services.push_entry(entry) is None
    entry.refresh_from_db()
    assert entry.status == JournalEntry.Status.BLOCKED
    assert [v["rule"] for v in entry.violations] == ["fiscal_year_closed"]
    assert "is closed in Pennylane" in entry.violations[0]["message"]
    assert not Push.objects.exists() and api.entries(company_id(client_file)) == []

    # Reopened: the same entry goes through.
    api.close_fiscal_year(company_id(client_file), on=day, status="reopen")
    services.refresh_reference_data(client_file)
    assert services.push_entry(entry).status == Push.Status.DONE


def test_an_auxiliary_with_the_wrong_prefix_is_blocked(api, org_a, accountant):
    client_file = active_file(org_a, accountant)
    supplier_invoice(org_a, open_day(api, client_file))
    entry = services.build_entries(client_file, fetch_pdf=fetch_pdf).created[0]
    Account.objects.filter(client_file=client_file, number="401VAUBAN").update(number="FVAUBAN")
    violations = services.check_rules(entry)
    assert violations == [{"rule": "aux_prefix",
                           "message": "Line 3: supplier account 'FVAUBAN' must start with 401 in Pennylane."}]
    assert services.check_rules(entry, software="acd") == []  # ACD wants F… auxiliaries


# --- frequencies --------------------------------------------------------------------------------
def test_realtime_pushes_right_after_validation(api, org_a, accountant):
    client_file = active_file(org_a, accountant, ClientFile.Frequency.REALTIME)
    supplier_invoice(org_a, open_day(api, client_file))
    entry = services.build_entries(client_file, fetch_pdf=fetch_pdf).created[0]
    entry.refresh_from_db()
    assert entry.status == JournalEntry.Status.PUSHED
    assert len(api.entries(company_id(client_file))) == 1


def test_daily_waits_for_the_evening_job_and_manual_for_the_button(api, org_a, accountant):
    from accountant import tasks

    client_file = active_file(org_a, accountant, ClientFile.Frequency.DAILY)
    supplier_invoice(org_a, open_day(api, client_file))
    entry = services.build_entries(client_file, fetch_pdf=fetch_pdf).created[0]
    assert entry.status == JournalEntry.Status.VALIDATED and api.entries(company_id(client_file)) == []

    paris_noon = timezone.now().replace(hour=11, minute=0)
    assert tasks.daily_tick(now=paris_noon) == 0  # not evening yet
    evening = paris_noon.replace(hour=19, minute=30)  # 20:30 in Paris in winter, 21:30 in summer
    client_file.refresh_from_db()
    assert tasks.daily_due(client_file, evening)
    tasks.push_client_file(client_file.pk, "daily")
    entry.refresh_from_db()
    assert entry.status == JournalEntry.Status.PUSHED
    client_file.refresh_from_db()
    assert client_file.daily_pushed_on is not None
    # Pushed for that local day: later that evening it is not due again.
    later = datetime.combine(client_file.daily_pushed_on, time(22, 30), tzinfo=ZoneInfo(org_a.time_zone))
    assert not tasks.daily_due(client_file, later)

    # Manual: nothing happens until the button.
    services.set_frequency(client_file, ClientFile.Frequency.MANUAL)
    supplier_invoice(org_a, open_day(api, client_file), number="F-2")
    tasks.daily_tick(now=evening + timedelta(days=1))
    tasks.realtime_tick()
    assert len(api.entries(company_id(client_file))) == 1
    report = services.push_pending(client_file, fetch_pdf=fetch_pdf)
    assert (report.built, report.pushed) == (1, 1)
    assert len(api.entries(company_id(client_file))) == 2


def test_the_evening_job_only_takes_daily_files(api, org_a, accountant):
    from accountant import tasks

    client_file = active_file(org_a, accountant, ClientFile.Frequency.MANUAL)
    evening = timezone.now().replace(hour=19, minute=30)
    assert tasks.daily_tick(now=evening) == 0
    services.set_frequency(client_file, ClientFile.Frequency.DAILY)
    assert tasks.daily_tick(now=evening) == 1


# --- disabling ------------------------------------------------------------------------------------
def test_disabling_stops_pushes_and_keeps_history(api, org_a, accountant):
    client_file = active_file(org_a, accountant)
    day = open_day(api, client_file)
    supplier_invoice(org_a, day)
    first = services.build_entries(client_file, fetch_pdf=fetch_pdf).created[0]
    services.push_entry(first)
    supplier_invoice(org_a, day, number="F-2")
    second = services.build_entries(client_file, fetch_pdf=fetch_pdf).created[0]
    # A push queued (not yet sent) when the integration is disabled is cancelled.
    queued = services.push_entry(second, send_now=False)

    services.disable(client_file, accountant)
    queued.refresh_from_db()
    assert queued.status == Push.Status.CANCELLED
    with pytest.raises(services.AccountantError, match="not active"):
        services.push_entry(second)
    with pytest.raises(services.AccountantError):
        services.push_pending(client_file)
    from connectors.outbox import send_push

    assert send_push(queued.pk).status == Push.Status.CANCELLED
    assert len(api.entries(company_id(client_file))) == 1
    # History kept: entries, the pushed one's state, the reference data.
    first.refresh_from_db()
    assert first.status == JournalEntry.Status.PUSHED and first.remote_id
    assert JournalEntry.objects.filter(client_file=client_file).count() == 2
    assert client_file.accounts.exists()

    # Re-activated, the cancelled entry goes out once, under a new key.
    services.activate(client_file, accountant)
    assert services.push_entry(second).status == Push.Status.DONE
    assert len(api.entries(company_id(client_file))) == 2


# --- document pull ------------------------------------------------------------------------------
def test_paid_documents_of_the_last_open_year_come_with_their_pdfs(api, org_a, accountant):
    client_file = active_file(org_a, accountant)
    day = open_day(api, client_file)
    paid = supplier_invoice(org_a, day, number="F-PAID", status="paid")
    Document.objects.filter(pk=paid.pk).update(paid_at=timezone.now() - timedelta(days=1))
    supplier_invoice(org_a, day, number="F-UNPAID")
    old = supplier_invoice(org_a, day.replace(year=day.year - 1), number="F-OLD", status="paid")
    Document.objects.filter(pk=old.pk).update(paid_at=timezone.now() - timedelta(days=400))
    Attachment.objects.create(organization=org_a, connection=qonto_connection(org_a), stream="attachments",
                              external_id="att-F-PAID", raw={}, fingerprint="a", file_name="F-PAID.pdf",
                              content_type="application/pdf")
    listed = services.paid_documents_of_last_open_year(client_file)
    assert [p.document.number for p in listed] == ["F-PAID"]
    assert [a.file_name for a in listed[0].attachments] == ["F-PAID.pdf"]


def test_a_firm_cannot_reach_another_firms_client_file(api, org_a, org_b, accountant):
    rival = Firm.objects.get(pk=org_b.firm_id)
    client_file = active_file(org_a, accountant)
    from tests.conftest import make_user

    rival_accountant = make_user("rival@example.test")
    FirmMembership.objects.create(firm=rival, user=rival_accountant)
    with pytest.raises(PermissionDenied):
        services.disable(client_file, rival_accountant)
    with pytest.raises(PermissionDenied):
        services.associate(client_file, RemoteCompany("1", "x", "", ""), rival_accountant)
    assert not services.client_files_for(rival_accountant).exists()
    assert list(services.client_files_for(accountant)) == [client_file]


def test_an_expense_report_is_owed_to_the_employee(api, org_a, accountant):
    client_file = active_file(org_a, accountant)
    expense = supplier_invoice(org_a, open_day(api, client_file), number="NDF-12", name="Claire Durand",
                               total="60.00", vat="10.00")
    Document.objects.filter(pk=expense.pk).update(kind=Document.Kind.EXPENSE)
    entry = services.build_entries(client_file, fetch_pdf=fetch_pdf).created[0]
    assert entry.kind == JournalEntry.Kind.EXPENSE_REPORT and entry.piece_number.startswith("QH-NDF-")
    assert [(ln.account.number, ln.debit, ln.credit) for ln in entry.lines.order_by("position")] == [
        ("625100", Decimal("50.00"), Decimal("0.00")),
        ("445660", Decimal("10.00"), Decimal("0.00")),
        ("421000", Decimal("0.00"), Decimal("60.00")),
    ]
    assert services.push_entry(entry).status == Push.Status.DONE


def test_the_chart_of_accounts_is_read_once_per_build_not_once_per_document(api, org_a, accountant):
    client_file = active_file(org_a, accountant)
    day = open_day(api, client_file)
    for n in range(12):
        supplier_invoice(org_a, day, number=f"F-2026-{n:04d}", name=f"Fournisseur {n % 4}")
        bank_debit(org_a, day, name=f"Fournisseur {n % 4}", ref=f"tx-{n}")
    with CaptureQueriesContext(db_connection) as queries:
        report = services.build_entries(client_file, fetch_pdf=fetch_pdf)
    assert len(report.created) == 24 and not report.failed
    chart_reads = [q["sql"] for q in queries.captured_queries
                   if q["sql"].lstrip().upper().startswith("SELECT") and 'FROM "accountant_account"' in q["sql"]
                   and "accountant_journalentryline" not in q["sql"]]
    assert len(chart_reads) <= 3, chart_reads
