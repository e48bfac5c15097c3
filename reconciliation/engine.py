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
Every hypothesis "this line settles these documents" (one document, a group paid by one
transfer, or part of a document paid in instalments) gets a score in nats: the log prior of
the hypothesis (how strongly the bank name designates the counterparty, which of its open
documents) plus log-likelihood ratios of the evidence against "this line has no document
here": reference tokens, amount (exact, short of a bank fee, converted from another
currency, a round share of the total, the rest paid by another line), tax id / IBAN, dates,
side vs document kind and the organisation's history. How surprising an amount is comes from
the batch itself (round prices and crowded ranges weigh little, 4,317.29 weighs a lot).

The hypotheses of one line and the "no document" hypothesis are normalised together; the
confidence of a candidate is its posterior share. Equal evidence for two answers (recurring
identical invoices, two namesakes) therefore caps both at 50: never auto-posted, and sent
to review when together they are likely. A candidate reaches the auto band only when it beats
every alternative and the no-document option by a wide margin.

Candidates are found through indexes (amount buckets, reference tokens, counterparty name
blocks, documents per bank name), never by comparing every line with every document.
"""
from __future__ import annotations

import gc
import math
import os
import pickle
import re
import signal
import threading
import unicodedata
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from itertools import combinations
from typing import NamedTuple

from rapidfuzz import fuzz

ENGINE_VERSION = "recon-engine 1.1.0"

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


# Output records are immutable named tuples: thousands are built and, when scoring is spread
# over processes, pickled per batch; tuples are several times cheaper than dataclasses there.


class Feature(NamedTuple):
    """One signal behind a candidate.

    ``score`` is what the signal added to the candidate's log-odds, in nats: positive supports
    it, negative speaks against it. The ``name`` and ``prior`` scores are log-probabilities
    (0 for a bank name that certainly designates this counterparty, minus the log of its
    number of open documents), so they are never positive. ``explanation`` is the sentence
    shown to a reviewer.
    """

    name: str
    score: float
    explanation: str


class Candidate(NamedTuple):
    """Documents proposed for one transaction, with the amount allocated to each.

    ``allocations[i]`` is the part of ``document_ids[i]``'s open amount that the transaction
    settles, in the document's currency.
    """

    document_ids: tuple[str, ...]
    allocations: tuple[Decimal, ...]
    confidence: int
    features: list[Feature]


class Result(NamedTuple):
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
        key = _name_key(normalize_name(bank_name))
        party = _party_key(legal_name, tax_id)
        if not key or not party:
            return
        slot = self.parties_by_bank_name.setdefault(key, {})
        slot[party] = slot.get(party, 0) + count

    @classmethod
    def from_matches(cls, matches: Iterable[tuple[str, str, str]]) -> History:
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

# Legal forms are noise for identification ("DUPONT" on the bank line is "Dupont SAS"), but
# two different legal forms on both sides ("Dupont SAS" / "Dupont SARL") point to two companies.
_LEGAL_FORMS = frozenset(
    """sa sas sasu sarl eurl sca sci snc scs scop sem selarl selas selafa gie ei eirl sc scp
    gmbh ag kg ohg ug mbh kgaa gbr ev eg bv nv vof cv ltd limited llc llp lp plc inc incorporated
    corp corporation co company pty srl srls spa sapa sl slu sll ab oy oyj aps asa kft sro spzoo
    bvba sprl scrl cie""".split()
)
# Spellings of one form that banks and accounting tools use interchangeably.
_LEGAL_ALIASES = {
    "limited": "ltd", "incorporated": "inc", "corporation": "corp", "sasu": "sas", "eurl": "sarl",
    "slu": "sl", "srls": "srl", "company": "co",
}
# Every prefix of a legal form, so that "ACMESA" (bank truncated "ACME SAS") still counts.
_LEGAL_PREFIXES = frozenset(form[:i] for form in _LEGAL_FORMS for i in range(1, len(form) + 1))
# Words banks put in front of the counterparty ("VIR SEPA", "PRLV", "CARTE", "VIR INST" ...).
_BANK_WORDS = frozenset(
    """vir virt virement virements sepa inst instant instantane instantanee recu recue emis emise
    prlv prelevement prelev sdd sct cb carte card paiement payment pmt achat transfer transfert
    wire ordre de du des from to a vers par remise cheque chq ref dd debit credit avis""".split()
)
_CARD_NOISE = re.compile(r"^(?:x+\d{2,}|\d{1,4}|\d{2}/\d{2}(?:/\d{2,4})?)$")
_DOTTED_ABBREV = re.compile(r"\b((?:[a-z]\.){2,})")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_SPLIT_NAME = re.compile(r"[\s,;:'\"()\[\]]+")
_MASKED_CARD = re.compile(r"x+\d{3,}")


def _fold(text: str) -> str:
    """Lower case without accents (É -> e), so 'Société' and 'SOCIETE' compare equal."""
    if text.isascii():
        return text.lower()
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch)).lower()


@dataclass(frozen=True, slots=True)
class NormalizedName:
    norm: str  # words without bank words and legal forms, space-separated
    tokens: tuple[str, ...]
    compact: str  # norm without spaces: survives banks that glue or truncate words
    compact_full: str  # including the legal form: "acmesas" still starts with bank's "ACMESA"
    legal: str  # the legal form found as separate words ("sas", "gmbhcokg"), or ""
    token_set: frozenset[str]
    sorted_norm: str  # words in alphabetical order: "Dupont Jean" and "Jean Dupont" agree


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
    tokens: list[str] = []
    for tok in _SPLIT_NAME.split(text):
        if not tok:
            continue
        if not tokens and _CARD_NOISE.match(tok):
            continue  # card mask or operation date in front of the merchant name
        tokens.extend(t for t in _NON_ALNUM.split(tok) if t)
    # Leading bank words and card noise ("VIR SEPA", "CARTE 12/03 X1234") are not the name.
    while len(tokens) > 1 and (tokens[0] in _BANK_WORDS or _CARD_NOISE.match(tokens[0])):
        tokens.pop(0)
    tokens = [t for t in tokens if not _MASKED_CARD.fullmatch(t)]
    full = tuple(tokens)
    legal: list[str] = []
    # Legal forms at either end are dropped ("SARL DUPONT", "Dupont Freres SARL").
    while len(tokens) > 1 and tokens[-1] in _LEGAL_FORMS:
        legal.insert(0, _LEGAL_ALIASES.get(tokens[-1], tokens[-1]))
        tokens.pop()
    while len(tokens) > 1 and tokens[0] in _LEGAL_FORMS:
        legal.append(_LEGAL_ALIASES.get(tokens[0], tokens[0]))
        tokens.pop(0)
    name = NormalizedName(" ".join(tokens), tuple(tokens), "".join(tokens), "".join(full), "".join(legal),
                          frozenset(tokens), " ".join(sorted(tokens)))
    if len(_NAME_CACHE) < 500_000:
        _NAME_CACHE[raw] = name
    return name


# Similarity given to a name that matches apart from a different legal form on each side.
_LEGAL_MISMATCH = 78


def name_similarity(a: NormalizedName, b: NormalizedName) -> int:
    """0-100 similarity of a bank-side name ``a`` with a document-side name ``b``.

    Tolerates what banks do to names: drop the legal form, glue words, truncate, keep only the
    first word. A shortened name scores by how much of the legal name it covers, so "DUPONT" is
    closer to "Dupont SAS" (100) than to "Dupont Freres SARL" (about 70); a different legal form
    on both sides ("Dupont SAS" vs "Dupont SARL") caps the score at 86.
    """
    ac, bc = a.compact, b.compact
    if not ac or not bc:
        return 0
    if ac == bc:
        if a.legal and b.legal and a.legal != b.legal:
            return _LEGAL_MISMATCH
        return 100
    if ac.startswith(bc):
        rest = ac[len(bc):]
        if rest in _LEGAL_PREFIXES and not a.legal:
            # The bank glued the legal form, possibly cut short, to the name: "ACMESA".
            if not b.legal:
                return 94
            return 97 if b.legal.startswith(rest) else _LEGAL_MISMATCH
    best = fuzz.ratio(a.norm, b.norm)
    if len(a.tokens) > 1 and len(b.tokens) > 1 and (a.sorted_norm != a.norm or b.sorted_norm != b.norm):
        best = max(best, fuzz.ratio(a.sorted_norm, b.sorted_norm) - 2)  # words reordered
    if len(ac) >= 3 and bc.startswith(ac):
        # Shortened by the bank ("DUPONT" for "Dupont Freres"): worth what it covers.
        best = max(best, int(48 + 47 * len(ac) / len(bc)))
    sa, sb = a.token_set, b.token_set
    if sa != sb:
        if sa <= sb:
            best = max(best, int(48 + 47 * len(ac) / len(bc)))
        elif sb <= sa:
            # Bank adds words (a city, "FRANCE", a branch): weaker than exact, still telling.
            best = max(best, int(60 + 32 * len(bc) / len(ac)))
    if a.legal and b.legal and a.legal != b.legal:
        best = min(best, _LEGAL_MISMATCH)
    return int(min(best, 99))


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

_ALNUM_UP = re.compile(r"[^A-Z0-9]+")
_REF_TOKEN = re.compile(r"[A-Z0-9]+(?:[-/._:][A-Z0-9]+)*")
_DIGITS = re.compile(r"\D+")
_HAS_DIGIT = re.compile(r"\d").search
_NOT_A_REFERENCE = re.compile(
    r"\d{1,2}[/.]\d{1,2}(?:[/.]\d{2,4})?"  # 12/03, 12.03.2026
    r"|\d{4}-\d{2}-\d{2}"  # 2026-03-12
    r"|X+\d{2,6}"  # X4821, XXXX4821
    r"|\d{1,2}[:H]\d{2}"  # 14:05, 14H05
).fullmatch


def _name_key(name: NormalizedName) -> str:
    """Cache key of a normalised name: two bank names with the same key compare alike."""
    return f"{name.norm or name.compact}|{name.legal}"


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

# ---------------------------------------------------------------------------------------------
# The model. Scores are log-odds in nats: prior of the hypothesis + log-likelihood ratios of
# each signal against "this line has nothing to do with that document". The constants are
# rough frequencies of real payment behaviour, not fitted to one data set.
# ---------------------------------------------------------------------------------------------

_P_NO_DOCUMENT = 0.30  # bank fees, taxes, transfers between own accounts ...
_S_NONE = math.log(_P_NO_DOCUMENT / (1 - _P_NO_DOCUMENT))
_NAME_TAU = 5.0  # name affinity exp((sim - 100) / tau): 100 -> 1, 90 -> 0.14, 70 -> 0.0025
_NAME_UNKNOWN = 0.02  # chance the bank shows a name unrelated to the legal name (a brand)
_P_EXACT = 0.85  # payments that settle the open amount to the cent
_P_FEE = 0.03  # payments short of a bank fee
_P_OVER = 0.01  # payments slightly above the invoice
_P_PART = 0.05  # part payments (instalments, deposits)
_P_GROUP = 0.08  # one transfer for several invoices
_ROUND_FRACTIONS = (0.1, 0.2, 0.25, 0.3, 1 / 3, 0.4, 0.5, 0.6, 2 / 3, 0.7, 0.75, 0.8, 0.9)
_DENSITY_PSEUDO = 20.0  # weight, in lines, of the prior amount distribution (small batches)
_LOG_AMOUNT_RANGE = math.log(100_000 / 1)  # prior: amounts even over 1.00 .. 100,000.00 in log
_W_EXACT_MAX = 13.0  # an exact amount never weighs more than this, however rare
_W_REF_FULL = 9.0  # a document's full number quoted (less when several documents share it)
_W_REF_DIGITS = 7.5  # its digits without the letters ("20260042" for INV-2026-0042)
_W_REF_STRONG = 6.0  # from here a quoted number explains the line (a bare "0042" does not)
_W_REF_MISS = -1.5  # the line quotes another document's number
_W_REF_CONFLICT = -3.5  # ... another document of the same counterparty: likely that one
_W_KIND_UNUSUAL = -1.0  # credit notes and unknown kinds: either side, at a cost
_W_SERIES = 4.0  # nearest instance of a recurring invoice when the others are clearly further
_TIE_MARGIN = 0.05  # scores this close are a tie: never auto-posted
_IDENTITY_FEATURES = frozenset({"reference", "tax_id", "iban", "history"})
_LP_NEGLIGIBLE = -6.0  # parties the name gives less than e^-6 of its mass: near amounts ignored
_LP_LINES = -2.5  # a line counts as another instalment of a party only if its name designates it


def _fee_limit(cents: int) -> int:
    """Largest shortfall still read as a bank fee: 5.00, or 1% up to 25.00."""
    return max(500, min(2500, cents // 100))


def _over_limit(cents: int) -> int:
    """Largest overpayment still read as paying this document: 1.00, or 0.5% up to 5.00."""
    return min(500, max(100, cents // 200))


def _date_evidence(pay: int, issue: int, due: int) -> tuple[float, str]:
    """Evidence from when the payment happened relative to the document's dates."""
    before_issue = issue - pay
    if before_issue > 7:
        return max(-12.0, -3.0 - before_issue / 10.0), f"paid {before_issue} days before the issue date"
    if before_issue > 0:
        return 1.0 - 0.3 * before_issue, f"paid {before_issue} days before the issue date"
    late = pay - due
    if late > 45:
        return max(-3.5, 1.5 - (late - 45) / 20.0), f"paid {late} days after due date"
    if late > 0:
        return 1.5, f"paid {late} days after due date"
    if late == 0:
        return 1.5, "paid on due date"
    return 1.5, f"paid {-late} days before due date"


def _round_fraction(part: int, whole: int) -> float | None:
    for f in _ROUND_FRACTIONS:
        if abs(part - whole * f) <= 1.0:
            return f
    return None


# ---------------------------------------------------------------------------------------------
# Prepared data
# ---------------------------------------------------------------------------------------------


class _Party:
    __slots__ = ("key", "display", "name", "tax_ids", "ibans", "docs", "log_n")

    def __init__(self, key: str, display: str, name: NormalizedName) -> None:
        self.key = key
        self.display = display
        self.name = name
        self.tax_ids: set[str] = set()
        self.ibans: set[str] = set()
        self.docs: dict[str, list[int]] = {"debit": [], "credit": []}
        self.log_n: dict[str, float] = {}  # log(number of open documents) per side


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
                 "prior", "prior_default", "refs", "ref_strong", "ref_parties", "tax", "iban", "g", "w_exact",
                 "free")

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
        self.name_key = _name_key(self.name)
        self.parties: list[tuple[int, int]] = []  # (party, similarity), best first
        self.prior: dict[int, float] = {}  # party -> log P(party | bank name)
        self.prior_default = 0.0
        self.refs: dict[int, tuple[float, str]] = {}  # doc -> (weight, explanation)
        self.ref_strong = False
        self.ref_parties: frozenset[int] = frozenset()  # parties of the documents the line quotes
        self.tax = _compact_id(src.counterparty_tax_id) if src.counterparty_tax_id else ""
        self.iban = _compact_id(src.iban) if src.iban else ""
        self.g = 1.0  # chance that a line without document shows this amount (per cent)
        self.w_exact = 0.0  # evidence of a document with exactly this amount
        self.free = True  # no reference and no exact amount explains it at first sight


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

        # Amount buckets per (side, currency): exact lookup plus a sorted list for ranges; and
        # per party, its documents sorted by amount.
        self.by_amount: dict[tuple[str, str, int], list[int]] = {}
        sorted_lists: dict[tuple[str, str], list[tuple[int, int]]] = {}
        by_amount = self.by_amount
        for doc in self.docs:
            pair = (doc.cents, doc.i)
            for side in doc.sides:
                key = (side, doc.cur, doc.cents)
                bucket = by_amount.get(key)
                if bucket is None:
                    by_amount[key] = [doc.i]
                else:
                    bucket.append(doc.i)
                rows = sorted_lists.get((side, doc.cur))
                if rows is None:
                    sorted_lists[(side, doc.cur)] = [pair]
                else:
                    rows.append(pair)
        self.sorted_amounts: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
        for k, rows in sorted_lists.items():
            rows.sort()
            self.sorted_amounts[k] = ([c for c, _ in rows], [i for _, i in rows])
        self.party_sorted: dict[tuple[int, str, str], tuple[list[int], list[int]]] = {}
        self.party_currencies: dict[tuple[int, str], tuple[str, ...]] = {}
        docs = self.docs
        for p, party in enumerate(self.parties):
            party.log_n = {side: math.log(max(1, len(ids))) for side, ids in party.docs.items()}
            for side, ids in party.docs.items():
                if not ids:
                    continue
                by_cur: dict[str, list[tuple[int, int]]] = {}
                for d in ids:
                    doc = docs[d]
                    by_cur.setdefault(doc.cur, []).append((doc.cents, d))
                for cur, rows in by_cur.items():
                    rows.sort()
                    self.party_sorted[(p, side, cur)] = ([c for c, _ in rows], [i for _, i in rows])
                self.party_currencies[(p, side)] = tuple(by_cur)

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
        self.plain_cache: dict[str, list[tuple[int, int]]] = {}
        self.prior_cache: dict[tuple[str, str], tuple[list[tuple[int, int]], dict[int, float], float]] = {}
        self.n_docs_side = {side: sum(len(p.docs[side]) for p in self.parties) for side in ("debit", "credit")}

    # -- names ------------------------------------------------------------------------------

    def similarity(self, tx: _Tx, p: int) -> int:
        key = (tx.name_key, p)
        s = self.sim_cache.get(key)
        if s is None:
            s = name_similarity(tx.name, self.parties[p].name)
            self.sim_cache[key] = s
        return s

    def identify(self, tx: _Tx) -> None:
        """Which parties the bank name designates: P(party | name), shared by equal names.

        A name that fits one party well gives it most of the mass; a name that fits 40 parties
        equally ("ALGOLIA" for every "Algolia ...") spreads it, so the amount and the reference
        have to do the work; a name that fits nobody leaves every party equally (un)likely.
        Parties are also weighted by how many open documents they have on this side: a busy
        supplier pays (or is paid) more often than a namesake with a single invoice, so that
        every open document of equally well-named parties starts level.
        """
        key = (tx.name_key, tx.side)
        cached = self.prior_cache.get(key)
        if cached is None:
            scored = self.block_cache.get(tx.name_key)
            if scored is None:
                scored = self._block(tx)
                self.block_cache[tx.name_key] = scored
            parties = self.parties
            side = tx.side
            exp = math.exp
            weights = [(p, exp((s - 100) / _NAME_TAU) * (len(parties[p].docs[side]) or 1)) for p, s in scored]
            mean_docs = max(1.0, self.n_docs_side.get(side, 0) / max(1, len(parties)))
            z = sum(w for _, w in weights) + _NAME_UNKNOWN * mean_docs
            prior = {p: math.log(w / z) for p, w in weights}
            default = math.log(_NAME_UNKNOWN * mean_docs / z / max(1, len(parties)))
            cached = (scored, prior, default)
            self.prior_cache[key] = cached
        tx.parties, tx.prior, tx.prior_default = cached

    def _block(self, tx: _Tx) -> list[tuple[int, int]]:
        """Parties whose name resembles the bank name (similarity >= 55), best first."""
        name = tx.name
        block: set[int] = set()
        c = name.compact
        if len(c) >= 3:
            block.update(self.by_prefix.get(c[:4] if len(c) >= 4 else c[:3], ()))
        # Plus the parties sharing the name's most distinctive word (reordered names);
        # common words ("services", "france") would drag in half the parties.
        postings = [self.by_token[t] for t in name.tokens if len(t) >= 3 and t in self.by_token]
        if postings:
            rarest = min(postings, key=len)
            if len(rarest) <= 150:
                block.update(rarest)
        parties = self.parties
        # Similarity ignoring the bank side's legal form is shared by "DUPONT" and "DUPONT SAS";
        # the legal form only caps the score where both sides state different ones.
        plain_key = name.norm or name.compact
        plain = self.plain_cache.get(plain_key)
        if plain is None:
            bare = replace(name, legal="") if name.legal else name
            plain = [(p, name_similarity(bare, parties[p].name)) for p in block]
            self.plain_cache[plain_key] = plain
        legal = name.legal
        cache = self.sim_cache
        key = tx.name_key
        scored = []
        for p, s in plain:
            if legal:
                other = parties[p].name.legal
                if other and other != legal and s > _LEGAL_MISMATCH:
                    s = _LEGAL_MISMATCH
            cache[(key, p)] = s
            if s >= 55:
                scored.append((p, s))
        scored.sort(key=lambda ps: -ps[1])
        if scored:
            # 30 points below the best, a party keeps less than e^-6 of the name's mass.
            floor = scored[0][1] - 30
            scored = [ps for ps in scored if ps[1] >= floor]
        return scored


# ---------------------------------------------------------------------------------------------
# Reference extraction
# ---------------------------------------------------------------------------------------------


def _reference_hits(tx: _Tx, index: _Index) -> dict[int, tuple[float, str]]:
    """Documents whose number appears (fully or partly) in the label or the reference.

    Tolerant of spacing, dashes and words around the number ("Facture F-2026 0042",
    "INV20260042", "PAYMENT REF 0042"): the text is cut into words and every run of up to three
    consecutive words is tried with separators removed.
    """
    hits: dict[int, tuple[float, str]] = {}

    def add(found: Sequence[int], w: float, text) -> None:
        w -= math.log(len(found))  # a number several documents share says less
        for d in found:
            if d not in hits or hits[d][0] < w:
                hits[d] = (w, text(d))

    sources = []
    # Invoice numbers contain digits: texts without any cannot quote one.
    if tx.src.reference and _HAS_DIGIT(tx.src.reference):
        sources.append(("reference", tx.src.reference))
    if tx.src.label and tx.src.label != tx.src.reference and _HAS_DIGIT(tx.src.label):
        sources.append(("label", tx.src.label))
    if not sources:
        return hits
    seen: set[str] = set()
    docs = index.docs
    for where, text in sources:
        # Dates and masked card numbers ("CARTE 12/03 X4821") are not invoice numbers.
        tokens = [t for t in _REF_TOKEN.findall(_fold(text).upper()) if not _NOT_A_REFERENCE(t)]
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
                    add(found, _W_REF_FULL, lambda d, where=where: f"reference {docs[d].number} found in {where}")
                    continue
                if len(digits) >= 6:
                    found = index.by_digits.get(digits)
                    if found:
                        add(found, _W_REF_DIGITS,
                            lambda d, where=where, shown=shown: f"number {docs[d].number} found in {where} as {shown}")
                        continue
                if key == digits and len(digits) >= 4:
                    # A bare number: the end of an invoice number ("0042" for F-2026-0042).
                    found = index.by_last4.get(digits[-4:])
                    if found and len(found) <= 60:
                        found = [d for d in found if docs[d].digits != digits and docs[d].digits.endswith(digits)]
                        if found:
                            add(found, min(7.0, 5.0 + 0.5 * (len(digits) - 4)),
                                lambda d, shown=shown: f"partial reference {shown} matches {docs[d].number}")
                        continue
                if len(key) >= 7 and len(digits) >= 4 and j == n - 1:
                    # Last word of a text the bank cut short: a prefix of the number.
                    keys = index.sorted_keys
                    lo = bisect_left(keys, key)
                    hi = bisect_left(keys, key + "\x7f", lo)
                    if 0 < hi - lo <= 10:
                        found = [d for k in keys[lo:hi] for d in index.by_key[k]]
                        add(found, min(6.0, 3.0 + 0.5 * (len(key) - 6)),
                            lambda d, shown=shown: f"truncated reference {shown} matches {docs[d].number}")
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
        return a / b, 0.03  # no observation: a static rate is only good to a few percent

    def learn(self, txs: list[_Tx], index: _Index) -> None:
        """Re-centre each pair on rates implied by payments whose reference names the document."""
        samples: dict[tuple[str, str], list[float]] = defaultdict(list)
        for tx in txs:
            for d, (w, _) in tx.refs.items():
                if w < _W_REF_DIGITS - 0.01:
                    continue
                doc = index.docs[d]
                if doc.cur == tx.cur or tx.side not in doc.sides or doc.cents == 0:
                    continue
                prior = self.rate(doc.cur, tx.cur)
                if prior is None or tx.prior.get(doc.party, -99.0) < -1.0:
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
    """A hypothesis with its evidence spelled out (built for the candidates that are shown)."""

    __slots__ = ("docs", "alloc", "score", "feats", "how")

    def __init__(self, docs: tuple[int, ...], alloc: tuple[int, ...], how: str) -> None:
        self.docs = docs
        self.alloc = alloc  # cents, document currency
        self.score = 0.0
        self.feats: list = []  # (name, weight, text or callable giving the text)
        self.how = how  # exact | fee | over | partial | fx | group

    def add(self, name: str, w: float, text) -> None:
        self.score += w
        self.feats.append((name, w, text))


def _date_weight(pay: int, issue: int, due: int) -> float:
    """Numeric part of :func:`_date_evidence` (the hot path needs no sentence)."""
    before_issue = issue - pay
    if before_issue > 7:
        return max(-12.0, -3.0 - before_issue / 10.0)
    if before_issue > 0:
        return 1.0 - 0.3 * before_issue
    late = pay - due
    if late > 45:
        return max(-3.5, 1.5 - (late - 45) / 20.0)
    return 1.5


class _Matcher:
    def __init__(self, index: _Index, txs: list[_Tx], history: History | None) -> None:
        self.index = index
        self.history = history
        self.txs = txs
        self.fx = _Fx()
        # How many documents share each amount: an exact match on a common amount (a round
        # fee, a subscription price) says much less than on 1,234.56.
        self.amount_count = {k: len(v) for k, v in index.by_amount.items()}
        self.tx_amounts: dict[tuple[str, str, int], int] = defaultdict(int)
        self.tx_sorted: dict[tuple[str, str], list[int]] = {}
        self.free_sorted: dict[tuple[str, str], list[int]] = {}
        # Lines by bank name, and bank names by the party they may designate: finds the other
        # instalment of a split without comparing every pair of lines.
        self.tx_by_name: dict[tuple[str, str], dict[int, list[int]]] = {}
        self.names_by_party: dict[int, list[tuple[str, str, float]]] = defaultdict(list)
        self.party_lines: dict[tuple[int, str], tuple[dict[int, list[tuple[int, float]]], int]] = {}
        self.named_cache: dict[tuple[str, str], dict[str, tuple[list[int], list[int]]]] = {}
        self.density_cache: dict[tuple, float] = {}

    # -- batch-level statistics ---------------------------------------------------------------

    def index_transactions(self) -> None:
        rows: dict[tuple[str, str], list[int]] = defaultdict(list)
        free: dict[tuple[str, str], list[int]] = defaultdict(list)
        for tx in self.txs:
            key = (tx.side, tx.cur)
            self.tx_amounts[(tx.side, tx.cur, tx.cents)] += 1
            rows[key].append(tx.cents)
            self.tx_by_name.setdefault((tx.name_key, tx.side), {}).setdefault(tx.cents, []).append(tx.i)
            tx.free = not self._explained(tx)
            if tx.free:
                free[key].append(tx.cents)
        self.tx_sorted = {k: sorted(v) for k, v in rows.items()}
        self.free_sorted = {k: sorted(v) for k, v in free.items()}
        for (name_key, side), (_, prior, _) in self.index.prior_cache.items():
            for p, lp in prior.items():
                if lp >= _LP_LINES:
                    self.names_by_party[p].append((name_key, side, lp))

    def _explained(self, tx: _Tx) -> bool:
        """A quotable reference, or a document of the named counterparty with this exact amount."""
        if tx.ref_strong:
            return True
        bucket = self.index.by_amount.get((tx.side, tx.cur, tx.cents))
        if not bucket:
            return False
        prior = tx.prior
        if len(bucket) <= 2 * len(prior):
            docs = self.index.docs
            return any(prior.get(docs[d].party, -99.0) >= -4.0 for d in bucket)
        # A round price shared by hundreds of documents: look from the named parties instead.
        party_sorted = self.index.party_sorted
        for p, lp in prior.items():
            if lp >= -4.0:
                found = party_sorted.get((p, tx.side, tx.cur))
                if found:
                    k = bisect_left(found[0], tx.cents)
                    if k < len(found[0]) and found[0][k] == tx.cents:
                        return True
        return False

    def density(self, side: str, cur: str, cents: int, own: _Tx | None) -> float:
        """Chance that a line with no document here shows exactly this amount (per cent).

        Estimated from this batch: mostly from the lines that no reference or exact amount
        explains (fees, taxes and card spend cluster in small amounts), blended with all lines
        and documents around the amount, plus the share of lines with exactly this amount (round
        prices repeat). ``own`` is left out of the counts.
        """
        memo = (side, cur, cents, own is not None and own.free, own is None)
        found = self.density_cache.get(memo)
        if found is not None:
            return found
        half = max(100, cents // 100)
        width = 2 * half + 1
        lo, hi = cents - half, cents + half
        txs = self.tx_sorted.get((side, cur), ())
        in_tx = bisect_right(txs, hi) - bisect_left(txs, lo)
        docs = self.index.sorted_amounts.get((side, cur), ((), ()))[0]
        in_doc = bisect_right(docs, hi) - bisect_left(docs, lo)
        free = self.free_sorted.get((side, cur), ())
        in_free = bisect_right(free, hi) - bisect_left(free, lo)
        same_tx = self.tx_amounts.get((side, cur, cents), 0)
        n_tx, n_free = len(txs), len(free)
        if own is not None:
            in_tx -= 1
            same_tx -= 1
            n_tx -= 1
            if own.free:
                in_free -= 1
                n_free -= 1
        n_doc = len(docs)
        # Small batches say little: counts are shrunk towards a prior worth _DENSITY_PSEUDO
        # lines, where amounts spread evenly over orders of magnitude (1.00 to 100,000.00) and
        # a quarter of them are round (whole euros, tens, hundreds).
        k = _DENSITY_PSEUDO
        roundness = 0.75
        if cents % 100 == 0:
            roundness += 10.0
            if cents % 1000 == 0:
                roundness += 70.0
                if cents % 10000 == 0:
                    roundness += 800.0
        base = k * roundness / (max(cents, 100) * _LOG_AMOUNT_RANGE)
        local = 0.5 * ((in_tx / width + base) / (max(0, n_tx) + k) + (in_doc / width + base) / (n_doc + k))
        if n_free >= 20:
            local = 0.7 * (in_free / width + base) / (n_free + k) + 0.3 * local
        same_doc = self.amount_count.get((side, cur, cents), 0)
        found = local + 0.5 * (max(0, same_tx) / (max(0, n_tx) + k) + max(0, same_doc - 1) / (n_doc + k))
        self.density_cache[memo] = found
        return found

    def _party_lines(self, p: int, side: str) -> tuple[dict[int, list[tuple[int, float]]], int]:
        """Lines whose bank name may designate party p: amount -> [(line, log P(p | name))]."""
        key = (p, side)
        found = self.party_lines.get(key)
        if found is None:
            by_amount: dict[int, list[tuple[int, float]]] = {}
            n = 0
            for name_key, name_side, lp in self.names_by_party.get(p, ()):
                if name_side != side:
                    continue
                bucket = self.tx_by_name.get((name_key, side))
                if bucket:
                    for cents, lines in bucket.items():
                        slot = by_amount.setdefault(cents, [])
                        slot.extend((o, lp) for o in lines)
                        n += len(lines)
            found = (by_amount, n)
            self.party_lines[key] = found
        return found

    # -- evidence pieces ----------------------------------------------------------------------

    @staticmethod
    def _fee_weight(tx: _Tx, diff: int) -> float:
        # Fees are tariffs: a round shortfall (2.50, 15.00) is likelier than 2.37.
        limit = _fee_limit(tx.cents + diff)
        p_diff = 0.8 / max(1, limit // 50) if diff % 50 == 0 else 0.2 / limit
        return math.log(_P_FEE * p_diff / tx.g)

    def _partial_weight(self, tx: _Tx, doc: _Doc) -> tuple[float, tuple[int, float] | None]:
        """Part payment: likely when it is a round share or another line pays the rest."""
        share = _round_fraction(tx.cents, doc.cents)
        # Deposits and instalments are usually round shares (30%, 50%, a third) of the total.
        p_amount = 0.6 / len(_ROUND_FRACTIONS) / 3 if share is not None else 0.4 / doc.cents
        w = math.log(_P_PART * p_amount / tx.g)
        partner = self._instalment_partner(tx, doc)
        if partner is not None:
            w += partner[1]
        return w, partner

    def _instalment_partner(self, tx: _Tx, doc: _Doc) -> tuple[int, float] | None:
        """Another line of the same counterparty paying exactly the rest of the document."""
        rest = doc.cents - tx.cents
        lines, n_lines = self._party_lines(doc.party, tx.side)
        best: tuple[int, float] | None = None
        txs = self.txs
        for o, lp in lines.get(rest, ()):
            if o != tx.i and txs[o].cur == tx.cur and txs[o].pay >= doc.issue - 7:
                if best is None or lp > best[1]:
                    best = (o, lp)
        if best is None:
            return None
        # Chance that some line of this counterparty has exactly that amount anyway (the
        # partner itself left out of the count).
        chance = n_lines * self.density(tx.side, tx.cur, rest, txs[best[0]])
        return best[0], math.log1p(0.8 * math.exp(best[1]) / max(chance, 1e-9))

    def _id_evidence(self, tx: _Tx, p: int) -> list[tuple[str, float, str]]:
        """Tax id, IBAN and the organisation's history about this bank name."""
        party = self.index.parties[p]
        out = []
        if tx.tax and party.tax_ids:
            if tx.tax in party.tax_ids:
                out.append(("tax_id", 6.0, f"tax id {tx.tax} matches"))
            else:
                out.append(("tax_id", -4.0, f"tax id {tx.tax} differs from {', '.join(sorted(party.tax_ids))}"))
        if tx.iban and party.ibans:
            if tx.iban in party.ibans:
                out.append(("iban", 6.0, f"IBAN …{tx.iban[-4:]} matches the document's"))
            else:
                out.append(("iban", -3.0, "IBAN differs from the document's"))
        if self.history is not None:
            seen = self.history.lookup(tx.name_key)
            if seen:
                total = sum(seen.values())
                mine = seen.get(party.key, 0)
                if mine:
                    out.append(("history", math.log1p(6.0 * mine / total) + min(1.0, 0.3 * (mine - 1)),
                                f"{mine} of {total} past matches of this bank name went to {party.display}"))
                elif total >= 2:
                    out.append(("history", -1.0, f"{total} past matches of this bank name went to other counterparties"))
        return out

    def _identifies(self, tx: _Tx, docs: tuple[int, ...], candidate: Candidate) -> bool:
        """Whether the line says who it pays and that is the candidate's counterparty: a line
        naming nobody (``CARTE 1234``) gives no name evidence either way; otherwise the name must
        fit the documents' party, or a quoted number, tax id, IBAN or history must point at it.
        A name is a word of three letters or more that is not a bank's (``SEPA``, ``CB``...)."""
        if not any(len(t) >= 3 and not t.isdigit() and t not in _BANK_WORDS for t in tx.name.tokens):
            return True
        parties = {self.index.docs[d].party for d in docs}
        if any(p in tx.prior for p in parties):
            return True
        return any(f.name in _IDENTITY_FEATURES and f.score > 0 for f in candidate.features)

    def _party_features(self, h: _Hyp, tx: _Tx, p: int, n_docs: int) -> None:
        index = self.index
        party = index.parties[p]

        def name_text() -> str:
            sim = index.similarity(tx, p)
            shown = tx.src.counterparty or tx.src.label
            return f"name {sim}% similar ({shown} / {party.display})"

        h.add("name", tx.prior.get(p, tx.prior_default), name_text)
        if n_docs > 1:
            h.add("prior", -math.log(n_docs), f"one of {n_docs} open documents of {party.display} on this side")
        if tx.tax or tx.iban or self.history is not None:
            for name, w, text in self._id_evidence(tx, p):
                h.add(name, w, text)

    def _single(self, tx: _Tx, d: int, explain: bool = False):
        """Score 'tx settles document d alone' (fully, net of a fee, in FX, or in part).

        Returns None when impossible, ``(score, how)`` on the hot path, or the spelled-out
        hypothesis when ``explain`` is set (only for the candidates that are shown).
        """
        index = self.index
        doc = index.docs[d]
        if tx.side not in doc.sides:
            return None
        partner = None
        if doc.cur == tx.cur:
            diff = doc.cents - tx.cents
            if diff == 0:
                how = "exact"
                w = tx.w_exact
            elif 0 < diff <= _fee_limit(doc.cents):
                how = "fee"
                w = self._fee_weight(tx, diff)
            elif diff > 0:
                how = "partial"
                w, partner = self._partial_weight(tx, doc)
            elif -diff <= _over_limit(doc.cents):
                how = "over"
                w = math.log(_P_OVER / _over_limit(doc.cents) / tx.g)
            else:
                return None  # pays more than the document: at best part of a group
        else:
            rate = self.fx.rate(doc.cur, tx.cur)
            if rate is None or doc.cents == 0:
                return None
            center, spread = rate
            implied = tx.cents / doc.cents
            z = abs(implied / center - 1) / spread
            if z > 4:
                return None
            how = "fx"
            density = math.exp(-0.5 * z * z) / (2.5066 * spread * doc.cents * center)
            w = min(_W_EXACT_MAX - 2.0, math.log(density / tx.g))
        p = doc.party
        ref = tx.refs.get(d)
        if ref is not None:
            rw = ref[0]
        elif tx.ref_strong:
            rw = _W_REF_CONFLICT if p in tx.ref_parties else _W_REF_MISS
        else:
            rw = 0.0
        party = index.parties[p]
        dw = _date_weight(tx.pay, doc.issue, doc.due)
        score = w + rw + tx.prior.get(p, tx.prior_default) - party.log_n[tx.side] + dw + doc.kind_penalty
        if not explain:
            if tx.tax or tx.iban or self.history is not None:
                score += sum(x[1] for x in self._id_evidence(tx, p))
            return score, how

        h = _Hyp((d,), (tx.cents if how == "partial" else doc.cents,), how)
        if how == "exact":
            text = "amount equal"
        elif how == "fee":
            diff = doc.cents - tx.cents
            text = f"amount {_money(diff)} short of the invoice" + (" (a round fee)" if diff % 50 == 0 else " (bank fee?)")
        elif how == "over":
            text = f"amount {_money(tx.cents - doc.cents)} above the invoice"
        elif how == "partial":
            text = f"partial payment: {_money(tx.cents)} of {_money(doc.cents)} ({tx.cents * 100 / doc.cents:.0f}%)"
            if partner is not None:
                o = self.txs[partner[0]]
                text += (f"; with {o.src.id} of {o.src.date.isoformat()} ({_money(o.cents)}) "
                         f"it settles the invoice exactly")
        else:
            implied = tx.cents / doc.cents
            center = self.fx.rate(doc.cur, tx.cur)[0]  # type: ignore[index]
            text = (f"{_money(doc.cents)} {doc.cur} paid as {_money(tx.cents)} {tx.cur} "
                    f"(rate {implied:.4f}, {(implied / center - 1) * 100:+.1f}% from the usual rate)")
        h.add("amount", w, text)
        if ref is not None:
            h.add("reference", ref[0], ref[1])
        elif tx.ref_strong and p in tx.ref_parties:
            h.add("reference", _W_REF_CONFLICT, "the reference quotes another invoice of this counterparty")
        elif tx.ref_strong:
            h.add("reference", _W_REF_MISS, "the reference quotes another document")
        self._party_features(h, tx, p, len(party.docs[tx.side]))
        h.add("date", dw, _date_evidence(tx.pay, doc.issue, doc.due)[1])
        if doc.kind_penalty:
            h.add("kind", doc.kind_penalty, f"{doc.src.kind.replace('_', ' ')} on a {tx.side}")
        return h

    def _group(self, tx: _Tx, docs: tuple[int, ...], n_pool: int) -> _Hyp:
        index = self.index
        rows = [index.docs[d] for d in docs]
        p = rows[0].party
        h = _Hyp(docs, tuple(r.cents for r in rows), "group")
        total = sum(r.cents for r in rows)
        k = len(rows)
        if total == tx.cents:
            h.add("amount", tx.w_exact, f"amount equals the sum of {k} invoices")
        else:
            diff = total - tx.cents
            h.add("amount", self._fee_weight(tx, diff), f"sum of {k} invoices, {_money(diff)} short (bank fee)")
        found = [r for r in (tx.refs.get(d) for d in docs) if r]
        if found:
            h.add("reference", sum(r[0] for r in found) + _W_REF_MISS * (k - len(found)),
                  "; ".join(r[1] for r in found))
        elif tx.ref_strong:
            h.add("reference", _W_REF_MISS, "the reference quotes other documents")
        # Prior: a grouped payment, and which k of the counterparty's open invoices.
        n_pool = max(n_pool, k)
        h.add("group", math.log(_P_GROUP) - math.log(math.comb(n_pool, k)),
              f"{k} of {n_pool} open invoices of {index.parties[p].display} paid together")
        self._party_features(h, tx, p, 1)
        dates = [_date_evidence(tx.pay, r.issue, r.due) for r in rows]
        h.add("date", sum(w for w, _ in dates) / k,
              "; ".join(f"{r.number}: {t}" for r, (_, t) in zip(rows, dates, strict=True)))
        return h

    # -- per transaction ----------------------------------------------------------------------

    def _named_docs(self, tx: _Tx) -> dict[str, tuple[list[int], list[int]]]:
        """Open documents of the parties the bank name may designate, per currency, by amount.

        Shared by every line with the same bank name and side, so that a vague name ("NOVA",
        matching forty parties) costs one lookup per window instead of one per party.
        """
        key = (tx.name_key, tx.side)
        found = self.named_cache.get(key)
        if found is None:
            party_sorted = self.index.party_sorted
            parts: dict[str, list[tuple[list[int], list[int]]]] = {}
            for p, lp in tx.prior.items():
                if lp < _LP_NEGLIGIBLE:
                    continue
                for cur in self.index.party_currencies.get((p, tx.side), ()):
                    parts.setdefault(cur, []).append(party_sorted[(p, tx.side, cur)])
            found = {}
            for cur, arrays in parts.items():
                if len(arrays) == 1:
                    found[cur] = arrays[0]
                    continue
                pairs = []
                for cents, ids in arrays:
                    pairs.extend(zip(cents, ids, strict=True))
                pairs.sort()
                found[cur] = ([c for c, _ in pairs], [d for _, d in pairs])
            self.named_cache[key] = found
        return found

    def _candidates(self, tx: _Tx) -> set[int]:
        """Documents worth scoring for this line, found through the indexes only."""
        index = self.index
        docs = index.docs
        prior = tx.prior
        t = tx.cents
        cand: set[int] = set(tx.refs)
        # Exact amount: every document when few share it; among hundreds sharing a round price,
        # only those of counterparties the name designates.
        bucket = index.by_amount.get((tx.side, tx.cur, t), ())
        if len(bucket) <= 30:
            cand.update(bucket)
        if tx.ref_strong:
            # Quoted number, exact amount and name agree: near amounts cannot compete with that.
            for d, (w, _) in tx.refs.items():
                doc = docs[d]
                if (w >= _W_REF_DIGITS - 0.01 and doc.cents == t and doc.cur == tx.cur
                        and tx.side in doc.sides and prior.get(doc.party, -99.0) >= -1.5):
                    return cand
        if not prior:
            # A name that designates nobody: near amounts only when very few documents are close.
            srt = index.sorted_amounts.get((tx.side, tx.cur))
            if srt:
                a = bisect_left(srt[0], t - _over_limit(t))
                b = bisect_right(srt[0], t + _fee_limit(t))
                if b - a <= 10:
                    cand.update(srt[1][a:b])
            return cand
        named = self._named_docs(tx)
        own = named.get(tx.cur)
        if own is not None:
            cents, ids = own
            # Exact, a little more than the line (a fee taken on the way) or a little less.
            a = bisect_left(cents, t - _over_limit(t))
            b = bisect_right(cents, t + _fee_limit(t))
            cand.update(ids[a:b])
        # Documents in another currency, converted at a plausible rate.
        for cur, (cents, ids) in named.items():
            if cur == tx.cur:
                continue
            rate = self.fx.rate(cur, tx.cur)
            if rate is None:
                continue
            center, spread = rate
            a = bisect_left(cents, t / (center * (1 + 4 * spread)))
            b = bisect_right(cents, t / (center * (1 - 4 * spread)))
            cand.update(ids[a:b])
        if tx.free and own is not None:
            # Part payments of documents of a counterparty the name designates: a round share
            # of the document, or the rest paid by another line of the same counterparty.
            cents, ids = own
            for f in _ROUND_FRACTIONS:
                a = bisect_left(cents, (t - 1) / f)
                b = bisect_right(cents, (t + 1) / f)
                for k in range(a, b):
                    d = ids[k]
                    if cents[k] > t:
                        cand.add(d)
            for p, lp in prior.items():
                if lp < -2.5:
                    continue
                lines = self._party_lines(p, tx.side)[0]
                for d in index.parties[p].docs[tx.side]:
                    doc = docs[d]
                    if doc.cents > t and doc.cur == tx.cur:
                        others = lines.get(doc.cents - t)
                        if others and (len(others) > 1 or others[0][0] != tx.i):
                            cand.add(d)
        return cand

    def _series_dates(self, tx: _Tx, singles: list[list]) -> dict[int, tuple[float, str]]:
        """Tell apart recurring invoices of one counterparty with the same amount by date.

        The instance issued just before the payment wins only when every other instance is
        clearly further away (issued at least 20 days apart and not due around the payment
        date); otherwise they stay tied and go to review.
        """
        docs = self.index.docs
        groups: dict[tuple[int, int], list[list]] | None = None
        for row in singles:
            if row[2] == "exact" or row[2] == "fee":
                doc = docs[row[1]]
                if groups is None:
                    groups = defaultdict(list)
                groups[(doc.party, doc.cents)].append(row)
        bonus: dict[int, tuple[float, str]] = {}
        if not groups:
            return bonus
        for members in groups.values():
            if len(members) < 2:
                continue
            rows = [docs[m[1]] for m in members]
            lags = [tx.pay - r.issue for r in rows]
            order = sorted(range(len(members)), key=lambda k: (lags[k] < -3, abs(lags[k])))
            first = order[0]
            if not (-3 <= lags[first] <= 10):
                continue
            if any(abs(rows[k].issue - rows[first].issue) < 20 or abs(tx.pay - rows[k].due) <= 5
                   for k in order[1:]):
                continue
            members[first][0] += _W_SERIES
            bonus[members[first][1]] = (
                _W_SERIES,
                f"issued {lags[first]} days before payment; the other open invoices with this amount "
                f"are at least 20 days apart",
            )
        return bonus

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
            fee = _fee_limit(tx.cents)
            pool = self._pool(tx, p)
            for k in range(len(docs), 1, -1):
                for combo in combinations(docs, k):
                    total = sum(index.docs[d].cents for d in combo)
                    if 0 <= total - tx.cents <= fee:
                        out.append(self._group(tx, combo, len(pool)))
        return out

    def _pool(self, tx: _Tx, p: int) -> list[_Doc]:
        """A party's open documents that could be part of a grouped payment on this line."""
        found = self.index.party_sorted.get((p, tx.side, tx.cur))
        if not found:
            return []
        docs = self.index.docs
        lo, hi = tx.pay - 200, tx.pay + 3
        end = bisect_left(found[0], tx.cents)
        return [r for r in (docs[d] for d in found[1][:end]) if lo <= r.issue <= hi]

    def _groups_from_party(self, tx: _Tx) -> list[_Hyp]:
        """Subsets (2-4 invoices) of one counterparty's open invoices adding up to the line."""
        out = []
        ranked = sorted(tx.prior.items(), key=lambda kv: -kv[1])[:80]
        target = tx.cents
        for p, lp in ranked:
            if lp < -5.5:
                break
            rows = self._pool(tx, p)
            n = len(rows)
            if n < 2 or n > 60 or sum(r.cents for r in rows) < target:
                continue
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
            # Triples: a pair plus one more; quadruples: two disjoint pairs.
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
            for combo in found[:20]:
                out.append(self._group(tx, tuple(rows[k].i for k in combo), n))
        return out

    def result(self, tx: _Tx, auto_threshold: int, review_threshold: int) -> Result:
        tx.g = self.density(tx.side, tx.cur, tx.cents, tx)
        tx.w_exact = min(_W_EXACT_MAX, math.log(_P_EXACT / tx.g))
        singles: list[list] = []
        for d in self._candidates(tx):
            r = self._single(tx, d)
            if r is not None:
                singles.append([r[0], d, r[1]])
        bonus = self._series_dates(tx, singles)
        best = max((row[0] for row in singles), default=-99.0)
        groups = self._groups_from_refs(tx)
        if tx.free and best < _S_NONE + 4.0:
            groups.extend(self._groups_from_party(tx))
        entries: list[tuple[float, tuple[int, ...], _Hyp | None]] = [(row[0], (row[1],), None) for row in singles]
        seen: set[frozenset[int]] = set()
        for g in groups:
            key = frozenset(g.docs)
            if key not in seen:
                seen.add(key)
                entries.append((g.score, g.docs, g))
        if not entries:
            return Result(tx.src.id, "refused", 0, [])
        entries.sort(key=lambda e: (-e[0], len(e[1]), e[1]))
        top = max(entries[0][0], _S_NONE)
        norm = math.exp(_S_NONE - top) + sum(math.exp(e[0] - top) for e in entries)
        kept = entries[:5]
        candidates = []
        docs = self.index.docs
        for score, ids, h in kept:
            if h is None:
                h = self._single(tx, ids[0], explain=True)
                extra = bonus.get(ids[0])
                if extra is not None:
                    h.add("series", extra[0], extra[1])
            conf = min(99, int(math.exp(score - top) / norm * 100))
            if h.how == "partial":
                alloc: tuple[Decimal, ...] = (abs(tx.src.amount),)
            else:
                alloc = tuple(docs[d].src.amount for d in h.docs)
            candidates.append(Candidate(
                tuple(docs[d].src.id for d in h.docs),
                alloc,
                conf,
                [Feature(n, round(w, 2), t() if callable(t) else t) for n, w, t in h.feats],
            ))
        conf = candidates[0].confidence
        tied = len(kept) > 1 and kept[0][0] - kept[1][0] < _TIE_MARGIN
        if tied and conf >= auto_threshold:
            conf = auto_threshold - 1  # equal evidence for two answers is never auto-posted
        if conf >= auto_threshold and not self._identifies(tx, kept[0][1], candidates[0]):
            # The bank names someone, and not this counterparty; nothing else (number, tax id,
            # IBAN, history) says it is them. An equal amount on the right dates is how a
            # stranger's payment looks too: a person decides.
            conf = auto_threshold - 1
            top = candidates[0]
            candidates[0] = top._replace(confidence=conf, features=[*top.features, Feature(
                "identity", 0.0,
                f"the bank names {tx.src.counterparty or tx.src.label!r}, which is not this counterparty, "
                "and no number, tax id or IBAN says it is: not posted without a person")])
        if conf >= auto_threshold:
            decision = "auto"
        elif conf >= review_threshold:
            decision = "review"
        elif tied and conf * 3 >= review_threshold and sum(
                c.confidence for c, e in zip(candidates, kept, strict=False)
                if kept[0][0] - e[0] < _TIE_MARGIN) >= review_threshold:
            # Two or three equally good answers (a recurring invoice, two namesakes) that
            # together are likely: a person picks one, the engine never guesses.
            decision = "review"
        else:
            decision = "refused"
        return Result(tx.src.id, decision, conf, candidates)


def _build(transactions: Sequence[Transaction], documents: Sequence[Document],
           history: History | None) -> _Matcher:
    """Indexes of the documents and the working records of the lines."""
    index = _Index(documents)
    txs = [_Tx(i, t) for i, t in enumerate(transactions)]
    return _Matcher(index, txs, history)


def _pass1(matcher: _Matcher, part: Sequence[_Tx]) -> tuple[dict, list[dict[int, tuple[float, str]]]]:
    """Who each line is likely to be, and which numbers it quotes; returned to share."""
    index = matcher.index
    for tx in part:
        index.identify(tx)
        tx.refs = _reference_hits(tx, index)
    return index.prior_cache, [tx.refs for tx in part]


def _adopt(matcher: _Matcher, part: Sequence[_Tx], shared: tuple[dict, list]) -> None:
    """Take over pass 1 of lines another process did (see :func:`_pass1`)."""
    priors, refs = shared
    cache = matcher.index.prior_cache
    for key, value in priors.items():
        cache.setdefault(key, value)
    for tx, found in zip(part, refs, strict=True):
        tx.refs = found
        tx.parties, tx.prior, tx.prior_default = cache[(tx.name_key, tx.side)]


def _finish(matcher: _Matcher) -> None:
    """Batch statistics the scores need: amount densities, lines per party, exchange rates."""
    docs = matcher.index.docs
    for tx in matcher.txs:
        strong = [d for d, (w, _) in tx.refs.items() if w >= _W_REF_STRONG]
        tx.ref_strong = bool(strong)
        tx.ref_parties = frozenset(docs[d].party for d in strong)
    matcher.index_transactions()
    matcher.fx.learn(matcher.txs, matcher.index)


def _prepare(transactions: Sequence[Transaction], documents: Sequence[Document],
             history: History | None) -> _Matcher:
    """Everything before scoring, in this process."""
    matcher = _build(transactions, documents, history)
    _pass1(matcher, matcher.txs)
    _finish(matcher)
    return matcher


def reconcile(
    transactions: Sequence[Transaction],
    documents: Sequence[Document],
    *,
    auto_threshold: int = 85,
    review_threshold: int = 55,
    history: History | None = None,
    workers: int = 1,
) -> list[Result]:
    """Match every transaction against the open documents; one Result per transaction, in order.

    ``auto`` when the best candidate's confidence reaches ``auto_threshold`` and it is not tied,
    ``review`` from ``review_threshold``, otherwise ``refused`` (candidates are still listed).

    ``workers`` > 1 spreads large batches over forked processes (POSIX only). Only for
    single-threaded callers such as the command-line runner: forking a threaded web or queue
    worker is unsafe, so the engine silently stays in-process when other threads are alive.
    The answers are the same either way.
    """
    # The batch builds millions of small acyclic objects; generational garbage collection
    # passes over them would cost a third of the run and free nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        if (workers > 1 and len(transactions) >= 2000 and hasattr(os, "fork")
                and threading.active_count() == 1):
            found = _reconcile_forked(transactions, documents, history, auto_threshold, review_threshold,
                                      min(workers, 8))
            if found is not None:
                return found
        matcher = _prepare(transactions, documents, history)
        return [matcher.result(tx, auto_threshold, review_threshold) for tx in matcher.txs]
    finally:
        if collecting:
            gc.enable()


def _send(fd: int, obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    os.write(fd, len(data).to_bytes(8, "little"))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _receive(fd: int) -> object:
    def exactly(n: int) -> bytes:
        chunks, left = [], n
        while left:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise EOFError("worker process ended early")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    return pickle.loads(exactly(int.from_bytes(exactly(8), "little")))


def _reconcile_forked(transactions: Sequence[Transaction], documents: Sequence[Document],
                      history: History | None, auto_threshold: int, review_threshold: int,
                      workers: int) -> list[Result] | None:
    """The same work spread over forked processes, each owning a slice of the lines.

    Every process builds its own indexes (so nothing large is shared copy-on-write), does pass
    1 for its slice and trades it through this process, then scores its slice. Returns None
    when a worker fails, so the caller does everything here instead.
    """
    n = len(transactions)
    size = -(-n // workers)
    bounds = [(k, min(n, k + size)) for k in range(0, n, size)]
    children: list[tuple[int, int, int]] = []  # pid, read end (from child), write end (to child)
    for k in range(1, len(bounds)):
        up_r, up_w = os.pipe()
        down_r, down_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # worker k: leaves without running the parent's cleanup
            status = 1
            try:
                os.close(up_r)
                os.close(down_w)
                for _, r, w in children:
                    os.close(r)
                    os.close(w)
                matcher = _build(transactions, documents, history)
                lo, hi = bounds[k]
                mine = matcher.txs[lo:hi]
                _send(up_w, _pass1(matcher, mine))
                others = _receive(down_r)
                for j, shared in others.items():
                    a, b = bounds[j]
                    _adopt(matcher, matcher.txs[a:b], shared)
                _finish(matcher)
                _send(up_w, [matcher.result(tx, auto_threshold, review_threshold) for tx in mine])
                status = 0
            finally:
                os._exit(status)
        os.close(up_w)
        os.close(down_r)
        children.append((pid, up_r, down_w))
    try:
        matcher = _build(transactions, documents, history)
        lo, hi = bounds[0]
        shares = {0: _pass1(matcher, matcher.txs[lo:hi])}
        for k, (_, r, _) in enumerate(children, start=1):
            shares[k] = _receive(r)
        for k, (_, _, w) in enumerate(children, start=1):
            _send(w, {j: shared for j, shared in shares.items() if j != k})
        for k in range(1, len(bounds)):
            a, b = bounds[k]
            _adopt(matcher, matcher.txs[a:b], shares[k])
        _finish(matcher)
        results = [matcher.result(tx, auto_threshold, review_threshold) for tx in matcher.txs[lo:hi]]
        for _, r, _ in children:
            results.extend(_receive(r))
        return results
    except (EOFError, OSError, pickle.UnpicklingError):
        for pid, _, _ in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return None
    finally:
        for pid, r, w in children:
            for fd in (r, w):
                try:
                    os.close(fd)
                except OSError:
                    pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


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
