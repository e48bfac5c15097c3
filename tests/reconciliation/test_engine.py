"""Unit tests of the pure matching engine (no database, no Django).

Each test builds a small batch the way a reviewer would see it (bank lines, open invoices)
and asserts what the reviewer notices: which documents are proposed first, whether the line
is auto-posted, sent to review or refused, and the sentences that explain why.
"""
from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from itertools import count

import pytest

from reconciliation.benchfile import load_dataset, run_file, write_results
from reconciliation.engine import (
    ENGINE_VERSION,
    Document,
    History,
    Result,
    Transaction,
    baseline_reconcile,
    name_similarity,
    normalize_name,
    reconcile,
)

_ids = count(1)
D0 = date(2026, 3, 1)


def tx(amount: str, counterparty: str, on: date = D0, label: str | None = None, reference: str = "",
       currency: str = "EUR", tax_id: str = "", iban: str = "", tid: str | None = None) -> Transaction:
    value = Decimal(amount)
    return Transaction(
        id=tid or f"tx_{next(_ids)}", amount=value, currency=currency,
        side="debit" if value < 0 else "credit", date=on, counterparty=counterparty,
        label=counterparty if label is None else label, reference=reference,
        counterparty_tax_id=tax_id, iban=iban,
    )


def doc(amount: str, counterparty: str, number: str, issue: date = D0 - timedelta(days=20), due_days: int = 30,
        kind: str = "supplier_invoice", currency: str = "EUR", tax_id: str | None = None, iban: str = "",
        did: str | None = None) -> Document:
    return Document(
        id=did or f"doc_{next(_ids)}", kind=kind, number=number, counterparty=counterparty,
        counterparty_tax_id=tax_id if tax_id is not None else f"FR{abs(hash(counterparty)) % 10**9:09d}",
        amount=Decimal(amount), currency=currency, issue_date=issue, due_date=issue + timedelta(days=due_days),
        iban=iban,
    )


def background(n: int = 40) -> list[Document]:
    """Unrelated open invoices, so that a batch looks like a real ledger and not a quiz."""
    names = ["Atlas Logistique SAS", "Boreal Print SARL", "Cobalt Energy GmbH", "Delta Media BV",
             "Ember Conseil SA", "Fjord Design Ltd", "Granit Cloud SL", "Helio Transport SRL"]
    return [doc(f"{137 + 91 * k}.{k % 100:02d}", names[k % len(names)], f"BG-{9000 + k}",
                issue=D0 - timedelta(days=k % 50), did=f"bg_{k}") for k in range(n)]


def run(transactions, documents, **kwargs) -> dict[str, Result]:
    return {r.transaction_id: r for r in reconcile(transactions, documents, **kwargs)}


def first_ids(result: Result) -> tuple[str, ...]:
    return tuple(sorted(result.candidates[0].document_ids)) if result.candidates else ()


def explanations(result: Result, k: int = 0) -> list[str]:
    return [f.explanation for f in result.candidates[k].features]


# ---------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label, reference", [
    ("VIR SEPA DUPONT SAS Facture F-2026-0042", ""),
    ("DUPONT SAS", "Invoice F20260042"),
    ("DUPONT SAS INV F 2026 0042", ""),
    ("PAYMENT REF F2026-0042 THANK YOU", ""),
    ("DUPONT SAS", "Rechnung F-2026-0042"),
])
def test_reference_in_label_or_reference_picks_the_invoice_among_equal_amounts(label, reference):
    # Three open invoices of the same supplier with the same amount: only the number tells.
    docs = [doc("1200.00", "Dupont SAS", "F-2026-0041", did="d41"),
            doc("1200.00", "Dupont SAS", "F-2026-0042", did="d42"),
            doc("1200.00", "Dupont SAS", "F-2026-0043", did="d43")] + background()
    line = tx("-1200.00", "DUPONT SAS", label=label, reference=reference, tid="t")
    result = run([line], docs)["t"]
    assert first_ids(result) == ("d42",)
    assert result.decision == "auto"
    assert any("F-2026-0042" in e and ("found in" in e or "matches" in e) for e in explanations(result))


def test_partial_number_in_reference_is_used():
    docs = [doc("480.00", "Nimbus Studio SARL", "FA-2026-1187", did="a"),
            doc("480.00", "Nimbus Studio SARL", "FA-2026-3342", did="b")] + background()
    line = tx("-480.00", "NIMBUS STUDIO", reference="3342", tid="t")
    result = run([line], docs)["t"]
    assert first_ids(result) == ("b",)
    assert any("partial reference 3342" in e for e in explanations(result))


def test_card_dates_and_masked_numbers_are_not_references():
    # "12/03" and "X4821" on a card line must not be read as the end of invoice numbers.
    docs = [doc("64.90", "Helio Print SRL", "HP-1203", did="same_digits"),
            doc("64.90", "Helio Print SRL", "HP-4821", did="card_digits")] + background()
    result = run([tx("-64.90", "CARTE 12/03 X4821 HELIO PRINT", tid="t")], docs)["t"]
    assert result.decision != "auto"  # two equal invoices, nothing tells them apart
    for cand in result.candidates:
        assert not any(f.name == "reference" for f in cand.features)


def test_reference_to_another_document_weighs_against_an_equal_amount():
    docs = [doc("250.00", "Quartz Media SAS", "Q-7781", did="same_amount"),
            doc("260.00", "Quartz Media SAS", "Q-7782", did="quoted")] + background()
    line = tx("-250.00", "QUARTZ MEDIA", reference="Q-7782", tid="t")
    result = run([line], docs)["t"]
    # The quoted invoice is not paid in full: the engine must not auto-post the equal amount.
    assert result.decision != "auto"
    quoted = [c for c in result.candidates if c.document_ids == ("quoted",)]
    assert quoted, "the quoted invoice stays among the candidates"


# ---------------------------------------------------------------------------------------------
# Amounts: exact, bank fee, foreign currency
# ---------------------------------------------------------------------------------------------


def test_exact_amount_and_name_auto_post_with_explanations():
    docs = [doc("1834.27", "Helio Print SRL", "HP-118", issue=date(2026, 2, 1), due_days=30, did="d")] + background()
    line = tx("-1834.27", "VIR SEPA HELIO PRINT", on=date(2026, 3, 15), tid="t")
    result = run([line], docs)["t"]
    assert result.decision == "auto" and result.confidence >= 85
    assert first_ids(result) == ("d",)
    texts = explanations(result)
    assert "amount equal" in texts
    assert any(t.startswith("name 100% similar") for t in texts)
    assert "paid 12 days after due date" in texts
    assert result.candidates[0].allocations == (Decimal("1834.27"),)


def test_bank_fee_shortfall_is_matched_and_explained():
    # A client pays 2,400.00 and the bank keeps 15.00 on the way.
    docs = [doc("2400.00", "Orbis Consulting GmbH", "OC-2026-77", kind="client_invoice", did="d")] + background()
    line = tx("2385.00", "ORBIS CONSULTING GMBH", reference="OC-2026-77", tid="t")
    result = run([line], docs)["t"]
    assert first_ids(result) == ("d",)
    assert result.decision == "auto"
    assert any("15.00 short of the invoice" in e for e in explanations(result))
    # The invoice is settled in full: the fee is written off, not left open.
    assert result.candidates[0].allocations == (Decimal("2400.00"),)


def test_bank_fee_shortfall_without_reference_still_found():
    docs = [doc("2400.00", "Orbis Consulting GmbH", "OC-2026-77", kind="client_invoice", did="d")] + background()
    result = run([tx("2395.00", "ORBIS CONSULTING GMBH", tid="t")], docs)["t"]
    assert first_ids(result) == ("d",)
    assert result.decision in ("auto", "review")


def test_foreign_currency_invoice_paid_in_euros_at_a_plausible_rate():
    usd = doc("5000.00", "Falcon Labs Ltd", "FL-2231", currency="USD", did="usd")
    line = tx("-4605.00", "FALCON LABS LTD", tid="t")  # 0.921 EUR per USD
    result = run([line], [usd] + background())["t"]
    assert first_ids(result) == ("usd",)
    assert result.decision == "auto"
    assert any("5,000.00 USD paid as 4,605.00 EUR" in e for e in explanations(result))
    assert result.candidates[0].allocations == (Decimal("5000.00"),)


def test_foreign_currency_at_an_implausible_rate_is_not_proposed():
    usd = doc("5000.00", "Falcon Labs Ltd", "FL-2231", currency="USD", did="usd")
    line = tx("-3100.00", "FALCON LABS LTD", tid="t")  # 0.62 EUR per USD: not this invoice
    result = run([line], [usd] + background())["t"]
    assert all(c.document_ids != ("usd",) for c in result.candidates)
    assert result.decision == "refused"


# ---------------------------------------------------------------------------------------------
# Counterparty names
# ---------------------------------------------------------------------------------------------


def test_normalize_name_drops_bank_prefixes_legal_forms_accents_and_case():
    assert normalize_name("VIR SEPA DUPONT FRÈRES SARL").norm == "dupont freres"
    assert normalize_name("PRLV SEPA EDF SA").norm == "edf"
    assert normalize_name("CARTE 12/03 X1234 AMAZON").norm == "amazon"
    assert normalize_name("VIR INST Société Générale S.A.S.").norm == "societe generale"
    assert normalize_name("Dupont GmbH").legal == "gmbh"


def test_name_similarity_prefers_the_exact_company_over_a_near_namesake():
    bank = normalize_name("DUPONT")
    assert name_similarity(bank, normalize_name("Dupont SAS")) == 100
    assert name_similarity(bank, normalize_name("Dupont Freres SARL")) < 80
    # Banks glue and cut names: "DUPONTFRERESSA" is still Dupont Freres SA(RL).
    assert name_similarity(normalize_name("DUPONTFRERESSA"), normalize_name("Dupont Freres SARL")) >= 95
    # Same words, different legal form on both sides: probably another company.
    assert name_similarity(normalize_name("Dupont SAS"), normalize_name("Dupont SARL")) < 85


def test_near_namesake_with_the_same_amount_is_not_chosen():
    docs = [doc("900.00", "Dupont SAS", "DS-1", did="dupont"),
            doc("900.00", "Dupont Freres SARL", "DF-1", did="freres")] + background()
    lines = [tx("-900.00", "DUPONT SAS", tid="a"), tx("-900.00", "VIR SEPA DUPONT FRERES", tid="b")]
    results = run(lines, docs)
    assert first_ids(results["a"]) == ("dupont",) and results["a"].decision == "auto"
    assert first_ids(results["b"]) == ("freres",) and results["b"].decision == "auto"


@pytest.mark.parametrize("documents", [[], background()], ids=["alone", "among-others"])
def test_a_stranger_paid_the_same_amount_is_never_auto_posted(documents):
    # One open invoice of Alpha for 120.00; the bank line pays 120.00 to Beta. The amount and the
    # dates fit, nothing says it is Alpha: a person decides (it is often someone else's bill).
    alpha = doc("120.00", "Alpha Conseil SAS", "F-2026-0412", did="alpha")
    lines = [tx("-120.00", "BETA SARL", label="VIR SEPA BETA SARL", tid="beta"),
             tx("-120.00", "ORANGE", label="PRLV SEPA ORANGE", tid="orange")]
    results = run(lines, [alpha, *documents])
    for line in ("beta", "orange"):
        assert first_ids(results[line]) == ("alpha",)
        assert results[line].decision == "review", results[line]
        assert any("not this counterparty" in text for text in explanations(results[line]))


def test_a_stranger_name_with_the_invoice_number_or_a_nameless_line_still_auto_posts():
    alpha = doc("120.00", "Alpha Conseil SAS", "F-2026-0412", did="alpha")
    quoted = tx("-120.00", "BETA SARL", label="VIR SEPA BETA SARL F-2026-0412", tid="quoted")
    nameless = tx("-120.00", "", label="CARTE 1234", tid="nameless")
    for line in (quoted, nameless):
        result = run([line], [alpha])[line.id]
        assert result.decision == "auto" and first_ids(result) == ("alpha",), result


def test_name_shared_by_two_companies_with_the_same_amount_goes_to_review():
    # "ATLAS" on the bank line fits two suppliers that both have a 600.00 invoice open.
    docs = [doc("600.00", "Atlas Solutions", "AS-1", did="a"),
            doc("600.00", "Atlas Studio", "AT-1", did="b")]
    result = run([tx("-600.00", "ATLAS", tid="t")], docs)["t"]
    assert result.decision != "auto"
    assert {c.document_ids for c in result.candidates[:2]} == {("a",), ("b",)}


def test_different_legal_form_on_the_bank_line_is_a_different_company():
    docs = [doc("700.00", "Kappa Labs SA", "KL-1", did="sa"), doc("700.00", "Kappa Labs GmbH", "KG-1", did="gmbh")]
    result = run([tx("-700.00", "KAPPA LABS GMBH", tid="t")], docs)["t"]
    assert first_ids(result) == ("gmbh",)
    assert result.decision == "auto"


# ---------------------------------------------------------------------------------------------
# Tax id, IBAN, history
# ---------------------------------------------------------------------------------------------


def test_tax_id_and_iban_break_a_name_tie():
    docs = [doc("600.00", "Atlas Solutions", "AS-1", tax_id="FR111111111", did="a"),
            doc("600.00", "Atlas Studio", "AT-1", tax_id="FR222222222", iban="FR7630006000011234567890189", did="b")]
    by_tax = run([tx("-600.00", "ATLAS", tax_id="FR 222 222 222", tid="t")], docs)["t"]
    assert first_ids(by_tax) == ("b",) and by_tax.decision == "auto"
    assert any("tax id FR222222222 matches" in e for e in explanations(by_tax))
    by_iban = run([tx("-600.00", "ATLAS", iban="FR76 3000 6000 0112 3456 7890 189", tid="t")], docs)["t"]
    assert first_ids(by_iban) == ("b",) and by_iban.decision == "auto"


def test_history_teaches_what_a_cryptic_bank_name_means():
    docs = [doc("89.90", "Amazon EU SARL", "AMZ-551", tax_id="LU26375245", did="amz"),
            doc("89.90", "Zephyr Supplies SAS", "ZS-7", did="other")] + background()
    line = tx("-89.90", "AMZN MKTP FR", tid="t")
    without = run([line], docs)["t"]
    assert without.decision != "auto"
    history = History.from_matches([("AMZN MKTP FR", "Amazon EU SARL", "LU26375245")] * 3)
    with_history = run([line], docs, history=history)["t"]
    assert first_ids(with_history) == ("amz",)
    assert with_history.confidence > without.confidence
    assert any("past matches of this bank name" in e for e in explanations(with_history))


# ---------------------------------------------------------------------------------------------
# Dates, sides, kinds
# ---------------------------------------------------------------------------------------------


def test_recurring_identical_amounts_are_told_apart_by_reference():
    series = [doc("178.80", "Lumen Cloud SAS", f"LC-2026-{k:04d}", issue=date(2026, 1, 5) + timedelta(days=30 * k),
                  due_days=0, did=f"m{k}") for k in range(4)]
    line = tx("-178.80", "PRLV SEPA LUMEN CLOUD", on=date(2026, 3, 7), reference="LC-2026-0002", tid="t")
    result = run([line], series + background())["t"]
    assert first_ids(result) == ("m2",) and result.decision == "auto"


def test_recurring_identical_amounts_are_told_apart_by_date_when_clear():
    # Monthly subscription, invoices due on issue; paid two days after the March invoice.
    series = [doc("178.80", "Lumen Cloud SAS", f"LC-{k}", issue=date(2026, 1, 5) + timedelta(days=30 * k),
                  due_days=0, did=f"m{k}") for k in range(4)]
    line = tx("-178.80", "PRLV SEPA LUMEN CLOUD", on=date(2026, 3, 8), tid="t")
    result = run([line], series + background())["t"]
    assert first_ids(result) == ("m2",)
    assert result.decision == "auto"
    assert any("the other open invoices with this amount" in e for e in explanations(result))


def test_recurring_identical_amounts_are_never_guessed_when_dates_do_not_tell():
    # Two open instances: one just issued, the previous one due exactly on the payment date.
    series = [doc("178.80", "Lumen Cloud SAS", f"LC-{k}", issue=date(2026, 2, 6) + timedelta(days=30 * k),
                  due_days=30, did=f"m{k}") for k in range(2)]
    line = tx("-178.80", "LUMEN CLOUD", on=date(2026, 3, 8), tid="t")
    result = run([line], series + background())["t"]
    assert result.decision != "auto"
    assert {c.document_ids for c in result.candidates[:2]} == {("m0",), ("m1",)}


def test_tied_best_candidates_never_auto_post():
    twins = [doc("420.00", "Iris Design SARL", "ID-1", did="a"), doc("420.00", "Iris Design SARL", "ID-2", did="b")]
    result = run([tx("-420.00", "IRIS DESIGN SARL", tid="t")], twins + background())["t"]
    assert result.decision != "auto"
    assert result.confidence < 85
    assert result.candidates[0].confidence == result.candidates[1].confidence


def test_paid_long_before_the_issue_date_is_not_that_invoice():
    later = doc("1750.00", "Vertex Legal SAS", "VL-9", issue=date(2026, 9, 1), did="later")
    result = run([tx("-1750.00", "VERTEX LEGAL", on=date(2026, 3, 1), tid="t")], [later])["t"]
    assert result.decision != "auto"
    assert any("before the issue date" in e for e in explanations(result))


def test_a_credit_does_not_pay_a_supplier_invoice():
    supplier = doc("999.99", "Granit Media SAS", "GM-1", kind="supplier_invoice", did="sup")
    client = doc("999.99", "Granit Media SAS", "GM-2", kind="client_invoice", did="cli")
    results = run([tx("999.99", "GRANIT MEDIA", tid="in"), tx("-999.99", "GRANIT MEDIA", tid="out")], [supplier, client])
    assert first_ids(results["in"]) == ("cli",) and results["in"].decision == "auto"
    assert first_ids(results["out"]) == ("sup",) and results["out"].decision == "auto"
    assert all(c.document_ids != ("sup",) for c in results["in"].candidates)


# ---------------------------------------------------------------------------------------------
# Groups and splits
# ---------------------------------------------------------------------------------------------


def test_one_transfer_paying_several_invoices_with_their_numbers():
    docs = [doc("1200.50", "Pixel Software BV", "PS-101", did="a"),
            doc("310.25", "Pixel Software BV", "PS-102", did="b"),
            doc("88.00", "Pixel Software BV", "PS-103", did="c"),
            doc("310.25", "Pixel Software BV", "PS-104", did="x")] + background()
    line = tx("-1598.75", "PIXEL SOFTWARE", reference="PS-101 PS-102 PS-103", tid="t")
    result = run([line], docs)["t"]
    assert first_ids(result) == ("a", "b", "c")
    assert result.decision == "auto"
    alloc = dict(zip(result.candidates[0].document_ids, result.candidates[0].allocations, strict=True))
    assert alloc == {"a": Decimal("1200.50"), "b": Decimal("310.25"), "c": Decimal("88.00")}
    assert "amount equals the sum of 3 invoices" in explanations(result)


def test_one_transfer_paying_several_invoices_without_reference():
    docs = [doc("1433.17", "Sable Transport SAS", "ST-1", did="a", issue=D0 - timedelta(days=25)),
            doc("612.40", "Sable Transport SAS", "ST-2", did="b", issue=D0 - timedelta(days=20)),
            doc("250.00", "Sable Transport SAS", "ST-3", did="c")] + background()
    result = run([tx("-2045.57", "SABLE TRANSPORT", tid="t")], docs)["t"]
    assert first_ids(result) == ("a", "b")
    assert result.decision == "auto"


def test_invoice_paid_in_two_instalments():
    invoice = doc("6000.00", "Tundra Systems GmbH", "TS-2026-31", issue=date(2026, 1, 10), did="inv")
    first = tx("-1800.00", "TUNDRA SYSTEMS", on=date(2026, 1, 20), reference="TS-2026-31", tid="first")
    second = tx("-4200.00", "TUNDRA SYSTEMS", on=date(2026, 2, 20), reference="TS-2026-31", tid="second")
    results = run([first, second], [invoice] + background())
    for tid, part in (("first", "1800.00"), ("second", "4200.00")):
        assert first_ids(results[tid]) == ("inv",)
        assert results[tid].decision == "auto"
        assert results[tid].candidates[0].allocations == (Decimal(part),)
        assert any("partial payment" in e for e in explanations(results[tid]))


def test_instalments_without_reference_are_recognised_by_the_remainder():
    invoice = doc("5321.40", "Tundra Systems GmbH", "TS-2026-32", issue=date(2026, 1, 10), did="inv")
    first = tx("-2000.00", "TUNDRA SYSTEMS", on=date(2026, 1, 20), tid="first")
    second = tx("-3321.40", "TUNDRA SYSTEMS", on=date(2026, 2, 20), tid="second")
    results = run([first, second], [invoice] + background())
    assert first_ids(results["second"]) == ("inv",)
    assert any("it settles the invoice exactly" in e for e in explanations(results["second"]))
    assert results["second"].decision == "auto"


# ---------------------------------------------------------------------------------------------
# Lines without document, output shape, other flows
# ---------------------------------------------------------------------------------------------


def test_lines_without_document_are_refused():
    docs = background(80)
    lines = [tx("-12.50", "FRAIS BANCAIRES", tid="fee"), tx("-3412.00", "DGFIP TVA", tid="tax"),
             tx("5000.00", "VIR INTERNE COMPTE EPARGNE", tid="internal"), tx("-57.13", "CARTE 03/03 RESTAURANT", tid="card")]
    results = run(lines, docs)
    for r in results.values():
        assert r.decision == "refused", r


def test_one_result_per_transaction_in_order_and_at_most_five_candidates():
    docs = [doc("100.00", f"Supplier {k} SAS", f"S-{k}", did=f"s{k}") for k in range(12)]
    lines = [tx("-100.00", "SUPPLIER", tid=f"t{k}") for k in range(3)]
    results = reconcile(lines, docs)
    assert [r.transaction_id for r in results] == ["t0", "t1", "t2"]
    for r in results:
        assert len(r.candidates) <= 5
        confs = [c.confidence for c in r.candidates]
        assert confs == sorted(confs, reverse=True)
        assert r.decision != "auto"  # twelve suppliers with the same round amount


def test_thresholds_are_the_organisation_policy():
    docs = [doc("1834.27", "Helio Print SRL", "HP-118", did="d")] + background()
    line = tx("-1834.27", "HELIO PRINT", tid="t")
    strict = run([line], docs, auto_threshold=100, review_threshold=90)["t"]
    assert strict.decision == "review"
    assert strict.candidates[0].document_ids == ("d",)


def test_quickbooks_bill_matched_against_qonto_supplier_invoices():
    # Another flow reuses the engine: a bill is a transaction-like record dated like the invoice.
    invoices = [doc("730.00", "Ember Energy SAS", "EE-5521", issue=date(2026, 4, 2), did="qonto_inv"),
                doc("730.00", "Ember Energy SAS", "EE-5530", issue=date(2026, 5, 2), did="other")]
    bill = Transaction(id="bill-88", amount=Decimal("-730.00"), currency="EUR", side="debit",
                       date=date(2026, 4, 2), counterparty="Ember Energy", label="", reference="EE-5521")
    result = run([bill], invoices + background())["bill-88"]
    assert first_ids(result) == ("qonto_inv",) and result.decision == "auto"


def test_baseline_and_version():
    assert ENGINE_VERSION
    docs = [doc("1834.27", "Helio Print SRL", "HP-118", did="d")]
    (result,) = baseline_reconcile([tx("-1834.27", "HELIO PRINT", tid="t")], docs)
    assert result.candidates[0].document_ids == ("d",)


# ---------------------------------------------------------------------------------------------
# Benchmark file runner
# ---------------------------------------------------------------------------------------------


def _dataset() -> dict:
    return {
        "transactions": [
            {"id": "tx_1", "amount": "-1834.27", "currency": "EUR", "side": "debit", "settled_at": "2026-03-15",
             "counterparty": "HELIO PRINT", "label": "HELIO PRINT", "reference": ""},
            {"id": "tx_2", "amount": "-12.50", "currency": "EUR", "side": "debit", "settled_at": "2026-03-15",
             "counterparty": "FRAIS", "label": "FRAIS BANCAIRES", "reference": ""},
        ],
        "documents": [
            {"id": "doc_1", "kind": "supplier_invoice", "number": "HP-118", "counterparty": "Helio Print SRL",
             "counterparty_tax_id": "FR123", "amount": "1834.27", "currency": "EUR",
             "issue_date": "2026-02-01", "due_date": "2026-03-03"},
        ],
    }


def test_benchfile_round_trip(tmp_path):
    src = tmp_path / "dataset.json"
    src.write_text(json.dumps(_dataset()))
    transactions, documents = load_dataset(src)
    assert transactions[0].amount == Decimal("-1834.27") and transactions[0].date == date(2026, 3, 15)
    assert documents[0].amount == Decimal("1834.27")
    out = tmp_path / "results.json"
    timings = run_file(src, out, workers=1)
    assert timings["transactions"] == 2 and timings["total_s"] >= 0
    payload = json.loads(out.read_text())
    rows = {r["transaction_id"]: r for r in payload["results"]}
    assert rows["tx_1"]["decision"] == "auto"
    assert rows["tx_1"]["candidates"][0] == {"document_ids": ["doc_1"], "confidence": rows["tx_1"]["confidence"]}
    assert rows["tx_2"]["decision"] == "refused"
    write_results(reconcile(transactions, documents), out)
    assert json.loads(out.read_text())["engine_version"] == ENGINE_VERSION
    run_file(src, out, baseline=True)
    assert {r["transaction_id"] for r in json.loads(out.read_text())["results"]} == {"tx_1", "tx_2"}


def test_forked_run_gives_the_same_answers():
    docs, lines = [], []
    for k in range(1200):
        name = f"Company{k % 300:03d} Services SAS"
        d = doc(f"{100 + k * 7}.{k % 97:02d}", name, f"N-{k:05d}", did=f"d{k}")
        docs.append(d)
        lines.append(tx(f"-{d.amount}", name.upper(), reference=d.number if k % 3 else "", tid=f"t{k}"))
    lines += [tx(f"-{3 + k}.17", "NOISE", tid=f"n{k}") for k in range(900)]
    serial = reconcile(lines, docs)
    forked = reconcile(lines, docs, workers=2)
    assert serial == forked
