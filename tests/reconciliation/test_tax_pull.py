"""The tax advisers' document pull: paid documents of the last open year, their PDFs downloaded
from the Qonto sandbox and kept, each matched on ``tax_documents`` or left in the review queue."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from django_q.models import Schedule

from accountant import services as accountant_services
from accountant.models import ClientFile
from connectors.models import Attachment, Connection, Document
from qontohub.models import Organization
from reconciliation import tasks, tax_pull
from reconciliation.models import Match
from tests.accountant.support import active_file, bank_debit, open_day, supplier_invoice

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media_root")]


@pytest.fixture
def pennylane(sandbox_for):  # type: ignore[no-untyped-def]
    return sandbox_for("pennylane")


@pytest.fixture
def qonto(sandbox_for, org_a):  # type: ignore[no-untyped-def]
    """The Qonto sandbox, and org A's Qonto connection to it (the one the mirror helpers reuse)."""
    api = sandbox_for("qonto", transactions=20, client_invoices=4, supplier_invoices=4)
    Connection.objects.create(
        organization=org_a, provider="qonto", external_account_id=org_a.qonto_slug,
        auth_method=Connection.AuthMethod.API_KEY, status=Connection.Status.ACTIVE,
        credentials={"login": api.organization_slug, "secret_key": api.secret_key},
    )
    return api


def paid_invoice(org: Organization, day: Any, number: str, attachment_id: str, **kwargs: Any) -> Document:
    """A paid supplier invoice whose PDF is the sandbox attachment ``attachment_id`` (metadata mirrored)."""
    document = supplier_invoice(org, day, number=number, status="paid", **kwargs)
    Document.objects.filter(pk=document.pk).update(
        paid_at=timezone.now() - timedelta(days=1), attachment_external_id=attachment_id
    )
    Attachment.objects.create(
        organization=org, connection=document.connection, stream="attachments", external_id=attachment_id,
        raw={}, fingerprint=attachment_id, file_name=f"{number}.pdf", content_type="application/pdf",
    )
    document.refresh_from_db()
    return document


def sandbox_attachment(api: Any, index: int = 0) -> str:
    return sorted(api.attachments)[index]


def test_a_paid_invoice_gets_its_pdf_stored_and_is_matched_to_its_transaction(pennylane, qonto, org_a, accountant):
    client_file = active_file(org_a, accountant)
    day = open_day(pennylane, client_file)
    invoice = paid_invoice(org_a, day, "F-PAID-1", sandbox_attachment(qonto))
    payment = bank_debit(org_a, day, amount="-420.00", ref="tx-paid-1")

    summary = tax_pull.pull_client_file(client_file.pk)

    assert not summary.skipped
    assert (summary.documents, summary.pdfs_fetched, summary.pdf_failures) == (1, 1, 0)
    attachment = Attachment.objects.get(external_id=invoice.attachment_external_id)
    assert attachment.file and attachment.file.read().startswith(b"%PDF")
    match = Match.objects.get(route="tax_documents", document=invoice)
    assert match.status in {Match.Status.AUTO_POSTED, Match.Status.PROPOSED}
    assert payment.pk in match.candidates[0]["target_ids"]
    assert summary.auto + summary.proposed == 1

    # A second run downloads nothing again and changes no decision.
    again = tax_pull.pull_client_file(client_file.pk)
    assert (again.pdfs_fetched, again.pdfs_already_stored) == (0, 1)
    assert Match.objects.get(pk=match.pk).status == match.status


def test_paid_invoices_without_a_sure_payment_stay_in_the_review_queue(pennylane, qonto, org_a, accountant):
    client_file = active_file(org_a, accountant)
    day = open_day(pennylane, client_file)
    near_miss = paid_invoice(org_a, day, "F-FEE", sandbox_attachment(qonto))
    orphan = paid_invoice(org_a, day, "F-ORPHAN", sandbox_attachment(qonto, 1), name="Cartonnages Rhône",
                          total="1234.56", vat="205.76")
    # The supplier was paid 5.00 short (a fee): plausible, not sure. Nothing resembles the orphan's payment.
    near = bank_debit(org_a, day, amount="-415.00", ref="tx-near")
    bank_debit(org_a, day, name="Boulangerie du Port", amount="-13.40", ref="tx-other")

    summary = tax_pull.pull_client_file(client_file.pk)

    proposed = Match.objects.get(route="tax_documents", document=near_miss)
    assert proposed.status == Match.Status.PROPOSED
    assert proposed.candidates[0]["target_ids"] == [near.pk]  # the reviewer sees why
    refused = Match.objects.get(route="tax_documents", document=orphan)
    assert refused.status == Match.Status.REFUSED  # no candidate, yet listed for a human
    assert (summary.auto, summary.proposed, summary.refused, summary.other) == (0, 1, 1, 0)
    assert summary.pdfs_fetched == 2


def test_an_inactive_client_file_is_skipped_with_a_reason(pennylane, qonto, org_a, accountant):
    client_file = active_file(org_a, accountant)
    day = open_day(pennylane, client_file)
    paid_invoice(org_a, day, "F-SKIP", sandbox_attachment(qonto))
    accountant_services.disable(client_file, accountant)

    summary = tax_pull.pull_client_file(client_file.pk)

    assert "not active" in summary.skipped
    assert summary.documents == summary.pdfs_fetched == 0
    assert not Match.objects.filter(route="tax_documents").exists()
    assert not Attachment.objects.exclude(file="").exists()


def test_a_failed_download_is_counted_and_the_rest_goes_on(pennylane, qonto, org_a, accountant):
    client_file = active_file(org_a, accountant)
    day = open_day(pennylane, client_file)
    good = paid_invoice(org_a, day, "F-GOOD", sandbox_attachment(qonto))
    broken = paid_invoice(org_a, day, "F-BROKEN", "no-such-attachment", total="99.00", vat="16.50")
    bank_debit(org_a, day, amount="-420.00", ref="tx-good")

    summary = tax_pull.pull_client_file(client_file.pk)

    assert (summary.documents, summary.pdfs_fetched, summary.pdf_failures) == (2, 1, 1)
    assert summary.failed_documents == ["F-BROKEN"]
    assert Attachment.objects.get(external_id=good.attachment_external_id).file
    assert not Attachment.objects.get(external_id="no-such-attachment").file
    # Both documents were still handed to the engine.
    assert set(Match.objects.filter(route="tax_documents").values_list("document_id", flat=True)) == {
        good.pk, broken.pk
    }


def test_the_daily_schedule_fans_out_one_task_per_active_file(pennylane, qonto, org_a, org_b, accountant,
                                                              monkeypatch):
    spec = Schedule.objects.get(name="qontohub:tax-documents-pull")
    assert spec.func == "reconciliation.tasks.pull_tax_documents" and spec.schedule_type == Schedule.DAILY

    client_file = active_file(org_a, accountant)
    ClientFile.objects.create(organization=org_b, firm=org_b.firm, status=ClientFile.Status.INACTIVE,
                              remote_company_id="other")
    queued: list[tuple[Any, ...]] = []
    monkeypatch.setattr(tax_pull, "async_task", lambda *args, **kw: queued.append(args))
    assert tasks.pull_tax_documents() == 1
    assert queued == [(tax_pull.TASK, client_file.pk)]
    assert tasks.pull_tax_documents_for(client_file.pk)["client_file_id"] == client_file.pk
