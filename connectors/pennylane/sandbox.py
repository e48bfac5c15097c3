"""A fake of Pennylane's public API, written from ``/work/shared/reference/pennylane-api.md``.

Section numbers (§) below are the reference's. The hub talks to Pennylane as an accounting firm:
one firm API token (§2.2) reaches the firm's client companies (§4), and every accounting resource
lives under ``/api/external/firm/v1/companies/{company_id}/…``. What is served:

* Firm API v1 (§4): ``GET /companies`` and ``/companies/{id}`` (page/per_page paging, ``client_code``
  filter), and per company: fiscal years (list in page mode, create), journals, ledger accounts
  (general accounts and 401/411 auxiliaries; creating a 401/411 account creates the supplier or
  customer, §4 last bullet), ledger entries (create with Pennylane's validation, list, show,
  update), ledger entry lines, file attachments (multipart upload), suppliers and customers
  (read-only on the Firm API) and changelogs (§5.11).
* Company API v2 (§0, §9.1) on the same data: ``/api/external/v2/...`` with a company token, or a
  firm token plus ``X-Company-Id`` (§2.5), and ``GET /me`` (§2.6). Ledger entries answered there
  carry their lines (§5.5).
* Cursor pagination (§3.1) with opaque base64 cursors that carry only a position: filters and sort
  are not in the cursor and must be resent on every page (a page asked without them continues the
  *unfiltered* list from that position, exactly as the reference warns). ``filter`` JSON arrays
  with the operators each field accepts (§3.2), 400 on unknown fields.
* Errors in the documented shapes (§3.4): ``{"error", "status"}`` for 401/403/404/422,
  request-validator 400s ``{"message", "field", "code"}``, and the ``{"error":"unprocessable_entity",
  "message", "details"}`` envelope for unknown ids in a body (the reference's own example).
* Rate limit 25 requests / 5 s per token (§3.5): ``ratelimit-*`` headers on every answer, 429 in
  plain text with ``retry-after``. ``Api-Version-Expires-At`` (empty) on every response (§1).

Where the reference leaves a value open (messages of closed-year refusals, journal types, the
generated ``piece_number`` format, label maxima) the choice is marked ``inferred``; the README lists
them with the test-control helpers.
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import json
import math
import random
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

from connectors.sandbox.base import (
    FakeAPI,
    Route,
    SandboxRequest,
    SandboxResponse,
    _seconds_header,
    json_response,
    route,
    text_response,
)

FIRM = "/api/external/firm/v1"
V2 = "/api/external/v2"
CO = FIRM + "/companies/{company_id}"

#: The development firm token registered at every reset (brief; the real one is generated in
#: Firm settings > Firm Tokens, §2.2).
DEV_FIRM_TOKEN = "pl-firm-dev-token"
#: A second firm's token: its companies must never show up for the first firm.
OTHER_FIRM_TOKEN = "pl-firm-rivegauche-token"

# §2.4: Firm API v1 scopes.
FIRM_SCOPES = frozenset(
    """companies:readonly fiscal_years:all fiscal_years:readonly trial_balance:readonly exports:agl
    exports:fec dms_files:all dms_files:readonly journals:all journals:readonly ledger_accounts:all
    ledger_accounts:readonly ledger_entries:all ledger_entries:readonly file_attachments:all
    suppliers:readonly customers:readonly supplier_invoices:all supplier_invoices:readonly
    customer_invoices:all customer_invoices:readonly categories:readonly bank_accounts:all
    bank_accounts:readonly transactions:all transactions:readonly""".split()
)
# §2.4: the Company API v2 scopes this fake can be asked about (the rest are accepted as names).
COMPANY_SCOPES = frozenset(
    """customers:all customers:readonly file_attachments:all file_attachments:readonly
    fiscal_years:readonly journals:all journals:readonly ledger_accounts:all ledger_accounts:readonly
    ledger_entries:all ledger_entries:readonly suppliers:all suppliers:readonly categories:all
    categories:readonly customer_invoices:all customer_invoices:readonly supplier_invoices:all
    supplier_invoices:readonly products:all products:readonly transactions:all transactions:readonly
    quotes:all quotes:readonly trial_balance:readonly exports:fec exports:gl exports:agl""".split()
)

# §3.1: default page size and the maxima of ``limit`` / ``per_page``.
DEFAULT_LIMIT = 20
FIRM_MAX_LIMIT = 100  # "Firm API: max 100 on all cursor lists"
V2_MAX_LIMIT = 100
V2_MAX_LIMIT_LARGE = 1000  # ledger_accounts and changelogs on the company API
COMPANIES_MAX_PER_PAGE = 1000
FIRM_MAX_PER_PAGE = 100

# §3.3: firm entry-line amounts must match this pattern (empty string allowed).
AMOUNT_RE = re.compile(r"^(-?\d+(\.\d+)?)?$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# §5.5: at most 1000 lines (or line operations) per request.
MAX_ENTRY_LINES = 1000
# inferred: §5.7 gives the entry label of an import up to 2000 chars and entry-line labels 1-255.
MAX_ENTRY_LABEL = 2000
MAX_LINE_LABEL = 255
# §5.6: filename <= 255 chars, PDF/PNG/JPEG/TIFF/BMP/GIF, at most 100 MB.
MAX_FILENAME = 255
MAX_ATTACHMENT_BYTES = 100 * 1024 * 1024
# §5.11: changelogs keep four weeks of changes.
CHANGELOG_RETENTION = timedelta(weeks=4)
# §3.5: 25 requests per 5 seconds per token.
RATE_LIMIT = (25, 5.0)

# §5.3 / §3.3 enums.
VAT_RATES = frozenset(
    """FR_200 FR_100 FR_85 FR_55 FR_21 FR_09 FR_10 FR_13 FR_22 exempt extracom intracom_21 intracom_55
    intracom_85 intracom_100 intracom_200 crossborder mixed any""".split()
)
FISCAL_YEAR_STATUSES = ("open", "reopen", "closed", "frozen")
CLOSED_STATUSES = frozenset({"closed", "frozen"})
# §5.11: changelog resources per API.
FIRM_CHANGELOGS = {
    "ledger_entry_lines": "ledger_entries",
    "supplier_invoices": "supplier_invoices",
    "customer_invoices": "customer_invoices",
    "dms_files": "dms_files",
}
V2_CHANGELOGS = {
    "customer_invoices": "customer_invoices",
    "supplier_invoices": "supplier_invoices",
    "customers": "customers",
    "suppliers": "suppliers",
    "products": "products",
    "ledger_entry_lines": "ledger_entries",
    "transactions": "transactions",
    "quotes": "quotes",
    "ledger_entries_categories": "categories",
    "ledger_entry_lines_categories": "categories",
}

NUMERIC_OPS = frozenset({"eq", "not_eq", "lt", "lteq", "gt", "gteq", "in", "not_in"})
SET_OPS = frozenset({"eq", "not_eq", "in", "not_in"})

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _ts(moment: datetime) -> str:
    """§3.3: ISO 8601 with microseconds and ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _money(value: Decimal) -> str:
    """Decimal string with at least two decimals (``"120.00"``, §3.3); finer amounts kept as sent."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        return format(value, "f")
    return format(value.quantize(Decimal("0.01")), "f")


def luhn_ok(digits: str) -> bool:
    """SIREN / SIRET check (Luhn)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _with_luhn(prefix: str) -> str:
    for digit in "0123456789":
        if luhn_ok(prefix + digit):
            return prefix + digit
    raise AssertionError("unreachable")


def _siren(rng: random.Random) -> str:
    return _with_luhn(str(rng.randint(3, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(7)))


def _vat_fr(siren: str) -> str:
    return f"FR{(12 + 3 * (int(siren) % 97)) % 97:02d}{siren}"


def _iban_fr(rng: random.Random) -> str:
    bban = "".join(str(rng.randint(0, 9)) for _ in range(23))
    check = 98 - int(bban + "152700") % 97
    return f"FR{check:02d}{bban}"


def _sniff(data: bytes) -> str | None:
    """The content type of an upload from its magic bytes (§5.6 allowed types)."""
    if data.startswith(b"%PDF"):
        return "application/pdf"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if data.startswith(b"BM"):
        return "image/bmp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    return None


def _pdf(title: str) -> bytes:
    """A tiny but well-formed one-page PDF for seeded attachments."""
    text = title.replace("(", "[").replace(")", "]").encode("latin-1", "replace")
    stream = b"BT /F1 12 Tf 72 720 Td (" + text + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


class _Reject(Exception):
    """Raised inside a handler to answer ``response`` at once (validation failures)."""

    def __init__(self, response: SandboxResponse) -> None:
        super().__init__(response.status)
        self.response = response


H = TypeVar("H", bound=Callable[..., SandboxResponse])


def _guarded(func: H) -> H:
    """Turn a ``_Reject`` raised by a handler into its response."""

    @functools.wraps(func)
    def wrapper(self: PennylaneSandbox, request: SandboxRequest, **params: str) -> SandboxResponse:
        try:
            return func(self, request, **params)
        except _Reject as reject:
            return reject.response

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass
class ApiToken:
    """A firm token (§2.2) or a company token (§2.1)."""

    token: str
    scopes: frozenset[str]
    firm_id: int | None = None
    company_id: int | None = None
    #: Firm tokens only: the companies the creating user may see (``None``: the whole portfolio).
    company_ids: frozenset[int] | None = None
    user: dict[str, Any] | None = None
    revoked: bool = False


@dataclass
class Firm:
    id: int
    name: str


@dataclass
class LedgerAccount:
    id: int
    number: str
    label: str
    vat_rate: str
    country_alpha2: str
    enabled: bool
    letterable: bool
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None
    type: str = "custom"  # the only value the reference shows (§5.1)


@dataclass
class Journal:
    id: int
    code: str
    label: str
    type: str
    created_at: datetime


@dataclass
class FiscalYear:
    id: int
    start: date
    finish: date
    status: str
    created_at: datetime
    updated_at: datetime


@dataclass
class Attachment:
    id: int
    filename: str
    content_type: str
    data: bytes
    key: str
    created_at: datetime


@dataclass
class EntryLine:
    id: int
    entry_id: int
    ledger_account_id: int
    debit: Decimal
    credit: Decimal
    label: str | None
    created_at: datetime
    updated_at: datetime


@dataclass
class Entry:
    id: int
    date: date
    label: str
    journal_id: int
    piece_number: str
    due_date: date | None
    currency: str
    file_attachment_id: int | None
    line_ids: list[int]
    created_at: datetime
    updated_at: datetime
    source: str  # "seed" or "api"
    status: str = "complete"  # inferred: the firm status of an entry posted through the API


@dataclass
class ChangeEvent:
    seq: int
    resource: str
    record_id: int
    operation: str
    processed_at: datetime
    created_at: datetime
    updated_at: datetime


@dataclass
class Company:
    id: int
    firm_id: int
    name: str
    billing_company_name: str
    siren: str
    address: str
    city: str
    postal_code: str
    activity_nomenclature: str
    activity_code: str
    external_id: str
    client_code: str
    accounts: dict[int, LedgerAccount] = field(default_factory=dict)
    journals: dict[int, Journal] = field(default_factory=dict)
    suppliers: dict[int, dict[str, Any]] = field(default_factory=dict)
    customers: dict[int, dict[str, Any]] = field(default_factory=dict)
    fiscal_years: dict[int, FiscalYear] = field(default_factory=dict)
    attachments: dict[int, Attachment] = field(default_factory=dict)
    entries: dict[int, Entry] = field(default_factory=dict)
    lines: dict[int, EntryLine] = field(default_factory=dict)
    changes: list[ChangeEvent] = field(default_factory=list)
    piece_counter: int = 0


@dataclass
class _Call:
    """Who is calling, stored on the request by ``authorize_route`` for the handler."""

    api: str
    token: ApiToken | None = None
    company: Company | None = None
    rate_headers: dict[str, str] = field(default_factory=dict)


def _call(request: SandboxRequest) -> _Call:
    call = vars(request).get("_pennylane_call")
    if not isinstance(call, _Call):
        raise AssertionError("authorize_route did not run")
    return call


@dataclass(frozen=True)
class _Field:
    """One filterable field: its value type, the operators it accepts, and how to read it."""

    kind: str  # "int", "str", "date", "bool"
    ops: frozenset[str]
    get: Callable[[Any], Any]


# --------------------------------------------------------------------------------------------
# Seed data
# --------------------------------------------------------------------------------------------

# A French PCG chart (§6: "auxiliaries = 401*, 411* numbers"); numbers as Pennylane shows them
# (``"512000"``, ``"606400"``, §5.1). (number, label, vat_rate)
PCG_CHART: tuple[tuple[str, str, str], ...] = (
    ("101300", "Capital souscrit - appelé, versé", "any"),
    ("106100", "Réserve légale", "any"),
    ("110000", "Report à nouveau (solde créditeur)", "any"),
    ("120000", "Résultat de l'exercice (bénéfice)", "any"),
    ("164000", "Emprunts auprès des établissements de crédit", "any"),
    ("218300", "Matériel de bureau et matériel informatique", "FR_200"),
    ("281830", "Amortissements du matériel de bureau", "any"),
    ("401000", "Fournisseurs", "any"),
    ("404000", "Fournisseurs d'immobilisations", "any"),
    ("411000", "Clients", "any"),
    ("421000", "Personnel - Rémunérations dues", "any"),
    ("431000", "Sécurité sociale", "any"),
    ("437000", "Autres organismes sociaux", "any"),
    ("445510", "TVA à décaisser", "any"),
    ("445660", "TVA déductible sur autres biens et services", "any"),
    ("445620", "TVA déductible sur immobilisations", "any"),
    ("445710", "TVA collectée", "any"),
    ("445800", "TVA à régulariser", "any"),
    ("455000", "Associés - Comptes courants", "any"),
    ("467000", "Autres comptes débiteurs ou créditeurs", "any"),
    ("471000", "Compte d'attente", "any"),
    ("512000", "Banque", "any"),
    ("530000", "Caisse", "any"),
    ("580000", "Virements internes", "any"),
    ("601000", "Achats stockés - Matières premières", "FR_200"),
    ("606100", "Fournitures non stockables (eau, énergie)", "FR_200"),
    ("606300", "Fournitures d'entretien et de petit équipement", "FR_200"),
    ("606400", "Fournitures administratives", "FR_200"),
    ("607000", "Achats de marchandises", "FR_200"),
    ("613200", "Locations immobilières", "FR_200"),
    ("615000", "Entretien et réparations", "FR_200"),
    ("616000", "Primes d'assurances", "exempt"),
    ("622600", "Honoraires", "FR_200"),
    ("623000", "Publicité, publications, relations publiques", "FR_200"),
    ("625100", "Voyages et déplacements", "FR_200"),
    ("626000", "Frais postaux et de télécommunications", "FR_200"),
    ("627000", "Services bancaires et assimilés", "exempt"),
    ("635100", "Impôts directs (CFE)", "exempt"),
    ("641000", "Rémunérations du personnel", "any"),
    ("645000", "Charges de sécurité sociale et de prévoyance", "any"),
    ("661100", "Intérêts des emprunts et dettes", "any"),
    ("701000", "Ventes de produits finis", "FR_200"),
    ("706000", "Prestations de services", "FR_200"),
    ("707000", "Ventes de marchandises", "FR_200"),
    ("708500", "Ports et frais accessoires facturés", "FR_200"),
    ("758000", "Produits divers de gestion courante", "any"),
)

# (code, label, type): §5.2 shows codes such as "BQ1" and type "bank"; the type values are not
# documented (open question 3), these are inferred.
JOURNALS: tuple[tuple[str, str, str], ...] = (
    ("ACH", "Achats", "purchase"),
    ("VT", "Ventes", "sale"),
    ("BQ", "Banque", "bank"),
    ("OD", "Opérations diverses", "misc"),
)

# Suppliers every company has: (auxiliary number, name, city, postal code, email domain).
COMMON_SUPPLIERS: tuple[tuple[str, str, str, str, str], ...] = (
    ("401EDF", "EDF", "Paris", "75008", "edf.fr"),
    ("401ORANGE", "Orange", "Issy-les-Moulineaux", "92130", "orange.fr"),
    ("401OVH", "OVHcloud", "Roubaix", "59100", "ovhcloud.com"),
)


@dataclass(frozen=True)
class _SeedCompany:
    name: str
    billing_name: str
    siren: str
    address: str
    city: str
    postal_code: str
    activity_code: str
    client_code: str
    suppliers: tuple[tuple[str, str, str, str, str], ...]
    #: (auxiliary number, name, city, postal code, kind) with kind "company" or "individual".
    customers: tuple[tuple[str, str, str, str, str], ...]
    sale_account: str
    purchase_account: str
    extra_journals: tuple[tuple[str, str, str], ...] = ()


SEED_COMPANIES: tuple[_SeedCompany, ...] = (
    # The hub's demo organisations (tests/conftest.py org_a / org_b) come first.
    _SeedCompany(
        "Atelier Lumière SAS",
        "Atelier Lumière",
        "732829320",
        "14 rue des Tanneurs",
        "Lyon",
        "69002",
        "7410Z",
        "ATLUM01",
        (
            ("401VAUBAN", "Imprimerie Vauban", "Lyon", "69003", "imprimerie-vauban.fr"),
            ("401LEROY", "Leroy Merlin Pro", "Vénissieux", "69200", "leroymerlin.fr"),
        ),
        (
            ("411HOTELBEL", "Hôtel Bellecour", "Lyon", "69002", "company"),
            ("411MAIRIEVIL", "Mairie de Villeurbanne", "Villeurbanne", "69100", "company"),
            ("411100344", "Sophie Girard", "Lyon", "69006", "individual"),
        ),
        "706000",
        "606400",
        (("BQ1", "Banque Qonto", "bank"),),
    ),
    _SeedCompany(
        "Boulangerie Martin SARL",
        "Boulangerie Martin",
        "542051180",
        "8 rue du Marché",
        "Paris",
        "75011",
        "1071C",
        "BOUMAR01",
        (
            ("401MOULINS", "Grands Moulins de Paris", "Ivry-sur-Seine", "94200", "gmp.fr"),
            ("401METRO", "Metro Cash & Carry", "Nanterre", "92000", "metro.fr"),
        ),
        (
            ("411CAFEGARE", "Café de la Gare", "Paris", "75010", "company"),
            ("411ECOLESJ", "École Saint-Joseph", "Paris", "75011", "company"),
        ),
        "701000",
        "601000",
    ),
    _SeedCompany(
        "Garage Dupuis & Fils SARL",
        "Garage Dupuis",
        "812345676",
        "27 avenue Jean Jaurès",
        "Nantes",
        "44000",
        "4520A",
        "GARDUP01",
        (
            ("401OSCARO", "Oscaro Pro", "Paris", "75015", "oscaro.com"),
            ("401TOTAL", "TotalEnergies Marketing France", "Nanterre", "92000", "totalenergies.fr"),
        ),
        (
            ("411TAXIBLEU", "Taxis Bleus Nantais", "Nantes", "44000", "company"),
            ("411LOCAUTO", "Loc'Auto Atlantique", "Saint-Herblain", "44800", "company"),
        ),
        "706000",
        "607000",
    ),
    _SeedCompany(
        "Studio Nébuleuse SAS",
        "Studio Nébuleuse",
        "843902156",
        "3 quai des Chartrons",
        "Bordeaux",
        "33000",
        "6201Z",
        "STUNEB01",
        (("401ADOBE", "Adobe Systems Software Ireland", "Dublin", "D24", "adobe.com"),),
        (
            ("411MOLLAT", "Librairie Mollat", "Bordeaux", "33000", "company"),
            ("411FABRE", "Maison Fabre", "Millau", "12100", "company"),
        ),
        "706000",
        "626000",
    ),
)

# A second firm, so isolation between firms can be tested.
OTHER_FIRM_COMPANY = _SeedCompany(
    "Pharmacie du Canal SELARL",
    "Pharmacie du Canal",
    "902118736",
    "5 allée du Canal",
    "Toulouse",
    "31000",
    "4773Z",
    "PHACAN01",
    (("401CERP", "CERP Rouen", "Rouen", "76000", "cerp-rouen.fr"),),
    (("411CPAM", "CPAM de la Haute-Garonne", "Toulouse", "31000", "company"),),
    "707000",
    "607000",
)

_ID_BASES = {
    "firm": 1,
    "company": 731901,
    "account": 96001,
    "journal": 30101,
    "supplier": 51001,
    "customer": 72001,
    "fiscal_year": 4401,
    "attachment": 557101,
    "entry": 4810223301,
    "line": 9911201,
    "user": 5501,
}


# --------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------


class PennylaneSandbox(FakeAPI):
    """In-memory Pennylane: Firm API v1 and Company API v2 over one set of companies."""

    slug = "pennylane"
    default_seed = 1
    # §3.5: 25 requests / 5 s, counted per token (see ``set_rate_limits``).
    default_rate_limits: ClassVar[Sequence[tuple[int, float]]] = (RATE_LIMIT,)
    default_base_url = "https://app.pennylane.com"

    # -- seeding ---------------------------------------------------------------------------------

    def seed(  # type: ignore[override]
        self,
        rng: random.Random,
        *,
        strict_firm_body: bool = False,
        piece_number_filter: bool = False,
    ) -> None:
        """The firm, its companies, charts, third parties, journals, fiscal years and some entries.

        Options: ``strict_firm_body`` refuses ``piece_number``/``due_date`` in a Firm API entry
        body (the July-2026 firm spec lacks them, §5.5); ``piece_number_filter`` lets
        ``GET …/ledger_entries`` filter on ``piece_number`` (not documented: off by default, §5.5).
        """
        self.strict_firm_body = strict_firm_body
        self.piece_number_filter = piece_number_filter
        self._counters = {kind: itertools.count(base) for kind, base in _ID_BASES.items()}
        self._change_seq = itertools.count(1)
        self.firms: dict[int, Firm] = {}
        self.companies: dict[int, Company] = {}
        self.tokens: dict[str, ApiToken] = {}
        self.blobs: dict[str, tuple[int, int]] = {}  # key -> (company id, attachment id)

        firm_id = self.add_firm("Cabinet Durand Expertise Comptable")
        self.add_firm_token(
            firm_id, DEV_FIRM_TOKEN, user=self._user("Inès", "Marchand", "ines@cabinet-durand.fr")
        )
        for spec in SEED_COMPANIES:
            self._seed_company(rng, firm_id, spec)
        other = self.add_firm("Cabinet Rive Gauche")
        self.add_firm_token(other, OTHER_FIRM_TOKEN, user=self._user("Paul", "Brun", "paul@rive-gauche.fr"))
        self._seed_company(rng, other, OTHER_FIRM_COMPANY)

    def _next(self, kind: str) -> int:
        return next(self._counters[kind])

    def _user(self, first: str, last: str, email: str) -> dict[str, Any]:
        return {
            "id": self._next("user"),
            "first_name": first,
            "last_name": last,
            "email": email,
            "locale": "fr",
        }

    def _seed_company(self, rng: random.Random, firm_id: int, spec: _SeedCompany) -> Company:
        created = self.start_at - timedelta(days=420 + rng.randint(0, 200))
        company = self._new_company(
            firm_id,
            name=spec.name,
            siren=spec.siren,
            client_code=spec.client_code,
            billing_company_name=spec.billing_name,
            address=spec.address,
            city=spec.city,
            postal_code=spec.postal_code,
            activity_code=spec.activity_code,
            external_id="".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(6)),
            at=created,
            extra_journals=spec.extra_journals,
        )
        for number, name, city, postal_code, domain in COMMON_SUPPLIERS + spec.suppliers:
            account = self._create_account(company, number, name, "any", "FR", created, spawn=False)
            self._seed_supplier(rng, company, account, name, city, postal_code, domain, created)
        for number, name, city, postal_code, kind in spec.customers:
            account = self._create_account(company, number, name, "any", "FR", created, spawn=False)
            self._seed_customer(rng, company, account, name, city, postal_code, kind, created)
        self._seed_entries(rng, company, spec)
        return company

    def _new_company(
        self,
        firm_id: int,
        *,
        name: str,
        siren: str,
        client_code: str,
        billing_company_name: str,
        address: str,
        city: str,
        postal_code: str,
        activity_code: str,
        external_id: str,
        at: datetime,
        chart: bool = True,
        extra_journals: Iterable[tuple[str, str, str]] = (),
    ) -> Company:
        company = Company(
            id=self._next("company"),
            firm_id=firm_id,
            name=name,
            billing_company_name=billing_company_name,
            siren=siren,
            address=address,
            city=city,
            postal_code=postal_code,
            activity_nomenclature="NAFRev2",
            activity_code=activity_code,
            external_id=external_id,
            client_code=client_code,
        )
        self.companies[company.id] = company
        if chart:
            for number, label, vat_rate in PCG_CHART:
                self._create_account(company, number, label, vat_rate, "FR", at, spawn=False)
            for code, label, kind in (*JOURNALS, *extra_journals):
                journal = Journal(self._next("journal"), code, label, kind, at)
                company.journals[journal.id] = journal
            # One closed year (the previous calendar year) and the open current one.
            year = self.start_at.year
            for start, finish, status in (
                (date(year - 1, 1, 1), date(year - 1, 12, 31), "closed"),
                (date(year, 1, 1), date(year, 12, 31), "open"),
            ):
                fiscal_year = FiscalYear(self._next("fiscal_year"), start, finish, status, at, at)
                company.fiscal_years[fiscal_year.id] = fiscal_year
        return company

    def _seed_supplier(
        self,
        rng: random.Random,
        company: Company,
        account: LedgerAccount,
        name: str,
        city: str,
        postal_code: str,
        domain: str,
        at: datetime,
    ) -> None:
        siren = _siren(rng)
        record = self._supplier_record(company, account, name, at)
        record.update(
            establishment_no=_with_luhn(siren + f"{rng.randint(1, 99):04d}"),
            reg_no=siren,
            vat_number=_vat_fr(siren),
            emails=[f"factures@{domain}"],
            iban=_iban_fr(rng),
            postal_address={
                "address": f"{rng.randint(1, 120)} rue de la République",
                "postal_code": postal_code,
                "city": city,
                "country_alpha2": "IE" if city == "Dublin" else "FR",
            },
            supplier_payment_method=rng.choice(["automatic_debiting", "manual_transfer", "card"]),
            supplier_due_date_delay=30,
            supplier_due_date_rule="days",
        )

    def _supplier_record(
        self, company: Company, account: LedgerAccount, name: str, at: datetime
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self._next("supplier"),
            "name": name,
            "establishment_no": None,
            "reg_no": None,
            "vat_number": None,
            "ledger_account_id": account.id,
            "emails": [],
            "iban": None,
            "postal_address": None,
            "supplier_payment_method": None,
            "supplier_due_date_delay": None,
            "supplier_due_date_rule": None,
            "external_reference": self.new_id(),  # "generated if absent" (§5.3)
            "created_at": at,
            "updated_at": at,
        }
        company.suppliers[record["id"]] = record
        self._change(company, "suppliers", record["id"], "insert", at)
        return record

    def _seed_customer(
        self,
        rng: random.Random,
        company: Company,
        account: LedgerAccount,
        name: str,
        city: str,
        postal_code: str,
        kind: str,
        at: datetime,
    ) -> None:
        record = self._customer_record(company, account, name, at, kind)
        address = {
            "address": f"{rng.randint(1, 90)} avenue de la Liberté",
            "postal_code": postal_code,
            "city": city,
            "country_alpha2": "FR",
        }
        slug = re.sub(r"[^a-z]", "", name.lower())[:12] or "client"
        record.update(
            emails=[f"compta@{slug}.fr"],
            billing_address=address,
            delivery_address=dict(address),
            payment_conditions="30_days",
            phone=f"+33 4 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
        )
        if kind == "company":
            siren = _siren(rng)
            record.update(reg_no=siren, vat_number=_vat_fr(siren))

    def _customer_record(
        self, company: Company, account: LedgerAccount, name: str, at: datetime, kind: str = "company"
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self._next("customer"),
            "name": name,
            "customer_type": kind,
            "reg_no": None,
            "vat_number": None,
            "ledger_account_id": account.id,
            "emails": [],
            "billing_address": None,
            "delivery_address": None,
            "billing_iban": None,
            "payment_conditions": "upon_receipt",
            "recipient": None,
            "phone": None,
            "reference": None,
            "notes": None,
            "external_reference": self.new_id(),
            "billing_language": "fr_FR",
            "created_at": at,
            "updated_at": at,
        }
        if kind == "individual":
            first, _, last = name.partition(" ")
            record.update(first_name=first, last_name=last or first)
        company.customers[record["id"]] = record
        self._change(company, "customers", record["id"], "insert", at)
        return record

    def _seed_entries(self, rng: random.Random, company: Company, spec: _SeedCompany) -> None:
        """A few purchases, sales and bank settlements in the closed and the open year."""
        by_number = {account.number: account for account in company.accounts.values()}
        journals = {journal.code: journal for journal in company.journals.values()}
        today = self.start_at.date()
        supplier_numbers = [s[0] for s in COMMON_SUPPLIERS + spec.suppliers]
        customer_numbers = [c[0] for c in spec.customers]
        plans: list[date] = []
        for month in (3, 7, 11):
            plans.append(date(today.year - 1, month, rng.randint(1, 28)))
        open_start = date(today.year, 1, 1)
        span = max((today - open_start).days - 1, 0)
        for _ in range(3):
            plans.append(today - timedelta(days=rng.randint(1, min(span, 60)) if span else 0))
        for index, day in enumerate(sorted(plans)):
            created = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=9 + index)
            created = min(created, self.start_at - timedelta(hours=1))
            net = Decimal(rng.randint(8000, 250000)) / 100
            vat = (net * Decimal("0.20")).quantize(Decimal("0.01"))
            gross = net + vat
            if index % 2 == 0:
                supplier = by_number[rng.choice(supplier_numbers)]
                piece = f"F-{day:%Y%m}-{rng.randint(100, 999)}"
                attachment = self._store_attachment(company, f"{piece}.pdf", _pdf(piece), created)
                self._insert_entry(
                    company,
                    day=day,
                    label=f"Facture {piece} {supplier.label}",
                    journal=journals["ACH"],
                    piece_number=piece,
                    due_date=day + timedelta(days=30),
                    currency="EUR",
                    attachment=attachment,
                    lines=[
                        (by_number[spec.purchase_account], net, Decimal(0), supplier.label),
                        (by_number["445660"], vat, Decimal(0), "TVA déductible 20%"),
                        (supplier, Decimal(0), gross, supplier.label),
                    ],
                    at=created,
                    source="seed",
                )
            else:
                customer = by_number[rng.choice(customer_numbers)]
                piece = f"FA-{day:%Y}-{rng.randint(1000, 9999)}"
                self._insert_entry(
                    company,
                    day=day,
                    label=f"Facture {piece} {customer.label}",
                    journal=journals["VT"],
                    piece_number=piece,
                    due_date=day + timedelta(days=30),
                    currency="EUR",
                    attachment=None,
                    lines=[
                        (customer, gross, Decimal(0), customer.label),
                        (by_number[spec.sale_account], Decimal(0), net, customer.label),
                        (by_number["445710"], Decimal(0), vat, "TVA collectée 20%"),
                    ],
                    at=created,
                    source="seed",
                )

    # -- storage primitives (no validation: callers validate) ------------------------------------

    def _create_account(
        self,
        company: Company,
        number: str,
        label: str,
        vat_rate: str,
        country_alpha2: str,
        at: datetime,
        *,
        spawn: bool = True,
    ) -> LedgerAccount:
        account = LedgerAccount(
            id=self._next("account"),
            number=number,
            label=label,
            vat_rate=vat_rate,
            country_alpha2=country_alpha2,
            enabled=True,
            # inferred: third-party and VAT accounts are letterable, the others not.
            letterable=number.startswith(("40", "41", "42", "43", "44", "45", "46", "47")),
            created_at=at,
            updated_at=at,
        )
        company.accounts[account.id] = account
        if spawn:
            # §4 / §5.1: a 401… account creates a supplier, a 411… account a company customer.
            if number.startswith("401"):
                self._supplier_record(company, account, label, at)
            elif number.startswith("411"):
                self._customer_record(company, account, label, at)
        return account

    def _store_attachment(self, company: Company, filename: str, data: bytes, at: datetime) -> Attachment:
        content_type = _sniff(data) or "application/octet-stream"
        attachment = Attachment(
            self._next("attachment"), filename, content_type, data, self.new_id().replace("-", ""), at
        )
        company.attachments[attachment.id] = attachment
        self.blobs[attachment.key] = (company.id, attachment.id)
        return attachment

    def _insert_entry(
        self,
        company: Company,
        *,
        day: date,
        label: str,
        journal: Journal,
        piece_number: str | None,
        due_date: date | None,
        currency: str,
        attachment: Attachment | None,
        lines: Sequence[tuple[LedgerAccount, Decimal, Decimal, str | None]],
        at: datetime,
        source: str,
    ) -> Entry:
        entry_id = self._next("entry")
        if not piece_number:
            # §3.6: "generated if absent"; the format is inferred.
            company.piece_counter += 1
            piece_number = f"{journal.code}{company.piece_counter:06d}"
        entry = Entry(
            id=entry_id,
            date=day,
            label=label,
            journal_id=journal.id,
            piece_number=piece_number,
            due_date=due_date,
            currency=currency,
            file_attachment_id=attachment.id if attachment else None,
            line_ids=[],
            created_at=at,
            updated_at=at,
            source=source,
        )
        company.entries[entry.id] = entry
        for account, debit, credit, line_label in lines:
            self._insert_line(company, entry, account.id, debit, credit, line_label, at)
        return entry

    def _insert_line(
        self,
        company: Company,
        entry: Entry,
        account_id: int,
        debit: Decimal,
        credit: Decimal,
        label: str | None,
        at: datetime,
    ) -> EntryLine:
        line = EntryLine(self._next("line"), entry.id, account_id, debit, credit, label, at, at)
        company.lines[line.id] = line
        entry.line_ids.append(line.id)
        self._change(company, "ledger_entry_lines", line.id, "insert", at)
        return line

    def _change(self, company: Company, resource: str, record_id: int, operation: str, at: datetime) -> None:
        """Record one changelog item (§5.11)."""
        created = at
        if operation != "insert":
            record = company.lines.get(record_id) if resource == "ledger_entry_lines" else None
            created = record.created_at if record else at
        company.changes.append(
            ChangeEvent(next(self._change_seq), resource, record_id, operation, at, created, at)
        )

    # -- test-control helpers --------------------------------------------------------------------

    def add_firm(self, name: str) -> int:
        """A new accounting firm (no companies, no token yet); returns its id."""
        with self.lock:
            firm = Firm(self._next("firm"), name)
            self.firms[firm.id] = firm
            return firm.id

    def add_firm_token(
        self,
        firm_id: int,
        token: str | None = None,
        *,
        scopes: Iterable[str] | None = None,
        company_ids: Iterable[int] | None = None,
        user: Mapping[str, Any] | None = None,
    ) -> str:
        """Register a firm API token (§2.2); ``company_ids`` restricts what it sees (default: all)."""
        with self.lock:
            if firm_id not in self.firms:
                raise KeyError(f"no firm {firm_id}")
            chosen = frozenset(scopes) if scopes is not None else FIRM_SCOPES
            unknown = chosen - FIRM_SCOPES
            if unknown:
                raise ValueError(f"unknown firm scopes: {', '.join(sorted(unknown))}")
            value = token or f"pl-firm-{self.new_id()}"
            self.tokens[value] = ApiToken(
                token=value,
                scopes=chosen,
                firm_id=firm_id,
                company_ids=frozenset(company_ids) if company_ids is not None else None,
                user=dict(user) if user else self._user("Claire", "Fontaine", "claire@cabinet.example"),
            )
            return value

    def add_company_token(
        self, company_id: int, token: str | None = None, *, scopes: Iterable[str] | None = None
    ) -> str:
        """Register a Company API v2 token bound to one company (§2.1)."""
        with self.lock:
            company = self._company(company_id)
            chosen = frozenset(scopes) if scopes is not None else COMPANY_SCOPES
            value = token or f"pl-company-{self.new_id()}"
            self.tokens[value] = ApiToken(
                token=value,
                scopes=chosen,
                company_id=company.id,
                user=self._user("Léa", "Perrin", f"lea@{company.client_code.lower()}.example"),
            )
            return value

    def revoke_token(self, token: str) -> bool:
        """Revoke a firm or company token: its next call gets 401."""
        with self.lock:
            entry = self.tokens.get(token)
            if entry is None:
                return super().revoke_token(token)
            entry.revoked = True
            return True

    def add_company(
        self,
        name: str,
        siren: str,
        *,
        firm_id: int = 1,
        client_code: str | None = None,
        billing_company_name: str | None = None,
        address: str = "1 place de la Mairie",
        city: str = "Paris",
        postal_code: str = "75001",
        activity_code: str = "7022Z",
        chart: bool = True,
    ) -> dict[str, Any]:
        """A new client company of ``firm_id`` (PCG chart, journals, closed + open fiscal year)."""
        with self.lock:
            if firm_id not in self.firms:
                raise KeyError(f"no firm {firm_id}")
            if not (len(siren) == 9 and siren.isdigit() and luhn_ok(siren)):
                raise ValueError(f"{siren!r} is not a valid SIREN")
            company = self._new_company(
                firm_id,
                name=name,
                siren=siren,
                client_code=client_code or re.sub(r"[^A-Z]", "", name.upper())[:6] + "01",
                billing_company_name=billing_company_name or name,
                address=address,
                city=city,
                postal_code=postal_code,
                activity_code=activity_code,
                external_id=self.new_id()[:6].upper(),
                at=self.now(),
                chart=chart,
            )
            return self._render_company(company)

    def add_ledger_account(
        self,
        company_id: int,
        number: str,
        label: str,
        *,
        vat_rate: str = "any",
        country_alpha2: str = "FR",
        enabled: bool = True,
    ) -> dict[str, Any]:
        """Add an account as the API would (a 401/411 number also creates the third party)."""
        with self.lock:
            company = self._company(company_id)
            account = self._create_account(company, number, label, vat_rate, country_alpha2, self.now())
            account.enabled = enabled
            return self._render_account(account, "firm")

    def add_journal(self, company_id: int, code: str, label: str, type: str = "misc") -> dict[str, Any]:
        with self.lock:
            company = self._company(company_id)
            journal = Journal(self._next("journal"), code, label, type, self.now())
            company.journals[journal.id] = journal
            return self._render_journal(journal, company, "firm", self.default_base_url)

    def close_fiscal_year(
        self,
        company_id: int,
        fiscal_year_id: int | None = None,
        *,
        on: date | None = None,
        status: str = "closed",
    ) -> dict[str, Any]:
        """Set a fiscal year's status (default: close the one covering ``on`` or today)."""
        if status not in FISCAL_YEAR_STATUSES:
            raise ValueError(f"status must be one of {FISCAL_YEAR_STATUSES}")
        with self.lock:
            company = self._company(company_id)
            if fiscal_year_id is not None:
                fiscal_year = company.fiscal_years[fiscal_year_id]
            else:
                found = self._fiscal_year_for(company, on or self.now().date())
                if found is None:
                    raise KeyError("no fiscal year covers that date")
                fiscal_year = found
            fiscal_year.status = status
            fiscal_year.updated_at = self.now()
            return self._render_fiscal_year(fiscal_year)

    def entries(self, company_id: int, *, include_seeded: bool = False) -> list[dict[str, Any]]:
        """What was pushed to ``company_id`` (entries created through the API), oldest first."""
        with self.lock:
            company = self._company(company_id)
            out = []
            for entry in sorted(company.entries.values(), key=lambda e: e.id):
                if entry.source != "api" and not include_seeded:
                    continue
                journal = company.journals[entry.journal_id]
                attachment = company.attachments.get(entry.file_attachment_id or -1)
                out.append(
                    {
                        "id": entry.id,
                        "date": entry.date.isoformat(),
                        "label": entry.label,
                        "piece_number": entry.piece_number,
                        "due_date": entry.due_date.isoformat() if entry.due_date else None,
                        "currency": entry.currency,
                        "journal_id": journal.id,
                        "journal_code": journal.code,
                        "file_attachment_id": entry.file_attachment_id,
                        "attachment_filename": attachment.filename if attachment else None,
                        "lines": [
                            {
                                "id": line.id,
                                "ledger_account_id": line.ledger_account_id,
                                "account_number": company.accounts[line.ledger_account_id].number,
                                "debit": _money(line.debit),
                                "credit": _money(line.credit),
                                "label": line.label,
                            }
                            for line in (company.lines[i] for i in entry.line_ids)
                        ],
                        "source": entry.source,
                        "created_at": _ts(entry.created_at),
                    }
                )
            return out

    def attachments(self, company_id: int) -> list[dict[str, Any]]:
        """Uploaded and seeded supporting documents, with their bytes."""
        with self.lock:
            company = self._company(company_id)
            return [
                {"id": a.id, "filename": a.filename, "content_type": a.content_type, "data": a.data}
                for a in sorted(company.attachments.values(), key=lambda a: a.id)
            ]

    def company_id_for(self, siren: str) -> int:
        """The Pennylane id of the company with this SIREN."""
        with self.lock:
            for company in self.companies.values():
                if company.siren == siren:
                    return company.id
            raise KeyError(siren)

    def account_id_for(self, company_id: int, number: str) -> int:
        with self.lock:
            for account in self._company(company_id).accounts.values():
                if account.number == number:
                    return account.id
            raise KeyError(number)

    def journal_id_for(self, company_id: int, code: str) -> int:
        with self.lock:
            for journal in self._company(company_id).journals.values():
                if journal.code == code:
                    return journal.id
            raise KeyError(code)

    def fiscal_years(self, company_id: int) -> list[dict[str, Any]]:
        with self.lock:
            company = self._company(company_id)
            return [
                self._render_fiscal_year(f)
                for f in sorted(company.fiscal_years.values(), key=lambda f: f.start)
            ]

    def _company(self, company_id: int) -> Company:
        company = self.companies.get(int(company_id))
        if company is None:
            raise KeyError(f"no company {company_id}")
        return company

    # -- rate limiting: per token (§3.5) ---------------------------------------------------------

    def set_rate_limits(self, limits: Iterable[tuple[int, float]]) -> None:
        """Replace the per-token limits (default 25 / 5 s, §3.5); ``[]`` disables limiting.

        Pennylane counts per token, so the base class's global limiter is left empty and every
        token gets its own windows in ``authorize_route``.
        """
        with self.lock:
            self.token_limits = [(int(limit), float(window)) for limit, window in limits]
            self._token_hits: dict[str, list[deque[float]]] = {}
            self.rate_limits = []

    def _take_slot(self, token: str) -> tuple[float | None, dict[str, str]]:
        """Count one request for ``token``: (seconds to wait or None, ratelimit-* headers)."""
        if not self.token_limits:
            return None, {}
        now = self.now().timestamp()
        windows = self._token_hits.setdefault(token, [deque() for _ in self.token_limits])
        wait = 0.0
        for (limit, window), hits in zip(self.token_limits, windows, strict=True):
            while hits and hits[0] <= now - window:
                hits.popleft()
            if len(hits) >= limit:
                wait = max(wait, hits[0] + window - now)
        limit, window = self.token_limits[0]
        first = windows[0]
        if wait > 0:
            return wait, {
                "ratelimit-limit": str(limit),
                "ratelimit-remaining": "0",
                "ratelimit-reset": str(math.ceil(now + wait)),
            }
        for hits in windows:
            hits.append(now)
        reset = first[0] + window
        return None, {
            "ratelimit-limit": str(limit),
            "ratelimit-remaining": str(max(limit - len(first), 0)),
            "ratelimit-reset": str(math.ceil(reset)),
        }

    def rate_limited_response(self, request: SandboxRequest, wait: float) -> SandboxResponse:
        """§3.5: plain-text 429 with ``retry-after`` (seconds)."""
        seconds = _seconds_header(wait)
        return text_response(
            f"Rate limit exceeded. Please retry in {seconds} seconds.", 429, headers={"retry-after": seconds}
        )

    # -- errors (§3.4) ---------------------------------------------------------------------------

    def error_body(self, status: int, code: str, detail: str, source: Mapping[str, Any] | None = None) -> Any:
        return {"error": detail, "status": status}

    def not_found(self, request: SandboxRequest) -> SandboxResponse:
        return self._error(404, "Not Found")

    def _error(self, status: int, message: str) -> SandboxResponse:
        return json_response({"error": message, "status": status}, status)

    def _fail(self, status: int, message: str) -> _Reject:
        return _Reject(self._error(status, message))

    def _bad(self, message: str, code: str, field_name: str | None = None) -> _Reject:
        """A request-validator 400: ``{message, field, code}`` (§3.4)."""
        body: dict[str, Any] = {"message": message}
        if field_name is not None:
            body["field"] = field_name
        body["code"] = code
        return _Reject(json_response(body, 400))

    def _unprocessable(self, field_name: str, message: str, issue: str) -> _Reject:
        """The ``unprocessable_entity`` envelope of the reference's example (§3.4)."""
        return _Reject(
            json_response(
                {
                    "error": "unprocessable_entity",
                    "message": message,
                    "details": {"field": field_name, "issue": issue},
                },
                422,
            )
        )

    # -- authentication, scopes, company resolution ----------------------------------------------

    def authorize_route(self, request: SandboxRequest, entry: Route) -> SandboxResponse | None:
        api = str(entry.meta.get("api", "public"))
        call = _Call(api)
        vars(request)["_pennylane_call"] = call
        if api == "public":
            return None
        scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
        token = self.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        # §9.1: 401 {"error":"The access token is invalid","status":401}; a company token is no
        # firm token.
        if token is None or token.revoked or (api == "firm" and token.firm_id is None):
            return self._error(401, "The access token is invalid")
        call.token = token
        wait, headers = self._take_slot(token.token)
        if wait is not None:
            response = self.rate_limited_response(request, wait)
            response.headers.update(headers)
            return response
        call.rate_headers = headers
        resource = entry.meta.get("scope")
        if resource == "changelog":
            table = FIRM_CHANGELOGS if api == "firm" else V2_CHANGELOGS
            resource = table.get(request.path_params.get("resource", ""))
            if resource is None:
                return self._error(404, "Not Found")
        if resource:
            write = bool(entry.meta.get("write"))
            needed = f"{resource}:all" if write else f"{resource}:readonly"
            accepted = {f"{resource}:all"} if write else {f"{resource}:readonly", f"{resource}:all"}
            if not accepted & token.scopes:
                # §2.4 / §3.4: 403 when a scope is missing.
                return self._error(403, f'Access to this resource requires scope "{needed}".')
        if api == "firm" and "company_id" in request.path_params:
            call.company = self._visible_company(token, request.path_params["company_id"])
            if call.company is None:
                return self._error(404, "Not Found")
        elif api == "v2":
            company, problem = self._v2_company(token, request)
            if problem is not None:
                return problem
            call.company = company
        return None

    def _visible_ids(self, token: ApiToken) -> set[int]:
        if token.company_id is not None:
            return {token.company_id}
        ids = {c.id for c in self.companies.values() if c.firm_id == token.firm_id}
        return ids & token.company_ids if token.company_ids is not None else ids

    def _visible_company(self, token: ApiToken, raw_id: str) -> Company | None:
        try:
            company_id = int(raw_id)
        except ValueError:
            return None
        return self.companies.get(company_id) if company_id in self._visible_ids(token) else None

    def _v2_company(
        self, token: ApiToken, request: SandboxRequest
    ) -> tuple[Company | None, SandboxResponse | None]:
        """§2.5: a company token acts on its company; a firm token names one in ``X-Company-Id``."""
        if token.company_id is not None:
            return self.companies[token.company_id], None
        header = request.headers.get("X-Company-Id")
        if not header:
            if request.path == f"{V2}/me":
                return None, None
            # inferred: the reference says the header is "required wh[en …]" for such tokens.
            return None, self._error(400, "The X-Company-Id header is required with a firm token")
        company = self._visible_company(token, header.strip())
        if company is None:
            return None, self._error(404, "Not Found")
        return company, None

    def after_request(self, request: SandboxRequest, response: SandboxResponse) -> None:
        # §1: every response carries Api-Version-Expires-At (empty on the current version).
        response.headers.setdefault("Api-Version-Expires-At", "")
        call = vars(request).get("_pennylane_call")
        if isinstance(call, _Call):
            for name, value in call.rate_headers.items():
                response.headers.setdefault(name, value)

    # -- request parsing -------------------------------------------------------------------------

    def _json_object(self, request: SandboxRequest) -> dict[str, Any]:
        try:
            body = request.json()
        except (ValueError, UnicodeDecodeError):
            raise self._bad("The request body is not valid JSON", "ValidateError") from None
        if not isinstance(body, dict):
            raise self._bad(
                "The property '#/' of type array did not match the following type: object", "ValidateError"
            )
        return body

    def _check_keys(self, body: Mapping[str, Any], allowed: Iterable[str], pointer: str) -> None:
        """§3.4 (inferred): schema validation rejects properties the schema does not define."""
        allowed_set = set(allowed)
        for key in body:
            if key not in allowed_set:
                raise self._bad(
                    f"The property '{pointer}{key}' is not defined and the definition does not allow "
                    "additional properties",
                    "NotExistPropertyDefinition",
                    key,
                )

    def _require(self, body: Mapping[str, Any], names: Iterable[str], pointer: str) -> None:
        for name in names:
            if name not in body or body[name] is None:
                raise self._bad(
                    f"The property '{pointer or '#/'}' did not contain a required property of '{name}'",
                    "NotExistRequiredKey",
                    name,
                )

    def _int(self, value: Any, pointer: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(
                f"The property '{pointer}' of type {type(value).__name__} did not match the following type: integer",
                "ValidateError",
                pointer.rsplit("/", 1)[-1],
            )
        return value

    def _string(self, value: Any, pointer: str, *, min_length: int = 0, max_length: int | None = None) -> str:
        name = pointer.rsplit("/", 1)[-1]
        if not isinstance(value, str):
            raise self._bad(
                f"The property '{pointer}' of type {type(value).__name__} did not match the following type: string",
                "ValidateError",
                name,
            )
        if len(value) < min_length:
            raise self._bad(
                f"The property '{pointer}' was not of a minimum string length of {min_length}",
                "LessThanMinLength",
                name,
            )
        if max_length is not None and len(value) > max_length:
            raise self._bad(
                f"The property '{pointer}' was not of a maximum string length of {max_length}",
                "ValidateError",
                name,
            )
        return value

    def _date(self, value: Any, pointer: str) -> date:
        name = pointer.rsplit("/", 1)[-1]
        if isinstance(value, str) and DATE_RE.match(value):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        raise self._bad(
            f"The property '{pointer}' must be a valid RFC3339 full-date", "InvalidDateFormat", name
        )

    def _amount(self, value: Any, pointer: str) -> Decimal:
        """§3.3: amounts are decimal strings matching ``^(-?\\d+(\\.\\d+)?)?$``."""
        name = pointer.rsplit("/", 1)[-1]
        if not isinstance(value, str):
            raise self._bad(
                f"The property '{pointer}' of type {type(value).__name__} did not match the following type: string",
                "ValidateError",
                name,
            )
        if not AMOUNT_RE.match(value):
            raise self._bad(
                f"The property '{pointer}' value \"{value}\" did not match the regex '^(-?\\d+(\\.\\d+)?)?$'",
                "ValidateError",
                name,
            )
        try:
            return Decimal(value) if value else Decimal(0)
        except InvalidOperation:  # pragma: no cover - the regex already guards
            raise self._bad(f"The property '{pointer}' is not a decimal", "ValidateError", name) from None

    # -- listing machinery (§3.1, §3.2) ----------------------------------------------------------

    def _limit(self, request: SandboxRequest, maximum: int) -> int:
        raw = request.arg("limit")
        if raw is None or raw == "":
            return DEFAULT_LIMIT
        try:
            value = int(raw)
        except ValueError:
            raise self._bad(
                "The property '#/limit' of type string did not match the following type: integer",
                "ValidateError",
                "limit",
            ) from None
        if value > maximum:
            raise self._bad(
                f"The property '#/limit' had a value greater than maximum {maximum}",
                "MoreThanMaximum",
                "limit",
            )
        if value < 1:
            raise self._bad(
                "The property '#/limit' had a value less than minimum 1", "ValidateError", "limit"
            )
        return value

    def _filters(self, request: SandboxRequest, spec: Mapping[str, _Field]) -> Callable[[Any], bool]:
        """Parse ``filter`` (a JSON array of ``{field, operator, value}``, ANDed) into a predicate."""
        raw = request.arg("filter")
        if raw is None or raw.strip() == "":
            return lambda item: True
        try:
            conditions = json.loads(raw)
        except ValueError:
            raise self._fail(400, "Invalid filter: not a JSON array") from None
        if not isinstance(conditions, list):
            raise self._fail(400, "Invalid filter: not a JSON array")
        checks: list[Callable[[Any], bool]] = []
        for condition in conditions:
            if not isinstance(condition, dict) or not {"field", "operator", "value"} <= set(condition):
                raise self._fail(400, "Invalid filter: each condition needs field, operator and value")
            name, op, value = condition["field"], condition["operator"], condition["value"]
            # §9.4: 400 on a field the endpoint does not filter on.
            if name not in spec:
                raise self._fail(400, f"Invalid filter: unknown field '{name}'")
            definition = spec[name]
            if op not in definition.ops:
                raise self._fail(400, f"Invalid filter: operator '{op}' is not supported for field '{name}'")
            checks.append(self._condition(definition, name, op, value))
        return lambda item: all(check(item) for check in checks)

    def _coerce(self, kind: str, name: str, value: Any) -> Any:
        try:
            if kind == "int":
                if isinstance(value, bool):
                    raise ValueError
                return int(value)
            if kind == "date":
                return date.fromisoformat(str(value))
            if kind == "bool":
                if isinstance(value, bool):
                    return value
                if str(value).lower() in ("true", "false"):
                    return str(value).lower() == "true"
                raise ValueError
            return str(value)
        except (TypeError, ValueError):
            raise self._fail(400, f"Invalid filter: bad value for field '{name}'") from None

    def _condition(self, definition: _Field, name: str, op: str, value: Any) -> Callable[[Any], bool]:
        if op in ("in", "not_in"):
            # §3.2: the list may be a JSON array or a JSON string holding one.
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    raise self._fail(400, f"Invalid filter: '{op}' needs a list for field '{name}'") from None
            if not isinstance(value, list):
                raise self._fail(400, f"Invalid filter: '{op}' needs a list for field '{name}'")
            wanted = {self._coerce(definition.kind, name, v) for v in value}
        else:
            target = self._coerce(definition.kind, name, value)
        get = definition.get

        def values(item: Any) -> list[Any]:
            got = get(item)
            return list(got) if isinstance(got, list | tuple | set) else [got]

        def check(item: Any) -> bool:
            present = [v for v in values(item) if v is not None]
            if op == "in":
                return any(v in wanted for v in present)
            if op == "not_in":
                return not any(v in wanted for v in present)
            if op == "not_eq":
                return all(v != target for v in present)
            if op == "start_with":
                return any(str(v).startswith(str(target)) for v in present)
            compare: dict[str, Callable[[Any], bool]] = {
                "eq": lambda v: v == target,
                "lt": lambda v: v < target,
                "lteq": lambda v: v <= target,
                "gt": lambda v: v > target,
                "gteq": lambda v: v >= target,
            }
            return any(compare[op](v) for v in present)

        return check

    def _sort(self, request: SandboxRequest, allowed: Sequence[str], default: str) -> tuple[str, bool]:
        raw = request.arg("sort") or default
        name = raw.removeprefix("-")
        if name not in allowed:
            raise self._fail(400, f"Invalid sort: '{raw}' (allowed: {', '.join(allowed)})")
        return name, raw.startswith("-")

    @staticmethod
    def _encode_cursor(key: tuple[Any, ...]) -> str:
        return base64.b64encode(("cursor:" + ":".join(str(part) for part in key)).encode()).decode()

    def _decode_cursor(self, raw: str, arity: int) -> tuple[Any, ...]:
        try:
            text = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=False).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise self._fail(400, "Invalid cursor") from None
        parts = text.removeprefix("cursor:").split(":") if text.startswith("cursor:") else []
        if len(parts) != arity or not parts[-1].isdigit():
            raise self._fail(400, "Invalid cursor")
        return tuple(int(part) if part.isdigit() else part for part in parts)

    def _cursor_list(
        self,
        request: SandboxRequest,
        items: Iterable[T],
        *,
        spec: Mapping[str, _Field],
        sorts: Mapping[str, Callable[[T], tuple[Any, ...]]],
        default_sort: str,
        maximum: int,
        render: Callable[[T], dict[str, Any]],
    ) -> SandboxResponse:
        """§3.1 cursor page: ``items``, ``has_more``, ``next_cursor``.

        The cursor holds only the position (sort key of the last item served); ``filter`` and
        ``sort`` are re-read from each request, so they must be resent with every page.
        """
        limit = self._limit(request, maximum)
        keep = self._filters(request, spec)
        sort_name, descending = self._sort(request, tuple(sorts), default_sort)
        key = sorts[sort_name]
        ordered = sorted((item for item in items if keep(item)), key=key, reverse=descending)
        raw_cursor = request.arg("cursor")
        if raw_cursor:
            arity = len(key(ordered[0])) if ordered else (1 if sort_name == "id" else 2)
            position = self._decode_cursor(raw_cursor, arity)
            if descending:
                ordered = [item for item in ordered if key(item) < position]
            else:
                ordered = [item for item in ordered if key(item) > position]
        page = ordered[:limit]
        has_more = len(ordered) > limit
        return json_response(
            {
                "items": [render(item) for item in page],
                "has_more": has_more,
                "next_cursor": self._encode_cursor(key(page[-1])) if has_more and page else None,
            }
        )

    def _page_list(
        self,
        request: SandboxRequest,
        items: Sequence[T],
        *,
        maximum: int,
        render: Callable[[T], dict[str, Any]],
    ) -> SandboxResponse:
        """§3.1 page mode (firm ``companies``, ``fiscal_years``): ``page``/``per_page`` in."""
        try:
            page = int(request.arg("page") or 1)
            per_page = int(request.arg("per_page") or DEFAULT_LIMIT)
        except ValueError:
            raise self._bad("page and per_page must be integers", "ValidateError") from None
        if page < 1:
            raise self._bad("The property '#/page' had a value less than minimum 1", "ValidateError", "page")
        if per_page < 1 or per_page > maximum:
            raise self._bad(
                f"The property '#/per_page' had a value greater than maximum {maximum}"
                if per_page > maximum
                else "The property '#/per_page' had a value less than minimum 1",
                "MoreThanMaximum" if per_page > maximum else "ValidateError",
                "per_page",
            )
        sliced, info = self.paginate(items, page, per_page)
        return json_response(
            {
                "items": [render(item) for item in sliced],
                "total_pages": info.total_pages,
                "current_page": page,
                "total_items": info.total_count,
                "per_page": per_page,
            }
        )

    @staticmethod
    def _by_id(item: Any) -> tuple[int]:
        return (item["id"] if isinstance(item, dict) else item.id,)

    # -- rendering -------------------------------------------------------------------------------

    def _url(self, request: SandboxRequest, company: Company, path: str) -> str:
        call = _call(request)
        prefix = f"{FIRM}/companies/{company.id}" if call.api == "firm" else V2
        return request.url_for(prefix + path)

    def _render_company(self, company: Company) -> dict[str, Any]:
        """§4 company object."""
        return {
            "id": company.id,
            "name": company.name,
            "billing_company_name": company.billing_company_name,
            "siren": company.siren,
            "address": company.address,
            "city": company.city,
            "postal_code": company.postal_code,
            "activity_nomenclature": company.activity_nomenclature,
            "activity_code": company.activity_code,
            "external_id": company.external_id,
            "client_code": company.client_code,
        }

    def _render_account(self, account: LedgerAccount, api: str) -> dict[str, Any]:
        """§5.1: v2 items carry ``type`` and timestamps; firm items carry ``archived_at`` instead."""
        data: dict[str, Any] = {
            "id": account.id,
            "number": account.number,
            "label": account.label,
            "vat_rate": account.vat_rate,
            "country_alpha2": account.country_alpha2,
            "enabled": account.enabled,
        }
        if api == "firm":
            data["letterable"] = account.letterable
            data["archived_at"] = _ts(account.archived_at) if account.archived_at else None
        else:
            data.update(
                type=account.type,
                letterable=account.letterable,
                created_at=_ts(account.created_at),
                updated_at=_ts(account.updated_at),
            )
        return data

    def _render_journal(self, journal: Journal, company: Company, api: str, base: str) -> dict[str, Any]:
        return {"id": journal.id, "code": journal.code, "label": journal.label, "type": journal.type}

    def _render_fiscal_year(self, fiscal_year: FiscalYear) -> dict[str, Any]:
        return {
            "id": fiscal_year.id,
            "start": fiscal_year.start.isoformat(),
            "finish": fiscal_year.finish.isoformat(),
            "status": fiscal_year.status,
            "created_at": _ts(fiscal_year.created_at),
            "updated_at": _ts(fiscal_year.updated_at),
        }

    def _account_ref(
        self, request: SandboxRequest, company: Company, account_id: int | None
    ) -> dict[str, Any] | None:
        if account_id is None:
            return None
        ref: dict[str, Any] = {"id": account_id}
        if _call(request).api == "firm":
            # §5.3: the firm API gives {id, url}, the company API {id}.
            ref["url"] = self._url(request, company, f"/ledger_accounts/{account_id}")
        return ref

    def _render_supplier(
        self, request: SandboxRequest, company: Company, record: dict[str, Any]
    ) -> dict[str, Any]:
        data = {k: v for k, v in record.items() if k != "ledger_account_id"}
        data["ledger_account"] = self._account_ref(request, company, record["ledger_account_id"])
        data["created_at"] = _ts(record["created_at"])
        data["updated_at"] = _ts(record["updated_at"])
        return data

    def _render_customer(
        self, request: SandboxRequest, company: Company, record: dict[str, Any]
    ) -> dict[str, Any]:
        data = self._render_supplier(request, company, record)
        base = self._url(request, company, f"/customers/{record['id']}")
        data.update(
            mandates={"url": base + "/mandates"},
            pro_account_mandates={"url": base + "/pro_account_mandates"},
            contacts={"url": base + "/contacts"},
        )
        return data

    def _attachment_url(self, request: SandboxRequest, attachment: Attachment) -> str:
        return request.url_for(
            f"/rails/active_storage/blobs/redirect/{attachment.key}/{quote(attachment.filename)}"
        )

    def _render_attachment(self, request: SandboxRequest, attachment: Attachment) -> dict[str, Any]:
        """§5.6 upload answer."""
        return {
            "id": attachment.id,
            "url": self._attachment_url(request, attachment),
            "filename": attachment.filename,
            "created_at": _ts(attachment.created_at),
            "updated_at": _ts(attachment.created_at),
        }

    def _render_entry(
        self, request: SandboxRequest, company: Company, entry: Entry, *, with_lines: bool
    ) -> dict[str, Any]:
        """§5.5 entry: lines only on the company API's create/show/update; firm adds ``status``."""
        api = _call(request).api
        attachment = company.attachments.get(entry.file_attachment_id or -1)
        data: dict[str, Any] = {
            "id": entry.id,
            "label": entry.label,
            "piece_number": entry.piece_number,
            "date": entry.date.isoformat(),
            "due_date": entry.due_date.isoformat() if entry.due_date else None,
            "invoice_number": None,
            "journal": {
                "id": entry.journal_id,
                "url": self._url(request, company, f"/journals/{entry.journal_id}"),
            },
            "journal_id": entry.journal_id,
            "categories": [],
            "attachment": (
                {"filename": attachment.filename, "url": self._attachment_url(request, attachment)}
                if attachment
                else None
            ),
            "ledger_attachment_id": None,
            "ledger_attachment_filename": attachment.filename if attachment else None,
            "created_at": _ts(entry.created_at),
            "updated_at": _ts(entry.updated_at),
        }
        if api == "firm":
            data["status"] = entry.status
        elif with_lines:
            data["ledger_entry_lines"] = [
                self._render_entry_line_short(request, company, company.lines[line_id])
                for line_id in entry.line_ids
            ]
        return data

    def _render_entry_line_short(
        self, request: SandboxRequest, company: Company, line: EntryLine
    ) -> dict[str, Any]:
        account = company.accounts[line.ledger_account_id]
        return {
            "id": line.id,
            "debit": _money(line.debit),
            "credit": _money(line.credit),
            "label": line.label,
            "ledger_account_id": account.id,
            "ledger_account": {
                "id": account.id,
                "number": account.number,
                "url": self._url(request, company, f"/ledger_accounts/{account.id}"),
            },
        }

    def _render_line(self, request: SandboxRequest, company: Company, line: EntryLine) -> dict[str, Any]:
        """§5.5 ledger entry line item."""
        entry = company.entries[line.entry_id]
        data = self._render_entry_line_short(request, company, line)
        del data["ledger_account_id"]
        data.update(
            categories=[],
            journal={
                "id": entry.journal_id,
                "url": self._url(request, company, f"/journals/{entry.journal_id}"),
            },
            date=entry.date.isoformat(),
            ledger_entry={"id": entry.id},
            lettered_ledger_entry_lines={
                "ids": [],
                "url": self._url(
                    request, company, f"/ledger_entry_lines/{line.id}/lettered_ledger_entry_lines"
                ),
            },
            created_at=_ts(line.created_at),
            updated_at=_ts(line.updated_at),
        )
        if _call(request).api == "firm":
            data["imputation_dates"] = None
        return data

    # ============================================================================================
    # Routes
    # ============================================================================================

    # -- companies (§4) --------------------------------------------------------------------------

    @route("GET", f"{FIRM}/companies", api="firm", scope="companies")
    @_guarded
    def list_companies(self, request: SandboxRequest) -> SandboxResponse:
        token = _call(request).token
        assert token is not None
        spec = {"client_code": _Field("str", SET_OPS, lambda c: c.client_code)}
        keep = self._filters(request, spec)
        visible = sorted((self.companies[i] for i in self._visible_ids(token)), key=lambda c: c.id)
        return self._page_list(
            request,
            [c for c in visible if keep(c)],
            maximum=COMPANIES_MAX_PER_PAGE,
            render=self._render_company,
        )

    @route("GET", f"{FIRM}/companies/{{company_id}}", api="firm", scope="companies")
    @_guarded
    def get_company(self, request: SandboxRequest, company_id: str) -> SandboxResponse:
        company = _call(request).company
        assert company is not None
        return json_response(self._render_company(company))

    # -- /me (§2.6) ------------------------------------------------------------------------------

    @route("GET", f"{V2}/me", api="v2")
    @_guarded
    def me(self, request: SandboxRequest) -> SandboxResponse:
        call = _call(request)
        assert call.token is not None
        company = call.company
        return json_response(
            {
                "user": call.token.user,
                "company": (
                    {"id": company.id, "name": company.name, "reg_no": company.siren} if company else None
                ),
                "scopes": sorted(call.token.scopes),
            }
        )

    # -- fiscal years (§5.9, §4) -----------------------------------------------------------------

    @route("GET", f"{CO}/fiscal_years", api="firm", scope="fiscal_years")
    @route("GET", f"{V2}/fiscal_years", api="v2", scope="fiscal_years")
    @_guarded
    def list_fiscal_years(self, request: SandboxRequest, company_id: str | None = None) -> SandboxResponse:
        company = self._current(request)
        years = list(company.fiscal_years.values())
        if _call(request).api == "firm":
            # §3.1: page mode on the firm API, oldest first (pre-2026 default: ascending start).
            years.sort(key=lambda f: (f.start, f.id))
            return self._page_list(request, years, maximum=FIRM_MAX_PER_PAGE, render=self._render_fiscal_year)
        return self._cursor_list(
            request,
            years,
            spec={},
            sorts={"id": self._by_id, "start": lambda f: (f.start.isoformat(), f.id)},
            default_sort="-id",
            maximum=V2_MAX_LIMIT,
            render=self._render_fiscal_year,
        )

    @route("POST", f"{CO}/fiscal_years", api="firm", scope="fiscal_years", write=True)
    @_guarded
    def create_fiscal_year(self, request: SandboxRequest, company_id: str) -> SandboxResponse:
        """§4: body ``start``, ``finish``; years must be consecutive and must not overlap."""
        company = self._current(request)
        body = self._json_object(request)
        self._check_keys(body, ("start", "finish"), "#/")
        self._require(body, ("start", "finish"), "#/")
        start, finish = self._date(body["start"], "#/start"), self._date(body["finish"], "#/finish")
        if finish <= start:
            raise self._fail(422, "The fiscal year must finish after it starts")
        years = sorted(company.fiscal_years.values(), key=lambda f: f.start)
        for year in years:
            if start <= year.finish and year.start <= finish:
                raise self._fail(422, "The fiscal year overlaps an existing fiscal year")
        if years and not (
            start == years[-1].finish + timedelta(days=1) or finish == years[0].start - timedelta(days=1)
        ):
            raise self._fail(422, "The fiscal year must be consecutive to the existing fiscal years")
        now = self.now()
        fiscal_year = FiscalYear(self._next("fiscal_year"), start, finish, "open", now, now)
        company.fiscal_years[fiscal_year.id] = fiscal_year
        return json_response(self._render_fiscal_year(fiscal_year), 201)

    # -- journals (§5.2) -------------------------------------------------------------------------

    def _current(self, request: SandboxRequest) -> Company:
        company = _call(request).company
        if company is None:
            raise self._fail(404, "Not Found")
        return company

    @route("GET", f"{CO}/journals", api="firm", scope="journals")
    @route("GET", f"{V2}/journals", api="v2", scope="journals")
    @_guarded
    def list_journals(self, request: SandboxRequest, company_id: str | None = None) -> SandboxResponse:
        company = self._current(request)
        api = _call(request).api
        return self._cursor_list(
            request,
            company.journals.values(),
            spec={"type": _Field("str", SET_OPS, lambda j: j.type)},
            sorts={"id": self._by_id},
            default_sort="-id",
            maximum=FIRM_MAX_LIMIT if api == "firm" else V2_MAX_LIMIT,
            render=lambda j: self._render_journal(j, company, api, request.base_url),
        )

    @route("GET", f"{CO}/journals/{{journal_id}}", api="firm", scope="journals")
    @route("GET", f"{V2}/journals/{{journal_id}}", api="v2", scope="journals")
    @_guarded
    def get_journal(
        self, request: SandboxRequest, journal_id: str, company_id: str | None = None
    ) -> SandboxResponse:
        company = self._current(request)
        journal = company.journals.get(self._path_id(journal_id))
        if journal is None:
            raise self._fail(404, "Not Found")
        return json_response(self._render_journal(journal, company, _call(request).api, request.base_url))

    @route("POST", f"{CO}/journals", api="firm", scope="journals", write=True)
    @route("POST", f"{V2}/journals", api="v2", scope="journals", write=True)
    @_guarded
    def create_journal(self, request: SandboxRequest, company_id: str | None = None) -> SandboxResponse:
        """§5.2: ``code`` ("2 to 5 letters"; the reference's own example is ``BQ1``) and ``label``."""
        company = self._current(request)
        body = self._json_object(request)
        self._check_keys(body, ("code", "label"), "#/")
        self._require(body, ("code", "label"), "#/")
        code = self._string(body["code"], "#/code", min_length=2, max_length=5)
        label = self._string(body["label"], "#/label", min_length=1)
        if not re.fullmatch(r"[A-Za-z0-9]{2,5}", code):
            raise self._fail(422, "Code must be 2 to 5 letters")
        if any(j.code.upper() == code.upper() for j in company.journals.values()):
            # inferred: a second journal with the same code is refused.
            raise self._fail(422, "Code has already been taken")
        journal = Journal(self._next("journal"), code.upper(), label, "misc", self.now())
        company.journals[journal.id] = journal
        return json_response(
            self._render_journal(journal, company, _call(request).api, request.base_url), 201
        )

    @staticmethod
    def _path_id(raw: str) -> int:
        try:
            return int(raw)
        except ValueError:
            return -1

    # -- ledger accounts (§5.1) ------------------------------------------------------------------

    @route("GET", f"{CO}/ledger_accounts", api="firm", scope="ledger_accounts")
    @route("GET", f"{V2}/ledger_accounts", api="v2", scope="ledger_accounts")
    @_guarded
    def list_ledger_accounts(self, request: SandboxRequest, company_id: str | None = None) -> SandboxResponse:
        company = self._current(request)
        api = _call(request).api
        spec = {
            "id": _Field("int", NUMERIC_OPS, lambda a: a.id),
            "number": _Field("str", frozenset({"start_with", "eq", "in"}), lambda a: a.number),
            "enabled": _Field("bool", frozenset({"eq"}), lambda a: a.enabled),
        }
        return self._cursor_list(
            request,
            company.accounts.values(),
            spec=spec,
            sorts={"id": self._by_id},
            default_sort="-id",
            maximum=FIRM_MAX_LIMIT if api == "firm" else V2_MAX_LIMIT_LARGE,
            render=lambda a: self._render_account(a, api),
        )

    @route("GET", f"{CO}/ledger_accounts/{{account_id}}", api="firm", scope="ledger_accounts")
    @route("GET", f"{V2}/ledger_accounts/{{account_id}}", api="v2", scope="ledger_accounts")
    @_guarded
    def get_ledger_account(
        self, request: SandboxRequest, account_id: str, company_id: str | None = None
    ) -> SandboxResponse:
        company = self._current(request)
        account = company.accounts.get(self._path_id(account_id))
        if account is None:
            raise self._fail(404, "Not Found")
        return json_response(self._render_account(account, _call(request).api))

    @route("POST", f"{CO}/ledger_accounts", api="firm", scope="ledger_accounts", write=True)
    @route("POST", f"{V2}/ledger_accounts", api="v2", scope="ledger_accounts", write=True)
    @_guarded
    def create_ledger_account(
        self, request: SandboxRequest, company_id: str | None = None
    ) -> SandboxResponse:
        """§5.1: ``number``*, ``label``*, ``vat_rate``, ``country_alpha2``; 401/411 spawn a third party."""
        company = self._current(request)
        body = self._json_object(request)
        self._check_keys(body, ("number", "label", "vat_rate", "country_alpha2"), "#/")
        self._require(body, ("number", "label"), "#/")
        number = self._string(body["number"], "#/number", min_length=1)
        label = self._string(body["label"], "#/label", min_length=1)
        vat_rate = body.get("vat_rate") or "any"
        if vat_rate not in VAT_RATES:
            raise self._bad(
                f"The property '#/vat_rate' value \"{vat_rate}\" did not match one of the enum values",
                "NotEnumInclude",
                "vat_rate",
            )
        country = body.get("country_alpha2") or "FR"
        if not (country == "any" or re.fullmatch(r"[A-Z]{2}", str(country))):
            raise self._bad(
                f"The property '#/country_alpha2' value \"{country}\" did not match one of the enum values",
                "NotEnumInclude",
                "country_alpha2",
            )
        # inferred: a PCG number starts with a class digit; letters are allowed after (401EDF).
        if not re.fullmatch(r"[1-8][0-9A-Za-z]*", number):
            raise self._fail(422, "Number is invalid")
        if any(a.number == number for a in company.accounts.values()):
            raise self._fail(422, "Number has already been taken")
        account = self._create_account(company, number, label, vat_rate, country, self.now())
        return json_response(self._render_account(account, _call(request).api), 201)

    @route("PUT", f"{CO}/ledger_accounts/{{account_id}}", api="firm", scope="ledger_accounts", write=True)
    @route("PUT", f"{V2}/ledger_accounts/{{account_id}}", api="v2", scope="ledger_accounts", write=True)
    @_guarded
    def update_ledger_account(
        self, request: SandboxRequest, account_id: str, company_id: str | None = None
    ) -> SandboxResponse:
        """§5.1: only ``label`` and ``letterable`` can change."""
        company = self._current(request)
        account = company.accounts.get(self._path_id(account_id))
        if account is None:
            raise self._fail(404, "Not Found")
        body = self._json_object(request)
        self._check_keys(body, ("label", "letterable"), "#/")
        if "label" in body:
            account.label = self._string(body["label"], "#/label", min_length=1)
        if "letterable" in body:
            if not isinstance(body["letterable"], bool):
                raise self._bad(
                    "The property '#/letterable' did not match the following type: boolean", "ValidateError"
                )
            account.letterable = body["letterable"]
        account.updated_at = self.now()
        return json_response(self._render_account(account, _call(request).api))

    # -- suppliers and customers (§5.3, §5.4; read-only on the firm API) -------------------------

    @route("GET", f"{CO}/suppliers", api="firm", scope="suppliers")
    @route("GET", f"{V2}/suppliers", api="v2", scope="suppliers")
    @_guarded
    def list_suppliers(self, request: SandboxRequest, company_id: str | None = None) -> SandboxResponse:
        company = self._current(request)
        spec = {
            "id": _Field("int", NUMERIC_OPS, lambda s: s["id"]),
            "ledger_account_id": _Field("int", frozenset({"eq", "not_eq"}), lambda s: s["ledger_account_id"]),
            "name": _Field("str", frozenset({"start_with", "eq"}), lambda s: s["name"]),
            "external_reference": _Field("str", SET_OPS, lambda s: s["external_reference"]),
            "emails": _Field("str", frozenset({"in"}), lambda s: s["emails"]),
        }
        return self._cursor_list(
            request,
            company.suppliers.values(),
            spec=spec,
            sorts={"id": self._by_id},
            default_sort="-id",
            maximum=FIRM_MAX_LIMIT,
            render=lambda s: self._render_supplier(request, company, s),
        )

    @route("GET", f"{V2}/suppliers/{{supplier_id}}", api="v2", scope="suppliers")
    @_guarded
    def get_supplier(self, request: SandboxRequest, supplier_id: str) -> SandboxResponse:
        company = self._current(request)
        record = company.suppliers.get(self._path_id(supplier_id))
        if record is None:
            raise self._fail(404, "Not Found")
        return json_response(self._render_supplier(request, company, record))

    @route("GET", f"{CO}/customers", api="firm", scope="customers")
    @route("GET", f"{V2}/customers", api="v2", scope="customers")
    @_guarded
    def list_customers(self, request: SandboxRequest, company_id: str | None = None) -> SandboxResponse:
        company = self._current(request)
        spec = {
            "id": _Field("int", NUMERIC_OPS, lambda c: c["id"]),
            "customer_type": _Field("str", SET_OPS, lambda c: c["customer_type"]),
            "ledger_account_id": _Field("int", frozenset({"eq", "not_eq"}), lambda c: c["ledger_account_id"]),
            "name": _Field("str", frozenset({"start_with", "eq"}), lambda c: c["name"]),
            "external_reference": _Field("str", SET_OPS | {"start_with"}, lambda c: c["external_reference"]),
            "reg_no": _Field("str", SET_OPS, lambda c: c["reg_no"]),
            "emails": _Field("str", frozenset({"in"}), lambda c: c["emails"]),
        }
        return self._cursor_list(
            request,
            company.customers.values(),
            spec=spec,
            sorts={"id": self._by_id},
            default_sort="-id",
            maximum=FIRM_MAX_LIMIT,
            render=lambda c: self._render_customer(request, company, c),
        )

    @route("GET", f"{V2}/customers/{{customer_id}}", api="v2", scope="customers")
    @_guarded
    def get_customer(self, request: SandboxRequest, customer_id: str) -> SandboxResponse:
        company = self._current(request)
        record = company.customers.get(self._path_id(customer_id))
        if record is None:
            raise self._fail(404, "Not Found")
        return json_response(self._render_customer(request, company, record))

    # -- file attachments (§5.6) -----------------------------------------------------------------

    @route("POST", f"{CO}/file_attachments", api="firm", scope="file_attachments", write=True)
    @route("POST", f"{V2}/file_attachments", api="v2", scope="file_attachments", write=True)
    @_guarded
    def upload_file_attachment(
        self, request: SandboxRequest, company_id: str | None = None
    ) -> SandboxResponse:
        """Multipart ``file``* and optional ``filename`` (<= 255); PDF/PNG/JPEG/TIFF/BMP/GIF, <= 100 MB."""
        company = self._current(request)
        try:
            parts = request.multipart()
        except ValueError:
            raise self._bad(
                "The request body must be multipart/form-data", "NotAMultipartFile", "file"
            ) from None
        file_part = next((p for p in parts if p.name == "file"), None)
        if file_part is None or file_part.filename is None:
            raise self._bad(
                "The property '#/' did not contain a required property of 'file'",
                "NotExistRequiredKey",
                "file",
            )
        name_part = next((p for p in parts if p.name == "filename"), None)
        filename = name_part.data.decode("utf-8", "replace") if name_part else (file_part.filename or "")
        if not filename:
            filename = "document"
        if len(filename) > MAX_FILENAME:
            raise self._bad(
                f"The property '#/filename' was not of a maximum string length of {MAX_FILENAME}",
                "ValidateError",
                "filename",
            )
        if len(file_part.data) > MAX_ATTACHMENT_BYTES:
            raise self._fail(422, "File size must be less than 100 MB")  # inferred status
        if not file_part.data or _sniff(file_part.data) is None:
            # inferred status: the reference lists the allowed types but not the refusal.
            raise self._fail(422, "File type is not supported (allowed: PDF, PNG, JPEG, TIFF, BMP, GIF)")
        attachment = self._store_attachment(company, filename, file_part.data, self.now())
        return json_response(self._render_attachment(request, attachment), 201)

    @route("GET", "/rails/active_storage/blobs/redirect/{key}/{filename}", api="public")
    @_guarded
    def download_blob(self, request: SandboxRequest, key: str, filename: str) -> SandboxResponse:
        """The attachment ``url`` (a signed blob link: no token needed)."""
        found = self.blobs.get(key)
        if found is None:
            raise self._fail(404, "Not Found")
        attachment = self.companies[found[0]].attachments[found[1]]
        return SandboxResponse(
            200,
            {
                "Content-Type": attachment.content_type,
                "Content-Disposition": f'inline; filename="{quote(attachment.filename)}"',
            },
            attachment.data,
        )

    # -- ledger entries (§5.5) -------------------------------------------------------------------

    def _entry_spec(self, company: Company) -> dict[str, _Field]:
        spec = {
            "date": _Field("date", NUMERIC_OPS - {"in", "not_in"}, lambda e: e.date),
            "journal_id": _Field("int", NUMERIC_OPS, lambda e: e.journal_id),
            "id": _Field("int", NUMERIC_OPS, lambda e: e.id),
        }
        if self.piece_number_filter:
            # Not in the reference (§5.5 lists date, journal_id, id): opt-in sandbox option.
            spec["piece_number"] = _Field("str", SET_OPS, lambda e: e.piece_number)
        return spec

    @route("GET", f"{CO}/ledger_entries", api="firm", scope="ledger_entries")
    @route("GET", f"{V2}/ledger_entries", api="v2", scope="ledger_entries")
    @_guarded
    def list_ledger_entries(self, request: SandboxRequest, company_id: str | None = None) -> SandboxResponse:
        """2026 behaviour (§1): every entry, drafts and closed years included; newest id first."""
        company = self._current(request)
        return self._cursor_list(
            request,
            company.entries.values(),
            spec=self._entry_spec(company),
            sorts={"id": self._by_id, "date": lambda e: (e.date.isoformat(), e.id)},
            default_sort="-id",
            maximum=FIRM_MAX_LIMIT if _call(request).api == "firm" else V2_MAX_LIMIT,
            render=lambda e: self._render_entry(request, company, e, with_lines=False),
        )

    @route("GET", f"{CO}/ledger_entries/{{entry_id}}", api="firm", scope="ledger_entries")
    @route("GET", f"{V2}/ledger_entries/{{entry_id}}", api="v2", scope="ledger_entries")
    @_guarded
    def get_ledger_entry(
        self, request: SandboxRequest, entry_id: str, company_id: str | None = None
    ) -> SandboxResponse:
        company = self._current(request)
        entry = company.entries.get(self._path_id(entry_id))
        if entry is None:
            raise self._fail(404, "Not Found")
        return json_response(self._render_entry(request, company, entry, with_lines=True))

    def _entry_allowed_keys(self, api: str) -> tuple[str, ...]:
        keys = ("date", "label", "journal_id", "ledger_entry_lines", "currency", "file_attachment_id")
        if api == "firm" and self.strict_firm_body:
            return keys  # §5.5: the July-2026 firm spec has no piece_number / due_date
        return (*keys, "piece_number", "due_date")

    def _parse_line(
        self, company: Company, raw: Any, pointer: str, *, partial: bool = False
    ) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self._bad(
                f"The property '{pointer}' did not match the following type: object", "ValidateError"
            )
        allowed = ("debit", "credit", "ledger_account_id", "label") + (("id",) if partial else ())
        self._check_keys(raw, allowed, pointer + "/")
        if not partial:
            self._require(raw, ("debit", "credit", "ledger_account_id"), pointer)
        line: dict[str, Any] = {}
        if "debit" in raw:
            line["debit"] = self._amount(raw["debit"], f"{pointer}/debit")
        if "credit" in raw:
            line["credit"] = self._amount(raw["credit"], f"{pointer}/credit")
        if "label" in raw and raw["label"] is not None:
            line["label"] = self._string(raw["label"], f"{pointer}/label", max_length=MAX_LINE_LABEL)
        if "ledger_account_id" in raw:
            line["ledger_account_id"] = self._int(raw["ledger_account_id"], f"{pointer}/ledger_account_id")
        line["pointer"] = pointer
        return line

    def _parse_entry_fields(self, company: Company, body: Mapping[str, Any]) -> dict[str, Any]:
        """Validate the scalar fields shared by create and update."""
        fields: dict[str, Any] = {}
        if "date" in body:
            fields["date"] = self._date(body["date"], "#/date")
        if "label" in body:
            fields["label"] = self._string(body["label"], "#/label", min_length=1, max_length=MAX_ENTRY_LABEL)
        if "due_date" in body and body["due_date"] is not None:
            fields["due_date"] = self._date(body["due_date"], "#/due_date")
        if "currency" in body and body["currency"] is not None:
            currency = self._string(body["currency"], "#/currency")
            if not re.fullmatch(r"[A-Z]{3}", currency):
                raise self._bad(
                    f"The property '#/currency' value \"{currency}\" did not match one of the enum values",
                    "NotEnumInclude",
                    "currency",
                )
            fields["currency"] = currency
        if "piece_number" in body and body["piece_number"] is not None:
            fields["piece_number"] = self._string(body["piece_number"], "#/piece_number")
        if "journal_id" in body:
            fields["journal_id"] = self._int(body["journal_id"], "#/journal_id")
        if "file_attachment_id" in body and body["file_attachment_id"] is not None:
            fields["file_attachment_id"] = self._int(body["file_attachment_id"], "#/file_attachment_id")
        return fields

    def _check_references(
        self, company: Company, fields: Mapping[str, Any], lines: Iterable[Mapping[str, Any]]
    ) -> None:
        """Ids in the body must belong to the company: 422 in the ``unprocessable_entity`` envelope.

        §3.4: the reference's own example is this body for an unknown ``journal_id``; the same shape
        is used for the other ids (inferred).
        """
        if "journal_id" in fields and fields["journal_id"] not in company.journals:
            raise self._unprocessable("journal_id", "journal_id is invalid", "not found")
        if "file_attachment_id" in fields and fields["file_attachment_id"] not in company.attachments:
            raise self._unprocessable("file_attachment_id", "file_attachment_id is invalid", "not found")
        for line in lines:
            if "ledger_account_id" in line and line["ledger_account_id"] not in company.accounts:
                raise self._unprocessable(
                    f"{str(line['pointer']).removeprefix('#/').replace('/', '.')}.ledger_account_id",
                    "ledger_account_id is invalid",
                    "not found",
                )

    def _check_open_period(self, company: Company, day: date) -> None:
        """§9.5: no entry in a closed or frozen fiscal year (messages inferred, open question 6)."""
        fiscal_year = self._fiscal_year_for(company, day)
        if fiscal_year is None:
            raise self._fail(422, f"No fiscal year covers the date {day.isoformat()}")
        if fiscal_year.status in CLOSED_STATUSES:
            raise self._fail(
                422,
                f"The fiscal year from {fiscal_year.start.isoformat()} to {fiscal_year.finish.isoformat()} "
                f"is {fiscal_year.status}: entries dated {day.isoformat()} cannot be created or modified",
            )

    @staticmethod
    def _fiscal_year_for(company: Company, day: date) -> FiscalYear | None:
        for fiscal_year in company.fiscal_years.values():
            if fiscal_year.start <= day <= fiscal_year.finish:
                return fiscal_year
        return None

    def _check_balance(self, lines: Iterable[tuple[Decimal, Decimal]]) -> None:
        debit = credit = Decimal(0)
        for line_debit, line_credit in lines:
            debit += line_debit
            credit += line_credit
        if debit != credit:
            # §3.4 / §5.5: the documented body.
            raise self._fail(422, "Entry lines are not balanced")

    @route("POST", f"{CO}/ledger_entries", api="firm", scope="ledger_entries", write=True)
    @route("POST", f"{V2}/ledger_entries", api="v2", scope="ledger_entries", write=True)
    @_guarded
    def create_ledger_entry(self, request: SandboxRequest, company_id: str | None = None) -> SandboxResponse:
        """§5.5 create: schema (400) first, then references, fiscal year and balance (422)."""
        company = self._current(request)
        api = _call(request).api
        body = self._json_object(request)
        self._check_keys(body, self._entry_allowed_keys(api), "#/")
        self._require(body, ("date", "label", "journal_id", "ledger_entry_lines"), "#/")
        raw_lines = body["ledger_entry_lines"]
        if not isinstance(raw_lines, list):
            raise self._bad(
                "The property '#/ledger_entry_lines' did not match the following type: array",
                "ValidateError",
                "ledger_entry_lines",
            )
        fields = self._parse_entry_fields(company, body)
        lines = [
            self._parse_line(company, raw, f"#/ledger_entry_lines/{i}") for i, raw in enumerate(raw_lines)
        ]
        self._check_references(company, fields, lines)
        if not lines:
            raise self._fail(422, "Ledger entry lines can't be blank")  # inferred message
        if len(lines) > MAX_ENTRY_LINES:
            raise self._fail(422, f"A ledger entry cannot have more than {MAX_ENTRY_LINES} lines")
        self._check_open_period(company, fields["date"])
        self._check_balance((line["debit"], line["credit"]) for line in lines)
        attachment = company.attachments.get(fields.get("file_attachment_id", -1))
        entry = self._insert_entry(
            company,
            day=fields["date"],
            label=fields["label"],
            journal=company.journals[fields["journal_id"]],
            piece_number=fields.get("piece_number"),
            due_date=fields.get("due_date"),
            currency=fields.get("currency", "EUR"),
            attachment=attachment,
            lines=[
                (
                    company.accounts[line["ledger_account_id"]],
                    line["debit"],
                    line["credit"],
                    line.get("label"),
                )
                for line in lines
            ],
            at=self.now(),
            source="api",
        )
        return json_response(self._render_entry(request, company, entry, with_lines=True), 201)

    @route("PUT", f"{CO}/ledger_entries/{{entry_id}}", api="firm", scope="ledger_entries", write=True)
    @route("PUT", f"{V2}/ledger_entries/{{entry_id}}", api="v2", scope="ledger_entries", write=True)
    @_guarded
    def update_ledger_entry(
        self, request: SandboxRequest, entry_id: str, company_id: str | None = None
    ) -> SandboxResponse:
        """§5.5 update: scalar fields and ``ledger_entry_lines {create, update, delete}``; stays balanced."""
        company = self._current(request)
        entry = company.entries.get(self._path_id(entry_id))
        if entry is None:
            raise self._fail(404, "Not Found")
        body = self._json_object(request)
        self._check_keys(
            body,
            (
                "date",
                "label",
                "journal_id",
                "currency",
                "piece_number",
                "file_attachment_id",
                "ledger_entry_lines",
            ),
            "#/",
        )
        fields = self._parse_entry_fields(company, body)
        operations = body.get("ledger_entry_lines") or {}
        if not isinstance(operations, dict):
            raise self._bad(
                "The property '#/ledger_entry_lines' did not match the following type: object",
                "ValidateError",
                "ledger_entry_lines",
            )
        self._check_keys(operations, ("create", "update", "delete"), "#/ledger_entry_lines/")
        creates = [
            self._parse_line(company, raw, f"#/ledger_entry_lines/create/{i}")
            for i, raw in enumerate(self._op_list(operations, "create"))
        ]
        updates: list[tuple[int, dict[str, Any]]] = []
        for i, raw in enumerate(self._op_list(operations, "update")):
            pointer = f"#/ledger_entry_lines/update/{i}"
            parsed = self._parse_line(company, raw, pointer, partial=True)
            self._require(raw, ("id",), pointer)
            updates.append((self._line_of(entry, raw["id"], f"{pointer}/id"), parsed))
        deletes = []
        for i, raw in enumerate(self._op_list(operations, "delete")):
            pointer = f"#/ledger_entry_lines/delete/{i}"
            if not isinstance(raw, dict):
                raise self._bad(
                    f"The property '{pointer}' did not match the following type: object", "ValidateError"
                )
            self._check_keys(raw, ("id",), pointer + "/")
            self._require(raw, ("id",), pointer)
            deletes.append(self._line_of(entry, raw["id"], f"{pointer}/id"))
        self._check_references(company, fields, [*creates, *(parsed for _, parsed in updates)])
        if len(creates) + len(updates) + len(deletes) > MAX_ENTRY_LINES:
            raise self._fail(422, f"A ledger entry cannot have more than {MAX_ENTRY_LINES} line operations")
        # The resulting lines, before touching anything.
        result: dict[int | str, tuple[Decimal, Decimal]] = {
            line_id: (company.lines[line_id].debit, company.lines[line_id].credit)
            for line_id in entry.line_ids
        }
        for line_id, parsed in updates:
            old = result[line_id]
            result[line_id] = (parsed.get("debit", old[0]), parsed.get("credit", old[1]))
        for line_id in deletes:
            result.pop(line_id, None)
        for index, parsed in enumerate(creates):
            result[f"new{index}"] = (parsed["debit"], parsed["credit"])
        if not result:
            raise self._fail(422, "Ledger entry lines can't be blank")
        self._check_open_period(company, entry.date)
        if "date" in fields:
            self._check_open_period(company, fields["date"])
        self._check_balance(result.values())
        # Apply.
        now = self.now()
        for name in ("date", "label", "journal_id", "currency", "piece_number", "file_attachment_id"):
            if name in fields:
                setattr(entry, name, fields[name])
        for line_id, parsed in updates:
            line = company.lines[line_id]
            for name in ("debit", "credit", "label", "ledger_account_id"):
                if name in parsed:
                    setattr(line, name, parsed[name])
            line.updated_at = now
            self._change(company, "ledger_entry_lines", line_id, "update", now)
        for line_id in deletes:
            if line_id in entry.line_ids:
                entry.line_ids.remove(line_id)
                company.lines.pop(line_id)
                self._change(company, "ledger_entry_lines", line_id, "delete", now)
        for parsed in creates:
            account = company.accounts[parsed["ledger_account_id"]]
            self._insert_line(
                company, entry, account.id, parsed["debit"], parsed["credit"], parsed.get("label"), now
            )
        entry.updated_at = now
        return json_response(self._render_entry(request, company, entry, with_lines=True))

    def _op_list(self, operations: Mapping[str, Any], name: str) -> list[Any]:
        value = operations.get(name) or []
        if not isinstance(value, list):
            raise self._bad(
                f"The property '#/ledger_entry_lines/{name}' did not match the following type: array",
                "ValidateError",
                name,
            )
        return value

    def _line_of(self, entry: Entry, raw_id: Any, pointer: str) -> int:
        line_id = self._int(raw_id, pointer)
        if line_id not in entry.line_ids:
            raise self._unprocessable(
                pointer.removeprefix("#/").replace("/", "."), "id is invalid", "not found"
            )
        return line_id

    # -- ledger entry lines (§5.5) ---------------------------------------------------------------

    def _line_spec(self, company: Company, api: str) -> dict[str, _Field]:
        spec = {
            "id": _Field("int", NUMERIC_OPS, lambda ln: ln.id),
            "journal_id": _Field("int", NUMERIC_OPS, lambda ln: company.entries[ln.entry_id].journal_id),
            "ledger_account_id": _Field("int", NUMERIC_OPS, lambda ln: ln.ledger_account_id),
            "date": _Field(
                "date", NUMERIC_OPS - {"in", "not_in"}, lambda ln: company.entries[ln.entry_id].date
            ),
        }
        if api == "firm":
            spec["ledger_entry_id"] = _Field("int", NUMERIC_OPS, lambda ln: ln.entry_id)
        return spec

    @route("GET", f"{CO}/ledger_entry_lines", api="firm", scope="ledger_entries")
    @route("GET", f"{V2}/ledger_entry_lines", api="v2", scope="ledger_entries")
    @_guarded
    def list_ledger_entry_lines(
        self, request: SandboxRequest, company_id: str | None = None
    ) -> SandboxResponse:
        company = self._current(request)
        api = _call(request).api
        return self._cursor_list(
            request,
            company.lines.values(),
            spec=self._line_spec(company, api),
            sorts={"id": self._by_id},
            default_sort="-id",
            maximum=FIRM_MAX_LIMIT if api == "firm" else V2_MAX_LIMIT,
            render=lambda ln: self._render_line(request, company, ln),
        )

    @route("GET", f"{V2}/ledger_entries/{{entry_id}}/ledger_entry_lines", api="v2", scope="ledger_entries")
    @_guarded
    def list_entry_lines_of_entry(self, request: SandboxRequest, entry_id: str) -> SandboxResponse:
        company = self._current(request)
        entry = company.entries.get(self._path_id(entry_id))
        if entry is None:
            raise self._fail(404, "Not Found")
        return self._cursor_list(
            request,
            [company.lines[i] for i in entry.line_ids],
            spec={"ledger_account_id": _Field("int", NUMERIC_OPS, lambda ln: ln.ledger_account_id)},
            sorts={"id": self._by_id},
            default_sort="-id",
            maximum=V2_MAX_LIMIT,
            render=lambda ln: self._render_line(request, company, ln),
        )

    @route("GET", f"{CO}/ledger_entry_lines/{{line_id}}", api="firm", scope="ledger_entries")
    @route("GET", f"{V2}/ledger_entry_lines/{{line_id}}", api="v2", scope="ledger_entries")
    @_guarded
    def get_ledger_entry_line(
        self, request: SandboxRequest, line_id: str, company_id: str | None = None
    ) -> SandboxResponse:
        company = self._current(request)
        line = company.lines.get(self._path_id(line_id))
        if line is None:
            raise self._fail(404, "Not Found")
        return json_response(self._render_line(request, company, line))

    # -- changelogs (§5.11) ----------------------------------------------------------------------

    @route("GET", f"{CO}/changelogs/{{resource}}", api="firm", scope="changelog")
    @route("GET", f"{V2}/changelogs/{{resource}}", api="v2", scope="changelog")
    @_guarded
    def list_changelog(
        self, request: SandboxRequest, resource: str, company_id: str | None = None
    ) -> SandboxResponse:
        """Ids of changed records, oldest first; 4-week window; ``start_date`` xor ``cursor``."""
        company = self._current(request)
        api = _call(request).api
        limit = self._limit(request, FIRM_MAX_LIMIT if api == "firm" else V2_MAX_LIMIT_LARGE)
        start_raw, cursor = request.arg("start_date"), request.arg("cursor")
        if start_raw and cursor:
            raise self._fail(400, "start_date and cursor cannot be used together")
        now = self.now()
        horizon = now - CHANGELOG_RETENTION
        events = [e for e in company.changes if e.resource == resource and e.processed_at >= horizon]
        if start_raw:
            try:
                start = datetime.fromisoformat(start_raw.replace("Z", "+00:00"))
            except ValueError:
                raise self._bad(
                    "The property '#/start_date' must be a valid RFC3339 date-time",
                    "InvalidDateFormat",
                    "start_date",
                ) from None
            if start.tzinfo is None:
                start = start.replace(tzinfo=UTC)
            if start < horizon:
                raise self._fail(422, "start_date must be within the last 4 weeks")
            events = [e for e in events if e.processed_at >= start]

        def key(event: ChangeEvent) -> tuple[int, int]:
            return (int(event.processed_at.timestamp() * 1_000_000), event.seq)

        events.sort(key=key)
        if cursor:
            position = self._decode_cursor(cursor, 2)
            events = [e for e in events if key(e) > position]
        page = events[:limit]
        has_more = len(events) > limit
        return json_response(
            {
                "items": [
                    {
                        "id": e.record_id,
                        "operation": e.operation,
                        "processed_at": _ts(e.processed_at),
                        "updated_at": _ts(e.updated_at),
                        "created_at": _ts(e.created_at),
                    }
                    for e in page
                ],
                "has_more": has_more,
                "next_cursor": self._encode_cursor(key(page[-1])) if has_more else None,
            }
        )
