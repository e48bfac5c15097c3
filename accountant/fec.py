"""Write and check the French FEC (Fichier des Écritures Comptables).

A company keeping computerised books must hand its FEC to the tax administration on request
(LPF art. L47 A-I, format in art. A47 A-1; see shared/reference/anchors.md §4). This module is
the one place that knows the format:

* ``write_fec`` turns plain records (``FecEntry`` / ``FecLine``) into a flat file: the 18
  mandatory columns in order, tab separated, dates ``YYYYMMDD``, decimal-comma amounts, every
  entry balanced, ``EcritureNum`` continuous over the file.
* ``validate_fec`` checks any flat FEC (ours or a client's previous software's) and returns
  ``Violation`` records that say what to fix and where.
* ``fec_filename`` builds the legal file name ``<SIREN>FEC<YYYYMMDD>.txt``.
* ``main`` is the CLI (``python -m accountant.fec check PATH``); ``manage.py check_fec`` wraps it.

It is deliberately pure (no Django, no database): the ``export_fec`` command maps models to
these records, and the rules can be tested on their own.
"""

from __future__ import annotations

import argparse
import bisect
import io
import os
import re
import sys
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import BinaryIO, TextIO

__all__ = [
    "FEC_COLUMNS",
    "FecEntry",
    "FecError",
    "FecLine",
    "FecWriteResult",
    "Violation",
    "fec_filename",
    "main",
    "validate_fec",
    "write_fec",
]

# The 18 mandatory columns of art. A47 A-1, in the mandatory order and with the exact spelling
# the DGFiP tester expects (e.g. ``Credit``, never ``Crédit``) [anchors.md §4.2].
FEC_COLUMNS: tuple[str, ...] = (
    "JournalCode",
    "JournalLib",
    "EcritureNum",
    "EcritureDate",
    "CompteNum",
    "CompteLib",
    "CompAuxNum",
    "CompAuxLib",
    "PieceRef",
    "PieceDate",
    "EcritureLib",
    "Debit",
    "Credit",
    "EcritureLet",
    "DateLet",
    "ValidDate",
    "Montantdevise",
    "Idevise",
)

# Required-ness follows the DGFiP tester's BIC table (NOT NULL plus the fields it flags as
# mandatory) [anchors.md §4.2, DGFiP/Test-Compta-Demat FECBIC.sql]. The other columns may be
# empty.
REQUIRED_COLUMNS: frozenset[str] = frozenset(
    {"JournalCode", "EcritureNum", "EcritureDate", "CompteNum", "EcritureLib", "Debit", "Credit", "ValidDate"}
)
DATE_COLUMNS: tuple[str, ...] = ("EcritureDate", "PieceDate", "DateLet", "ValidDate")

# The writer emits tab: it is one of the two separators used in practice (tab or pipe), and
# unlike the pipe it never occurs in the labels people type [anchors.md §4.3].
SEPARATOR = "\t"
# Both CR, LF and CRLF are legal record separators ("CR and/or LF", A47 A-1 I). We write CRLF
# because the people who open these files (the DGFiP's Test Compta Demat, auditors, accounting
# firms) work mostly on Windows, and CRLF reads correctly on every platform while bare LF does
# not in every Windows tool.
LINE_ENDING = "\r\n"
# A47 A-1 III allows ASCII, ISO 8859-15 or EBCDIC; UTF-8 is accepted by Odoo's importer and OCA
# offers it, but it is not in the arrêté. So ISO-8859-15 is the default and UTF-8 is opt-in
# [anchors.md §4.3].
DEFAULT_ENCODING = "iso-8859-15"

# Journal codes that hold opening entries (à-nouveaux). They must come first in the file
# [anchors.md §4.4]; "AN" is the usual code, "RAN" common, "OUV" is what OCA writes.
DEFAULT_OPENING_JOURNALS: frozenset[str] = frozenset({"AN", "RAN", "OUV"})

_CENT = Decimal("0.01")
_FILENAME_RE = re.compile(r"(?P<siren>\d{9})FEC(?P<date>\d{8})\.txt")


class FecError(ValueError):
    """Input that cannot be written as a legal FEC (unbalanced entry, bad amount, ...)."""


@dataclass(frozen=True, kw_only=True)
class FecLine:
    """One line of an entry: a single debit or credit on one account.

    ``label`` is the line's ``EcritureLib``; when empty the entry's label is used.
    ``amount_currency`` / ``currency`` are ``Montantdevise`` / ``Idevise`` and may be signed,
    as the foreign-currency amount usually is in the source ledger.
    """

    account_number: str
    account_label: str
    aux_account_number: str = ""
    aux_account_label: str = ""
    label: str = ""
    debit: Decimal = Decimal("0")
    credit: Decimal = Decimal("0")
    lettering: str = ""
    lettering_date: date | None = None
    amount_currency: Decimal | None = None
    currency: str = ""


@dataclass(frozen=True, kw_only=True)
class FecEntry:
    """One balanced accounting entry (écriture) of a journal.

    ``entry_number`` is the ``EcritureNum``. Leave it ``None`` on every entry to let the writer
    number the file continuously; give it on every entry to keep the books' own numbers.
    """

    journal_code: str
    journal_label: str
    entry_number: str | None = None
    entry_date: date
    piece_ref: str
    piece_date: date | None
    label: str
    validation_date: date
    lines: list[FecLine] = field(default_factory=list)


@dataclass(frozen=True)
class FecWriteResult:
    """What ``write_fec`` wrote, for the caller's log line or run record."""

    lines: int
    entries: int
    total_debit: Decimal
    total_credit: Decimal


@dataclass(frozen=True)
class Violation:
    """One problem found in a FEC.

    ``line`` is the 1-based physical line (the header is line 1); 0 means the whole file
    (its name, its overall balance). ``column`` is the FEC column concerned, if any.
    """

    line: int
    column: str | None
    message: str

    def __str__(self) -> str:
        where = "file" if self.line == 0 else f"line {self.line}"
        if self.column:
            return f"{where}: {self.column}: {self.message}"
        return f"{where}: {self.message}"


# --------------------------------------------------------------------------------------------
# File name
# --------------------------------------------------------------------------------------------


def _luhn_ok(digits: str) -> bool:
    """SIREN check digit: the Luhn algorithm over the 9 digits."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _siren_problem(siren: str) -> str | None:
    if not re.fullmatch(r"\d{9}", siren):
        return f"SIREN {siren!r} must be exactly 9 digits"
    if not _luhn_ok(siren):
        return f"SIREN {siren!r} fails the Luhn check digit; it is mistyped"
    return None


def fec_filename(siren: str, closing_date: date) -> str:
    """Return the legal file name ``<SIREN>FEC<YYYYMMDD>.txt``.

    ``closing_date`` is the closing date of the fiscal year the file covers [anchors.md §4.3].
    Spaces in the SIREN are dropped (it is often displayed as ``123 456 789``); anything else
    that is not a valid SIREN raises ``ValueError``.
    """
    normalised = str(siren).replace(" ", "").replace("\u00a0", "")
    problem = _siren_problem(normalised)
    if problem:
        raise ValueError(problem)
    if not isinstance(closing_date, date):
        raise TypeError(f"closing_date must be a date, got {type(closing_date).__name__}")
    return f"{normalised}FEC{_format_date(closing_date)}.txt"


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------

# Typographic characters that ISO-8859-15 lacks but French labels are full of (Word and phone
# keyboards produce them); mapped to their ASCII look-alike instead of '?'.
_TYPOGRAPHIC = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2033": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u2026": "...",
        "\u00a0": " ",
        "\u202f": " ",
        "\u2009": " ",
    }
)


def _clean_text(value: str | None) -> str:
    """One-line text: control characters (tab, CR, LF, ...) become spaces, runs collapse.

    A tab or newline inside a label would split the record and shift every later column, the
    most common way real FECs break [anchors.md §4.3, RhesusP/FEC-cleaner].
    """
    if not value:
        return ""
    value = str(value)
    if value.isascii() and value.isprintable():  # the common case, ~5x faster on big exports
        return " ".join(value.split())
    chars = [" " if unicodedata.category(ch) == "Cc" else ch for ch in value]
    return " ".join("".join(chars).translate(_TYPOGRAPHIC).split())


def _fit_charset(value: str, encoding: str) -> str:
    """Make ``value`` encodable: keep what the charset has, decompose the rest (œ stays, ǅ → DZ),
    and only then fall back to '?'. Never raise on a customer's label."""
    if value.isascii() or _encodable(value, encoding):
        return value
    out: list[str] = []
    for char in value:
        try:
            char.encode(encoding)
            out.append(char)
            continue
        except UnicodeEncodeError:
            pass
        decomposed = unicodedata.normalize("NFKD", char)
        kept = "".join(c for c in decomposed if _encodable(c, encoding) and not unicodedata.combining(c))
        out.append(kept or "?")
    return "".join(out)


def _encodable(char: str, encoding: str) -> bool:
    try:
        char.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def _format_date(value: date | None) -> str:
    if value is None:
        return ""
    # Not strftime: it does not zero-pad years below 1000 on every platform.
    return f"{value.year:04d}{value.month:02d}{value.day:02d}"


def _format_decimal(value: Decimal) -> str:
    """Decimal comma, no thousands separator, no exponent [anchors.md §4.3]."""
    if value == 0:
        value = abs(value)  # never write "-0,00"
    return f"{value:f}".replace(".", ",")


def _money(value: object, what: str, where: str) -> Decimal:
    # Floats are refused: 0.1 + 0.2 != 0.3 is exactly how an entry ends up "unbalanced by
    # 0,00" in someone else's software.
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise FecError(f"{where}: {what} must be a Decimal, got {type(value).__name__} {value!r}")
    amount = Decimal(value)
    if not amount.is_finite():
        raise FecError(f"{where}: {what} {amount} is not a finite amount")
    rounded = amount.quantize(_CENT)
    if rounded != amount:
        raise FecError(
            f"{where}: {what} {amount} has more than 2 decimals; round it in the source so the "
            f"entry still balances"
        )
    return rounded


def _describe_entry(entry: FecEntry, position: int) -> str:
    number = f" EcritureNum {entry.entry_number!r}," if entry.entry_number is not None else ""
    return (
        f"entry #{position}{number} journal {entry.journal_code!r} dated "
        f"{entry.entry_date.isoformat()}, piece {entry.piece_ref!r} ({_clean_text(entry.label)!r})"
    )


def _entry_rows(entry: FecEntry, number: str, position: int) -> tuple[list[list[str]], Decimal]:
    """Check one entry and return its rows (as field lists) and its total debit."""
    where = _describe_entry(entry, position)
    if not isinstance(entry.entry_date, date):
        raise FecError(f"{where}: entry_date must be a date")
    if not isinstance(entry.validation_date, date):
        raise FecError(f"{where}: validation_date (ValidDate) is mandatory and must be a date")
    journal_code = _clean_text(entry.journal_code)
    if not journal_code:
        raise FecError(f"{where}: journal_code (JournalCode) is mandatory")
    if not entry.lines:
        raise FecError(f"{where}: an entry needs at least two lines, it has none")

    rows: list[list[str]] = []
    total_debit = Decimal("0.00")
    total_credit = Decimal("0.00")
    for line_no, line in enumerate(entry.lines, start=1):
        at = f"{where}, line {line_no}"
        debit = _money(line.debit, "debit", at)
        credit = _money(line.credit, "credit", at)
        if debit < 0 or credit < 0:
            raise FecError(
                f"{at}: negative amount (debit {debit}, credit {credit}); put the absolute value "
                f"in the other column"
            )
        if debit and credit:
            raise FecError(f"{at}: both debit {debit} and credit {credit} are set; split the line")
        if not debit and not credit:
            raise FecError(f"{at}: debit and credit are both zero; drop the line")
        account = _clean_text(line.account_number)
        if not re.match(r"\d{3}", account):
            raise FecError(f"{at}: account number {account!r} must start with the 3 digits of a PCG account")
        label = _clean_text(line.label) or _clean_text(entry.label)
        if not label:
            raise FecError(f"{at}: EcritureLib is mandatory; give the line or the entry a label")
        amount_currency = ""
        if line.amount_currency is not None:
            if isinstance(line.amount_currency, (bool, float)) or not isinstance(
                line.amount_currency, (Decimal, int)
            ):
                raise FecError(f"{at}: amount_currency must be a Decimal")
            amount_currency = _format_decimal(Decimal(line.amount_currency))
        currency = _clean_text(line.currency).upper()
        if amount_currency and not currency:
            raise FecError(f"{at}: amount_currency is set but currency (Idevise) is empty")
        total_debit += debit
        total_credit += credit
        rows.append(
            [
                journal_code,
                _clean_text(entry.journal_label),
                number,
                _format_date(entry.entry_date),
                account,
                _clean_text(line.account_label),
                _clean_text(line.aux_account_number),
                _clean_text(line.aux_account_label),
                _clean_text(entry.piece_ref),
                _format_date(entry.piece_date),
                label,
                _format_decimal(debit),
                _format_decimal(credit),
                _clean_text(line.lettering),
                _format_date(line.lettering_date),
                _format_date(entry.validation_date),
                amount_currency,
                currency,
            ]
        )
    if total_debit != total_credit:
        raise FecError(
            f"{where} is unbalanced: debit {_format_decimal(total_debit)} vs credit "
            f"{_format_decimal(total_credit)}, off by {_format_decimal(abs(total_debit - total_credit))}"
        )
    return rows, total_debit


def _ordered_and_numbered(
    entries: Sequence[FecEntry], opening_journals: Collection[str]
) -> list[tuple[int, FecEntry, str]]:
    """Decide the order of entries in the file and their EcritureNum.

    Returns (1-based input position, entry, number) in file order.
    """
    given = [e.entry_number is not None for e in entries]
    if any(given) and not all(given):
        missing = [i + 1 for i, g in enumerate(given) if not g][:5]
        raise FecError(
            "either every entry has an entry_number or none has (then the writer numbers the "
            f"file); entries #{', #'.join(map(str, missing))} have none"
        )
    if entries and all(given):
        # The books' own numbers are kept verbatim (and in the caller's order): they follow
        # validation order, which is what the administration checks, and "entries generated
        # late still take the next number" [anchors.md §4.4]. Renumbering would break the
        # trail back to the ledger.
        seen: dict[tuple[str, str], int] = {}
        ordered: list[tuple[int, FecEntry, str]] = []
        for position, entry in enumerate(entries, start=1):
            number = _clean_text(entry.entry_number)
            if not number:
                raise FecError(f"{_describe_entry(entry, position)}: entry_number is empty")
            key = (_clean_text(entry.journal_code), number)
            if key in seen:
                raise FecError(
                    f"{_describe_entry(entry, position)}: EcritureNum {number!r} of journal "
                    f"{key[0]!r} is already used by entry #{seen[key]}"
                )
            seen[key] = position
            ordered.append((position, entry, number))
        return ordered

    # Numbered here: one continuous sequence for the whole file, opening entries (à-nouveaux)
    # first, then chronological by entry date; ties keep the caller's order so repeated exports
    # of the same data give the same numbers [anchors.md §4.4].
    opening = {code.upper() for code in opening_journals}
    positions = sorted(
        range(len(entries)),
        key=lambda i: (
            _clean_text(entries[i].journal_code).upper() not in opening,
            entries[i].entry_date,
            i,
        ),
    )
    return [(i + 1, entries[i], str(n)) for n, i in enumerate(positions, start=1)]


def write_fec(
    entries: Iterable[FecEntry],
    stream_or_path: str | os.PathLike[str] | BinaryIO | TextIO,
    *,
    encoding: str = DEFAULT_ENCODING,
    opening_journals: Collection[str] = DEFAULT_OPENING_JOURNALS,
) -> FecWriteResult:
    """Write ``entries`` as a flat FEC to a path or an open stream.

    Every entry is checked before anything is written, so a refused export leaves no partial
    file behind. Raises ``FecError`` (a ``ValueError``) naming the entry on an unbalanced entry,
    a negative or two-sided line, a missing mandatory field, or mixed numbering.

    A binary stream or a path receives bytes in ``encoding`` (ISO-8859-15 unless UTF-8 is asked
    for). A text stream receives ``str`` and its own encoding applies; open it with
    ``newline=""`` so the CRLF record separators are not translated.
    """
    entry_list = list(entries)
    ordered = _ordered_and_numbered(entry_list, opening_journals)

    records: list[str] = [SEPARATOR.join(FEC_COLUMNS)]
    total_debit = Decimal("0.00")
    for position, entry, number in ordered:
        rows, entry_debit = _entry_rows(entry, number, position)
        total_debit += entry_debit
        records.extend(_fit_charset(SEPARATOR.join(row), encoding) for row in rows)
    text = LINE_ENDING.join(records) + LINE_ENDING

    if isinstance(stream_or_path, (str, os.PathLike)):
        Path(stream_or_path).write_bytes(text.encode(encoding))
    elif isinstance(stream_or_path, io.TextIOBase):
        stream_or_path.write(text)
    else:
        stream_or_path.write(text.encode(encoding))  # type: ignore[arg-type]

    # Every entry balanced, so the file total is the same on both sides.
    return FecWriteResult(
        lines=len(records) - 1,
        entries=len(ordered),
        total_debit=total_debit,
        total_credit=total_debit,
    )


# --------------------------------------------------------------------------------------------
# Validator
# --------------------------------------------------------------------------------------------


@dataclass
class _Entry:
    """What the validator accumulates for one (JournalCode, EcritureNum)."""

    journal: str
    number: str
    first_line: int
    last_line: int
    entry_date: str
    debit: Decimal = Decimal("0")
    credit: Decimal = Decimal("0")
    amounts_known: bool = True


@dataclass
class _Report:
    violations: list[Violation]
    data_lines: int = 0
    entries: int = 0


def _column_key(name: str) -> str:
    """Loose spelling of a column name, to recognise 'Crédit', ' debit ', '"JournalCode"'."""
    stripped = unicodedata.normalize("NFKD", name.strip().strip('"').strip())
    return "".join(c for c in stripped if not unicodedata.combining(c)).lower()


_COLUMN_BY_KEY = {_column_key(name): name for name in FEC_COLUMNS}


def _decode(raw: bytes) -> str:
    # UTF-8 first: a Latin-9 file with any accented letter is almost never valid UTF-8, while
    # ISO-8859-15 decodes any byte string, so it is the right fallback.
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("iso-8859-15")


def _read_source(source: str | bytes | os.PathLike[str]) -> tuple[str, str | None]:
    """Return (text, file name or None). A str with a line break or a tab is FEC text."""
    if isinstance(source, bytes):
        return _decode(source), None
    if isinstance(source, str) and any(c in source for c in "\r\n\t"):
        return source.lstrip("\ufeff"), None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return _decode(path.read_bytes()), path.name
    raise TypeError(f"expected a path, FEC text or bytes, got {type(source).__name__}")


def _date_problem(value: str) -> str | None:
    if not re.fullmatch(r"\d{8}", value):
        return f"{value!r} is not a valid YYYYMMDD date; write it as 8 digits, e.g. 20251231"
    year, month, day = int(value[:4]), int(value[4:6]), int(value[6:])
    try:
        date(year, month, day)
    except ValueError:
        return f"{value!r} is not a valid YYYYMMDD date (there is no such day)"
    # The DGFiP tester warns outside this range; it is nearly always a typo.
    if not 1900 <= year <= 2099:
        return f"{value!r}: year {year} is outside 1900-2099; check for a typo"
    return None


def _parse_date(value: str) -> date | None:
    if _date_problem(value):
        return None
    return date(int(value[:4]), int(value[4:6]), int(value[6:]))


_CANONICAL_AMOUNT = re.compile(r"\d+(,\d+)?")
_SIGNED_AMOUNT = re.compile(r"[+-]?\d+([.,]\d+)?[+-]?")


def _amount_problem(value: str, *, signed: bool = False) -> str | None:
    """Debit/Credit: digits, optional decimal comma, nothing else [anchors.md §4.3]."""
    if _CANONICAL_AMOUNT.fullmatch(value):
        return None
    # Spaces/apostrophes between digits, both marks, or a repeated mark: thousands grouping.
    if (
        re.search(r"\d[ \u00a0\u202f']\d", value)
        or ("." in value and "," in value)
        or value.count(".") > 1
        or value.count(",") > 1
    ):
        return (
            f"{value!r} has a thousands separator, which the DGFiP tester rejects; write digits "
            f"and a decimal comma only, e.g. 1234,56"
        )
    if _SIGNED_AMOUNT.fullmatch(value):
        if value.startswith("-") or value.endswith("-"):
            if not signed:
                return (
                    f"{value!r} is negative; write the absolute value in the other column "
                    f"(a negative debit is a credit)"
                )
        elif value.startswith("+") or value.endswith("+"):
            return f"{value!r} has a '+' sign; write the bare amount"
        unsigned = value.strip("+-")
        if "." in unsigned:
            return (
                f"{value!r} uses '.' as decimal separator; write {value.replace('.', ',')!r} (decimal comma)"
            )
        return None
    return f"{value!r} is not an amount; write digits with a decimal comma, e.g. 1234,56"


def _lenient_amount(value: str) -> Decimal | None:
    """Best-effort reading of an amount, so one badly formatted amount still lets us check the
    balance of its entry (the tester itself accepts a point and a leading/trailing sign)."""
    text = re.sub(r"[ \u00a0\u202f']", "", value)
    negative = text.startswith("-") or text.endswith("-")
    text = text.strip("+-")
    if "," in text and "." in text:
        decimal_mark = "," if text.rfind(",") > text.rfind(".") else "."
        thousands = "." if decimal_mark == "," else ","
        text = text.replace(thousands, "").replace(decimal_mark, ".")
    else:
        text = text.replace(",", ".")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return None
    if not amount.is_finite():
        return None
    return -amount if negative else amount


def _split_number(number: str) -> tuple[str, int] | None:
    """'VT2025-0042' → ('VT2025-', 42); numbers without trailing digits cannot be sequenced."""
    match = re.fullmatch(r"(.*?)(\d+)", number)
    if not match:
        return None
    return match.group(1), int(match.group(2))


def _numbering_violations(entries: list[_Entry], per_journal: bool) -> list[Violation]:
    """Gaps and disorder in EcritureNum, walking entries in file order.

    Sequences are per prefix ('AC', 'VT2025-', ...) and, when ``per_journal``, per journal too.
    """
    out: list[Violation] = []
    last: dict[tuple[str, ...], tuple[int, _Entry]] = {}
    for entry in entries:
        parts = _split_number(entry.number)
        if parts is None:
            continue
        prefix, value = parts
        key = (entry.journal, prefix) if per_journal else (prefix,)
        previous = last.get(key)
        last[key] = (value, entry) if previous is None or value > previous[0] else previous
        if previous is None:
            continue
        prev_value, prev_entry = previous
        if value == prev_value + 1:
            continue
        if value > prev_value + 1:
            missing = (
                f"number {prev_value + 1} is missing"
                if value == prev_value + 2
                else f"numbers {prev_value + 1} to {value - 1} are missing"
            )
            out.append(
                Violation(
                    entry.first_line,
                    "EcritureNum",
                    f"numbering jumps from {prev_entry.number!r} (line {prev_entry.first_line}) to "
                    f"{entry.number!r}: {missing}; EcritureNum must be continuous without gaps",
                )
            )
        elif value == prev_value:
            out.append(
                Violation(
                    entry.first_line,
                    "EcritureNum",
                    f"{entry.number!r} (journal {entry.journal!r}) is also used by journal "
                    f"{prev_entry.journal!r} at line {prev_entry.first_line}; each entry needs its "
                    f"own number",
                )
            )
        else:
            out.append(
                Violation(
                    entry.first_line,
                    "EcritureNum",
                    f"{entry.number!r} comes after {prev_entry.number!r} (line "
                    f"{prev_entry.first_line}); entries must appear in increasing EcritureNum order",
                )
            )
    return out


def _check_header(names: list[str], report: _Report) -> dict[str, int]:
    """Report header problems; return canonical column → position for the recognised ones."""
    add = report.violations.append
    positions: dict[str, int] = {}
    for index, raw in enumerate(names):
        canonical = _COLUMN_BY_KEY.get(_column_key(raw))
        if canonical is None:
            hint = (
                " (the Montant/Sens variant is not accepted here; write Debit and Credit columns)"
                if _column_key(raw) in {"montant", "sens"}
                else ""
            )
            add(
                Violation(
                    1,
                    raw or None,
                    f"unexpected column {raw!r} at position {index + 1}; "
                    f"a FEC has exactly the 18 columns {', '.join(FEC_COLUMNS)}{hint}",
                )
            )
        elif canonical in positions:
            add(
                Violation(
                    1,
                    canonical,
                    f"column {canonical!r} appears twice (positions "
                    f"{positions[canonical] + 1} and {index + 1}); keep one",
                )
            )
        else:
            positions[canonical] = index
            if raw != canonical:
                add(
                    Violation(
                        1,
                        canonical,
                        f"column {index + 1} is named {raw!r}; it must be spelled exactly {canonical!r}",
                    )
                )
    for position, name in enumerate(FEC_COLUMNS, start=1):
        if name not in positions:
            add(
                Violation(
                    1,
                    name,
                    f"missing column {name!r}; it belongs at position {position} "
                    f"(the 18 columns are {', '.join(FEC_COLUMNS)})",
                )
            )
    found = sorted(positions, key=positions.__getitem__)
    expected = [name for name in FEC_COLUMNS if name in positions]
    if found != expected:
        first = next(i for i, (a, b) in enumerate(zip(found, expected, strict=True)) if a != b)
        add(
            Violation(
                1,
                None,
                f"columns are out of order: {found[first]!r} comes where "
                f"{expected[first]!r} is expected; the order is {', '.join(FEC_COLUMNS)}",
            )
        )
    return positions


_SEPARATOR_NAMES = {"\t": "tab", "|": "'|' (pipe)", ";": "';' (semicolon)", ",": "',' (comma)"}


def _validate(source: str | bytes | os.PathLike[str], *, allow_pipe: bool = False) -> _Report:
    text, filename = _read_source(source)
    report = _Report(violations=[])
    add = report.violations.append

    closing_date: date | None = None
    if filename is not None:
        match = _FILENAME_RE.fullmatch(filename)
        if not match:
            add(
                Violation(
                    0,
                    None,
                    f"file name {filename!r} must be <SIREN>FEC<YYYYMMDD>.txt with "
                    f"the fiscal-year closing date, e.g. 123456782FEC20251231.txt",
                )
            )
        else:
            siren_problem = _siren_problem(match["siren"])
            if siren_problem:
                add(Violation(0, None, f"file name {filename!r}: {siren_problem}"))
            date_problem = _date_problem(match["date"])
            if date_problem:
                add(Violation(0, None, f"file name {filename!r}: closing date {date_problem}"))
            else:
                closing_date = _parse_date(match["date"])

    records = re.split(r"\r\n|\r|\n", text)
    if records and records[-1] == "":
        records.pop()  # the final record separator does not start an empty record
    if not records or not records[0].strip():
        add(
            Violation(
                1,
                None,
                "the file is empty or starts with an empty line; line 1 must be "
                "the header with the 18 column names",
            )
        )
        return report

    header = records[0]
    counts = {sep: header.count(sep) for sep in ("\t", "|", ";", ",")}
    separator = max(counts, key=counts.__getitem__)  # ties keep tab, the one we expect
    if counts[separator] == 0:
        add(
            Violation(
                1,
                None,
                "no field separator found in the header; separate the 18 column "
                "names (and every field) with a tab",
            )
        )
        return report
    if separator == ",":
        # A comma separator cannot coexist with decimal-comma amounts: stop rather than report
        # a shifted column on every line.
        add(
            Violation(
                1,
                None,
                "fields are separated by ',' (comma), which clashes with the "
                "decimal comma of amounts; separate fields with a tab",
            )
        )
        return report
    if separator == ";":
        add(
            Violation(
                1,
                None,
                "fields are separated by ';' (semicolon); the DGFiP test tool "
                "does not recognise it: separate fields with a tab",
            )
        )
    elif separator == "|" and not allow_pipe:
        add(
            Violation(
                1,
                None,
                "fields are separated by '|' (pipe); QontoHub FEC files use a "
                "tab. Pipe is also legal: check with allow_pipe / --allow-pipe to accept it",
            )
        )

    names = header.split(separator)
    positions = _check_header(names, report)

    entries: dict[tuple[str, str], _Entry] = {}
    incomplete: set[tuple[str, str]] = set()
    broken_lines: list[int] = []
    current: tuple[str, str] | None = None
    file_debit = Decimal("0")
    file_credit = Decimal("0")
    file_amounts_known = True

    for line_no, record in enumerate(records[1:], start=2):
        report.data_lines += 1
        if record.strip() == "":
            add(
                Violation(
                    line_no, None, "empty line; remove it (the DGFiP tester counts it as a structural error)"
                )
            )
            continue
        fields = record.split(separator)
        if len(fields) != len(names):
            add(
                Violation(
                    line_no,
                    None,
                    f"has {len(fields)} fields, the header has {len(names)}; "
                    f"a field is missing or a label contains the separator "
                    f"{_SEPARATOR_NAMES[separator]}",
                )
            )
            file_amounts_known = False
            # The line's amounts are lost, so the entry it belongs to would also show up as
            # unbalanced. Its key columns may be shifted too, so remember the line and skip the
            # balance check of the entries around it as well as the one its key names.
            broken_lines.append(line_no)
            jp, np_ = positions.get("JournalCode"), positions.get("EcritureNum")
            if jp is not None and np_ is not None and max(jp, np_) < len(fields):
                incomplete.add((fields[jp].strip(), fields[np_].strip()))
            continue

        def value(column: str, fields: list[str] = fields) -> str | None:
            index = positions.get(column)
            return None if index is None else fields[index].strip()

        for column in FEC_COLUMNS:
            if column in REQUIRED_COLUMNS and value(column) == "":
                add(Violation(line_no, column, f"{column} is mandatory and empty"))

        for column in DATE_COLUMNS:
            raw = value(column)
            if raw:
                problem = _date_problem(raw)
                if problem:
                    add(Violation(line_no, column, problem))

        account = value("CompteNum")
        if account and not re.match(r"\d{3}", account):
            add(
                Violation(
                    line_no,
                    "CompteNum",
                    f"{account!r} must start with the 3 digits of a PCG account (e.g. 401, 512, 706)",
                )
            )

        amounts: dict[str, Decimal | None] = {}
        for column in ("Debit", "Credit"):
            raw = value(column)
            if raw is None:
                amounts[column] = None
                continue
            if raw:
                problem = _amount_problem(raw)
                if problem:
                    add(Violation(line_no, column, problem))
            amounts[column] = _lenient_amount(raw) if raw else Decimal("0")
        debit, credit = amounts.get("Debit"), amounts.get("Credit")
        if debit is not None and credit is not None and value("Debit") and value("Credit"):
            if debit != 0 and credit != 0:
                add(
                    Violation(
                        line_no,
                        None,
                        f"both Debit ({value('Debit')}) and Credit "
                        f"({value('Credit')}) are filled; a line is a debit or a credit, "
                        f"split it in two lines",
                    )
                )
            elif debit == 0 and credit == 0:
                add(
                    Violation(
                        line_no,
                        None,
                        "Debit and Credit are both zero; remove the line or put its amount in one of them",
                    )
                )

        foreign = value("Montantdevise")
        currency = value("Idevise")
        if foreign:
            problem = _amount_problem(foreign, signed=True)
            if problem:
                add(Violation(line_no, "Montantdevise", problem))
            if currency == "":
                add(
                    Violation(
                        line_no,
                        "Idevise",
                        "Montantdevise is set but Idevise is empty; "
                        "give the ISO 4217 currency code, e.g. USD",
                    )
                )
        if currency and not re.fullmatch(r"[A-Z]{3}", currency):
            add(
                Violation(
                    line_no,
                    "Idevise",
                    f"{currency!r} is not an ISO 4217 currency code (3 capital letters, e.g. USD)",
                )
            )

        journal, number = value("JournalCode"), value("EcritureNum")
        if not journal or not number:
            file_amounts_known = False
            current = None
            continue
        key = (journal, number)
        entry_date = value("EcritureDate") or ""
        entry = entries.get(key)
        if entry is None:
            entry = _Entry(journal, number, line_no, line_no, entry_date)
            entries[key] = entry
            if closing_date is not None:
                parsed = _parse_date(entry_date)
                if parsed is not None and parsed > closing_date:
                    add(
                        Violation(
                            line_no,
                            "EcritureDate",
                            f"entry {number!r} is dated "
                            f"{entry_date}, after the closing date "
                            f"{_format_date(closing_date)} in the file name; it belongs to "
                            f"the next fiscal year's file",
                        )
                    )
        else:
            if key != current:
                add(
                    Violation(
                        line_no,
                        "EcritureNum",
                        f"entry {number!r} of journal {journal!r} "
                        f"started at line {entry.first_line} and resumes here after other "
                        f"entries; keep all lines of an entry together",
                    )
                )
            # Only compare real dates: a malformed one is already reported above.
            if entry_date != entry.entry_date and _parse_date(entry_date) is not None:
                add(
                    Violation(
                        line_no,
                        "EcritureDate",
                        f"entry {number!r} is dated "
                        f"{entry.entry_date!r} at line {entry.first_line} but {entry_date!r} "
                        f"here; all lines of an entry share one EcritureDate",
                    )
                )
            entry.last_line = line_no
        current = key
        if debit is None or credit is None:
            entry.amounts_known = False
            file_amounts_known = False
        else:
            entry.debit += debit
            entry.credit += credit
            file_debit += debit
            file_credit += credit

    ordered = sorted(entries.values(), key=lambda e: e.first_line)
    report.entries = len(ordered)
    for entry in ordered:
        if not entry.amounts_known or (entry.journal, entry.number) in incomplete:
            continue
        nearest = bisect.bisect_left(broken_lines, entry.first_line - 1)
        if nearest < len(broken_lines) and broken_lines[nearest] <= entry.last_line + 1:
            continue
        if entry.debit != entry.credit:
            span = (
                f"line {entry.first_line}"
                if entry.first_line == entry.last_line
                else f"lines {entry.first_line}-{entry.last_line}"
            )
            add(
                Violation(
                    entry.first_line,
                    None,
                    f"entry {entry.number!r} of journal "
                    f"{entry.journal!r} ({span}) is unbalanced: debit "
                    f"{_format_decimal(entry.debit)}, credit {_format_decimal(entry.credit)}, "
                    f"difference {_format_decimal(abs(entry.debit - entry.credit))}",
                )
            )

    # Numbering may run over the whole file (ours) or per journal (many ledgers); keep whichever
    # reading of the file explains it better, so neither style drowns in false gaps.
    file_wide = _numbering_violations(ordered, per_journal=False)
    per_journal = _numbering_violations(ordered, per_journal=True)
    report.violations.extend(file_wide if len(file_wide) <= len(per_journal) else per_journal)

    # The DGFiP tester switched its global balance check off in 2014, so it is ours to make
    # [anchors.md §4.4].
    if file_amounts_known and file_debit != file_credit:
        add(
            Violation(
                0,
                None,
                f"the file is unbalanced: total debit {_format_decimal(file_debit)}, "
                f"total credit {_format_decimal(file_credit)}, difference "
                f"{_format_decimal(abs(file_debit - file_credit))}",
            )
        )

    report.violations.sort(key=lambda v: v.line)
    return report


def validate_fec(
    path_or_text: str | bytes | os.PathLike[str], *, allow_pipe: bool = False
) -> list[Violation]:
    """Check a flat FEC and return its violations (empty list = compliant), sorted by line.

    ``path_or_text`` is a path (its file name is checked too), the file's bytes, or its text
    (a ``str`` containing a line break or a tab). ISO-8859-15 and UTF-8 are both read.
    ``allow_pipe`` accepts ``|`` as separator, which is legal but not what QontoHub writes.
    """
    return _validate(path_or_text, allow_pipe=allow_pipe).violations


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """``python -m accountant.fec check PATH [--allow-pipe]``.

    Prints one violation per line and returns 1 if there are any; otherwise prints
    ``OK: N lines, M entries, balanced`` and returns 0. Returns 2 if the file cannot be read.
    ``argv`` excludes the program name; ``stdout`` lets ``manage.py check_fec`` pass its own.
    """
    out = stdout if stdout is not None else sys.stdout
    parser = argparse.ArgumentParser(
        prog="python -m accountant.fec", description="Check a French FEC flat file."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate a FEC file")
    check.add_argument("path", help="the FEC file, named <SIREN>FEC<YYYYMMDD>.txt")
    check.add_argument(
        "--allow-pipe",
        action="store_true",
        help="accept '|' as field separator (legal, but QontoHub writes tabs)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)

    try:
        report = _validate(Path(args.path), allow_pipe=args.allow_pipe)
    except OSError as exc:
        print(f"error: cannot read {args.path}: {exc.strerror or exc}", file=out)
        return 2
    for violation in report.violations:
        print(violation, file=out)
    if report.violations:
        return 1
    print(f"OK: {report.data_lines} lines, {report.entries} entries, balanced", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
