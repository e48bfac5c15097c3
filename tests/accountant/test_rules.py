"""accountant.rules: each software's objections, in words, before any push."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from accountant.rules import SOFTWARE_RULES, EntryFacts, LineFacts, entry_violations, rules_for

D = Decimal


def line(number: str, debit: str = "0", credit: str = "0", *, aux: str = "", aux_kind: str = "", label: str = "x"):  # type: ignore[no-untyped-def]
    return LineFacts(number, "general", aux, aux_kind, label, D(debit), D(credit))


def facts(**overrides):  # type: ignore[no-untyped-def]
    values = dict(
        label="Facture F-1 Imprimerie Vauban",
        date=date(2026, 3, 14),
        journal_code="ACH",
        journal_kind="purchase",
        journal_remote_id="30101",
        piece_number="QH-ACH-000001",
        lines=[line("606400", debit="350"), line("445660", debit="70"),
               line("401000", credit="420", aux="401VAUBAN", aux_kind="supplier")],
        fiscal_years=[(date(2025, 1, 1), date(2025, 12, 31), False), (date(2026, 1, 1), date(2026, 12, 31), True)],
    )
    values.update(overrides)
    return EntryFacts(**values)


def rules_of(found) -> list[str]:  # type: ignore[no-untyped-def]
    return [v.rule for v in found]


def test_a_good_purchase_passes_every_software():
    for software in SOFTWARE_RULES:
        if software in ("acd", "quadra"):
            continue  # ACD wants F… auxiliaries; Quadra keeps 8 characters and 401VAUBAN has 9
        assert entry_violations(facts(), software) == [], software
    assert rules_of(entry_violations(facts(), "quadra")) == ["account_length"]


def test_unbalanced_or_two_sided_lines():
    found = entry_violations(facts(lines=[line("606400", debit="10"), line("512000", credit="9")]), "pennylane")
    assert rules_of(found) == ["balanced"]
    assert found[0].message == "Debits (10) and credits (9) differ by 1."
    found = entry_violations(facts(lines=[line("606400", debit="10", credit="10"), line("512000")]), "pennylane")
    assert rules_of(found) == ["line_side", "line_side"]


def test_label_lengths_per_software():
    long = "Facture " + "x" * 40
    assert rules_of(entry_violations(facts(label=long), "pennylane")) == []
    found = entry_violations(facts(label=long), "tra")
    assert rules_of(found) == ["label_length"]
    assert "accepts at most 35" in found[0].message
    bank = facts(label="Paiement " + "y" * 25, journal_kind="bank", journal_code="BQ")
    assert rules_of(entry_violations(bank, "sage_ge")) == ["label_length"]
    assert rules_of(entry_violations(bank, "pennylane")) == []
    assert rules_of(entry_violations(facts(lines=[line("606400", debit="1", label="z" * 256),
                                                  line("512000", credit="1")]), "pennylane")) == ["line_label_length"]


def test_account_formats_and_auxiliary_prefixes():
    bad = facts(lines=[line("6X0", debit="1"), line("512000", credit="1")])
    assert rules_of(entry_violations(bad, "pennylane")) == ["account_format"]
    long_number = facts(lines=[line("606400001", debit="1"), line("512000", credit="1")])
    assert rules_of(entry_violations(long_number, "quadra")) == ["account_length"]
    acd = entry_violations(facts(), "acd")
    assert rules_of(acd) == ["aux_prefix"]
    assert acd[0].message == "Line 3: supplier account '401VAUBAN' must start with F in ACD."
    customer = facts(lines=[line("411000", debit="12", aux="C0042", aux_kind="customer"), line("706000", credit="12")])
    assert rules_of(entry_violations(customer, "acd")) == []
    assert rules_of(entry_violations(customer, "pennylane")) == ["aux_prefix"]


def test_fiscal_years():
    closed = entry_violations(facts(date=date(2025, 6, 1)), "pennylane")
    assert rules_of(closed) == ["fiscal_year_closed"]
    assert "01/01/2025–31/12/2025 is closed in Pennylane" in closed[0].message
    assert rules_of(entry_violations(facts(date=date(2027, 1, 2)), "pennylane")) == ["fiscal_year_missing"]
    three_open = [(date(y, 1, 1), date(y, 12, 31), True) for y in (2024, 2025, 2026)]
    assert rules_of(entry_violations(facts(fiscal_years=three_open), "sage_ge")) == ["too_many_open_years"]


def test_journal_must_exist_in_pennylane():
    found = entry_violations(facts(journal_remote_id=""), "pennylane")
    assert rules_of(found) == ["journal_unknown"]
    assert "create it there, then refresh" in found[0].message


def test_unknown_software():
    with pytest.raises(KeyError, match="known:"):
        rules_for("compta-magique")
