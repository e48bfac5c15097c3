"""The daily document pull for tax advisers (issue 6): paid invoices of the last open tax year,
with their PDFs, each matched to the bank transaction that paid it.

Why it lives here: the list of paid documents is the accountant's (``accountant.services``), the
bytes come through the connector contract (``Connector.download_attachment``), and the matching
is the reconciliation engine's ``tax_documents`` route. Reconciliation may import both layers;
neither may import reconciliation.

* ``pull_client_file`` does one file: keeps every PDF not yet stored on its ``Attachment`` row
  (provider URLs expire, the adviser needs the file later), then scores the paid documents on
  ``tax_documents``. Whatever the engine cannot match with confidence stays as a ``proposed`` or
  ``refused`` match with its candidates — the review queue — so no document is silently dropped.
  One PDF that cannot be downloaded is logged and counted, never fatal: the other PDFs and the
  matching still happen, and tomorrow's run tries that file again (it is still not stored).
* ``pull_all`` only fans out, one django-q2 task per active file, so one slow or broken provider
  never holds up the other files.

Running it twice is harmless: stored files are not downloaded again, and the engine writes
nothing for unchanged inputs and never touches a decided match.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from django.core.files.base import ContentFile
from django_q.tasks import async_task

from accountant import services as accountant
from accountant.models import ClientFile
from connectors.models import Attachment, Document
from reconciliation import services
from reconciliation.models import Match

logger = logging.getLogger(__name__)

ROUTE = "tax_documents"
TASK = "reconciliation.tasks.pull_tax_documents_for"


@dataclass
class TaxPullSummary:
    """What one file's pull did; kept as the django-q2 task result, so it must stay plain data."""

    client_file_id: int
    skipped: str = ""  # why nothing was done (inactive file, no open year…); empty when it ran
    fiscal_year: str = ""
    documents: int = 0
    pdfs_fetched: int = 0
    pdfs_already_stored: int = 0
    pdf_failures: int = 0
    failed_documents: list[str] = field(default_factory=list)  # numbers whose PDF could not be read
    without_pdf: list[str] = field(default_factory=list)  # numbers with no attachment mirrored
    # The documents' state on the route after the run (not just what this run wrote).
    auto: int = 0  # auto-posted, approved or pinned: matched to their transaction
    proposed: int = 0  # in the review queue
    refused: int = 0  # no confident candidate: in the review queue too, candidates kept
    other: int = 0  # decided by hand otherwise (rejected / unmatched), or settled by the first route

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pull_client_file(client_file_id: int) -> TaxPullSummary:
    """Pull one client file's paid documents of its last open year, store their PDFs, match them."""
    summary = TaxPullSummary(client_file_id=int(client_file_id))
    client_file = ClientFile.objects.filter(pk=client_file_id).select_related("organization").first()
    if client_file is None:
        summary.skipped = "client file not found"
        return summary
    if client_file.status != ClientFile.Status.ACTIVE:
        summary.skipped = f"client file is {client_file.status}, not active"
        return summary
    year = accountant.last_open_fiscal_year(client_file)
    if year is None:
        summary.skipped = "no open fiscal year"
        return summary
    summary.fiscal_year = f"{year.start.isoformat()}..{year.end.isoformat()}"

    paid = accountant.paid_documents_of_last_open_year(client_file)
    summary.documents = len(paid)
    for item in paid:
        if not item.attachments:
            summary.without_pdf.append(item.document.number or item.document.external_id)
        for attachment in item.attachments:
            if attachment.file:
                summary.pdfs_already_stored += 1
            elif _store(item.document, attachment):
                summary.pdfs_fetched += 1
            else:
                summary.pdf_failures += 1
                label = item.document.number or item.document.external_id
                if label not in summary.failed_documents:
                    summary.failed_documents.append(label)

    document_ids = [item.document.pk for item in paid]
    if document_ids:
        services.reconcile_organization(client_file.organization_id, ROUTE, touched_subject_ids=document_ids)
        _count_matches(summary, client_file.organization_id, document_ids)
    logger.info("tax pull of client file %s: %s", client_file.pk, summary.as_dict())
    return summary


def _store(document: Document, attachment: Attachment) -> bool:
    """Download one attachment through the document's connection and keep it; False on failure.

    Any error is caught on purpose: a provider outage, a revoked token or an attachment deleted
    upstream must not cost the adviser the other PDFs nor the matching of this file.
    """
    connection = attachment.connection if attachment.connection_id else document.connection
    try:
        download = connection.connector().download_attachment(attachment.external_id)
        name = download.name or attachment.file_name or f"{attachment.external_id}.pdf"
        attachment.file.save(name, ContentFile(download.content), save=False)
        if download.content_type and not attachment.content_type:
            attachment.content_type = download.content_type
        # Only our columns: a concurrent sync may be rewriting the mirror columns of this row.
        attachment.save(update_fields=["file", "content_type"])
    except Exception:
        logger.exception(
            "tax pull: attachment %s of document %s (%s) could not be downloaded",
            attachment.external_id, document.pk, document.number,
        )
        return False
    return True


def _count_matches(summary: TaxPullSummary, organization_id: int, document_ids: list[int]) -> None:
    statuses = Counter(
        Match.objects.for_org(organization_id)
        .filter(route=ROUTE, document_id__in=document_ids)
        .values_list("status", flat=True)
    )
    posted = {str(s) for s in Match.POSTED}
    summary.auto = sum(n for s, n in statuses.items() if s in posted)
    summary.proposed = statuses.get(Match.Status.PROPOSED, 0)
    summary.refused = statuses.get(Match.Status.REFUSED, 0)
    summary.other = len(document_ids) - summary.auto - summary.proposed - summary.refused


def pull_all() -> int:
    """Enqueue one pull per active client file; returns how many were enqueued."""
    ids = list(ClientFile.objects.filter(status=ClientFile.Status.ACTIVE).order_by("pk").values_list("pk", flat=True))
    for file_id in ids:
        async_task(TASK, file_id)
    return len(ids)
