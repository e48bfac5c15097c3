"""Tests for accountant.fec: a realistic year written by ``write_fec`` passes ``validate_fec``,
and each defect the DGFiP tester or an auditor would catch is reported on the right line.

No database: the module is pure. Run with
``/tmp/probe/bin/python -m pytest -p no:django -q tests/accountant/test_fec.py``.
"""

from __future__ import annotations

import io
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from accountant.fec import (
    FEC_COLUMNS,
    FecEntry,
    FecError,
    FecLine,
    Violation,
    fec_filename,
    main,
    validate_fec,
    write_fec,
)

SIREN = "732829320"  # passes the Luhn check
CLOSING = date(2025, 12, 31)
D = Decimal


# --------------------------------------------------------------------------------------------
# A realistic year: opening entry, monthly purchases (401/6xx/44566), sales (411/7xx/44571),
# bank movements on the Qonto account (512), one USD purchase, awkward labels.
# --------------------------------------------------------------------------------------------


def _purchase(
    day: date, supplier: str, name: str, account: str, account_label: str, net: Decimal, piece: str
) -> FecEntry:
    vat = (net * D("0.20")).quantize(D("0.01"))
    return FecEntry(
        journal_code="AC",
        journal_label="Achats",
        entry_date=day,
        piece_ref=piece,
        piece_date=day - timedelta(days=1),
        label=f"{name} facture {piece}",
        validation_date=day + timedelta(days=2),
        lines=[
            FecLine(account_number=account, account_label=account_label, debit=net),
            FecLine(account_number="44566", account_label="TVA déductible sur ABS", debit=vat),
            FecLine(
                account_number="401",
                account_label="Fournisseurs",
                aux_account_number=f"401{supplier}",
                aux_account_label=name,
                credit=net + vat,
            ),
        ],
    )


def _sale(day: date, customer: str, name: str, net: Decimal, piece: str) -> FecEntry:
    vat = (net * D("0.20")).quantize(D("0.01"))
    return FecEntry(
        journal_code="VT",
        journal_label="Ventes",
        entry_date=day,
        piece_ref=piece,
        piece_date=day,
        label=f"Facture {piece} {name}",
        validation_date=day + timedelta(days=1),
        lines=[
            FecLine(
                account_number="411",
                account_label="Clients",
                aux_account_number=f"411{customer}",
                aux_account_label=name,
                debit=net + vat,
            ),
            FecLine(account_number="706", account_label="Prestations de services", credit=net),
            FecLine(account_number="44571", account_label="TVA collectée 20 %", credit=vat),
        ],
    )


def _bank(day: date, label: str, lines: list[FecLine], piece: str) -> FecEntry:
    return FecEntry(
        journal_code="BQ",
        journal_label="Banque Qonto",
        entry_date=day,
        piece_ref=piece,
        piece_date=day,
        label=label,
        validation_date=day + timedelta(days=3),
        lines=lines,
    )


def realistic_year() -> list[FecEntry]:
    """About 90 entries over 2025, deliberately not in date order (the writer sorts them)."""
    purchases: list[FecEntry] = []
    sales: list[FecEntry] = []
    bank: list[FecEntry] = []
    for month in range(1, 13):
        rent = _purchase(
            date(2025, month, 1),
            "SCI",
            "SCI Les Tilleuls",
            "6132",
            "Locations immobilières",
            D("1500.00"),
            f"LOY-{month:02d}",
        )
        power = _purchase(
            date(2025, month, 10),
            "EDF",
            "EDF",
            "6061",
            "Fournitures non stockables",
            D("84.17") + month,
            f"EDF{month:02d}25",
        )
        purchases += [rent, power]
        invoice = f"FA2025-{month:03d}"
        net = D("4200.00") + D(month * 35)
        sales.append(_sale(date(2025, month, 28), "DUPONT", "Dupont & Fils SARL", net, invoice))
        ttc = net + (net * D("0.20")).quantize(D("0.01"))
        next_month = date(2025, month, 28) + timedelta(days=10)
        if next_month.year == 2025:
            bank.append(
                _bank(
                    next_month,
                    f"VIR SEPA DUPONT ET FILS {invoice}",
                    [
                        FecLine(account_number="512", account_label="Qonto", debit=ttc),
                        FecLine(
                            account_number="411",
                            account_label="Clients",
                            aux_account_number="411DUPONT",
                            aux_account_label="Dupont & Fils SARL",
                            credit=ttc,
                            lettering="A" + str(month),
                            lettering_date=next_month,
                        ),
                    ],
                    f"QNT-IN-{month:02d}",
                )
            )
        rent_ttc = D("1800.00")
        bank.append(
            _bank(
                date(2025, month, 5),
                "PRLV SCI LES TILLEULS loyer",
                [
                    FecLine(
                        account_number="401",
                        account_label="Fournisseurs",
                        aux_account_number="401SCI",
                        aux_account_label="SCI Les Tilleuls",
                        debit=rent_ttc,
                    ),
                    FecLine(account_number="512", account_label="Qonto", credit=rent_ttc),
                ],
                f"QNT-OUT-{month:02d}",
            )
        )
        bank.append(
            _bank(
                date(2025, month, 30 if month != 2 else 28),
                "Frais Qonto\tabonnement\nEssential",
                [
                    FecLine(account_number="627", account_label="Services bancaires", debit=D("29.00")),
                    FecLine(account_number="512", account_label="Qonto", credit=D("29.00")),
                ],
                f"QNT-FEE-{month:02d}",
            )
        )
    usd = FecEntry(
        journal_code="AC",
        journal_label="Achats",
        entry_date=date(2025, 6, 15),
        piece_ref="INV-88812",
        piece_date=date(2025, 6, 14),
        label="GitHub, Inc. “Team” plan",
        validation_date=date(2025, 6, 16),
        lines=[
            FecLine(
                account_number="6262",
                account_label="Abonnements logiciels",
                debit=D("91.95"),
                amount_currency=D("100.00"),
                currency="usd",
            ),
            FecLine(
                account_number="401",
                account_label="Fournisseurs",
                aux_account_number="401GITHUB",
                aux_account_label="GitHub – Inc.",
                credit=D("91.95"),
                amount_currency=D("-100.00"),
                currency="USD",
            ),
        ],
    )
    opening = FecEntry(
        journal_code="AN",
        journal_label="À-nouveaux",
        entry_date=date(2025, 1, 1),
        piece_ref="AN2025",
        piece_date=date(2025, 1, 1),
        label="Reprise des soldes 2024",
        validation_date=date(2025, 1, 1),
        lines=[
            FecLine(account_number="512", account_label="Qonto", debit=D("12500.00")),
            FecLine(account_number="101", account_label="Capital", credit=D("10000.00")),
            FecLine(account_number="110", account_label="Report à nouveau", credit=D("2500.00")),
        ],
    )
    # Opening entry last on purpose: the writer must still put it first.
    return sales + purchases + [usd] + bank + [opening]


@pytest.fixture
def fec_path(tmp_path: Path) -> Path:
    path = tmp_path / fec_filename(SIREN, CLOSING)
    write_fec(realistic_year(), path)
    return path


def _rows(path: Path) -> list[list[str]]:
    text = path.read_bytes().decode("iso-8859-15")
    return [record.split("\t") for record in text.split("\r\n")[:-1]]


def _write_rows(path: Path, rows: list[list[str]], sep: str = "\t") -> None:
    path.write_bytes("".join(sep.join(r) + "\r\n" for r in rows).encode("iso-8859-15"))


def _col(name: str) -> int:
    return FEC_COLUMNS.index(name)


def _hits(
    violations: list[Violation], line: int, column: str | None = None, text: str = ""
) -> list[Violation]:
    return [
        v
        for v in violations
        if v.line == line and (column is None or v.column == column) and text in v.message
    ]


# --------------------------------------------------------------------------------------------
# The good file
# --------------------------------------------------------------------------------------------


def test_realistic_year_passes_the_validator(fec_path: Path) -> None:
    assert validate_fec(fec_path) == []


def test_cli_says_ok_on_the_good_file(fec_path: Path) -> None:
    out = io.StringIO()
    assert main(["check", str(fec_path)], stdout=out) == 0
    rows = _rows(fec_path)
    entries = {r[_col("EcritureNum")] for r in rows[1:]}
    assert out.getvalue() == f"OK: {len(rows) - 1} lines, {len(entries)} entries, balanced\n"


def test_file_format(fec_path: Path) -> None:
    raw = fec_path.read_bytes()
    assert raw.startswith(b"JournalCode\tJournalLib\tEcritureNum\tEcritureDate\tCompteNum")
    assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    assert "TVA déductible".encode("iso-8859-15") in raw  # ISO-8859-15, not UTF-8
    rows = _rows(fec_path)
    assert rows[0] == list(FEC_COLUMNS)
    assert all(len(r) == 18 for r in rows)
    rent = next(r for r in rows if r[_col("CompteNum")] == "6132")
    assert rent[_col("EcritureDate")] == "20250101"
    assert rent[_col("Debit")] == "1500,00" and rent[_col("Credit")] == "0,00"
    fee = next(r for r in rows if r[_col("CompteNum")] == "627")
    assert fee[_col("EcritureLib")] == "Frais Qonto abonnement Essential"  # tab/newline stripped
    usd = [r for r in rows if r[_col("Idevise")] == "USD"]
    assert [r[_col("Montantdevise")] for r in usd] == ["100,00", "-100,00"]
    assert usd[0][_col("EcritureLib")] == 'GitHub, Inc. "Team" plan'  # curly quotes mapped
    assert usd[1][_col("CompAuxLib")] == "GitHub - Inc."


def test_numbering_is_continuous_in_date_order_with_opening_first(fec_path: Path) -> None:
    rows = _rows(fec_path)[1:]
    numbers: list[int] = []
    dates: list[str] = []
    for r in rows:
        n = int(r[_col("EcritureNum")])
        if not numbers or numbers[-1] != n:
            numbers.append(n)
            dates.append(r[_col("EcritureDate")])
    assert numbers == list(range(1, len(numbers) + 1))
    assert dates == sorted(dates)
    assert rows[0][_col("JournalCode")] == "AN"


def test_given_numbers_are_kept(tmp_path: Path) -> None:
    year = realistic_year()[:3]
    numbered = [
        FecEntry(**{**e.__dict__, "entry_number": f"VT{i:04d}"}) for i, e in enumerate(year, start=41)
    ]
    out = io.StringIO()
    write_fec(numbered, out)
    nums = [line.split("\t")[2] for line in out.getvalue().split("\r\n")[1:-1]]
    assert nums[0] == "VT0041" and nums[-1] == "VT0043"
    assert validate_fec(out.getvalue()) == []


def test_utf8_is_opt_in_and_readable(tmp_path: Path) -> None:
    path = tmp_path / fec_filename(SIREN, CLOSING)
    write_fec(realistic_year(), path, encoding="utf-8")
    assert "déductible".encode() in path.read_bytes()
    assert validate_fec(path) == []


# --------------------------------------------------------------------------------------------
# Seeded defects: each one reported on its own line
# --------------------------------------------------------------------------------------------


def _entry_lines(rows: list[list[str]], number: str) -> list[int]:
    """1-based file line numbers of an entry's lines."""
    return [i + 1 for i, r in enumerate(rows) if i and r[_col("EcritureNum")] == number]


def test_unbalanced_entry(fec_path: Path) -> None:
    rows = _rows(fec_path)
    lines = _entry_lines(rows, "10")
    rows[lines[1] - 1][_col("Debit")] = "30,00"  # was 20% VAT or similar, now wrong
    before = _rows(fec_path)[lines[1] - 1][_col("Debit")]
    _write_rows(fec_path, rows)
    violations = validate_fec(fec_path)
    unbalanced = _hits(violations, lines[0], None, "unbalanced")
    assert len(unbalanced) == 1
    diff = abs(Decimal(before.replace(",", ".")) - Decimal("30"))
    assert f"difference {diff:.2f}".replace(".", ",") in unbalanced[0].message
    assert "entry '10'" in unbalanced[0].message
    assert _hits(violations, 0, None, "file is unbalanced")


@pytest.mark.parametrize("bad", ["2025-13-01", "20251301", "20250230", "2025031"])
def test_bad_date(fec_path: Path, bad: str) -> None:
    rows = _rows(fec_path)
    rows[7][_col("PieceDate")] = bad
    _write_rows(fec_path, rows)
    violations = validate_fec(fec_path)
    assert [str(v) for v in violations] == [f"line 8: PieceDate: {v.message}" for v in violations]
    assert len(violations) == 1
    assert f"{bad!r} is not a valid YYYYMMDD date" in violations[0].message


def test_cli_prints_one_violation_per_line(fec_path: Path) -> None:
    rows = _rows(fec_path)
    rows[11][_col("EcritureDate")] = "2026-13-01"
    rows[20][_col("Debit")], rows[20][_col("Credit")] = "", "0,00"
    _write_rows(fec_path, rows)
    out = io.StringIO()
    assert main(["check", str(fec_path)], stdout=out) == 1
    printed = out.getvalue().splitlines()
    assert any(
        p.startswith("line 12: EcritureDate: '2026-13-01' is not a valid YYYYMMDD date") for p in printed
    )
    assert "line 21: Debit: Debit is mandatory and empty" in printed


def test_missing_column_in_header(fec_path: Path) -> None:
    rows = [r[:-1] for r in _rows(fec_path)]  # drop Idevise everywhere
    _write_rows(fec_path, rows)
    violations = validate_fec(fec_path)
    assert len(violations) == 1
    assert violations[0].line == 1 and violations[0].column == "Idevise"
    assert "missing column 'Idevise'" in violations[0].message


@pytest.mark.parametrize("column", ["CompAuxLib", "JournalLib", "Idevise"])
def test_missing_field_on_one_line(fec_path: Path, column: str) -> None:
    rows = _rows(fec_path)
    del rows[14][_col(column)]
    _write_rows(fec_path, rows)
    violations = validate_fec(fec_path)
    assert [(v.line, v.column) for v in violations] == [(15, None)]
    assert "has 17 fields, the header has 18" in violations[0].message


def test_misnamed_and_misordered_header(fec_path: Path) -> None:
    rows = _rows(fec_path)
    rows[0][_col("Credit")] = "Crédit"
    _write_rows(fec_path, rows)
    violations = validate_fec(fec_path)
    assert len(violations) == 1
    assert violations[0].column == "Credit" and "exactly 'Credit'" in violations[0].message

    rows = _rows(fec_path)
    for r in rows:
        r[0], r[1] = r[1], r[0]
    rows[0][_col("Credit")] = "Credit"
    _write_rows(fec_path, rows)
    violations = validate_fec(fec_path)
    assert [v.line for v in violations] == [1]
    assert "out of order" in violations[0].message


@pytest.mark.parametrize("sep,name", [(";", "semicolon"), ("|", "pipe")])
def test_wrong_separator(fec_path: Path, sep: str, name: str) -> None:
    _write_rows(fec_path, _rows(fec_path), sep=sep)
    violations = validate_fec(fec_path)
    assert len(violations) == 1, violations
    assert violations[0].line == 1 and f"separated by '{sep}' ({name})" in violations[0].message
    if sep == "|":
        assert validate_fec(fec_path, allow_pipe=True) == []


def test_comma_separator_stops_early(fec_path: Path) -> None:
    rows = [[f.replace(",", ".") for f in r] for r in _rows(fec_path)]
    _write_rows(fec_path, rows, sep=",")
    violations = validate_fec(fec_path)
    assert len(violations) == 1 and "clashes with the decimal comma" in violations[0].message


def test_gap_in_numbering(fec_path: Path) -> None:
    rows = _rows(fec_path)
    for r in rows[1:]:
        if int(r[_col("EcritureNum")]) >= 20:
            r[_col("EcritureNum")] = str(int(r[_col("EcritureNum")]) + 1)
    _write_rows(fec_path, rows)
    first_line_of_21 = _entry_lines(rows, "21")[0]
    violations = validate_fec(fec_path)
    assert len(violations) == 1
    assert (violations[0].line, violations[0].column) == (first_line_of_21, "EcritureNum")
    assert "from '19'" in violations[0].message and "number 20 is missing" in violations[0].message


def test_disorder_in_numbering(fec_path: Path) -> None:
    rows = _rows(fec_path)
    for r in rows[1:]:
        n = r[_col("EcritureNum")]
        r[_col("EcritureNum")] = {"5": "6", "6": "5"}.get(n, n)
    _write_rows(fec_path, rows)
    violations = validate_fec(fec_path)
    line_of_5 = _entry_lines(rows, "5")[0]
    assert _hits(violations, line_of_5, "EcritureNum", "comes after '6'")


def test_split_entry_is_reported(fec_path: Path) -> None:
    rows = _rows(fec_path)
    lines = _entry_lines(rows, "3")
    moved = rows.pop(lines[-1] - 1)
    insert_at = _entry_lines(rows, "4")[-1]  # after entry 4's last line
    rows.insert(insert_at, moved)
    _write_rows(fec_path, rows)
    violations = validate_fec(fec_path)
    assert _hits(violations, insert_at + 1, "EcritureNum", "keep all lines of an entry together")


def test_per_journal_numbering_is_understood() -> None:
    header = "\t".join(FEC_COLUMNS)

    def line(journal: str, num: str, account: str, debit: str, credit: str) -> str:
        return "\t".join(
            [
                journal,
                journal,
                num,
                "20250105",
                account,
                "x",
                "",
                "",
                "P1",
                "20250105",
                "lib",
                debit,
                credit,
                "",
                "",
                "20250106",
                "",
                "",
            ]
        )

    text = (
        "\r\n".join(
            [
                header,
                line("AC", "1", "606", "10,00", "0,00"),
                line("AC", "1", "401", "0,00", "10,00"),
                line("VT", "1", "411", "12,00", "0,00"),
                line("VT", "1", "706", "0,00", "12,00"),
                line("AC", "2", "606", "5,00", "0,00"),
                line("AC", "2", "401", "0,00", "5,00"),
                line("VT", "2", "411", "7,00", "0,00"),
                line("VT", "2", "706", "0,00", "7,00"),
                line("AC", "3", "606", "5,00", "0,00"),
                line("AC", "3", "401", "0,00", "5,00"),
                line("VT", "4", "411", "7,00", "0,00"),
                line("VT", "4", "706", "0,00", "7,00"),
            ]
        )
        + "\r\n"
    )
    violations = validate_fec(text)
    # Read per journal there is one gap (VT 3); read file-wide there would be three problems.
    assert [(v.line, v.column) for v in violations] == [(12, "EcritureNum")]
    assert "number 3 is missing" in violations[0].message


def test_dot_decimal(fec_path: Path) -> None:
    rows = _rows(fec_path)
    line = next(i for i, r in enumerate(rows) if i and r[_col("Credit")] != "0,00") + 1
    amount = rows[line - 1][_col("Credit")]
    rows[line - 1][_col("Credit")] = amount.replace(",", ".")
    _write_rows(fec_path, rows)
    violations = validate_fec(fec_path)
    # The point is still read, so the entry's balance is not wrongly reported too.
    assert len(violations) == 1
    assert (violations[0].line, violations[0].column) == (line, "Credit")
    assert "uses '.' as decimal separator" in violations[0].message
    assert repr(amount) in violations[0].message


@pytest.mark.parametrize(
    "debit,credit,column,text",
    [
        ("-12,00", "0,00", "Debit", "is negative"),
        ("1 500,00", "0,00", "Debit", "thousands separator"),
        ("1.500,00", "0,00", "Debit", "thousands separator"),
        ("abc", "0,00", "Debit", "is not an amount"),
        ("12,00", "12,00", None, "both Debit"),
        ("0,00", "0,00", None, "both zero"),
    ],
)
def test_bad_amounts(fec_path: Path, debit: str, credit: str, column: str | None, text: str) -> None:
    rows = _rows(fec_path)
    rows[5][_col("Debit")], rows[5][_col("Credit")] = debit, credit
    _write_rows(fec_path, rows)
    assert _hits(validate_fec(fec_path), 6, column, text)


def test_empty_mandatory_fields(fec_path: Path) -> None:
    rows = _rows(fec_path)
    rows[3][_col("EcritureLib")] = ""
    rows[4][_col("ValidDate")] = "  "
    rows[5][_col("CompteNum")] = "Banque"
    _write_rows(fec_path, rows)
    violations = validate_fec(fec_path)
    assert _hits(violations, 4, "EcritureLib", "mandatory and empty")
    assert _hits(violations, 5, "ValidDate", "mandatory and empty")
    assert _hits(violations, 6, "CompteNum", "3 digits")


def test_currency_amount_needs_a_currency(fec_path: Path) -> None:
    rows = _rows(fec_path)
    line = next(i for i, r in enumerate(rows) if r[_col("Idevise")] == "USD") + 1
    rows[line - 1][_col("Idevise")] = ""
    _write_rows(fec_path, rows)
    assert _hits(validate_fec(fec_path), line, "Idevise", "Montantdevise is set")


def test_empty_line_and_date_after_closing(fec_path: Path) -> None:
    rows = _rows(fec_path)
    last_number = rows[-1][_col("EcritureNum")]
    last_entry = _entry_lines(rows, last_number)
    for line in last_entry:
        rows[line - 1][_col("EcritureDate")] = "20260102"
    rows.insert(10, [""])
    _write_rows(fec_path, rows)
    violations = validate_fec(fec_path)
    assert _hits(violations, 11, None, "empty line")
    assert _hits(violations, last_entry[0] + 1, "EcritureDate", "after the closing date 20251231")


# --------------------------------------------------------------------------------------------
# File name
# --------------------------------------------------------------------------------------------


def test_fec_filename() -> None:
    assert fec_filename(SIREN, CLOSING) == "732829320FEC20251231.txt"
    assert fec_filename("732 829 320", date(2026, 3, 31)) == "732829320FEC20260331.txt"
    with pytest.raises(ValueError, match="exactly 9 digits"):
        fec_filename("73282932", CLOSING)
    with pytest.raises(ValueError, match="exactly 9 digits"):
        fec_filename("73282932A", CLOSING)
    with pytest.raises(ValueError, match="Luhn"):
        fec_filename("732829321", CLOSING)


@pytest.mark.parametrize(
    "name,text",
    [
        ("fec_2025.txt", "must be <SIREN>FEC<YYYYMMDD>.txt"),
        ("732829320FEC20251231.csv", "must be <SIREN>FEC<YYYYMMDD>.txt"),
        ("732829321FEC20251231.txt", "Luhn"),
        ("732829320FEC20251331.txt", "closing date"),
    ],
)
def test_wrong_filename(fec_path: Path, name: str, text: str) -> None:
    renamed = fec_path.rename(fec_path.with_name(name))
    violations = validate_fec(renamed)
    assert [(v.line, v.column) for v in violations] == [(0, None)]
    assert text in violations[0].message
    assert str(violations[0]).startswith("file: ")


def test_text_input_skips_the_filename_check(fec_path: Path) -> None:
    assert validate_fec(fec_path.read_text(encoding="iso-8859-15")) == []
    assert validate_fec(fec_path.read_bytes()) == []


# --------------------------------------------------------------------------------------------
# The writer refuses what it must not write
# --------------------------------------------------------------------------------------------


def _entry(**changes: object) -> FecEntry:
    base = dict(
        journal_code="AC",
        journal_label="Achats",
        entry_date=date(2025, 4, 2),
        piece_ref="F-77",
        piece_date=date(2025, 4, 1),
        label="Bureau Vallée fournitures",
        validation_date=date(2025, 4, 3),
        lines=[
            FecLine(account_number="6064", account_label="Fournitures", debit=D("100.00")),
            FecLine(account_number="44566", account_label="TVA", debit=D("20.00")),
            FecLine(account_number="401", account_label="Fournisseurs", credit=D("110.00")),
        ],
    )
    base.update(changes)
    return FecEntry(**base)  # type: ignore[arg-type]


def test_writer_refuses_unbalanced_entry(tmp_path: Path) -> None:
    path = tmp_path / fec_filename(SIREN, CLOSING)
    good = realistic_year()[:4]
    with pytest.raises(
        FecError,
        match=r"entry #5 .*'F-77'.* unbalanced: debit 120,00 vs "
        r"credit 110,00, off by 10,00",
    ):
        write_fec([*good, _entry()], path)
    assert not path.exists()  # nothing half-written


@pytest.mark.parametrize(
    "line,text",
    [
        (FecLine(account_number="401", account_label="F", credit=D("-110")), "negative"),
        (FecLine(account_number="401", account_label="F", debit=D("1"), credit=D("111")), "both debit"),
        (FecLine(account_number="401", account_label="F", credit=110.0), "must be a Decimal"),
        (FecLine(account_number="401", account_label="F", credit=D("110.001")), "2 decimals"),
        (FecLine(account_number="Fourn", account_label="F", credit=D("120")), "3 digits"),
    ],
)
def test_writer_refuses_bad_lines(line: FecLine, text: str) -> None:
    entry = _entry()
    with pytest.raises(FecError, match=text):
        write_fec([_entry(lines=[*entry.lines[:2], line])], io.BytesIO())


def test_writer_refuses_mixed_numbering() -> None:
    with pytest.raises(FecError, match="either every entry has an entry_number or none"):
        balanced = _entry(
            lines=[*_entry().lines[:2], FecLine(account_number="401", account_label="F", credit=D("120"))]
        )
        write_fec([balanced, FecEntry(**{**balanced.__dict__, "entry_number": "7"})], io.BytesIO())
