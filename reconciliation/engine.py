"""Pure matching engine: bank transactions (or any payment-like record) against open documents.

What it is for
--------------
Given a batch of bank lines (Qonto transactions, or e.g. QuickBooks bills passed as
transaction-like records) and the open documents of one organisation (supplier invoices,
client invoices, credit notes), propose for every line the document(s) it settles, with a
calibrated confidence 0-100 and the reasons a reviewer reads ("reference F-2026-0042 found in
label", "amount equal", "name 92% similar", "paid 12 days after due date").

The engine is deliberately free of Django and of any I/O so that every flow (Qonto
transactions -> documents, QuickBooks bills -> Qonto supplier invoices, the benchmark file
runner) shares one implementation and one version string.

How it decides
--------------
Every hypothesis "this line settles these documents" gets a score that is a sum of evidence
weights (log-likelihood ratios, in nats) from independent signals: reference tokens, amount,
counterparty name, tax id / IBAN, dates, side vs document kind, currency and the
organisation's history. The hypotheses of one line, plus a constant "no document here"
hypothesis, are normalised with a softmax; the confidence of a candidate is its share. A tie
between the best candidates therefore caps both at 50 and can never auto-post, and a
candidate only reaches the auto band when its evidence beats every alternative and the
no-document option by a wide margin.

Candidates are found through indexes (amount buckets, reference tokens, counterparty name
prefixes), never by comparing every line with every document.
"""
from __future__ import annotations

import math
import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from itertools import combinations
from typing import Iterable, Sequence

from rapidfuzz import fuzz

ENGINE_VERSION = "recon-engine 1.0.0"

__all__ = [
    "ENGINE_VERSION",
    "Transaction",
    "Document",
    "History",
    "Feature",
    "Candidate",
    "Result",
    "reconcile",
    "baseline_reconcile",
    "normalize_name",
    "name_similarity",
]


# ---------------------------------------------------------------------------------------------
# Public records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transaction:
    """A payment-like line: a bank transaction, or any record that settles documents.

    ``amount`` is signed (negative = money going out); ``side`` says the same thing explicitly
    so that records whose sign convention differs can still be matched.
    """

    id: str
    amount: Decimal
    currency: str
    side: str  # 'debit' | 'credit'
    date: date  # settled date (or the record's own date for non-bank flows)
    counterparty: str
    label: str
    reference: str = ""
    counterparty_tax_id: str = ""
    iban: str = ""


@dataclass(frozen=True, slots=True)
class Document:
    """An open document that a transaction may settle; ``amount`` is the positive open amount."""

    id: str
    kind: str  # 'supplier_invoice' | 'client_invoice' | 'credit_note'
    number: str
    counterparty: str
    counterparty_tax_id: str
    amount: Decimal
    currency: str
    issue_date: date
    due_date: date
    iban: str = ""


@dataclass(frozen=True, slots=True)
class Feature:
    """One signal behind a candidate.

    ``score`` is the evidence weight the signal added (positive supports the candidate,
    negative speaks against it); ``explanation`` is the sentence shown to a reviewer.
    """

    name: str
    score: float
    explanation: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """Documents proposed for one transaction, with the amount allocated to each.

    ``allocations[i]`` is the part of ``document_ids[i]``'s open amount that the transaction
    settles, in the document's currency.
    """

    document_ids: tuple[str, ...]
    allocations: tuple[Decimal, ...]
    confidence: int
    features: list[Feature]


@dataclass(frozen=True, slots=True)
class Result:
    transaction_id: str
    decision: str  # 'auto' | 'review' | 'refused' (about the first candidate)
    confidence: int
    candidates: list[Candidate]


@dataclass
class History:
    """What this organisation's past confirmed matches say about counterparties.

    Maps the counterparty as the bank shows it (normalised) to the parties it turned out to be
    (tax id when known, otherwise the normalised legal name) with a count of confirmations.
    """

    parties_by_bank_name: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, bank_name: str, legal_name: str = "", tax_id: str = "", count: int = 1) -> None:
        key = normalize_name(bank_name).norm or normalize_name(bank_name).compact
        party = _party_key(legal_name, tax_id)
        if not key or not party:
            return
        slot = self.parties_by_bank_name.setdefault(key, {})
        slot[party] = slot.get(party, 0) + count

    @classmethod
    def from_matches(cls, matches: Iterable[tuple[str, str, str]]) -> "History":
        """Build from (bank counterparty as shown, document legal name, document tax id)."""
        history = cls()
        for bank_name, legal_name, tax_id in matches:
            history.add(bank_name, legal_name, tax_id)
        return history

    def lookup(self, bank_name_key: str) -> dict[str, int]:
        return self.parties_by_bank_name.get(bank_name_key, {})


# ---------------------------------------------------------------------------------------------
# Name normalisation
# ---------------------------------------------------------------------------------------------

# Legal forms are noise for identification: the bank shows "DUPONT" for "Dupont SAS".
_LEGAL_FORMS = frozenset(
    """sa sas sasu sarl eurl sca sci snc scs scop sem selarl selas selafa gie ei eirl sc scp
    gmbh ag kg ohg ug mbh kgaa gbr ev eg bv nv vof cv ltd limited llc llp lp plc inc incorporated
    corp corporation co company pty srl srls spa sapa sl slu sll ab oy oyj aps asa kft sro spzoo
    bvba sprl scrl cie""".split()
)
# Every prefix of a legal form, so that "ACMESA" (bank truncated "ACME SAS") still counts.
_LEGAL_PREFIXES = frozenset(form[:i] for form in _LEGAL_FORMS for i in range(1, len(form) + 1))
# Words banks put in front of the counterparty ("VIR SEPA", "PRLV", "CARTE", "VIR INST" ...).
_BANK_WORDS = frozenset(
    """vir virt virement virements sepa inst instant instantane instantanee recu recue emis emise
    prlv prelevement prelev sdd sct cb carte card paiement payment pmt achat transfer transfert
    wire ordre de du des from to a vers par remise cheque chq ref dd ddebit debit credit
    avis""".split()
)
_CARD_NOISE = re.compile(r"^(?:x+\d{2,}|\d{1,4}|\d{2}/\d{2}(?:/\d{2,4})?)$")
_DOTTED_ABBREV = re.compile(r"\b((?:[a-z]\.){2,})")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _fold(text: str) -> str:
    """Lower case without accents (É -> e), so 'Société' and 'SOCIETE' compare equal."""
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch)).lower()


@dataclass(frozen=True, slots=True)
class NormalizedName:
    norm: str  # tokens without bank words and legal forms, space-separated
    tokens: tuple[str, ...]
    compact: str  # norm without spaces: survives banks that glue or truncate words
    compact_full: str  # including legal forms: "acmesas" still starts with bank's "ACMESA"


_NAME_CACHE: dict[str, NormalizedName] = {}


def normalize_name(raw: str) -> NormalizedName:
    """Normalise a counterparty name for comparison (cached: banks repeat the same strings)."""
    cached = _NAME_CACHE.get(raw)
    if cached is not None:
        return cached
    text = _fold(raw)
    # "s.a.s." -> "sas" before punctuation becomes a separator.
    text = _DOTTED_ABBREV.sub(lambda m: m.group(1).replace(".", ""), text)
    text = text.replace("&", " ")
    raw_tokens = [t for t in re.split(r"[\s,;:'\"()\[\]]+", text) if t]
    tokens: list[str] = []
    for tok in raw_tokens:
        if _CARD_NOISE.match(tok) and not tokens:
            continue  # card mask or operation date in front of the merchant name
        tokens.extend(t for t in _NON_ALNUM.split(tok) if t)
    # Leading bank words and card noise ("VIR SEPA", "CARTE 12/03 X1234") are not the name.
    while tokens and (tokens[0] in _BANK_WORDS or _CARD_NOISE.match(tokens[0])):
        tokens.pop(0)
    tokens = [t for t in tokens if not re.fullmatch(r"x+\d{3,}", t)]
    full = tuple(tokens)
    # Legal forms at either end are dropped ("SARL DUPONT", "Dupont Freres SARL").
    while len(tokens) > 1 and tokens[-1] in _LEGAL_FORMS:
        tokens.pop()
    while len(tokens) > 1 and tokens[0] in _LEGAL_FORMS:
        tokens.pop(0)
    name = NormalizedName(" ".join(tokens), tuple(tokens), "".join(tokens), "".join(full))
    if len(_NAME_CACHE) < 500_000:
        _NAME_CACHE[raw] = name
    return name


def name_similarity(a: NormalizedName, b: NormalizedName) -> int:
    """0-100 similarity of a bank-side name ``a`` with a document-side name ``b``.

    Tolerates what banks do to names: drop the legal form, glue words, truncate, keep only the
    first word. A shortened name scores by how much of the legal name it covers, so "DUPONT" is
    closer to "Dupont SAS" (100) than to "Dupont Freres SARL" (about 70).
    """
    ac, bc = a.compact, b.compact
    if not ac or not bc:
        return 0
    if ac == bc or a.norm == b.norm:
        return 100
    best = fuzz.ratio(a.norm, b.norm)
    if len(a.tokens) > 1 or len(b.tokens) > 1:
        best = max(best, fuzz.token_sort_ratio(a.norm, b.norm) - 2)
    if len(ac) >= 3:
        bf = b.compact_full
        if ac.startswith(bc):
            rest = ac[len(bc):]
            if rest in _LEGAL_PREFIXES:
                return 97  # bank glued the legal form (possibly truncated) to the name
        elif bc.startswith(ac) or bf.startswith(ac):
            if bf.startswith(ac) and len(ac) >= len(bc):
                return 97  # bank truncated "name + legal form"
            cover = len(ac) / len(bc)
            best = max(best, int(48 + 47 * cover))
    sa, sb = set(a.tokens), set(b.tokens)
    if sa and sb and sa != sb:
        if sa <= sb:
            cover = len(ac) / len(bc)
            best = max(best, int(48 + 47 * cover))
        elif sb <= sa:
            # Bank adds words (a city, "FRANCE", a branch): weaker than exact, still telling.
            cover = len(bc) / len(ac)
            best = max(best, int(60 + 32 * cover))
    return int(min(best, 99))


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

_ALNUM_UP = re.compile(r"[^A-Z0-9]+")
_REF_TOKEN = re.compile(r"[A-Z0-9]+(?:[-/._:][A-Z0-9]+)*")
_DIGITS = re.compile(r"\D+")


def _ref_key(number: str) -> str:
    return _ALNUM_UP.sub("", _fold(number).upper())


def _compact_id(value: str) -> str:
    return _ALNUM_UP.sub("", (value or "").upper())


def _party_key(legal_name: str, tax_id: str) -> str:
    tax = _compact_id(tax_id)
    if tax:
        return "tax:" + tax
    name = normalize_name(legal_name or "")
    return ("name:" + name.norm) if name.norm else ""


def _cents(amount: Decimal) -> int:
    return int((abs(amount) * 100).to_integral_value())


def _money(cents: int) -> str:
    return f"{cents / 100:,.2f}"


# Approximate value of one unit in EUR. Only a starting point: the engine re-centres each
# currency pair on the rates implied by the batch's own reference-confirmed payments.
_EUR_RATE = {
    "EUR": 1.0, "USD": 0.92, "GBP": 1.17, "CHF": 1.05, "JPY": 0.0062, "CAD": 0.68, "AUD": 0.61,
    "NZD": 0.56, "SEK": 0.088, "NOK": 0.087, "DKK": 0.134, "PLN": 0.23, "CZK": 0.040,
    "HUF": 0.0025, "RON": 0.20, "BGN": 0.51, "CNY": 0.13, "HKD": 0.118, "SGD": 0.69,
    "MAD": 0.092, "TND": 0.30, "TRY": 0.028, "INR": 0.011, "BRL": 0.17, "MXN": 0.05,
    "ZAR": 0.05, "AED": 0.25, "ILS": 0.25,
}

# Sides a document kind is normally settled on. Credit notes go either way (a refund to a
# client is a debit, a supplier's refund a credit), so they are allowed on both with a cost.
_KIND_SIDES = {
    "supplier_invoice": ("debit",),
    "client_invoice": ("credit",),
    "credit_note": ("debit", "credit"),
}

# Evidence weights (nats). Chosen so that one strong signal is not enough on its own to
# auto-post: a full reference still needs a plausible amount and name, and an exact amount
# needs the name unless the amount is rare.
_W_NONE = 6.0  # the "no document" hypothesis
_W_REF_FULL = 8.0
_W_REF_DIGITS = 6.5
_W_KIND_UNUSUAL = -1.0
_TIE_MARGIN = 0.05


def _name_weight(sim: int) -> float:
    return max(-3.0, min(4.5, (sim - 62) / 8.0))


def _date_evidence(pay: int, issue: int, due: int) -> tuple[float, str]:
    """Evidence from when the payment happened relative to the document's dates."""
    before_issue = issue - pay
    if before_issue > 7:
        return -4.0, f"paid {before_issue} days before the issue date"
    if before_issue > 0:
        return -0.3 * before_issue, f"paid {before_issue} days before the issue date"
    late = pay - due
    if late > 30:
        w = max(-3.0, 0.3 - (late - 30) / 30.0)
        return w, f"paid {late} days after due date"
    if late > 0:
        return 0.3, f"paid {late} days after due date"
    if late == 0:
        return 0.3, "paid on due date"
    return 0.3, f"paid {-late} days before due date"


# ---------------------------------------------------------------------------------------------
# Prepared data
# ---------------------------------------------------------------------------------------------


class _Party:
    __slots__ = ("key", "display", "name", "tax_ids", "ibans", "docs")

    def __init__(self, key: str, display: str, name: NormalizedName) -> None:
        self.key = key
        self.display = display
        self.name = name
        self.tax_ids: set[str] = set()
        self.ibans: set[str] = set()
        self.docs: dict[str, list[int]] = {"debit": [], "credit": []}


class _Doc:
    __slots__ = ("i", "src", "cents", "cur", "issue", "due", "party", "sides", "number",
                 "key", "digits", "kind_penalty")

    def __init__(self, i: int, src: Document, party: int) -> None:
        self.i = i
        self.src = src
        self.cents = _cents(src.amount)
        self.cur = (src.currency or "EUR").upper()
        self.issue = src.issue_date.toordinal()
        self.due = (src.due_date or src.issue_date).toordinal()
        self.party = party
        self.sides = _KIND_SIDES.get(src.kind, ("debit", "credit"))
        self.kind_penalty = 0.0 if src.kind in ("supplier_invoice", "client_invoice") else _W_KIND_UNUSUAL
        self.number = src.number or ""
        self.key = _ref_key(self.number)
        self.digits = _DIGITS.sub("", self.key)


class _Tx:
    __slots__ = ("i", "src", "cents", "cur", "side", "pay", "name", "name_key", "parties",
                 "refs", "tax", "iban")

    def __init__(self, i: int, src: Transaction) -> None:
        self.i = i
        self.src = src
        self.cents = _cents(src.amount)
        self.cur = (src.currency or "EUR").upper()
        side = (src.side or "").lower()
        if side not in ("debit", "credit"):
            side = "debit" if src.amount < 0 else "credit"
        self.side = side
        self.pay = src.date.toordinal()
        raw = src.counterparty or src.label or ""
        self.name = normalize_name(raw)
        self.name_key = self.name.norm or self.name.compact
        self.parties: list[tuple[int, int]] = []  # (party index, similarity) best first
        self.refs: dict[int, tuple[float, str]] = {}  # doc index -> (weight, explanation)
        self.tax = _compact_id(src.counterparty_tax_id)
        self.iban = _compact_id(src.iban)


class _Index:
    """Everything the matcher looks documents up by; built once per batch."""

    def __init__(self, documents: Sequence[Document]) -> None:
        self.parties: list[_Party] = []
        party_by_key: dict[str, int] = {}
        self.docs: list[_Doc] = []
        for i, d in enumerate(documents):
            key = _party_key(d.counterparty, d.counterparty_tax_id) or f"doc:{d.id}"
            p = party_by_key.get(key)
            if p is None:
                p = len(self.parties)
                party_by_key[key] = p
                self.parties.append(_Party(key, d.counterparty, normalize_name(d.counterparty or "")))
            party = self.parties[p]
            if d.counterparty_tax_id:
                party.tax_ids.add(_compact_id(d.counterparty_tax_id))
            if d.iban:
                party.ibans.add(_compact_id(d.iban))
            doc = _Doc(i, d, p)
            self.docs.append(doc)
            for side in doc.sides:
                party.docs[side].append(i)
        self.party_by_key = party_by_key

        # Amount buckets per (side, currency): exact lookup plus a sorted list for ranges.
        self.by_amount: dict[tuple[str, str, int], list[int]] = defaultdict(list)
        sorted_lists: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        for doc in self.docs:
            for side in doc.sides:
                self.by_amount[(side, doc.cur, doc.cents)].append(doc.i)
                sorted_lists[(side, doc.cur)].append((doc.cents, doc.i))
        self.sorted_amounts: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
        for k, rows in sorted_lists.items():
            rows.sort()
            self.sorted_amounts[k] = ([c for c, _ in rows], [i for _, i in rows])
        self.currencies_by_side: dict[str, set[str]] = defaultdict(set)
        for side, cur in sorted_lists:
            self.currencies_by_side[side].add(cur)

        # Reference indexes: full number, its digits, and its last four digits.
        self.by_key: dict[str, list[int]] = defaultdict(list)
        self.by_digits: dict[str, list[int]] = defaultdict(list)
        self.by_last4: dict[str, list[int]] = defaultdict(list)
        for doc in self.docs:
            if len(doc.key) >= 3:
                self.by_key[doc.key].append(doc.i)
            if len(doc.digits) >= 4:
                self.by_digits[doc.digits].append(doc.i)
                self.by_last4[doc.digits[-4:]].append(doc.i)
        self.sorted_keys = sorted(self.by_key)

        # Name blocking: parties by the first letters of their compact name and by word.
        self.by_prefix: dict[str, list[int]] = defaultdict(list)
        self.by_token: dict[str, list[int]] = defaultdict(list)
        for p, party in enumerate(self.parties):
            c = party.name.compact
            if c:
                self.by_prefix[c[:4]].append(p)
                if len(c) > 3:
                    self.by_prefix[c[:3]].append(p)
            for tok in set(party.name.tokens):
                if len(tok) >= 3:
                    self.by_token[tok].append(p)
        self.sim_cache: dict[tuple[str, int], int] = {}
        self.block_cache: dict[str, list[tuple[int, int]]] = {}

    # -- names ------------------------------------------------------------------------------

    def similarity(self, tx: _Tx, p: int) -> int:
        key = (tx.name_key, p)
        s = self.sim_cache.get(key)
        if s is None:
            s = name_similarity(tx.name, self.parties[p].name)
            self.sim_cache[key] = s
        return s

    def parties_for(self, tx: _Tx) -> list[tuple[int, int]]:
        """Parties whose name resembles the transaction's counterparty, best first."""
        cached = self.block_cache.get(tx.name_key)
        if cached is not None:
            return cached
        name = tx.name
        block: set[int] = set()
        c = name.compact
        if len(c) >= 3:
            block.update(self.by_prefix.get(c[:4] if len(c) >= 4 else c[:3], ()))
        for tok in name.tokens:
            if len(tok) >= 3:
                posting = self.by_token.get(tok)
                # Common words ("services", "france") would drag in half the parties.
                if posting and len(posting) <= 150:
                    block.update(posting)
        scored = []
        for p in block:
            s = self.similarity(tx, p)
            if s >= 55:
                scored.append((p, s))
        scored.sort(key=lambda ps: -ps[1])
        self.block_cache[tx.name_key] = scored
        return scored


# ---------------------------------------------------------------------------------------------
# Reference extraction
# ---------------------------------------------------------------------------------------------


def _reference_hits(tx: _Tx, index: _Index) -> dict[int, tuple[float, str]]:
    """Documents whose number appears (fully or partly) in the label or the reference."""
    hits: dict[int, tuple[float, str]] = {}

    def add(doc_i: int, w: float, text: str) -> None:
        if doc_i not in hits or hits[doc_i][0] < w:
            hits[doc_i] = (w, text)

    sources = []
    if tx.src.reference:
        sources.append(("reference", tx.src.reference))
    if tx.src.label and tx.src.label != tx.src.reference:
        sources.append(("label", tx.src.label))
    seen: set[str] = set()
    for where, text in sources:
        tokens = _REF_TOKEN.findall(_fold(text).upper())
        n = len(tokens)
        for i in range(n):
            key = ""
            for j in range(i, min(i + 3, n)):
                key += _ALNUM_UP.sub("", tokens[j])
                if len(key) < 4 or key in seen:
                    continue
                digits = _DIGITS.sub("", key)
                if not digits:
                    continue
                seen.add(key)
                shown = " ".join(tokens[i:j + 1])
                found = index.by_key.get(key)
                if found:
                    for d in found:
                        add(d, _W_REF_FULL, f"reference {index.docs[d].number} found in {where}")
                    continue
                if len(digits) >= 6:
                    found = index.by_digits.get(digits)
                    if found:
                        for d in found:
                            add(d, _W_REF_DIGITS,
                                f"number {index.docs[d].number} found in {where} as {shown}")
                        continue
                if key == digits and len(digits) >= 4:
                    # A bare number: the end of an invoice number ("0042" for F-2026-0042).
                    found = index.by_last4.get(digits[-4:])
                    if found and len(found) <= 60:
                        w = min(5.5, 2.0 + 0.6 * (len(digits) - 4))
                        for d in found:
                            dd = index.docs[d].digits
                            if dd != digits and dd.endswith(digits):
                                add(d, w, f"partial reference {shown} matches {index.docs[d].number}")
                        continue
                if len(key) >= 7 and len(digits) >= 4 and j == n - 1:
                    # Last word of a text cut by the bank: a prefix of the number.
                    keys = index.sorted_keys
                    lo = bisect_left(keys, key)
                    hi = bisect_left(keys, key + "\x7f", lo)
                    if 0 < hi - lo <= 10:
                        w = min(4.5, 1.5 + 0.4 * (len(key) - 6))
                        for k in keys[lo:hi]:
                            for d in index.by_key[k]:
                                add(d, w, f"truncated reference {shown} matches {index.docs[d].number}")
    return hits


# ---------------------------------------------------------------------------------------------
# FX
# ---------------------------------------------------------------------------------------------


class _Fx:
    """Plausible exchange rates per (document currency, transaction currency)."""

    def __init__(self) -> None:
        self.center: dict[tuple[str, str], float] = {}
        self.spread: dict[tuple[str, str], float] = {}

    def rate(self, doc_cur: str, tx_cur: str) -> tuple[float, float] | None:
        pair = (doc_cur, tx_cur)
        if pair in self.center:
            return self.center[pair], self.spread[pair]
        a, b = _EUR_RATE.get(doc_cur), _EUR_RATE.get(tx_cur)
        if a is None or b is None:
            return None
        return a / b, 0.04  # no observation: a static rate is only good to a few percent

    def learn(self, txs: list[_Tx], index: _Index) -> None:
        samples: dict[tuple[str, str], list[float]] = defaultdict(list)
        for tx in txs:
            for d, (w, _) in tx.refs.items():
                if w < _W_REF_DIGITS:
                    continue
                doc = index.docs[d]
                if doc.cur == tx.cur or tx.side not in doc.sides or doc.cents == 0:
                    continue
                prior = self.rate(doc.cur, tx.cur)
                if prior is None or index.similarity(tx, doc.party) < 80:
                    continue
                implied = tx.cents / doc.cents
                if abs(implied / prior[0] - 1) <= 0.2:
                    samples[(doc.cur, tx.cur)].append(implied)
        for pair, values in samples.items():
            if len(values) < 5:
                continue
            values.sort()
            med = values[len(values) // 2]
            devs = sorted(abs(v / med - 1) for v in values)
            mad = devs[len(devs) // 2] * 1.4826
            self.center[pair] = med
            self.spread[pair] = min(0.05, max(0.004, mad))


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


class _Hyp:
    """One hypothesis for a transaction: documents, allocations, evidence."""

    __slots__ = ("docs", "alloc", "score", "feats", "party", "sort_key")

    def __init__(self, docs: tuple[int, ...], alloc: tuple[int, ...], party: int) -> None:
        self.docs = docs
        self.alloc = alloc  # cents, document currency
        self.score = 0.0
        self.feats: list[tuple[str, float, str]] = []
        self.party = party
        self.sort_key = ""  # how the amount matched: exact, fee, over, partial, fx, or "" (group)

    def add(self, name: str, w: float, text: str) -> None:
        self.score += w
        self.feats.append((name, w, text))


class _Matcher:
    def __init__(self, index: _Index, history: History | None) -> None:
        self.index = index
        self.history = history
        self.fx = _Fx()
        # (party, side) -> cents -> transaction indexes: finds the other instalment of a split.
        self.tx_by_party: dict[tuple[int, str], dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        self.txs: list[_Tx] = []
        # How many documents share each amount: an exact match on a common amount (a round
        # fee, a subscription price) says much less than on 1,234.56.
        self.amount_count = {k: len(v) for k, v in index.by_amount.items()}

    # -- shared evidence ----------------------------------------------------------------------

    def _party_evidence(self, h: _Hyp, tx: _Tx, p: int) -> None:
        index = self.index
        party = index.parties[p]
        sim = index.similarity(tx, p)
        h.add("name", _name_weight(sim), f"name {sim}% similar ({tx.src.counterparty or tx.src.label} / {party.display})")
        if tx.tax and party.tax_ids:
            if tx.tax in party.tax_ids:
                h.add("tax_id", 6.0, f"tax id {tx.tax} matches")
            else:
                h.add("tax_id", -4.0, f"tax id {tx.tax} differs from {', '.join(sorted(party.tax_ids))}")
        if tx.iban and party.ibans:
            if tx.iban in party.ibans:
                h.add("iban", 6.0, f"IBAN {tx.iban[:4]}…{tx.iban[-4:]} matches the document's")
            else:
                h.add("iban", -3.0, "IBAN differs from the document's")
        if self.history is not None:
            seen = self.history.lookup(tx.name_key)
            if seen:
                total = sum(seen.values())
                mine = seen.get(party.key, 0)
                if mine:
                    w = min(3.5, 1.0 + 1.2 * math.log1p(mine)) * mine / total
                    h.add("history", w, f"{mine} of {total} past matches of this bank name went to {party.display}")
                elif total >= 2:
                    h.add("history", -1.5, f"past matches of this bank name went to other counterparties ({total})")

    def _exact_weight(self, side: str, cur: str, cents: int) -> float:
        c = self.amount_count.get((side, cur, cents), 1)
        return max(2.5, 7.5 - 0.8 * math.log(c))

    def _single(self, tx: _Tx, d: int) -> _Hyp | None:
        """Score 'tx settles document d alone' (fully, net of a fee, in FX, or in part)."""
        index = self.index
        doc = index.docs[d]
        if tx.side not in doc.sides:
            return None
        alloc = doc.cents
        kind = ""
        if doc.cur == tx.cur:
            diff = doc.cents - tx.cents
            if diff == 0:
                w, text, kind = self._exact_weight(tx.side, doc.cur, doc.cents), "amount equal", "exact"
            elif 0 < diff <= max(300, min(2500, doc.cents // 100)):
                w = self._exact_weight(tx.side, doc.cur, doc.cents) - 2.0 - diff / 1000.0
                text, kind = f"amount {_money(diff)} short of the invoice (bank fee)", "fee"
            elif diff > 0:
                # Part payment: only credible with a reference or the matching other instalment.
                alloc = tx.cents
                share = tx.cents * 100 // doc.cents
                w, text, kind = -1.5, f"partial payment: {_money(tx.cents)} of {_money(doc.cents)} ({share}%)", "partial"
                partner = self._instalment_partner(tx, doc)
                if partner is not None:
                    other = self.txs[partner]
                    w = 4.0
                    text += (f"; with {other.src.id} of {other.src.date.isoformat()} "
                             f"({_money(other.cents)}) it settles the invoice exactly")
            elif -diff <= min(500, max(100, doc.cents // 200)):
                w, text, kind = self._exact_weight(tx.side, doc.cur, doc.cents) - 3.5, \
                    f"amount {_money(-diff)} above the invoice", "over"
            else:
                return None  # pays more than the document: it is at best part of a group
        else:
            rate = self.fx.rate(doc.cur, tx.cur)
            if rate is None or doc.cents == 0:
                return None
            center, spread = rate
            implied = tx.cents / doc.cents
            dev = implied / center - 1
            z = abs(dev) / spread
            if z > 4:
                return None
            lo, hi = doc.cents * center * (1 - 2 * spread), doc.cents * center * (1 + 2 * spread)
            crowd = self._fx_crowd(tx, doc.cur, lo / center, hi / center)
            w = 5.0 - 0.5 * z * z - 0.7 * math.log(max(1, crowd))
            text = (f"{_money(doc.cents)} {doc.cur} paid as {_money(tx.cents)} {tx.cur} "
                    f"(rate {implied:.4f}, {dev * 100:+.1f}% from the usual rate)")
            kind = "fx"
        h = _Hyp((d,), (alloc,), doc.party)
        h.add("amount", w, text)
        ref = tx.refs.get(d)
        if ref is not None:
            h.add("reference", ref[0], ref[1])
        self._party_evidence(h, tx, doc.party)
        dw, dtext = _date_evidence(tx.pay, doc.issue, doc.due)
        h.add("date", dw, dtext)
        if doc.kind_penalty:
            h.add("kind", doc.kind_penalty, f"{doc.src.kind.replace('_', ' ')} on a {tx.side}")
        h.sort_key = kind
        return h

    def _fx_crowd(self, tx: _Tx, doc_cur: str, lo: float, hi: float) -> int:
        found = self.index.sorted_amounts.get((tx.side, doc_cur))
        if not found:
            return 1
        cents = found[0]
        return bisect_right(cents, hi) - bisect_left(cents, lo)

    def _instalment_partner(self, tx: _Tx, doc: _Doc) -> int | None:
        bucket = self.tx_by_party.get((doc.party, tx.side))
        if not bucket:
            return None
        for other in bucket.get(doc.cents - tx.cents, ()):
            if other != tx.i:
                return other
        return None

    def _group(self, tx: _Tx, docs: tuple[int, ...], tried: int, via: str) -> _Hyp:
        index = self.index
        rows = [index.docs[d] for d in docs]
        p = rows[0].party
        h = _Hyp(docs, tuple(r.cents for r in rows), p)
        total = sum(r.cents for r in rows)
        base = self._exact_weight(tx.side, tx.cur, total)
        if total == tx.cents:
            text = f"amount equals the sum of {len(rows)} invoices"
        else:
            base -= 2.0 + (total - tx.cents) / 1000.0
            text = f"sum of {len(rows)} invoices, {_money(total - tx.cents)} short (bank fee)"
        # Searching many subsets finds coincidences: pay for the number of sums tried.
        w = base - 0.5 * math.log(max(1, tried)) - 0.7 * (len(rows) - 1)
        h.add("amount", w, text + ("" if via == "reference" else f" ({tried} combinations tried)"))
        refs = [tx.refs.get(d) for d in docs]
        if any(refs):
            found = [r for r in refs if r]
            mean = sum(r[0] for r in found) / len(rows)
            h.add("reference", mean, "; ".join(r[1] for r in found))
        self._party_evidence(h, tx, p)
        dates = [_date_evidence(tx.pay, r.issue, r.due) for r in rows]
        h.add("date", sum(w for w, _ in dates) / len(dates),
              "; ".join(f"{r.number}: {t}" for r, (_, t) in zip(rows, dates)))
        return h

    # -- per transaction ----------------------------------------------------------------------

    def _hypotheses(self, tx: _Tx) -> list[_Hyp]:
        index = self.index
        cand: set[int] = set(tx.refs)
        good = {p for p, s in tx.parties if s >= 60}
        # Exact amount, possibly among hundreds of documents sharing a round price.
        bucket = index.by_amount.get((tx.side, tx.cur, tx.cents), ())
        if len(bucket) <= 40:
            cand.update(bucket)
        else:
            cand.update(d for d in bucket if index.docs[d].party in good)
        # A little more than the line: a fee taken by a bank on the way.
        srt = index.sorted_amounts.get((tx.side, tx.cur))
        if srt:
            cents, ids = srt
            hi = tx.cents + max(300, min(2500, tx.cents // 100))
            lo_i, hi_i = bisect_right(cents, tx.cents), bisect_right(cents, hi)
            if hi_i - lo_i <= 40:
                cand.update(ids[lo_i:hi_i])
            else:
                cand.update(d for d in ids[lo_i:hi_i] if index.docs[d].party in good)
            over = tx.cents - min(500, max(100, tx.cents // 200))
            lo_o = bisect_left(cents, over)
            hi_o = bisect_left(cents, tx.cents)
            if hi_o - lo_o <= 20:
                cand.update(ids[lo_o:hi_o])
        # Documents in another currency, converted at a plausible rate.
        for cur in index.currencies_by_side.get(tx.side, ()):
            if cur == tx.cur:
                continue
            rate = self.fx.rate(cur, tx.cur)
            if rate is None:
                continue
            center, spread = rate
            found = index.sorted_amounts[(tx.side, cur)]
            lo = tx.cents / (center * (1 + 4 * spread))
            hi = tx.cents / (center * (1 - 4 * spread))
            a, b = bisect_left(found[0], lo), bisect_right(found[0], hi)
            if b - a <= 40:
                cand.update(found[1][a:b])
            else:
                cand.update(d for d in found[1][a:b] if index.docs[d].party in good)
        # Part payments of documents of a strongly matching counterparty.
        for p, s in tx.parties:
            if s < 80:
                break
            for d in index.parties[p].docs[tx.side]:
                doc = index.docs[d]
                if doc.cur == tx.cur and doc.cents > tx.cents and doc.issue <= tx.pay + 7 \
                        and self._instalment_partner(tx, doc) is not None:
                    cand.add(d)

        hyps = []
        for d in cand:
            h = self._single(tx, d)
            if h is not None:
                hyps.append(h)
        self._series_dates(tx, hyps)

        best = max((h.score for h in hyps), default=-99.0)
        groups = self._groups_from_refs(tx)
        if best < _W_NONE + 4.0:
            groups.extend(self._groups_from_party(tx))
        seen = set()
        for g in groups:
            key = frozenset(g.docs)
            if key not in seen:
                seen.add(key)
                hyps.append(g)
        return hyps

    def _series_dates(self, tx: _Tx, hyps: list[_Hyp]) -> None:
        """Tell apart recurring invoices of one counterparty with the same amount by date.

        The instance issued just before the payment wins only when every other instance is
        clearly further away (issued at least 20 days earlier and not due around the payment
        date); otherwise they stay tied and go to review.
        """
        groups: dict[tuple[int, int], list[_Hyp]] = defaultdict(list)
        for h in hyps:
            if h.sort_key in ("exact", "fee"):
                doc = self.index.docs[h.docs[0]]
                groups[(doc.party, doc.cents)].append(h)
        for members in groups.values():
            if len(members) < 2:
                continue
            docs = [self.index.docs[h.docs[0]] for h in members]
            lags = [tx.pay - d.issue for d in docs]
            order = sorted(range(len(members)), key=lambda k: (lags[k] < -3, abs(lags[k])))
            first = order[0]
            if not (-3 <= lags[first] <= 10):
                continue
            if any(abs(docs[k].issue - docs[first].issue) < 20 or abs(tx.pay - docs[k].due) <= 5
                   for k in order[1:]):
                continue
            members[first].add("series", 3.0,
                               f"issued {lags[first]} days before payment; the other open invoices "
                               f"with this amount are at least 20 days apart")

    def _groups_from_refs(self, tx: _Tx) -> list[_Hyp]:
        index = self.index
        by_party: dict[int, list[int]] = defaultdict(list)
        for d, (w, _) in tx.refs.items():
            doc = index.docs[d]
            if tx.side in doc.sides and doc.cur == tx.cur and doc.cents < tx.cents and w >= 2.0:
                by_party[doc.party].append(d)
        out = []
        for p, docs in by_party.items():
            if len(docs) < 2 or len(docs) > 8:
                continue
            fee = max(300, min(2500, tx.cents // 100))
            for k in range(len(docs), 1, -1):
                for combo in combinations(docs, k):
                    total = sum(index.docs[d].cents for d in combo)
                    if 0 <= total - tx.cents <= fee:
                        out.append(self._group(tx, combo, 1, "reference"))
        return out

    def _groups_from_party(self, tx: _Tx) -> list[_Hyp]:
        """Subsets (2-4 invoices) of one counterparty's open invoices adding up to the line."""
        index = self.index
        out = []
        for p, s in tx.parties[:12]:
            if s < 65:
                break
            rows = [index.docs[d] for d in index.parties[p].docs[tx.side]]
            rows = [r for r in rows if r.cur == tx.cur and r.cents < tx.cents
                    and tx.pay - 200 <= r.issue <= tx.pay + 3]
            n = len(rows)
            if n < 2 or n > 60:
                continue
            target = tx.cents
            by_cents: dict[int, list[int]] = defaultdict(list)
            for k, r in enumerate(rows):
                by_cents[r.cents].append(k)
            found: list[tuple[int, ...]] = []
            pair_sums: dict[int, list[tuple[int, int]]] = defaultdict(list)
            for a in range(n):
                ca = rows[a].cents
                for b in range(a + 1, n):
                    sab = ca + rows[b].cents
                    if sab < target:
                        pair_sums[sab].append((a, b))
                    elif sab == target:
                        found.append((a, b))
            # Triples: pair + one more; quadruples: pair + pair (disjoint, ordered).
            for sab, pairs in pair_sums.items():
                for c in by_cents.get(target - sab, ()):
                    for a, b in pairs:
                        if c > b:
                            found.append((a, b, c))
                rest = pair_sums.get(target - sab)
                if rest and sab <= target - sab:
                    for a, b in pairs:
                        for c, d in rest:
                            if c > b:
                                found.append((a, b, c, d))
                if len(found) > 20:
                    break
            tried = n * (n - 1) // 2 * max(1, n // 2)
            for combo in found[:20]:
                out.append(self._group(tx, tuple(rows[k].i for k in combo), tried, "search"))
        return out

    def result(self, tx: _Tx, auto_threshold: int, review_threshold: int) -> Result:
        hyps = self._hypotheses(tx)
        if not hyps:
            return Result(tx.src.id, "refused", 0, [])
        hyps.sort(key=lambda h: (-h.score, len(h.docs), h.docs))
        top = hyps[0].score
        norm = math.exp(_W_NONE - top) + sum(math.exp(h.score - top) for h in hyps)
        kept = hyps[:5]
        candidates = []
        docs = self.index.docs
        for h in kept:
            p = math.exp(h.score - top) / norm
            conf = min(99, int(p * 100))
            candidates.append(Candidate(
                tuple(docs[d].src.id for d in h.docs),
                tuple(Decimal(a).scaleb(-2) for a in h.alloc),
                conf,
                [Feature(n, round(w, 2), t) for n, w, t in h.feats],
            ))
        conf = candidates[0].confidence
        tied = len(kept) > 1 and kept[0].score - kept[1].score < _TIE_MARGIN
        if conf >= auto_threshold and not tied:
            decision = "auto"
        elif conf >= review_threshold:
            decision = "review"
        else:
            decision = "refused"
        if tied and conf >= auto_threshold:
            conf = auto_threshold - 1
            decision = "review" if conf >= review_threshold else "refused"
        return Result(tx.src.id, decision, conf, candidates)


def reconcile(
    transactions: Sequence[Transaction],
    documents: Sequence[Document],
    *,
    auto_threshold: int = 85,
    review_threshold: int = 55,
    history: History | None = None,
) -> list[Result]:
    """Match every transaction against the open documents; one Result per transaction, in order.

    ``auto`` when the best candidate's confidence reaches ``auto_threshold`` and it is not tied,
    ``review`` from ``review_threshold``, otherwise ``refused`` (candidates are still listed).
    """
    index = _Index(documents)
    matcher = _Matcher(index, history)
    txs = [_Tx(i, t) for i, t in enumerate(transactions)]
    matcher.txs = txs
    # Pass 1: who each line is likely to be, and which numbers it quotes.
    for tx in txs:
        tx.parties = index.parties_for(tx)
        tx.refs = _reference_hits(tx, index)
        for p, s in tx.parties:
            if s < 70:
                break
            matcher.tx_by_party[(p, tx.side)][tx.cents].append(tx.i)
    matcher.fx.learn(txs, index)
    # Pass 2: score the hypotheses of each line.
    return [matcher.result(tx, auto_threshold, review_threshold) for tx in txs]


# ---------------------------------------------------------------------------------------------
# Naive baseline, printed beside the engine by the benchmark
# ---------------------------------------------------------------------------------------------


def baseline_reconcile(transactions: Sequence[Transaction], documents: Sequence[Document]) -> list[Result]:
    """Plain 1:1 scorer: documents within ±2% of the amount, scored 60% amount + 40% name.

    No references, no groups, no splits, no calibration; each document is used once (greedy in
    transaction order). Kept to show what the engine's extra signals are worth.
    """
    by_side: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for i, d in enumerate(documents):
        for side in _KIND_SIDES.get(d.kind, ("debit", "credit")):
            by_side[side].append((_cents(d.amount), i))
    sorted_side = {}
    for side, rows in by_side.items():
        rows.sort()
        sorted_side[side] = ([c for c, _ in rows], [i for _, i in rows])
    used: set[int] = set()
    doc_names = [normalize_name(d.counterparty).norm for d in documents]
    results = []
    for t in transactions:
        cents = _cents(t.amount)
        side = t.side if t.side in ("debit", "credit") else ("debit" if t.amount < 0 else "credit")
        found = sorted_side.get(side)
        scored = []
        if found:
            a = bisect_left(found[0], cents * 0.98)
            b = bisect_right(found[0], cents * 1.02)
            name = normalize_name(t.counterparty or t.label).norm
            for k in range(a, min(b, a + 200)):
                i = found[1][k]
                if i in used:
                    continue
                closeness = 1 - abs(found[0][k] - cents) / max(1, cents) / 0.02
                s = 60 * closeness + 0.4 * fuzz.token_set_ratio(name, doc_names[i])
                scored.append((s, i))
        scored.sort(reverse=True)
        cands = [Candidate((documents[i].id,), (documents[i].amount,), int(s), [
            Feature("baseline", round(s, 1), "amount within 2% and name similarity")]) for s, i in scored[:5]]
        conf = cands[0].confidence if cands else 0
        decision = "auto" if conf >= 85 else "review" if conf >= 55 else "refused"
        if decision == "auto":
            used.add(scored[0][1])
        results.append(Result(t.id, decision, conf, cands))
    return results
