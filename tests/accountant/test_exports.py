"""Exports: the demo year's FEC passes the validator, ``check_fec`` catches seeded defects
(exit status 1), CSV and XLSX of entries and of the chart."""

from __future__ import annotations

import io
from datetime import date
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from openpyxl import load_workbook

from accountant import exports
from accountant.demo import seed_accountant
from accountant.fec import validate_fec
from accountant.models import ClientFile, Export, JournalEntry
from qontohub.management.commands.seed_demo import seed_core

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo():  # type: ignore[no-untyped-def]
    core = seed_core("pw")
    seed_accountant(core)
    return core


YEAR = timezone.localdate().year - 1


def test_the_demo_year_exports_a_valid_fec(demo, tmp_path):
    out = StringIO()
    call_command("export_fec", demo["org_a"].qonto_slug, str(YEAR), "--output", str(tmp_path / "fec"), stdout=out)
    path = tmp_path / "fec" / f"{demo['org_a'].siren}FEC{YEAR}1231.txt"
    assert path.exists() and "balanced, valid" in out.getvalue()
    assert validate_fec(path) == []
    text = path.read_bytes().decode("iso-8859-15")
    header, first = text.splitlines()[:2]
    assert header.split("\t")[:3] == ["JournalCode", "JournalLib", "EcritureNum"]
    assert first.split("\t")[3].startswith(str(YEAR))
    entries = JournalEntry.objects.filter(client_file__organization=demo["org_a"], date__year=YEAR).count()
    assert f"{entries} entries" in out.getvalue() and entries > 150
    export = Export.objects.get(kind="fec")
    assert export.lines == len(text.splitlines()) - 1 and export.violations == []
    # By organisation id too.
    call_command("export_fec", str(demo["org_a"].pk), str(YEAR), "--output", str(tmp_path / "again"), stdout=out)
    assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes()


def test_export_fec_refuses_unknown_organisations(demo, tmp_path):
    with pytest.raises(CommandError, match="No organisation"):
        call_command("export_fec", "nope", str(YEAR), "--output", str(tmp_path))
    with pytest.raises(CommandError, match="no client file"):
        call_command("export_fec", demo["org_b"].qonto_slug, str(YEAR), "--output", str(tmp_path))


def _check(path) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    out = StringIO()
    try:
        call_command("check_fec", str(path), stdout=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_check_fec_passes_the_demo_and_catches_seeded_defects(demo, tmp_path):
    result = exports.export_fec(ClientFile.objects.get(organization=demo["org_a"]), YEAR, tmp_path)
    status, output = _check(result.path)
    assert status == 0 and output.startswith("OK:")

    lines = result.path.read_bytes().decode("iso-8859-15").split("\r\n")
    columns = lines[0].split("\t")
    debit, credit, date_col = columns.index("Debit"), columns.index("Credit"), columns.index("EcritureDate")

    def defect(name: str, change) -> tuple[int, str]:  # type: ignore[no-untyped-def]
        broken = [ln.split("\t") for ln in lines]
        change(broken)
        target = tmp_path / "defects" / name / result.path.name
        target.parent.mkdir(parents=True)
        target.write_bytes("\r\n".join("\t".join(row) for row in broken).encode("iso-8859-15"))
        return _check(target)

    def unbalance(rows):  # type: ignore[no-untyped-def]
        rows[1][debit] = "999999,99" if rows[1][debit] != "0,00" else rows[1][debit]
        rows[1][credit] = "999999,99" if rows[1][credit] != "0,00" else rows[1][credit]

    def bad_date(rows):  # type: ignore[no-untyped-def]
        rows[2][date_col] = f"{YEAR}0231"

    def thousands(rows):  # type: ignore[no-untyped-def]
        rows[3][debit if rows[3][debit] != "0,00" else credit] = "1.234,56"

    def missing_column(rows):  # type: ignore[no-untyped-def]
        rows[4] = rows[4][:-1]

    for name, change, words in (("unbalanced", unbalance, "balance"), ("date", bad_date, "date"),
                                ("thousands", thousands, ""), ("columns", missing_column, "")):
        status, output = defect(name, change)
        assert status == 1, (name, output)
        assert output.strip(), name
        if words:
            assert words in output.lower(), (name, output)

    unreadable = _check(tmp_path / "missing" / "732829320FEC20251231.txt")
    assert unreadable[0] == 2


def test_csv_and_xlsx_of_entries_and_chart(demo):
    client_file = ClientFile.objects.get(organization=demo["org_a"])
    csv_export = exports.export_table(client_file, "csv", year=YEAR)
    text = csv_export.file.read().decode("utf-8-sig")
    header = text.splitlines()[0].split(",")
    assert header[:4] == ["journal_code", "date", "piece_number", "invoice_number"]
    assert "auxiliary_account" in header and "debit" in header
    assert csv_export.lines == len(text.strip().splitlines()) - 1 > 400

    xlsx_export = exports.export_table(client_file, "xlsx", what="accounts")
    sheet = load_workbook(io.BytesIO(xlsx_export.file.read())).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:3] == ("client_file", "number", "label")
    assert ("401VAUBAN", "Imprimerie Vauban") in {(r[1], r[2]) for r in rows[1:]}
    assert Export.objects.filter(client_file=client_file).count() == 2


def test_the_demo_seeder_is_idempotent(demo):
    count = JournalEntry.objects.count()
    seed_accountant(demo)
    assert JournalEntry.objects.count() == count
    client_file = ClientFile.objects.get(organization=demo["org_a"])
    assert client_file.firm == demo["firm"] and client_file.status == ClientFile.Status.INACTIVE
    assert all(e.total_debit == e.total_credit for e in JournalEntry.objects.all())
    kinds = set(JournalEntry.objects.values_list("kind", flat=True))
    assert kinds == {"purchase", "sale", "bank"}
    assert JournalEntry.objects.filter(date__lt=date(YEAR, 1, 1)).count() == 0
