"""Exports of a client file's books: FEC (through ``accountant.fec``), CSV and XLSX.

``accountant.fec`` knows the legal format and stays free of Django; this module maps entries to
its records, picks the fiscal year, names the file ``<SIREN>FEC<closing date>.txt``, validates
what it wrote and records every file as an ``Export`` row. CSV and XLSX go through
django-import-export (``accountant.resources``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from django.core.files.base import ContentFile
from django.db.models import QuerySet
from django.utils import timezone

from accountant.fec import FecEntry, FecLine, Violation, fec_filename, validate_fec, write_fec
from accountant.models import Account, ClientFile, EntryLine, Export, FiscalYear, JournalEntry
from accountant.resources import AccountResource, EntryLineResource
from qontohub.models import Organization

#: Entries in the books: everything but drafts (blocked/error entries are balanced entries the
#: target software objected to; they are still the company's books).
BOOKED_STATUSES = (
    JournalEntry.Status.VALIDATED,
    JournalEntry.Status.PUSHED,
    JournalEntry.Status.BLOCKED,
    JournalEntry.Status.ERROR,
)


class ExportError(Exception):
    """An export that cannot be produced; ``str()`` says why."""


def client_file_for(organization: str) -> ClientFile:
    """The client file of an organisation given by id or Qonto slug (the commands' argument)."""
    lookup = {"pk": int(organization)} if organization.isdigit() else {"qonto_slug": organization}
    org = Organization.objects.filter(**lookup).first()
    if org is None:
        raise ExportError(f"No organisation {organization!r} (give its id or its Qonto slug).")
    client_file = ClientFile.objects.filter(organization=org).select_related("organization").first()
    if client_file is None:
        raise ExportError(f"{org} has no client file: associate it with the firm's software first.")
    return client_file


def period_for(client_file: ClientFile, year: int) -> tuple[date, date, FiscalYear | None]:
    """The fiscal year closing in ``year`` (the FEC covers one fiscal year), else the calendar year."""
    fiscal_year = (
        FiscalYear.objects.filter(client_file=client_file, end__year=year).order_by("-end").first()
    )
    if fiscal_year is not None:
        return fiscal_year.start, fiscal_year.end, fiscal_year
    return date(year, 1, 1), date(year, 12, 31), None


def booked_entries(client_file: ClientFile, start: date, end: date) -> QuerySet[JournalEntry]:
    return (
        JournalEntry.objects.filter(client_file=client_file, status__in=BOOKED_STATUSES, date__range=(start, end))
        .select_related("journal")
        .order_by("date", "pk")
    )


def fec_entries(client_file: ClientFile, start: date, end: date) -> list[FecEntry]:
    entries = list(booked_entries(client_file, start, end))
    lines_by_entry: dict[int, list[EntryLine]] = {}
    for line in (
        EntryLine.objects.filter(entry__in=[e.pk for e in entries])
        .select_related("account", "aux_account")
        .order_by("entry_id", "position", "pk")
    ):
        lines_by_entry.setdefault(line.entry_id, []).append(line)
    out = []
    for entry in entries:
        out.append(
            FecEntry(
                journal_code=entry.journal.code,
                journal_label=entry.journal.label,
                entry_date=entry.date,
                piece_ref=entry.reference or entry.piece_number,
                piece_date=entry.date,
                label=entry.label,
                validation_date=timezone.localdate(entry.validated_at) if entry.validated_at else entry.date,
                lines=[
                    FecLine(
                        account_number=line.account.number,
                        account_label=line.account.label,
                        aux_account_number=line.aux_account.number if line.aux_account else "",
                        aux_account_label=line.aux_account.label if line.aux_account else "",
                        label=line.label,
                        debit=line.debit,
                        credit=line.credit,
                    )
                    for line in lines_by_entry.get(entry.pk, [])
                ],
            )
        )
    return out


@dataclass
class FecResult:
    path: Path
    lines: int
    entries: int
    violations: list[Violation]
    export: Export


def export_fec(client_file: ClientFile, year: int, output_dir: Path | str, user: Any = None) -> FecResult:
    """Write ``<SIREN>FEC<closing date>.txt`` for the fiscal year closing in ``year`` and check it."""
    siren = client_file.organization.siren or client_file.remote_siren
    if not siren:
        raise ExportError(f"{client_file.organization} has no SIREN: the FEC is named after it.")
    start, end, fiscal_year = period_for(client_file, year)
    try:
        name = fec_filename(siren, end)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    written = write_fec(fec_entries(client_file, start, end), path)
    violations = validate_fec(path)
    export = Export(
        client_file=client_file,
        organization_id=client_file.organization_id,
        kind=Export.Kind.FEC,
        what="entries",
        fiscal_year=fiscal_year,
        lines=written.lines,
        violations=[str(v) for v in violations],
        created_by=user if getattr(user, "pk", None) else None,
    )
    export.file.save(name, ContentFile(path.read_bytes()), save=True)
    return FecResult(path, written.lines, written.entries, violations, export)


def export_table(
    client_file: ClientFile, kind: str, what: str = "entries", user: Any = None, year: int | None = None
) -> Export:
    """CSV or XLSX of the file's entry lines (optionally one fiscal year) or of its chart."""
    if kind not in (Export.Kind.CSV, Export.Kind.XLSX):
        raise ExportError(f"Unknown table format {kind!r}.")
    fiscal_year = None
    if what == "entries":
        lines = EntryLine.objects.filter(entry__client_file=client_file, entry__status__in=BOOKED_STATUSES)
        if year is not None:
            start, end, fiscal_year = period_for(client_file, year)
            lines = lines.filter(entry__date__range=(start, end))
        dataset = EntryLineResource().export(
            lines.select_related("entry", "entry__journal", "account", "aux_account").order_by(
                "entry__date", "entry_id", "position"
            )
        )
    elif what == "accounts":
        dataset = AccountResource().export(Account.objects.filter(client_file=client_file).order_by("number"))
    else:
        raise ExportError(f"Unknown export {what!r}.")
    content: bytes = dataset.export(kind) if kind == Export.Kind.XLSX else dataset.export("csv").encode("utf-8-sig")
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    slug = client_file.organization.qonto_slug or f"org{client_file.organization_id}"
    export = Export(
        client_file=client_file,
        organization_id=client_file.organization_id,
        kind=kind,
        what=what,
        fiscal_year=fiscal_year,
        lines=len(dataset),
        created_by=user if getattr(user, "pk", None) else None,
    )
    export.file.save(f"{slug}-{what}-{stamp}.{kind}", ContentFile(content), save=True)
    return export
