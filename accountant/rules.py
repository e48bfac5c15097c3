"""What each accounting software refuses, checked before a push instead of after a rejection.

Qonto's own hub learned these one "Synchronization failed" at a time; the list below is drawn
from ``shared/reference/anchors.md`` §3 (accountant-side constraints) and §4, and from
``shared/reference/pennylane-api.md`` §5. Each rule is data on a :class:`SoftwareRules`, so a new
target is one entry in :data:`SOFTWARE_RULES`; :func:`entry_violations` applies them to an
entry and returns readable reasons. Pure: it reads plain values, never the database.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal


@dataclass(frozen=True)
class SoftwareRules:
    name: str
    entry_label_max: int | None = None
    line_label_max: int | None = None
    #: Labels of bank-journal entries (Sage GE cuts them shorter than the others).
    bank_label_max: int | None = None
    #: General account numbers: a regular expression and a maximum length.
    account_number_re: str = r"\d{3}[0-9A-Z]*"
    account_number_max: int | None = None
    #: Auxiliary (third-party) account numbers must start with one of these.
    supplier_aux_prefixes: tuple[str, ...] = ("401",)
    customer_aux_prefixes: tuple[str, ...] = ("411",)
    max_lines: int | None = None
    journal_code_re: str | None = None
    piece_number_max: int | None = None
    #: The entry's date must fall in a fiscal year of the file that is open in the software.
    requires_open_fiscal_year: bool = True
    max_open_fiscal_years: int | None = None
    #: Reference data (journal) must exist in the software: entries cannot create journals.
    journal_must_exist_remotely: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


SOFTWARE_RULES: dict[str, SoftwareRules] = {
    # Pennylane: line labels ≤ 255 (`ledger_entry_line.label` is 1–255) and entry labels ≤ 2000
    # (the label an import puts on the entry) [pennylane-api.md §5.7], ≤ 1000 lines (§5.5),
    # journal codes of 2–5 letters (§5.2), 401/411 auxiliaries (§5.1), fiscal year not
    # closed/frozen (§5.5, §5.9: 422 otherwise). Journals are not created by a push.
    "pennylane": SoftwareRules(
        name="Pennylane",
        entry_label_max=2000,
        line_label_max=255,
        account_number_re=r"\d{3}[0-9A-Z]*",
        max_lines=1000,
        journal_code_re=r"[A-Z0-9]{2,5}",
        piece_number_max=255,
        journal_must_exist_remotely=True,
    ),
    # Cegid / MyUnisoft / Fulll TRA exports: labels cut at 35 characters (anchors.md §3).
    "tra": SoftwareRules(name="TRA (Cegid, MyUnisoft, Fulll)", entry_label_max=35, line_label_max=35),
    # MyUnisoft: auxiliaries start with the 3 digits of their collective account (anchors.md §3).
    "myunisoft": SoftwareRules(name="MyUnisoft", entry_label_max=35, line_label_max=35),
    # ACD: supplier auxiliaries start with F, customer auxiliaries with C (anchors.md §3).
    "acd": SoftwareRules(name="ACD", supplier_aux_prefixes=("F",), customer_aux_prefixes=("C",)),
    # Sage Génération Experts: bank labels ≤ 30, at most two open fiscal years (anchors.md §3).
    "sage_ge": SoftwareRules(name="Sage Génération Experts", bank_label_max=30, max_open_fiscal_years=2),
    # Quadra: account numbers ≤ 8 characters (longer ones are truncated on import).
    "quadra": SoftwareRules(name="Quadra", account_number_max=8),
}


@dataclass(frozen=True)
class LineFacts:
    account_number: str
    account_kind: str
    aux_number: str
    aux_kind: str
    label: str
    debit: Decimal
    credit: Decimal


@dataclass(frozen=True)
class EntryFacts:
    """What the rules need to know about an entry, read from the models by the service."""

    label: str
    date: date
    journal_code: str
    journal_kind: str
    journal_remote_id: str
    piece_number: str
    lines: Sequence[LineFacts]
    #: (start, end, open?) of every fiscal year known for the file.
    fiscal_years: Sequence[tuple[date, date, bool]]


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


def rules_for(software: str) -> SoftwareRules:
    try:
        return SOFTWARE_RULES[software]
    except KeyError as exc:
        raise KeyError(f"No rules for {software!r}; known: {', '.join(sorted(SOFTWARE_RULES))}") from exc


def entry_violations(facts: EntryFacts, software: str) -> list[Violation]:
    """Every rule of ``software`` that the entry breaks, each with a sentence saying what to fix."""
    rules = rules_for(software)
    name = rules.name
    out: list[Violation] = []

    def add(rule: str, message: str) -> None:
        out.append(Violation(rule, message))

    # Double entry first: no software takes these, whatever its rules.
    debit = sum((line.debit for line in facts.lines), Decimal("0"))
    credit = sum((line.credit for line in facts.lines), Decimal("0"))
    if len(facts.lines) < 2:
        add("lines", "An entry needs at least two lines (one debit, one credit).")
    if debit != credit:
        add("balanced", f"Debits ({debit}) and credits ({credit}) differ by {abs(debit - credit)}.")
    if rules.max_lines is not None and len(facts.lines) > rules.max_lines:
        add("max_lines", f"{name} takes at most {rules.max_lines} lines per entry; this one has {len(facts.lines)}.")

    if not facts.label.strip():
        add("label_required", "The entry has no label.")
    limit = rules.entry_label_max
    if facts.journal_kind == "bank" and rules.bank_label_max is not None:
        limit = min(limit or rules.bank_label_max, rules.bank_label_max)
    if limit is not None and len(facts.label) > limit:
        add("label_length", f"The entry label has {len(facts.label)} characters; {name} accepts at most {limit}.")
    if rules.piece_number_max is not None and len(facts.piece_number) > rules.piece_number_max:
        add("piece_number_length", f"The piece number is longer than {rules.piece_number_max} characters.")

    if rules.journal_code_re and not re.fullmatch(rules.journal_code_re, facts.journal_code):
        add("journal_code", f"Journal code {facts.journal_code!r} is not a valid {name} journal code.")
    if rules.journal_must_exist_remotely and not facts.journal_remote_id:
        add(
            "journal_unknown",
            f"Journal {facts.journal_code} does not exist in {name} for this file: create it there, "
            "then refresh the accounting data.",
        )

    number_re = re.compile(rules.account_number_re)
    for position, line in enumerate(facts.lines, start=1):
        where = f"Line {position}"
        if line.debit < 0 or line.credit < 0 or (line.debit > 0) == (line.credit > 0):
            add("line_side", f"{where} must carry either a debit or a credit, positive.")
        if rules.line_label_max is not None and len(line.label) > rules.line_label_max:
            add(
                "line_label_length",
                f"{where}: label has {len(line.label)} characters; {name} accepts at most {rules.line_label_max}.",
            )
        if not number_re.fullmatch(line.account_number):
            add(
                "account_format",
                f"{where}: account {line.account_number!r} is not a valid account number for {name} "
                "(three digits of the French chart first).",
            )
        if rules.account_number_max is not None:
            for number in (line.account_number, line.aux_number):
                if number and len(number) > rules.account_number_max:
                    add(
                        "account_length",
                        f"{where}: account {number!r} is longer than the {rules.account_number_max} "
                        f"characters {name} keeps.",
                    )
        if line.aux_number:
            prefixes = {
                "supplier": rules.supplier_aux_prefixes,
                "customer": rules.customer_aux_prefixes,
            }.get(line.aux_kind, ())
            if prefixes and not line.aux_number.startswith(prefixes):
                add(
                    "aux_prefix",
                    f"{where}: {line.aux_kind} account {line.aux_number!r} must start with "
                    f"{' or '.join(prefixes)} in {name}.",
                )

    if rules.requires_open_fiscal_year:
        covering = [fy for fy in facts.fiscal_years if fy[0] <= facts.date <= fy[1]]
        if not covering:
            add(
                "fiscal_year_missing",
                f"No fiscal year of this file in {name} covers {facts.date:%d/%m/%Y}: create it in {name}, "
                "then refresh the accounting data.",
            )
        elif not any(is_open for _, _, is_open in covering):
            start, end, _ = covering[0]
            add(
                "fiscal_year_closed",
                f"The fiscal year {start:%d/%m/%Y}–{end:%d/%m/%Y} is closed in {name}: "
                "entries dated in it are refused.",
            )
    if rules.max_open_fiscal_years is not None:
        open_years = sum(1 for fy in facts.fiscal_years if fy[2])
        if open_years > rules.max_open_fiscal_years:
            add(
                "too_many_open_years",
                f"{name} accepts at most {rules.max_open_fiscal_years} open fiscal years; the file has {open_years}.",
            )
    return out
