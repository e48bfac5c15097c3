"""A fake of the Qonto Business API, written from ``/work/shared/reference/qonto-api.md``.

What it serves (section numbers are the reference's): the OAuth server (§2.2: consent page,
token endpoint with 1 h access tokens and rotating refresh tokens that keep a 60 s grace,
revocation), the API-key header ``{slug}:{secret}`` (§2.1), the staging-token gate of Qonto's
own sandbox (§1), the organisation and its bank accounts (§3.1), transactions with their filters,
sorting and ``meta`` paging (§3.2, §4.2), attachments behind short-lived URLs (§3.3), labels and
memberships (§3.4), clients (§3.5), client invoices (§3.6), credit notes (§3.7), supplier
invoices with the multipart bulk upload (§3.10), webhook subscriptions and signed deliveries
(§3.12), errors, idempotency keys and rate limits (§4.3-4.5).

The data is a realistic French company seeded from an integer: accounts whose transactions carry
consistent running balances, pending transactions that settle as the sandbox clock moves, clients
with invoices whose payments appear as credit transfers, supplier invoices paid by debit
transfers. Paging is served from pre-sorted lists and cached query results, so reading 50,000
transactions costs a slice per page.

Where the reference leaves a value open (error codes of bulk uploads, some enums) the choice is
marked ``inferred`` in a comment; see ``connectors/qonto/README.md`` for the test-control helpers.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import json
import math
import random
import secrets
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

from connectors.sandbox.base import (
    Abort,
    FakeAPI,
    PageInfo,
    Route,
    SandboxRequest,
    SandboxResponse,
    WebhookDelivery,
    empty_response,
    html_response,
    json_response,
    route,
    text_response,
)

PARIS = ZoneInfo("Europe/Paris")
DAY_MS = 86_400_000
MAX_PER_PAGE = 100
# Attachment URLs are "pre-signed S3 links valid 30 minutes" (§3.3).
ATTACHMENT_URL_TTL = 1800
# "keys expire after 30 minutes" (§4.4).
IDEMPOTENCY_TTL_MS = 30 * 60 * 1000
# "Whole request <= 15 MB" (§3.10).
BULK_UPLOAD_MAX_BYTES = 15 * 1024 * 1024
SUPPLIER_UPLOAD_TYPES = {"application/pdf", "image/jpeg", "image/png"}

# §2.3, plus offline_access/openid and the scopes seen in guides and clients.
QONTO_SCOPES = frozenset(
    """organization.read membership.read membership.write attachment.read attachment.write
    internal_transfer.write payment.write supplier_invoice.write supplier_invoice.read
    client_invoices.read client_invoice.write client.read client.write product.read product.write
    request_review.write request_review.read team.read team.write request_transfers.write
    insurance_contract.read insurance_contract.write card.read card.write bank_account.write
    beneficiary.trust webhook payment_link.write payment_link.read sepa_direct_debit.read
    sepa_direct_debit.write terminal.read terminal.write einvoicing.read request_cards.write
    international_transfer.write offline_access openid""".split()
)

# §3.12 topics.
WEBHOOK_TYPES = (
    "v1/transactions",
    "v1/accounts",
    "v1/organizations",
    "v1/memberships",
    "v1/consent-revocations",
    "v1/cards",
    "v1/clients",
    "v1/client-invoices",
    "v1/payment-links",
    "v1/terminal-payments",
)

TRANSACTION_STATUSES = ("pending", "declined", "completed", "reversed")
TRANSACTION_SORT_FIELDS = ("settled_at", "emitted_at", "updated_at", "created_at")
TRANSACTION_INCLUDES = ("vat_details", "labels", "attachments")
CLIENT_INVOICE_STATUSES = ("draft", "unpaid", "paid", "canceled")
SUPPLIER_INVOICE_STATUSES = (
    "to_review",
    "to_approve",
    "pending",
    "awaiting_payment",
    "to_pay",
    "scheduled",
    "paid",
    "archived",
    "rejected",
    "discarded",
)
SUBJECT_TYPES = {
    "card": "Card",
    "transfer": "Transfer",
    "income": "Income",
    "direct_debit": "DirectDebit",
    "qonto_fee": "Other",
}
# Sorts null settled_at (pending, declined) after every real date, i.e. "newest".
_NO_DATE = 1 << 62


def qonto_signature(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Qonto-Signature`` value: ``t={ts},v1={hex HMAC-SHA256(secret, "{ts}.{body}")}``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


# --------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------


def _ts(ms: int | None) -> str | None:
    """Banking timestamps: UTC with milliseconds, ``2021-03-03T16:06:38.000Z`` (§3.2)."""
    if ms is None:
        return None
    t = time.gmtime(ms // 1000)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{ms % 1000:03d}Z"
    )


def _ts_z(ms: int) -> str:
    """Client and webhook timestamps: UTC without fraction, ``2026-01-05T10:00:00Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ts_local(ms: int | None) -> str | None:
    """Invoicing timestamps carry the Paris offset, ``2022-03-04T17:58:30+02:00`` (§3.6)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, PARIS).isoformat(timespec="seconds")


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, PARIS).date().isoformat()


def _money(cents: int, currency: str = "EUR") -> dict[str, str]:
    """Invoicing money: a decimal string in major units plus the currency (§4.1)."""
    sign = "-" if cents < 0 else ""
    return {"value": f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}", "currency": currency}


def _parse_time(value: str) -> int:
    """An ISO 8601 datetime (or date) from a query string, as epoch milliseconds."""
    text = value.strip().replace(" ", "+")  # a '+' offset arrives as a space when not encoded
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _fold(text: str | None) -> str:
    """Case- and accent-insensitive form for the name filter (§3.5)."""
    decomposed = unicodedata.normalize("NFKD", text or "")
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _slugify(text: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in _fold(text))
    return "-".join(part for part in out.split("-") if part)


def _iban_fr(bank: str, branch: str, account: str) -> tuple[str, str]:
    """A valid French IBAN (RIB key and ISO 7064 check digits) and its BBAN account number."""
    rib_key = 97 - ((89 * int(bank) + 15 * int(branch) + 3 * int(account)) % 97)
    bban = f"{bank}{branch}{account}{rib_key:02d}"
    # FR -> 15 27, then "00" placeholder check digits, moved to the end.
    check = 98 - int(bban + "152700") % 97
    return f"FR{check:02d}{bban}", account


def _with_luhn(digits: str) -> str:
    """``digits`` followed by the Luhn check digit (SIREN and SIRET are Luhn-checked)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        doubled = int(char) * 2 if index % 2 == 0 else int(char)
        total += doubled - 9 if doubled > 9 else doubled
    return digits + str((10 - total % 10) % 10)


def _siren(rng: random.Random) -> str:
    return _with_luhn(f"{rng.randint(1, 9)}{rng.randint(0, 9_999_999):07d}")


def _siret(rng: random.Random, siren: str) -> str:
    return _with_luhn(f"{siren}{rng.randint(1, 9_999):04d}")


def _vat_fr(siren: str) -> str:
    return f"FR{(12 + 3 * (int(siren) % 97)) % 97:02d}{siren}"


def _fake_document(title: str, lines: Sequence[str], size: int) -> bytes:
    """A small, valid-looking PDF padded to ``size`` bytes (receipts, invoices)."""
    text = " ".join([title, *lines]).replace("(", "[").replace(")", "]")
    stream = f"BT /F1 11 Tf 50 780 Td ({text[:180]}) Tj ET".encode("latin-1", "replace")
    body = (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]/Contents 4 0 R"
        b"/Resources<</Font<</F1 5 0 R>>>>>>endobj\n"
        + f"4 0 obj<</Length {len(stream)}>>stream\n".encode()
        + stream
        + b"\nendstream endobj\n5 0 obj<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )
    return body + b"%" + b"." * max(0, size - len(body) - 2) + b"\n" if size > len(body) + 2 else body


# --------------------------------------------------------------------------------------------
# Seed vocabulary
# --------------------------------------------------------------------------------------------

FAMILY_NAMES = (
    "Martin Bernard Dubois Thomas Robert Richard Petit Durand Leroy Moreau Simon Laurent Lefèvre "
    "Michel Garcia David Bertrand Roux Vincent Fournier Morel Girard André Mercier Dupont Lambert "
    "Bonnet François Martinez Légaré Chevalier Hélie Perrin Gauthier Rousseau"
).split()
FIRST_NAMES = "Camille Léa Manon Chloé Inès Hugo Lucas Louis Théo Émile Zoé Jules Noémie Adèle Gaël".split()
BUSINESS_KINDS = (
    "Boulangerie Atelier Cabinet Studio Garage Librairie Pharmacie Agence Menuiserie Brasserie "
    "Fromagerie Imprimerie Architectes Conseil Transports Éditions"
).split()
LEGAL_FORMS = ("SARL", "SAS", "SASU", "EURL", "SA")
CITIES = (
    ("Paris", "75011"),
    ("Lyon", "69002"),
    ("Marseille", "13006"),
    ("Bordeaux", "33000"),
    ("Nantes", "44000"),
    ("Lille", "59800"),
    ("Toulouse", "31000"),
    ("Strasbourg", "67000"),
    ("Rennes", "35000"),
    ("Montpellier", "34000"),
)
STREETS = (
    "rue du Four",
    "avenue Jean Jaurès",
    "boulevard Voltaire",
    "rue de la République",
    "quai des Chartrons",
)

# (label, category, cashflow category, VAT rate or None)
CARD_MERCHANTS = (
    ("Amazon Business", "online_service", "Fournitures", 20),
    ("SNCF Connect", "transport", "Transport", 10),
    ("Uber", "transport", "Transport", 10),
    ("TotalEnergies", "gas_station", "Transport", 20),
    ("Le Petit Bistrot", "restaurant_and_bar", "Restaurants", 10),
    ("Monoprix", "food_and_grocery", "Alimentation", 5.5),
    ("Apple Store", "hardware_and_equipment", "Matériel", 20),
    ("Papeterie Centrale", "office_supply", "Fournitures", 20),
    ("Hôtel Ibis Lyon Centre", "hotel_and_lodging", "Déplacements", 10),
    ("Google Workspace", "online_service", "Logiciels", 20),
    ("Slack Technologies", "online_service", "Logiciels", 20),
    ("Notion Labs", "online_service", "Logiciels", 20),
    ("Air France", "transport", "Déplacements", 10),
    ("Fnac Pro", "hardware_and_equipment", "Matériel", 20),
    ("Boulangerie Paul", "restaurant_and_bar", "Restaurants", 10),
)
DIRECT_DEBITORS = (
    ("EDF Entreprises", "utility", "Énergie", 20),
    ("Orange Business", "utility", "Télécom", 20),
    ("URSSAF Île-de-France", "tax", "Charges sociales", None),
    ("Alan Assurance Santé", "insurance", "Assurances", None),
    ("AXA Assurances", "insurance", "Assurances", None),
    ("OVHcloud", "online_service", "Logiciels", 20),
    ("Free Pro", "utility", "Télécom", 20),
)
SUPPLIERS = (
    "Imprimerie Moderne SAS",
    "Fournitures Dupont SARL",
    "Nettoyage Pro Services",
    "Transports Girard & Fils",
    "Cabinet Comptable Mercier",
    "Agence Pixel Blanc",
    "Matériaux Bonnet SA",
    "Locaux Partagés SCI Les Tilleuls",
    "Traiteur Chevalier",
    "Informatique Rousseau EURL",
)
SERVICES = (
    ("Atelier découverte", "day", 45_000),
    ("Conseil stratégique", "hour", 12_000),
    ("Formation équipe", "day", 90_000),
    ("Maintenance mensuelle", "month", 25_000),
    ("Développement sur mesure", "day", 60_000),
    ("Licence logicielle", "unit", 4_900),
    ("Audit de conformité", "day", 110_000),
)
LABEL_NAMES = (
    ("Projets", None),
    ("Client Alpha", 0),
    ("Client Beta", 0),
    ("Frais généraux", None),
    ("Déplacements", 3),
)


# --------------------------------------------------------------------------------------------
# In-memory records
# --------------------------------------------------------------------------------------------


class _Tx:
    """One transaction. Times are epoch milliseconds; money is integer cents."""

    __slots__ = (
        "seq",
        "id",
        "transaction_id",
        "account_id",
        "is_external",
        "amount_cents",
        "local_amount_cents",
        "local_currency",
        "side",
        "operation_type",
        "label",
        "status",
        "settled_ms",
        "emitted_ms",
        "created_ms",
        "updated_ms",
        "settled_balance_cents",
        "note",
        "reference",
        "vat_rate",
        "vat_cents",
        "attachment_ids",
        "label_ids",
        "card_last_digits",
        "category",
        "cashflow",
        "initiator_id",
        "counterparty_iban",
        "counterparty_bic",
        "settle_due_ms",
    )

    def __init__(self, **values: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, values.get(name))

    @property
    def signed_cents(self) -> int:
        return self.amount_cents if self.side == "credit" else -self.amount_cents

    def as_dict(self) -> dict[str, Any]:
        amount = self.amount_cents
        data: dict[str, Any] = {
            "id": self.id,
            "transaction_id": self.transaction_id,
            "amount": amount / 100,
            "amount_cents": amount,
            "settled_balance": None
            if self.settled_balance_cents is None
            else self.settled_balance_cents / 100,
            "settled_balance_cents": self.settled_balance_cents,
            "attachment_ids": list(self.attachment_ids),
            "local_amount": self.local_amount_cents / 100,
            "local_amount_cents": self.local_amount_cents,
            "side": self.side,
            "operation_type": self.operation_type,
            "currency": "EUR",
            "local_currency": self.local_currency,
            "label": self.label,
            "clean_counterparty_name": self.label,
            "settled_at": _ts(self.settled_ms),
            "emitted_at": _ts(self.emitted_ms),
            "created_at": _ts(self.created_ms),
            "updated_at": _ts(self.updated_ms),
            "status": self.status,
            "note": self.note,
            "reference": self.reference,
            "vat_amount": None if self.vat_cents is None else self.vat_cents / 100,
            "vat_amount_cents": self.vat_cents,
            "vat_rate": self.vat_rate,
            "initiator_id": self.initiator_id,
            "label_ids": list(self.label_ids),
            "attachment_lost": False,
            "attachment_required": self.side == "debit" and self.operation_type != "qonto_fee",
            "card_last_digits": self.card_last_digits,
            "category": self.category,
            "cashflow_category": {"name": self.cashflow} if self.cashflow else None,
            "cashflow_subcategory": None,
            "subject_type": SUBJECT_TYPES.get(self.operation_type, "Other"),
            "bank_account_id": self.account_id,
            "is_external_transaction": self.is_external,
        }
        if self.operation_type in ("transfer", "income") and self.counterparty_iban:
            data[self.operation_type] = {
                "counterparty_account_number": self.counterparty_iban,
                "counterparty_account_number_format": "IBAN",
                "counterparty_bank_identifier": self.counterparty_bic,
                "counterparty_bank_identifier_format": "SWIFT_BIC",
            }
        return data


@dataclass
class _Account:
    id: str
    slug: str
    name: str
    iban: str | None
    bic: str | None
    account_number: str | None
    main: bool
    is_external: bool
    profile: str  # what its random transactions look like: main, taxes, projects, external
    balance_cents: int
    updated_ms: int
    status: str = "active"
    transactions: list[_Tx] = field(default_factory=list)
    last_settled_ms: int = 0


@dataclass
class _Attachment:
    id: str
    created_ms: int
    file_name: str
    content_type: str
    size: int
    title: str
    data: bytes | None = None  # uploaded bytes; seeded files are rendered on demand

    def content(self) -> bytes:
        if self.data is None:
            self.data = _fake_document(self.title, [self.file_name, self.id], self.size)
        return self.data


@dataclass
class _PendingEvent:
    subscription_id: str
    url: str
    secret: str
    payload: dict[str, Any]
    attempts: int = 0


@dataclass
class _Planned:
    """A seeded transaction decided before the timeline is laid out (an invoice payment)."""

    ms: int
    side: str
    amount_cents: int
    label: str
    reference: str
    iban: str | None
    attachment_ids: list[str]
    tx_id: str
    on_created: Any = None


# --------------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------------


def _scope(*names: str) -> dict[str, Any]:
    return {"scopes": names}


READ_ORG = _scope("organization.read")


class QontoSandbox(FakeAPI):
    """The Qonto Business API and OAuth server, in memory. See the module docstring."""

    slug = "qonto"
    default_seed = 4711
    default_base_url = "https://thirdparty-sandbox.staging.qonto.co"
    # §4.5: 1,000 requests / 10 s and 10,000 / 10 min per IP.
    default_rate_limits = ((1000, 10.0), (10_000, 600.0))
    # §2.2: code 10 min, access token 1 h, refresh token 90 days with offline_access, 60 s grace.
    auth_code_ttl = 600.0
    access_token_ttl = 3600.0
    refresh_token_ttl = 90 * 86400.0
    refresh_grace_seconds = 60.0
    refresh_token_scope = "offline_access"
    supported_scopes = QONTO_SCOPES
    token_prefixes: ClassVar[Mapping[str, str]] = {
        "code": "ory_ac_",
        "access": "ory_at_",
        "refresh": "ory_rt_",
    }
    #: §4.5: "throttling after > 200 responses with status 401 within 1 hour".
    unauthorized_limit: ClassVar[tuple[int, float]] = (200, 3600.0)

    # -- seeding -------------------------------------------------------------------------------

    def seed(
        self,
        rng: random.Random,
        *,
        transactions: int = 3000,
        pending: int = 12,
        declined: int = 6,
        external_transactions: int = 30,
        clients: int = 40,
        client_invoices: int = 160,
        supplier_invoices: int = 120,
        history_days: int = 420,
        staging_token: str | None = None,
        auto_webhooks: bool = False,
    ) -> None:
        """Build the organisation.

        ``transactions`` counts every transaction of the Qonto accounts, ``pending`` and
        ``declined`` included (so ``transactions=50000, pending=0, declined=0`` gives exactly
        50,000 completed ones); the external account gets ``external_transactions`` more.
        ``staging_token`` turns on the sandbox gate of §1; ``auto_webhooks`` delivers events
        as they happen instead of on ``flush_webhooks()``.
        """
        if pending + declined > transactions:
            raise ValueError("pending + declined cannot exceed transactions")
        self.staging_token = staging_token
        self.auto_webhooks = auto_webhooks
        self.start_ms = int(self.start_at.timestamp() * 1000)
        self.history_ms = history_days * DAY_MS
        self._seq = 0
        self._tx_version = 0
        self._tx_by_id: dict[str, _Tx] = {}
        self._index_cache: dict[tuple[str, str], tuple[int, list[int], list[_Tx]]] = {}
        self._query_cache: OrderedDict[tuple[Any, ...], tuple[int, list[_Tx]]] = OrderedDict()
        self._pending_due: list[tuple[int, int, str]] = []
        self._pending: dict[str, _Tx] = {}
        self._idempotency: dict[str, tuple[int, SandboxResponse]] = {}
        self._bulk_keys: dict[str, str] = {}
        self._unauthorized_hits: list[float] = []
        self.attachments: dict[str, _Attachment] = {}
        self.webhook_subscriptions: dict[str, dict[str, Any]] = {}
        self.pending_webhooks: list[_PendingEvent] = []
        self._url_key = rng.randbytes(32)

        self._seed_organization(rng)
        self._seed_clients(rng, clients)
        planned = self._seed_client_invoices(rng, client_invoices)
        planned += self._seed_supplier_invoices(rng, supplier_invoices)
        self._seed_transactions(rng, transactions, pending, declined, external_transactions, planned)

    def _seed_organization(self, rng: random.Random) -> None:
        family = rng.choice(FAMILY_NAMES)
        self.legal_name = f"Atelier {family} SAS"
        self.organization_slug = f"{_slugify('atelier ' + family)}-{rng.randint(1000, 9999)}"
        self.secret_key = f"{rng.getrandbits(128):032x}"
        self.organization_id = self.new_id()
        self.legal_number = _siren(rng)
        city, zipcode = rng.choice(CITIES)
        self.address = {
            "first_line": f"{rng.randint(1, 120)} {rng.choice(STREETS)}",
            "second_line": None,
            "third_line": None,
            "city": city,
            "zipcode": zipcode,
            "country": "FR",
            "state": None,
        }
        roles = ("owner", "admin", "accountant", "employee")
        self.memberships: list[dict[str, Any]] = []
        for index, role in enumerate(roles):
            first, last = rng.choice(FIRST_NAMES), rng.choice(FAMILY_NAMES)
            self.memberships.append(
                {
                    "id": self.new_id(),
                    "first_name": first,
                    "last_name": last,
                    "role": role,
                    "residence_country": "FR",
                    "birthdate": f"{rng.randint(1965, 1998)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                    "nationality": "FR",
                    "ubo": index == 0,
                    "birth_country": "FR",
                    "status": "active",
                    "team_id": None,
                    "email": f"{_slugify(first)}.{_slugify(last)}@{self.organization_slug}.example",
                }
            )
        self.owner_id = self.memberships[0]["id"]
        self.labels: list[dict[str, Any]] = []
        for name, parent in LABEL_NAMES:
            parent_id = self.labels[parent]["id"] if parent is not None else None
            self.labels.append({"id": self.new_id(), "name": name, "parent_id": parent_id})

        self.accounts: dict[str, _Account] = {}
        opened = self.start_ms - self.history_ms
        for index, (name, profile, balance) in enumerate(
            (
                ("Compte principal", "main", 4_000_000),
                ("Compte TVA & impôts", "taxes", 1_500_000),
                ("Compte projets", "projects", 800_000),
            )
        ):
            account_number = f"{rng.randint(0, 10**11 - 1):011d}"
            iban, number = _iban_fr("16958", "00001", account_number)
            account = _Account(
                id=self.new_id(),
                slug=f"{self.organization_slug}-bank-account-{index + 1}",
                name=name,
                iban=iban,
                bic="QNTOFRP1XXX",
                account_number=number,
                main=index == 0,
                is_external=False,
                profile=profile,
                balance_cents=balance,
                updated_ms=opened,
            )
            self.accounts[account.id] = account
        external = _Account(
            id=self.new_id(),
            slug=f"{self.organization_slug}-bank-account-ext-1",
            name="Compte Banque Populaire",
            iban=None,  # §3.2: external accounts have no usable IBAN, use bank_account_id
            bic=None,
            account_number=None,
            main=False,
            is_external=True,
            profile="external",
            balance_cents=1_200_000,
            updated_ms=opened,
        )
        self.accounts[external.id] = external
        self.main_account_id = next(iter(self.accounts))
        self.suppliers = []
        for name in SUPPLIERS:
            siren = _siren(rng)
            iban, _ = _iban_fr(f"{rng.randint(10000, 30000)}", "00100", f"{rng.randint(0, 10**11 - 1):011d}")
            self.suppliers.append({"name": name, "siren": siren, "vat": _vat_fr(siren), "iban": iban})

    def _seed_clients(self, rng: random.Random, count: int) -> None:
        self.clients: dict[str, dict[str, Any]] = {}
        for index in range(count):
            created = self.start_ms - self.history_ms - rng.randint(1, 200) * DAY_MS + rng.randint(0, DAY_MS)
            city, zipcode = rng.choice(CITIES)
            street = f"{rng.randint(1, 90)} {rng.choice(STREETS)}"
            if index % 5 == 4:
                first, last = rng.choice(FIRST_NAMES), rng.choice(FAMILY_NAMES)
                fields: dict[str, Any] = {"kind": "individual", "first_name": first, "last_name": last}
                email = f"{_slugify(first)}.{_slugify(last)}@mail.example"
                siren = None
            else:
                name = f"{rng.choice(BUSINESS_KINDS)} {rng.choice(FAMILY_NAMES)} {rng.choice(LEGAL_FORMS)}"
                fields = {"kind": "company", "name": name}
                email = f"compta@{_slugify(name)}.example"
                siren = _siren(rng)
            client = self._client_record(
                self.new_id(),
                {
                    **fields,
                    "email": email,
                    "vat_number": _vat_fr(siren) if siren else None,
                    "tax_identification_number": _siret(rng, siren) if siren else None,
                    "currency": "EUR",
                    "locale": "fr",
                    "billing_address": {
                        "street_address": street,
                        "city": city,
                        "zip_code": zipcode,
                        "province_code": None,
                        "country_code": "FR",
                    },
                },
                created,
            )
            self.clients[client["id"]] = client

    def _seed_client_invoices(self, rng: random.Random, count: int) -> list[_Planned]:
        self.client_invoices: dict[str, dict[str, Any]] = {}
        self.credit_notes: dict[str, dict[str, Any]] = {}
        planned: list[_Planned] = []
        if not self.clients:
            return planned
        clients = list(self.clients.values())
        drafts: list[tuple[int, dict[str, Any]]] = []
        issued: list[tuple[int, dict[str, Any]]] = []
        for _ in range(count):
            client = rng.choice(clients)
            issue_ms = self.start_ms - rng.randint(2 * DAY_MS, self.history_ms - DAY_MS)
            items = [self._invoice_item(rng) for _ in range(rng.randint(1, 3))]
            invoice = self._invoice_record(self.new_id(), client, issue_ms, items)
            age_days = (self.start_ms - issue_ms) / DAY_MS
            roll = rng.random()
            if age_days < 20 and roll < 0.3:
                drafts.append((issue_ms, invoice))
                continue
            issued.append((issue_ms, invoice))
            if roll < 0.05:
                invoice["status"] = "canceled"
            elif age_days > 10 and roll < 0.8:
                paid_ms = self._paid_time(rng, issue_ms + rng.randint(2, 50) * DAY_MS)
                invoice["status"] = "paid"
                invoice["paid_at"] = _ts_local(paid_ms)
                invoice["amount_paid"] = _money(invoice["total_amount_cents"])
                invoice["updated_at"] = _ts_local(paid_ms)
                name = client["name"] or f"{client['first_name']} {client['last_name']}"
                # The reference holds the invoice id until invoices are numbered below.
                planned.append(
                    _Planned(
                        paid_ms,
                        "credit",
                        invoice["total_amount_cents"],
                        name,
                        invoice["id"],
                        None,
                        [],
                        self.new_id(),
                    )
                )
            else:
                invoice["status"] = "unpaid"
        # Numbers follow issue dates, per year, as an invoicing tool assigns them.
        issued.sort(key=lambda pair: pair[0])
        by_id = {}
        counters: dict[str, int] = {}
        for issue_ms, invoice in issued:
            year = invoice["issue_date"][:4]
            counters[year] = counters.get(year, 0) + 1
            invoice["number"] = f"F-{year}-{counters[year]:04d}"
            invoice["finalized_at"] = _ts_local(issue_ms + 300_000)
            attachment = self._new_attachment(
                f"{invoice['number']}.pdf", issue_ms + 300_000, f"Facture {invoice['number']}", rng
            )
            invoice["attachment_id"] = attachment.id
            by_id[invoice["id"]] = invoice
        for plan in planned:
            plan.reference = by_id[plan.reference]["number"]
        for _, invoice in sorted(issued + drafts, key=lambda pair: pair[0]):
            self.client_invoices[invoice["id"]] = invoice
        # A few credit notes on issued invoices (§3.7).
        note_count = 0
        for issue_ms, invoice in issued:
            if rng.random() < 0.05:
                note_count += 1
                self._seed_credit_note(rng, invoice, issue_ms, note_count)
        return planned

    def _paid_time(self, rng: random.Random, planned_ms: int) -> int:
        """A payment time in the past: a payment that would fall after the clock's start happened
        in the last two days instead (clamping would pile payments onto one instant)."""
        latest = self.start_ms - 2 * 3_600_000
        if planned_ms + DAY_MS > latest:
            return latest - rng.randint(0, 2 * DAY_MS)
        return planned_ms + rng.randint(0, DAY_MS)

    def _invoice_item(self, rng: random.Random) -> dict[str, Any]:
        title, unit, price = rng.choice(SERVICES)
        quantity = rng.choice(("1", "1", "2", "3", "0.5", "5"))
        rate = rng.choice(("0.2", "0.2", "0.2", "0.1"))
        return self._item(title, unit, price, quantity, rate)

    @staticmethod
    def _item(title: str, unit: str | None, unit_cents: int, quantity: str, vat_rate: str) -> dict[str, Any]:
        subtotal = int((Decimal(quantity) * unit_cents).quantize(Decimal(1), ROUND_HALF_UP))
        vat = int((Decimal(subtotal) * Decimal(vat_rate)).quantize(Decimal(1), ROUND_HALF_UP))
        return {
            "title": title,
            "description": None,
            "quantity": quantity,
            "unit": unit,
            "unit_price": _money(unit_cents),
            "unit_price_cents": unit_cents,
            "vat_rate": vat_rate,
            "vat_exemption_reason": None,
            "subtotal": _money(subtotal),
            "subtotal_cents": subtotal,
            "total_vat": _money(vat),
            "total_vat_cents": vat,
            "total_amount": _money(subtotal + vat),
            "total_amount_cents": subtotal + vat,
            "discount": None,
        }

    def _client_snapshot(self, client: dict[str, Any]) -> dict[str, Any]:
        keys = (
            "id type name first_name last_name email vat_number tax_identification_number address city "
            "zip_code province_code country_code recipient_code locale billing_address delivery_address"
        ).split()
        return {key: client.get(key) for key in keys}

    def _invoice_record(
        self, invoice_id: str, client: dict[str, Any], issue_ms: int, items: list[dict[str, Any]]
    ) -> dict[str, Any]:
        total = sum(item["total_amount_cents"] for item in items)
        vat = sum(item["total_vat_cents"] for item in items)
        return {
            "id": invoice_id,
            "organization_id": self.organization_id,
            "number": None,
            "purchase_order": None,
            "status": "draft",
            "invoice_url": f"https://pay.sandbox.qonto.invalid/invoices/{invoice_id}",
            "contact_email": f"facturation@{self.organization_slug}.example",
            "terms_and_conditions": "Paiement à 30 jours. Pénalités de retard : 3 fois le taux d'intérêt légal.",
            "discount_conditions": None,
            "late_payment_penalties": None,
            "legal_fixed_compensation": "40 €",
            "header": None,
            "footer": None,
            "currency": "EUR",
            "total_amount": _money(total),
            "total_amount_cents": total,
            "vat_amount": _money(vat),
            "vat_amount_cents": vat,
            "amount_paid": _money(0),
            "issue_date": _date(issue_ms),
            "due_date": _date(issue_ms + 30 * DAY_MS),
            "performance_date": None,
            "performance_start_date": None,
            "performance_end_date": None,
            "created_at": _ts_local(issue_ms),
            "updated_at": _ts_local(issue_ms + 300_000),
            # §4.1: drafts answer "" rather than null for finalized_at.
            "finalized_at": "",
            "paid_at": None,
            "stamp_duty_amount": None,
            "attachment_id": None,
            "items": items,
            "client": self._client_snapshot(client),
            "organization": {
                "id": self.organization_id,
                "legal_name": self.legal_name,
                "legal_number": self.legal_number,
                "legal_country": "FR",
                "address": self.address,
            },
            "payment_methods": {"iban": self.accounts[self.main_account_id].iban},
            "credit_notes_ids": [],
            "invoice_type": "invoice",
            "discount": None,
            "deposit_amount": None,
        }

    def _seed_credit_note(
        self, rng: random.Random, invoice: dict[str, Any], issue_ms: int, number: int
    ) -> None:
        source = invoice["items"][0]
        item = self._item(
            source["title"], source["unit"], source["unit_price_cents"], "1", source["vat_rate"]
        )
        note_ms = min(issue_ms + rng.randint(3, 30) * DAY_MS, self.start_ms - DAY_MS)
        note_id = self.new_id()
        attachment = self._new_attachment(
            f"AV-{number:04d}.pdf", note_ms, f"Avoir sur {invoice['number']}", rng
        )
        self.credit_notes[note_id] = {
            "id": note_id,
            "invoice_id": invoice["id"],
            "attachment_id": attachment.id,
            "issue_date": _date(note_ms),
            "invoice_issue_date": invoice["issue_date"],
            "number": f"AV-{_date(note_ms)[:4]}-{number:04d}",
            "terms_and_conditions": invoice["terms_and_conditions"],
            "header": None,
            "footer": None,
            "vat_amount": _money(item["total_vat_cents"]),
            "vat_amount_cents": item["total_vat_cents"],
            "total_amount": _money(item["total_amount_cents"]),
            "total_amount_cents": item["total_amount_cents"],
            "currency": "EUR",
            "created_at": _ts_local(note_ms),
            "finalized_at": _ts_local(note_ms + 60_000),
            "contact_email": invoice["contact_email"],
            "invoice_url": f"https://pay.sandbox.qonto.invalid/credit_notes/{note_id}",
            "einvoicing_status": None,
            "stamp_duty_amount": None,
            "items": [item],
            "client": invoice["client"],
        }
        invoice["credit_notes_ids"].append(note_id)

    def _seed_supplier_invoices(self, rng: random.Random, count: int) -> list[_Planned]:
        self.supplier_invoices: dict[str, dict[str, Any]] = {}
        planned: list[_Planned] = []
        rows: list[tuple[int, dict[str, Any]]] = []
        for index in range(count):
            supplier = rng.choice(self.suppliers)
            issue_ms = self.start_ms - rng.randint(DAY_MS, self.history_ms - DAY_MS)
            created_ms = issue_ms + rng.randint(0, 3 * DAY_MS)
            net = rng.randint(8_000, 600_000)
            rate = rng.choice((20, 20, 20, 10, 0))
            vat = net * rate // 100
            number = f"{supplier['name'][:3].upper()}-{_date(issue_ms)[:4]}-{1000 + index}"
            age_days = (self.start_ms - issue_ms) / DAY_MS
            roll = rng.random()
            if age_days < 15:
                status = rng.choice(("to_review", "to_review", "to_approve", "to_pay", "scheduled"))
            elif roll < 0.78:
                status = "paid"
            else:
                status = rng.choice(("to_pay", "awaiting_payment", "archived", "rejected", "pending"))
            attachment = self._new_attachment(f"facture-{_slugify(number)}.pdf", created_ms, number, rng)
            record = self._supplier_invoice_record(
                self.new_id(), attachment, created_ms, "email", "email_forward"
            )
            record.update(
                {
                    "status": status,
                    "invoice_number": number,
                    "supplier_name": supplier["name"],
                    "issuer_name": supplier["name"],
                    "vat_number": supplier["vat"],
                    "tin": supplier["siren"],
                    "iban": supplier["iban"],
                    "total_amount": _money(net + vat),
                    "total_amount_excluding_taxes": _money(net),
                    "total_tax_amount": _money(vat),
                    "taxes": [{"tax_amount": _money(vat), "tax_rate": f"{rate / 100:.2f}"}],
                    "payable_amount": _money(0 if status == "paid" else net + vat),
                    "issue_date": _date(issue_ms),
                    "due_date": _date(issue_ms + 30 * DAY_MS),
                    "analyzed_at": _ts_local(created_ms + 120_000),
                }
            )
            if status == "paid":
                paid_ms = self._paid_time(rng, issue_ms + rng.randint(5, 40) * DAY_MS)
                record["payment_date"] = _date(paid_ms)
                record["updated_at"] = _ts_local(paid_ms)
                tx_id = self.new_id()

                def link(tx: _Tx, record: dict[str, Any] = record) -> None:
                    record["matched_transactions_ids"] = [tx.id]

                planned.append(
                    _Planned(
                        paid_ms,
                        "debit",
                        net + vat,
                        supplier["name"],
                        number,
                        supplier["iban"],
                        [attachment.id],
                        tx_id,
                        link,
                    )
                )
            rows.append((created_ms, record))
        for _, record in sorted(rows, key=lambda pair: pair[0]):
            self.supplier_invoices[record["id"]] = record
        return planned

    def _supplier_invoice_record(
        self, invoice_id: str, attachment: _Attachment, created_ms: int, source_type: str, source: str
    ) -> dict[str, Any]:
        return {
            "id": invoice_id,
            "organization_id": self.organization_id,
            "status": "to_review",
            "source_type": source_type,
            "source": source,
            "file_name": attachment.file_name,
            "attachment_id": attachment.id,
            "display_attachment_id": attachment.id,
            "invoice_number": None,
            "supplier_name": None,
            "supplier_id": None,
            "issuer_name": None,
            "vat_number": None,
            "tin": None,
            "description": None,
            "total_amount": None,
            "total_amount_excluding_taxes": None,
            "total_tax_amount": None,
            "taxes": [],
            "payable_amount": None,
            "total_amount_credit_notes": None,
            "issue_date": None,
            "due_date": None,
            "payment_date": None,
            "scheduled_date": None,
            "iban": None,
            "initiator_id": self.owner_id,
            "created_at": _ts_local(created_ms),
            "updated_at": _ts_local(created_ms),
            "analyzed_at": None,
            "is_einvoice": False,
            "e_invoice_type": None,
            "has_duplicates": False,
            "has_discrepancies": False,
            "is_credit_note": False,
            "declined_note": None,
            "attachment_category": "INVOICE",
            "is_attachment_invoice": True,
            "is_attachment_non_financial": False,
            "matched_transactions_ids": [],
            "transfer_ids": [],
            "request_transfer": None,
            "einvoicing_lifecycle_events": [],
            "meta": {},
            "available_actions": {
                "delete": True,
                "archive": True,
                "unarchive": False,
                "pay": True,
                "reasons": {},
            },
            "approval_workflow": None,
            "related_invoices": [],
            "self_invoice_id": None,
            "deleted_at": "",
        }

    def _new_attachment(
        self,
        file_name: str,
        created_ms: int,
        title: str,
        rng: random.Random | None = None,
        content_type: str = "application/pdf",
        data: bytes | None = None,
    ) -> _Attachment:
        size = len(data) if data is not None else (rng or self.rng).randint(6_000, 90_000)
        attachment = _Attachment(self.new_id(), created_ms, file_name, content_type, size, title, data)
        self.attachments[attachment.id] = attachment
        return attachment

    def _seed_transactions(
        self,
        rng: random.Random,
        total: int,
        pending: int,
        declined: int,
        external: int,
        planned: list[_Planned],
    ) -> None:
        accounts = [a for a in self.accounts.values() if not a.is_external]
        main = accounts[0]
        taxes_share, projects_share = total * 10 // 100, total * 5 // 100
        shares = [total - taxes_share - projects_share, taxes_share, projects_share]
        pending_shares = [pending - pending // 3, pending // 3, 0]
        declined_shares = [declined - declined // 2, 0, declined // 2]
        counterparties = [
            (c["name"] or f"{c['first_name']} {c['last_name']}", _iban_fr("30004", "00100", f"{i:011d}")[0])
            for i, c in enumerate(self.clients.values())
        ] or [("Client Divers", None)]
        for account, share, n_pending, n_declined in zip(
            accounts, shares, pending_shares, declined_shares, strict=True
        ):
            n_pending = min(n_pending, share)
            n_declined = min(n_declined, share - n_pending)
            settled = share - n_pending - n_declined
            # Invoice payments go to the main account, at most 40% of its history (the most recent
            # ones); with a tiny history some paid invoices simply have no matching transfer.
            cap = int(settled * 0.4) if account is main else 0
            mine = sorted(planned, key=lambda plan: plan.ms)[max(0, len(planned) - cap) :] if cap else []
            self._lay_out_account(rng, account, account.profile, settled, mine, counterparties)
            for _ in range(n_declined):
                ms = self.start_ms - rng.randint(DAY_MS, self.history_ms)
                self._append(rng, account, account.profile, counterparties, ms, status="declined")
            for _ in range(n_pending):
                ms = self.start_ms - rng.randint(60_000, 3 * DAY_MS)
                tx = self._append(rng, account, account.profile, counterparties, ms, status="pending")
                # Settles between 5 minutes and 3 days after the sandbox clock starts.
                self._schedule(tx, self.start_ms + rng.randint(300_000, 3 * DAY_MS))
        ext = next(a for a in self.accounts.values() if a.is_external)
        self._lay_out_account(rng, ext, ext.profile, external, [], counterparties)
        self._last_stamp = max((tx.updated_ms for tx in self._tx_by_id.values()), default=0)

    def _lay_out_account(
        self,
        rng: random.Random,
        account: _Account,
        profile: str,
        count: int,
        planned: list[_Planned],
        counterparties: list[tuple[str, str | None]],
    ) -> None:
        """Settled history: random times, invoice payments merged in, balances carried forward."""
        opened = self.start_ms - self.history_ms
        span = self.history_ms - 2 * 3_600_000
        times = sorted(opened + rng.randrange(span) for _ in range(count - len(planned)))
        events: list[tuple[int, _Planned | None]] = [(ms, None) for ms in times]
        events += [(plan.ms, plan) for plan in planned]
        events.sort(key=lambda pair: pair[0])
        # Balances run forward from the opening balance, in settlement order.
        for ms, plan in events:
            ms = max(ms, account.last_settled_ms + 1)
            if plan is not None and plan.side == "debit" and plan.amount_cents > account.balance_cents:
                # Accounts are never overdrawn: that supplier invoice was paid some other way.
                plan = None
            if plan is None:
                self._append(rng, account, profile, counterparties, ms, status="completed")
            else:
                tx = self._append(rng, account, profile, counterparties, ms, status="completed", plan=plan)
                if plan.on_created is not None:
                    plan.on_created(tx)

    def _random_shape(
        self, rng: random.Random, profile: str, counterparties: list[tuple[str, str | None]], balance: int
    ) -> dict[str, Any]:
        """What a random transaction of this account looks like."""
        roll = rng.random()
        if profile == "taxes":
            internal = {
                "op": "transfer",
                "side": "credit",
                "label": "Virement interne Compte principal",
                "category": "treasury_and_interco",
                "cashflow": "Transferts internes",
                "vat": None,
            }
            if roll < 0.45 or balance < 600_000:
                return {**internal, "amount": rng.randint(100_000, 900_000)}
            return {
                "op": "transfer",
                "side": "debit",
                "label": rng.choice(("DGFIP", "DGFIP TVA", "URSSAF")),
                "amount": rng.randint(50_000, 900_000),
                "category": "tax",
                "cashflow": "Impôts & taxes",
                "vat": None,
            }
        credit_share = 0.16 if profile in ("main", "external") else 0.06
        # Below the floor the next movement is a credit: seeded supplier payments (up to ~7,200 EUR)
        # are not shrunk to fit, so the main account keeps a cushion for them.
        floor = 800_000 if profile == "main" else 150_000
        if roll < credit_share or balance < floor:
            name, iban = rng.choice(counterparties)
            if rng.random() < 0.2:
                return {
                    "op": "income",
                    "side": "credit",
                    "label": "Stripe Payments Europe",
                    "amount": rng.randint(20_000, 600_000),
                    "category": "sales",
                    "cashflow": "Ventes",
                    "vat": None,
                    "iban": "IE48SEPA99000012345678",
                    "bic": "SEPAIE21XXX",
                }
            return {
                "op": "transfer",
                "side": "credit",
                "label": name,
                "amount": rng.randint(30_000, 1_000_000),
                "category": "sales",
                "cashflow": "Ventes",
                "vat": None,
                "iban": iban,
                "bic": "BNPAFRPPXXX",
                "reference": f"Virement {name[:20]}",
            }
        roll = rng.random()
        if roll < 0.62 or profile == "projects":
            label, category, cashflow, rate = rng.choice(CARD_MERCHANTS)
            return {
                "op": "card",
                "side": "debit",
                "label": label,
                "amount": int(math.exp(rng.uniform(math.log(300), math.log(40_000)))),
                "category": category,
                "cashflow": cashflow,
                "vat": rate,
            }
        if roll < 0.82:
            label, category, cashflow, rate = rng.choice(DIRECT_DEBITORS)
            return {
                "op": "direct_debit",
                "side": "debit",
                "label": label,
                "amount": rng.randint(2_000, 250_000),
                "category": category,
                "cashflow": cashflow,
                "vat": rate,
            }
        if roll < 0.97:
            supplier = rng.choice(self.suppliers)
            return {
                "op": "transfer",
                "side": "debit",
                "label": supplier["name"],
                "amount": rng.randint(10_000, 700_000),
                "category": "other_expense",
                "cashflow": "Achats",
                "vat": 20,
                "iban": supplier["iban"],
                "bic": "CCBPFRPPXXX",
                "reference": f"Règlement {supplier['name'][:18]}",
            }
        return {
            "op": "qonto_fee",
            "side": "debit",
            "label": "Qonto",
            "amount": rng.choice((2_900, 4_900, 9_900)),
            "category": "fees",
            "cashflow": "Frais bancaires",
            "vat": 20,
        }

    def _append(
        self,
        rng: random.Random,
        account: _Account,
        profile: str,
        counterparties: list[tuple[str, str | None]],
        ms: int,
        *,
        status: str,
        plan: _Planned | None = None,
        shape: dict[str, Any] | None = None,
    ) -> _Tx:
        """Create one transaction at ``ms`` (its settlement time when completed)."""
        if plan is not None:
            shape = {
                "op": "transfer",
                "side": plan.side,
                "label": plan.label,
                "amount": plan.amount_cents,
                "category": "sales" if plan.side == "credit" else "other_expense",
                "cashflow": "Ventes" if plan.side == "credit" else "Achats",
                "vat": None,
                "iban": plan.iban,
                "bic": "BNPAFRPPXXX",
                "reference": plan.reference,
            }
        elif shape is None:
            shape = self._random_shape(rng, profile, counterparties, account.balance_cents)
        amount = int(shape["amount"])
        if (
            plan is None
            and shape["side"] == "debit"
            and account.balance_cents - amount < 0
            and status == "completed"
        ):
            # Never overdraw: a debit the account cannot afford becomes a smaller one.
            amount = max(1, account.balance_cents // 3)
        op = shape["op"]
        rate = shape.get("vat")
        vat_cents = round(amount * rate / (100 + rate)) if rate else None
        emitted = ms - (rng.randint(0, 2 * DAY_MS) if op == "card" else rng.randint(0, 600_000))
        self._seq += 1
        local_currency, local_cents = "EUR", amount
        if op == "card" and rng.random() < 0.03:
            local_currency, local_cents = "USD", round(amount * 1.08)
        tx = _Tx(
            seq=self._seq,
            id=plan.tx_id if plan is not None else self.new_id(),
            transaction_id=f"{self.organization_slug}-transaction-{self._seq}",
            account_id=account.id,
            is_external=account.is_external,
            amount_cents=amount,
            local_amount_cents=local_cents,
            local_currency=local_currency,
            side=shape["side"],
            operation_type=op,
            label=shape["label"],
            status=status,
            settled_ms=None,
            emitted_ms=emitted,
            created_ms=emitted + 1_000,
            updated_ms=max(ms, emitted + 1_000) + rng.randint(500, 5_000),
            settled_balance_cents=None,
            note=None,
            reference=shape.get("reference"),
            vat_rate=rate,
            vat_cents=vat_cents,
            attachment_ids=list(plan.attachment_ids) if plan is not None else [],
            label_ids=[],
            card_last_digits=f"{rng.randint(0, 9999):04d}" if op == "card" else None,
            category=shape["category"],
            cashflow=shape["cashflow"],
            initiator_id=self.owner_id if shape["side"] == "debit" and op in ("card", "transfer") else None,
            counterparty_iban=shape.get("iban"),
            counterparty_bic=shape.get("bic"),
            settle_due_ms=None,
        )
        if op == "card" and rng.random() < 0.55:
            attachment = self._new_attachment(
                f"recu-{_slugify(tx.label)}-{self._seq}.pdf", tx.updated_ms, f"Reçu {tx.label}", rng
            )
            tx.attachment_ids.append(attachment.id)
        if rng.random() < 0.15:
            tx.label_ids.append(rng.choice(self.labels)["id"])
        if rng.random() < 0.05:
            tx.note = rng.choice(("Déjeuner client", "À refacturer", "Voir avec l'expert-comptable"))
        if status == "completed":
            self._settle(tx, account, ms)
            tx.updated_ms = max(tx.updated_ms, tx.settled_ms)
        elif status == "pending":
            self._pending[tx.id] = tx
        self._tx_by_id[tx.id] = tx
        account.transactions.append(tx)
        self._tx_version += 1
        return tx

    def _settle(self, tx: _Tx, account: _Account, ms: int) -> None:
        # Strictly increasing settlement times per account keep the running balance unambiguous
        # when a client orders by settled_at.
        ms = max(ms, account.last_settled_ms + 1)
        account.last_settled_ms = ms
        account.balance_cents += tx.signed_cents
        account.updated_ms = ms
        tx.status = "completed"
        tx.settled_ms = ms
        tx.settled_balance_cents = account.balance_cents
        tx.settle_due_ms = None
        self._pending.pop(tx.id, None)

    def _schedule(self, tx: _Tx, due_ms: int) -> None:
        tx.settle_due_ms = due_ms
        bisect.insort(self._pending_due, (due_ms, tx.seq, tx.id))

    # -- time-driven changes ---------------------------------------------------------------------

    def _stamp(self, at_least: int) -> int:
        """A strictly increasing ``updated_at`` for changes made after seeding: two changes never
        share an instant and a later change always sorts later, even on a frozen clock."""
        self._last_stamp = max(at_least, self._last_stamp + 1)
        return self._last_stamp

    def _now_ms(self) -> int:
        return int(self.now().timestamp() * 1000)

    def before_request(self, request: SandboxRequest) -> None:
        self._settle_due()

    def _settle_due(self) -> list[dict[str, Any]]:
        """Settle the pending transactions whose settlement time has come (clock-driven)."""
        now = self._now_ms()
        settled: list[dict[str, Any]] = []
        with self.lock:
            while self._pending_due and self._pending_due[0][0] <= now:
                due_ms, _, tx_id = self._pending_due.pop(0)
                tx = self._tx_by_id.get(tx_id)
                if tx is None or tx.status != "pending" or tx.settle_due_ms != due_ms:
                    continue
                settled.append(self._settle_now(tx, due_ms))
        return settled

    def _settle_now(self, tx: _Tx, ms: int) -> dict[str, Any]:
        self._settle(tx, self.accounts[tx.account_id], ms)
        tx.updated_ms = self._stamp(max(tx.settled_ms + 1_200, tx.updated_ms + 1))
        self._tx_version += 1
        data = tx.as_dict()
        self.emit_event("v1/transactions", "updated", data)
        return data

    # -- responses in Qonto's shapes -------------------------------------------------------------

    def error_body(self, status: int, code: str, detail: str, source: Mapping[str, Any] | None = None) -> Any:
        entry: dict[str, Any] = {"code": code, "detail": detail}
        if source:
            entry["source"] = dict(source)
        return {"errors": [entry], "trace_id": secrets.token_hex(16)}

    def error(
        self,
        status: int,
        code: str,
        detail: str,
        source: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SandboxResponse:
        """§4.3: ``{"errors": [{code, detail, source}], "trace_id"}``; trace id also in X-Tyk-Trace-Id."""
        body = self.error_body(status, code, detail, source)
        return json_response(body, status, {"X-Tyk-Trace-Id": body["trace_id"], **(headers or {})})

    def not_found(self, request: SandboxRequest) -> SandboxResponse:
        # §4.3: an unknown route is answered by the gateway, in text/plain and without X-Request-Id.
        return text_response("Not Found", 404)

    # inferred: §4.3 documents the error envelope and `not_in_list`; the codes `not_found`,
    # `invalid_parameter`, `unauthorized`, `forbidden`, `blank`, `too_long` and `invalid` are ours.
    def _missing(self, what: str) -> Abort:
        return Abort(self.error(404, "not_found", f"{what} not found"))

    def _bad_param(self, name: str, detail: str) -> Abort:
        return Abort(self.error(400, "invalid_parameter", detail, {"parameter": name}))

    def _invalid(self, pointer: str, code: str, detail: str) -> Abort:
        return Abort(self.error(422, code, detail, {"pointer": pointer}))

    def after_request(self, request: SandboxRequest, response: SandboxResponse) -> None:
        if response.header("Content-Type", "").startswith("application/json"):
            response.headers.setdefault("X-Request-Id", secrets.token_hex(12))
        if self.auto_webhooks and self.pending_webhooks:
            self.flush_webhooks()

    # -- authentication ----------------------------------------------------------------------------

    @property
    def api_key_header(self) -> str:
        """The ``Authorization`` value for the organisation's API key (§2.1)."""
        return f"{self.organization_slug}:{self.secret_key}"

    def rotate_api_key(self) -> str:
        """Regenerate the secret key (the old one stops working at once); returns the header."""
        with self.lock:
            self.secret_key = secrets.token_hex(16)
            return self.api_key_header

    def oauth_subject(self) -> str:
        return self.owner_id

    def consent_account_name(self) -> str:
        return f"{self.legal_name} ({self.organization_slug})"

    def authorize_route(self, request: SandboxRequest, entry: Route) -> SandboxResponse | None:
        meta = entry.meta
        if (
            self.staging_token is not None
            and meta.get("staging", True)
            and request.headers.get("X-Qonto-Staging-Token") != self.staging_token
        ):
            # §1: the real sandbox answers a login page (often 200, HTML), not a JSON error.
            return html_response(
                "<!doctype html><html><head><title>Qonto</title></head><body>"
                '<p>Redirecting to <a href="https://qonto.onelogin.com/login">qonto.onelogin.com</a></p>'
                "</body></html>"
            )
        if meta.get("auth") == "none":
            return None
        header = request.headers.get("Authorization", "").strip()
        if header[:7].lower() == "bearer ":
            token, reason = self.verify_access_token(header[7:].strip())
            if token is None:
                detail = "The access token expired" if reason == "expired" else "Invalid access token"
                return self._unauthorized(detail)
            wanted = meta.get("scopes", ())
            if wanted and not any(scope in token.scopes for scope in wanted):
                # §2.2: the 403 detail contains "missing required oauth scope".
                return self.error(403, "forbidden", f"missing required oauth scope: {' or '.join(wanted)}")
            request.context.update(
                kind="oauth", membership_id=token.grant.subject, client_id=token.grant.client_id
            )
            return None
        login, colon, secret = header.partition(":")
        if colon and login == self.organization_slug and secrets.compare_digest(secret, self.secret_key):
            if meta.get("api_key") is False:
                return self.error(403, "forbidden", "This endpoint requires an OAuth access token")
            request.context.update(kind="api_key", membership_id=self.owner_id, client_id=None)
            return None
        return self._unauthorized("Invalid credentials" if header else "Missing Authorization header")

    def _unauthorized(self, detail: str) -> SandboxResponse:
        limit, window = self.unauthorized_limit
        now = self.now().timestamp()
        self._unauthorized_hits = [t for t in self._unauthorized_hits if t > now - window]
        self._unauthorized_hits.append(now)
        if len(self._unauthorized_hits) > limit:
            wait = self._unauthorized_hits[0] + window - now
            return self.rate_limited_response(SandboxRequest("GET", "/"), wait)
        return self.error(401, "unauthorized", detail)

    def token_response_body(self, access: Any, refresh: Any) -> dict[str, Any]:
        body = super().token_response_body(access, refresh)
        if "openid" in access.scopes:
            body["id_token"] = self._id_token(access.grant.subject, access.grant.client_id)
        return body

    def _id_token(self, subject: str, audience: str) -> str:
        def part(data: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        now = int(self.now().timestamp())
        unsigned = (
            part({"alg": "HS256", "typ": "JWT"})
            + "."
            + part(
                {
                    "iss": self.default_base_url,
                    "sub": subject,
                    "aud": [audience],
                    "iat": now,
                    "exp": now + 3600,
                }
            )
        )
        signature = hmac.new(self._url_key, unsigned.encode(), hashlib.sha256).digest()
        return unsigned + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()

    # -- idempotency -------------------------------------------------------------------------------

    def _idempotent(self, request: SandboxRequest, compute: Any) -> SandboxResponse:
        """§4.4: a successful answer is replayed for the same key for 30 minutes, whatever the body."""
        key = request.headers.get("X-Qonto-Idempotency-Key")
        if not key:
            return compute()
        now = self._now_ms()
        cached = self._idempotency.get(key)
        if cached and cached[0] > now:
            replay = cached[1]
            return SandboxResponse(replay.status, dict(replay.headers), replay.body)
        response = compute()
        if 200 <= response.status < 300:
            if len(self._idempotency) > 10_000:
                self._idempotency = {k: v for k, v in self._idempotency.items() if v[0] > now}
            self._idempotency[key] = (now + IDEMPOTENCY_TTL_MS, response)
        return response

    # -- paging --------------------------------------------------------------------------------------

    def _page_params(self, request: SandboxRequest) -> tuple[int, int]:
        # §4.2: `page`, with `current_page` accepted as the alias long-lived clients send.
        raw_page = request.arg("page") or request.arg("current_page") or "1"
        raw_per_page = request.arg("per_page") or str(MAX_PER_PAGE)
        try:
            page = int(raw_page)
        except ValueError:
            raise self._bad_param("page", "page must be an integer") from None
        try:
            per_page = int(raw_per_page)
        except ValueError:
            raise self._bad_param("per_page", "per_page must be an integer") from None
        if page < 1:
            raise self._bad_param("page", "page must be greater than or equal to 1")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise self._bad_param("per_page", f"per_page must be between 1 and {MAX_PER_PAGE}")
        return page, per_page

    @staticmethod
    def _meta(info: PageInfo) -> dict[str, Any]:
        return {
            "current_page": info.current_page,
            "next_page": info.next_page,
            "prev_page": info.prev_page,
            "total_pages": info.total_pages,
            "total_count": info.total_count,
            "per_page": info.per_page,
        }

    def _list(
        self, request: SandboxRequest, key: str, items: Sequence[Any], render: Any = None
    ) -> SandboxResponse:
        page, per_page = self._page_params(request)
        chunk, info = self.paginate(items, page, per_page)
        rows = [render(item) for item in chunk] if render else list(chunk)
        return json_response({key: rows, "meta": self._meta(info)})

    def _time_filter(self, request: SandboxRequest, name: str) -> int | None:
        raw = request.arg(name)
        if raw is None or raw == "":
            return None
        try:
            return _parse_time(raw)
        except ValueError:
            raise self._bad_param(name, f"{name} param isn't well formatted (ISO 8601)") from None

    def _sort(self, request: SandboxRequest, allowed: Sequence[str], default: str) -> tuple[str, bool]:
        raw = request.arg("sort_by") or default
        field_name, _, direction = raw.partition(":")
        direction = direction or "asc"
        if field_name not in allowed or direction not in ("asc", "desc"):
            options = ", ".join(f"{f}:asc, {f}:desc" for f in allowed)
            raise self._bad_param("sort_by", f"sort_by must be one of: {options}")
        return field_name, direction == "desc"

    # -- OAuth routes (§2.2) -----------------------------------------------------------------------

    @route("GET", "/oauth2/auth", auth="none", staging=False)
    @route("POST", "/oauth2/auth", auth="none", staging=False)
    def authorize_page(self, request: SandboxRequest) -> SandboxResponse:
        return self.oauth_authorize(request)

    @route("POST", "/oauth2/token", auth="none")
    def token(self, request: SandboxRequest) -> SandboxResponse:
        return self.oauth_token(request)

    @route("POST", "/oauth2/revoke", auth="none")
    def revoke(self, request: SandboxRequest) -> SandboxResponse:
        return self.oauth_revoke(request)

    @route("DELETE", "/v2/oauth2/consents", api_key=False, **READ_ORG)
    def revoke_consents(self, request: SandboxRequest) -> SandboxResponse:
        """§1 / D-REVOKE: revoke the consents of the calling membership for the calling app."""
        subject, client_id = request.context["membership_id"], request.context["client_id"]
        for token in [*self.access_tokens.values(), *self.refresh_tokens.values()]:
            if token.grant.subject == subject and token.grant.client_id == client_id:
                token.grant.revoked = True
        return empty_response(204)

    # -- organisation, accounts, memberships, labels (§3.1, §3.4) --------------------------------------

    def _account_dict(self, account: _Account) -> dict[str, Any]:
        pending_debits = sum(
            tx.amount_cents
            for tx in self._pending.values()
            if tx.account_id == account.id and tx.side == "debit"
        )
        authorized = account.balance_cents - pending_debits
        return {
            "id": account.id,
            "slug": account.slug,
            "name": account.name,
            "iban": account.iban,
            "bic": account.bic,
            "currency": "EUR",
            "balance": account.balance_cents / 100,
            "balance_cents": account.balance_cents,
            "authorized_balance": authorized / 100,
            "authorized_balance_cents": authorized,
            "status": account.status,
            "main": account.main,
            "updated_at": _ts(account.updated_ms),
            "is_external_account": account.is_external,
            "account_number": account.account_number,
            "organization_id": self.organization_id,
        }

    def _visible_accounts(self, request: SandboxRequest) -> list[_Account]:
        external = (request.arg("include_external_accounts") or "").lower() in ("true", "1")
        return [a for a in self.accounts.values() if external or not a.is_external]

    @route("GET", "/v2/organization", **READ_ORG)
    def organization(self, request: SandboxRequest) -> SandboxResponse:
        return json_response(
            {
                "organization": {
                    "id": self.organization_id,
                    "slug": self.organization_slug,
                    "name": self.legal_name.removesuffix(" SAS"),
                    "legal_name": self.legal_name,
                    "legal_number": self.legal_number,
                    "legal_sector": "7410Z",
                    "legal_registration_date": _date(self.start_ms - self.history_ms - 400 * DAY_MS),
                    "legal_address": f"{self.address['first_line']}, {self.address['zipcode']} {self.address['city']}",
                    "legal_form": "SAS",
                    "legal_country": "FR",
                    "legal_share_capital": 10000,
                    "locale": "fr",
                    "contract_signed_at": _ts(self.start_ms - self.history_ms - 2 * DAY_MS),
                    "address": self.address,
                    "bank_accounts": [self._account_dict(a) for a in self._visible_accounts(request)],
                }
            }
        )

    @route("GET", "/v2/bank_accounts", **READ_ORG)
    def list_bank_accounts(self, request: SandboxRequest) -> SandboxResponse:
        return self._list(request, "bank_accounts", self._visible_accounts(request), self._account_dict)

    @route("GET", "/v2/bank_accounts/{account_id}", **READ_ORG)
    def get_bank_account(self, request: SandboxRequest, account_id: str) -> SandboxResponse:
        account = self.accounts.get(account_id)
        if account is None:
            raise self._missing("Bank account")
        return json_response({"bank_account": self._account_dict(account)})

    @route("GET", "/v2/memberships", **READ_ORG)
    def list_memberships(self, request: SandboxRequest) -> SandboxResponse:
        public = [{k: v for k, v in m.items() if k != "email"} for m in self.memberships]
        return self._list(request, "memberships", public)

    @route("GET", "/v2/membership", **_scope("membership.read"))
    def own_membership(self, request: SandboxRequest) -> SandboxResponse:
        member = next(m for m in self.memberships if m["id"] == request.context["membership_id"])
        return json_response(
            {"membership": {**member, "locale": "fr", "kyc_status": "accepted", "position": None}}
        )

    @route("GET", "/v2/labels", **READ_ORG)
    def list_labels(self, request: SandboxRequest) -> SandboxResponse:
        return self._list(request, "labels", self.labels)

    # -- transactions (§3.2) -------------------------------------------------------------------------

    def _sorted_index(self, account: _Account, field_name: str) -> tuple[list[int], list[_Tx]]:
        """The account's transactions sorted by one date field, rebuilt only after changes."""
        key = (account.id, field_name)
        cached = self._index_cache.get(key)
        if cached and cached[0] == self._tx_version:
            return cached[1], cached[2]
        attr = field_name.replace("_at", "_ms")
        decorated = sorted(
            (
                (_NO_DATE if getattr(t, attr) is None else getattr(t, attr), t.seq, t)
                for t in account.transactions
            ),
            key=lambda row: (row[0], row[1]),
        )
        keys = [row[0] for row in decorated]
        rows = [row[2] for row in decorated]
        self._index_cache[key] = (self._tx_version, keys, rows)
        return keys, rows

    def _query_transactions(self, request: SandboxRequest) -> list[_Tx]:
        account_id = request.arg("bank_account_id")
        iban = (request.arg("iban") or "").replace(" ", "").upper()
        if account_id:  # §3.2: bank_account_id wins over iban
            account = self.accounts.get(account_id)
        elif iban:
            account = next((a for a in self.accounts.values() if a.iban == iban), None)
        else:
            raise self._bad_param("bank_account_id", "one of bank_account_id or iban is required")
        if account is None:
            raise self._missing("Bank account")
        statuses = tuple(sorted(set(request.args("status[]", "status")))) or ("completed",)
        for status in statuses:
            if status not in TRANSACTION_STATUSES:
                raise self._bad_param("status", f"status must be one of: {', '.join(TRANSACTION_STATUSES)}")
        ranges = tuple(
            (name, self._time_filter(request, f"{name}_from"), self._time_filter(request, f"{name}_to"))
            for name in TRANSACTION_SORT_FIELDS
        )
        side = request.arg("side")
        if side not in (None, "credit", "debit"):
            raise self._bad_param("side", "side must be one of: credit, debit")
        operation_types = frozenset(request.args("operation_type[]", "operation_type"))
        raw_attachments = request.arg("with_attachments")
        with_attachments = None if raw_attachments in (None, "") else raw_attachments.lower() in ("true", "1")
        sort_field, descending = self._sort(request, TRANSACTION_SORT_FIELDS, "settled_at:desc")

        query_key = (
            account.id,
            statuses,
            ranges,
            side,
            operation_types,
            with_attachments,
            sort_field,
            descending,
        )
        cached = self._query_cache.get(query_key)
        if cached and cached[0] == self._tx_version:
            self._query_cache.move_to_end(query_key)
            return cached[1]

        keys, rows = self._sorted_index(account, sort_field)
        # The range on the sort field narrows by bisection; the other filters scan what is left once,
        # and the result is cached for the following pages.
        low, high = 0, len(rows)
        checks: list[tuple[str, int | None, int | None]] = []
        for name, start, end in ranges:
            if start is None and end is None:
                continue
            if name == sort_field:
                if start is not None:
                    low = bisect.bisect_left(keys, start)
                high = bisect.bisect_right(keys, end if end is not None else _NO_DATE - 1)
            else:
                checks.append((name.replace("_at", "_ms"), start, end))
        status_set = set(statuses)
        result = []
        for tx in rows[low:high]:
            if tx.status not in status_set:
                continue
            if side is not None and tx.side != side:
                continue
            if operation_types and tx.operation_type not in operation_types:
                continue
            if with_attachments is not None and bool(tx.attachment_ids) != with_attachments:
                continue
            if checks and not all(
                (value := getattr(tx, attr)) is not None
                and (start is None or value >= start)
                and (end is None or value <= end)
                for attr, start, end in checks
            ):
                continue
            result.append(tx)
        if descending:
            result.reverse()
        self._query_cache[query_key] = (self._tx_version, result)
        while len(self._query_cache) > 32:
            self._query_cache.popitem(last=False)
        return result

    def _render_transaction(self, tx: _Tx, includes: Iterable[str], base_url: str) -> dict[str, Any]:
        data = tx.as_dict()
        for include in includes:
            if include == "attachments":
                data["attachments"] = [
                    self._attachment_dict(self.attachments[a], base_url)
                    for a in tx.attachment_ids
                    if a in self.attachments
                ]
            elif include == "labels":
                data["labels"] = [label for label in self.labels if label["id"] in tx.label_ids]
            elif include == "vat_details":
                # inferred: the reference names `vat_details` without its shape.
                data["vat_details"] = {
                    "items": []
                    if tx.vat_rate is None
                    else [{"rate": tx.vat_rate, "amount": tx.vat_cents / 100, "amount_cents": tx.vat_cents}]
                }
        return data

    def _includes(self, request: SandboxRequest) -> list[str]:
        includes = request.args("includes[]", "includes")
        for include in includes:
            if include not in TRANSACTION_INCLUDES:
                raise self._bad_param(
                    "includes", f"includes must be among: {', '.join(TRANSACTION_INCLUDES)}"
                )
        return includes

    @route("GET", "/v2/transactions", **READ_ORG)
    def list_transactions(self, request: SandboxRequest) -> SandboxResponse:
        includes = self._includes(request)
        rows = self._query_transactions(request)
        return self._list(
            request, "transactions", rows, lambda tx: self._render_transaction(tx, includes, request.base_url)
        )

    @route("GET", "/v2/transactions/{transaction_id}", **READ_ORG)
    def get_transaction(self, request: SandboxRequest, transaction_id: str) -> SandboxResponse:
        tx = self._tx_by_id.get(transaction_id)
        if tx is None:
            raise self._missing("Transaction")
        return json_response(
            {"transaction": self._render_transaction(tx, self._includes(request), request.base_url)}
        )

    @route(
        "GET",
        "/v2/transactions/{transaction_id}/attachments",
        **_scope("attachment.read", "organization.read"),
    )
    def list_transaction_attachments(self, request: SandboxRequest, transaction_id: str) -> SandboxResponse:
        tx = self._tx_by_id.get(transaction_id)
        if tx is None:
            raise self._missing("Transaction")
        items = [self.attachments[a] for a in tx.attachment_ids if a in self.attachments]
        return self._list(request, "attachments", items, lambda a: self._attachment_dict(a, request.base_url))

    # -- attachments (§3.3) ------------------------------------------------------------------------

    def _attachment_url(self, attachment: _Attachment, base_url: str) -> str:
        """A pre-signed-looking link to the file, valid ATTACHMENT_URL_TTL seconds from now, on the
        base URL the caller used (so the link leads back to this sandbox)."""
        issued = self.now().strftime("%Y%m%dT%H%M%SZ")
        signature = hmac.new(self._url_key, f"{attachment.id}|{issued}".encode(), hashlib.sha256).hexdigest()
        query = (
            f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=sandbox%2Feu-west-3%2Fs3&X-Amz-Date={issued}"
            f"&X-Amz-Expires={ATTACHMENT_URL_TTL}&X-Amz-SignedHeaders=host&X-Amz-Signature={signature}"
        )
        return (
            f"{base_url.rstrip('/')}/files/attachments/{attachment.id}/{quote(attachment.file_name)}?{query}"
        )

    def _attachment_dict(self, attachment: _Attachment, base_url: str) -> dict[str, Any]:
        return {
            "id": attachment.id,
            "created_at": _ts(attachment.created_ms),
            "file_name": attachment.file_name,
            "file_size": str(attachment.size),  # §3.3: a string
            "file_content_type": attachment.content_type,
            "url": self._attachment_url(attachment, base_url),
            "probative_attachment": {"status": "unavailable"},
        }

    @route("GET", "/v2/attachments/{attachment_id}", **_scope("attachment.read", "organization.read"))
    def get_attachment(self, request: SandboxRequest, attachment_id: str) -> SandboxResponse:
        attachment = self.attachments.get(attachment_id)
        if attachment is None:
            raise self._missing("Attachment")
        return json_response({"attachment": self._attachment_dict(attachment, request.base_url)})

    @route("GET", "/files/attachments/{attachment_id}/{file_name}", auth="none", staging=False)
    def download_attachment(
        self, request: SandboxRequest, attachment_id: str, file_name: str
    ) -> SandboxResponse:
        """The "S3" side of attachment URLs: checks the signature and the 30-minute expiry."""
        attachment = self.attachments.get(attachment_id)
        issued = request.arg("X-Amz-Date") or ""
        expected = hmac.new(self._url_key, f"{attachment_id}|{issued}".encode(), hashlib.sha256).hexdigest()
        if attachment is None or not hmac.compare_digest(expected, request.arg("X-Amz-Signature") or ""):
            return self._s3_error(
                "SignatureDoesNotMatch", "The request signature we calculated does not match"
            )
        issued_at = datetime.strptime(issued, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        if self.now() > issued_at + timedelta(seconds=int(request.arg("X-Amz-Expires") or 0)):
            return self._s3_error("AccessDenied", "Request has expired")
        return SandboxResponse(
            200,
            {
                "Content-Type": attachment.content_type,
                "Content-Disposition": f'inline; filename="{attachment.file_name}"',
            },
            attachment.content(),
        )

    @staticmethod
    def _s3_error(code: str, message: str) -> SandboxResponse:
        return text_response(
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>',
            403,
            "application/xml",
        )

    # -- clients (§3.5) ------------------------------------------------------------------------------

    CLIENT_FIELDS: ClassVar[tuple[str, ...]] = (
        "kind type name first_name last_name email extra_emails phone phone_number currency locale vat_number "
        "tax_identification_number address city zip_code province_code country_code billing_address "
        "delivery_address recipient_code e_invoicing_address"
    ).split()

    def _client_record(self, client_id: str, fields: Mapping[str, Any], created_ms: int) -> dict[str, Any]:
        record: dict[str, Any] = {name: None for name in self.CLIENT_FIELDS}
        record.update({"id": client_id, "extra_emails": [], "e_invoicing_reachable": False})
        self._apply_client_fields(record, fields)
        record["created_at"] = record["updated_at"] = _ts_z(created_ms)
        return record

    @staticmethod
    def _apply_client_fields(record: dict[str, Any], fields: Mapping[str, Any]) -> None:
        for name in QontoSandbox.CLIENT_FIELDS:
            if name in fields:
                record[name] = fields[name]
        # §3.5: `type` mirrors `kind`; if both are sent, kind wins.
        kind = fields.get("kind") or fields.get("type")
        if kind:
            record["kind"] = record["type"] = kind
        # Root address fields and billing_address describe the same address; keep both filled.
        billing = record.get("billing_address")
        if isinstance(billing, dict) and not record.get("address"):
            record.update(
                address=billing.get("street_address"),
                city=billing.get("city"),
                zip_code=billing.get("zip_code"),
                province_code=billing.get("province_code"),
                country_code=billing.get("country_code"),
            )
        elif record.get("address") and not billing:
            record["billing_address"] = {
                "street_address": record["address"],
                "city": record.get("city"),
                "zip_code": record.get("zip_code"),
                "province_code": record.get("province_code"),
                "country_code": record.get("country_code"),
            }

    def _validate_client(self, record: Mapping[str, Any]) -> None:
        kind = record.get("kind")
        if kind not in ("individual", "company", "freelancer"):
            raise self._invalid(
                "/kind", "not_in_list", "kind must be one of: individual, company, freelancer"
            )
        if kind == "company":
            if not record.get("name"):
                raise self._invalid("/name", "blank", "name can't be blank")
            if len(record["name"]) > 250:
                raise self._invalid("/name", "too_long", "name is too long (maximum is 250 characters)")
        else:
            for name in ("first_name", "last_name"):
                if not record.get(name):
                    raise self._invalid(f"/{name}", "blank", f"{name} can't be blank")
                if len(record[name]) > 60:
                    raise self._invalid(
                        f"/{name}", "too_long", f"{name} is too long (maximum is 60 characters)"
                    )
        email = record.get("email")
        if email and ("@" not in email or email.startswith("@") or email.endswith("@")):
            raise self._invalid("/email", "invalid", "email is invalid")
        if record.get("vat_number") and len(record["vat_number"]) > 20:
            raise self._invalid(
                "/vat_number", "too_long", "vat_number is too long (maximum is 20 characters)"
            )
        tin = record.get("tax_identification_number")
        if tin and len(tin) > 30:
            raise self._invalid(
                "/tax_identification_number", "too_long", "tax_identification_number is too long"
            )

    def _json_body(self, request: SandboxRequest) -> dict[str, Any]:
        try:
            body = request.json()
        except ValueError:
            raise Abort(self.error(400, "bad_request", "The request body must be a JSON object")) from None
        if not isinstance(body, dict):
            raise Abort(self.error(400, "bad_request", "The request body must be a JSON object"))
        return body

    @route("GET", "/v2/clients", **_scope("client.read"))
    def list_clients(self, request: SandboxRequest) -> SandboxResponse:
        rows = list(self.clients.values())
        for name in ("tax_identification_number", "vat_number", "email"):
            wanted = request.arg(f"filter[{name}]")
            if wanted:
                rows = [c for c in rows if (c.get(name) or "").casefold() == wanted.casefold()]
        name_filter = request.arg("filter[name]")
        if name_filter is not None:
            if len(name_filter) < 2:
                raise self._bad_param("filter[name]", "filter[name] must be at least 2 characters")
            needle = _fold(name_filter)
            rows = [
                c
                for c in rows
                if needle in _fold(c.get("name") or f"{c.get('first_name')} {c.get('last_name')}")
            ]
        for bound, keep in (("from", lambda v, b: v >= b), ("to", lambda v, b: v <= b)):
            limit = self._time_filter(request, f"filter[updated_at_{bound}]")
            if limit is not None:
                rows = [c for c in rows if keep(_parse_time(c["updated_at"]), limit)]
        field_name, descending = self._sort(request, ("created_at", "updated_at", "name"), "name:asc")
        if field_name == "name":
            rows.sort(key=lambda c: _fold(c.get("name") or f"{c.get('first_name')} {c.get('last_name')}"))
        else:
            rows.sort(key=lambda c: c[field_name])
        if descending:
            rows.reverse()
        return self._list(request, "clients", rows)

    @route("GET", "/v2/clients/{client_id}", **_scope("client.read"))
    def get_client(self, request: SandboxRequest, client_id: str) -> SandboxResponse:
        if client_id not in self.clients:
            raise self._missing("Client")
        return json_response({"client": self.clients[client_id]})

    @route("POST", "/v2/clients", **_scope("client.write"))
    def create_client(self, request: SandboxRequest) -> SandboxResponse:
        def create() -> SandboxResponse:
            # §3.5: flat body, no {"client": ...} wrapper; 200 per the docs; no uniqueness rule.
            body = self._json_body(request)
            record = self._client_record(self.new_id(), body, self._now_ms())
            self._validate_client(record)
            self.clients[record["id"]] = record
            self.emit_event("v1/clients", "created", record)
            return json_response({"client": record})

        return self._idempotent(request, create)

    @route("PATCH", "/v2/clients/{client_id}", **_scope("client.write"))
    def update_client(self, request: SandboxRequest, client_id: str) -> SandboxResponse:
        def update() -> SandboxResponse:
            if client_id not in self.clients:
                raise self._missing("Client")
            record = dict(self.clients[client_id])
            self._apply_client_fields(record, self._json_body(request))
            self._validate_client(record)
            record["updated_at"] = _ts_z(self._now_ms())
            self.clients[client_id] = record
            self.emit_event("v1/clients", "updated", record)
            return json_response({"client": record})

        return self._idempotent(request, update)

    @route("DELETE", "/v2/clients/{client_id}", **_scope("client.write"))
    def delete_client(self, request: SandboxRequest, client_id: str) -> SandboxResponse:
        def delete() -> SandboxResponse:
            record = self.clients.pop(client_id, None)
            if record is None:
                raise self._missing("Client")
            self.emit_event("v1/clients", "deleted", {"id": client_id})
            return empty_response(204)

        return self._idempotent(request, delete)

    # -- client invoices and credit notes (§3.6, §3.7) -----------------------------------------------

    def _filter_dates(
        self, request: SandboxRequest, rows: list[dict[str, Any]], names: Iterable[str]
    ) -> list[dict[str, Any]]:
        """Apply ``filter[<name>_from]`` / ``filter[<name>_to]`` to timestamp fields."""
        for name in names:
            start = self._time_filter(request, f"filter[{name}_from]")
            end = self._time_filter(request, f"filter[{name}_to]")
            if start is None and end is None:
                continue
            kept = []
            for row in rows:
                if not row.get(name):
                    continue
                value = _parse_time(row[name])
                if (start is None or value >= start) and (end is None or value <= end):
                    kept.append(row)
            rows = kept
        return rows

    @staticmethod
    def _status_filter(request: SandboxRequest) -> set[str]:
        # §3.6: several statuses come comma-separated per the docs; qontoctl repeats the key.
        values: set[str] = set()
        for raw in request.args("filter[status]", "filter[status][]"):
            values.update(v.strip() for v in raw.split(",") if v.strip())
        return values

    @route("GET", "/v2/client_invoices", **_scope("client_invoices.read"))
    def list_client_invoices(self, request: SandboxRequest) -> SandboxResponse:
        rows = list(self.client_invoices.values())
        statuses = self._status_filter(request)
        unknown = statuses - set(CLIENT_INVOICE_STATUSES)
        if unknown:
            raise self._bad_param(
                "filter[status]", f"status must be one of: {', '.join(CLIENT_INVOICE_STATUSES)}"
            )
        if statuses:
            rows = [r for r in rows if r["status"] in statuses]
        rows = self._filter_dates(request, rows, ("created_at", "updated_at"))
        due_from, due_to = request.arg("filter[due_date_from]"), request.arg("filter[due_date_to]")
        exact_due = request.arg("filter[due_date]")
        if exact_due:
            rows = [r for r in rows if r["due_date"] == exact_due]
        if due_from:
            rows = [r for r in rows if r["due_date"] >= due_from]
        if due_to:
            rows = [r for r in rows if r["due_date"] <= due_to]
        _, descending = self._sort(request, ("created_at",), "created_at:desc")
        rows.sort(key=lambda r: _parse_time(r["created_at"]), reverse=descending)
        return self._list(request, "client_invoices", rows)

    @route("GET", "/v2/client_invoices/{invoice_id}", **_scope("client_invoices.read"))
    def get_client_invoice(self, request: SandboxRequest, invoice_id: str) -> SandboxResponse:
        if invoice_id not in self.client_invoices:
            raise self._missing("Client invoice")
        return json_response({"client_invoice": self.client_invoices[invoice_id]})

    @route("GET", "/v2/credit_notes", **_scope("client_invoices.read"))
    def list_credit_notes(self, request: SandboxRequest) -> SandboxResponse:
        rows = self._filter_dates(request, list(self.credit_notes.values()), ("created_at",))
        _, descending = self._sort(request, ("created_at",), "created_at:desc")
        rows.sort(key=lambda r: _parse_time(r["created_at"]), reverse=descending)
        return self._list(request, "credit_notes", rows)

    @route("GET", "/v2/credit_notes/{note_id}", **_scope("client_invoices.read"))
    def get_credit_note(self, request: SandboxRequest, note_id: str) -> SandboxResponse:
        if note_id not in self.credit_notes:
            raise self._missing("Credit note")
        return json_response({"credit_note": self.credit_notes[note_id]})

    # -- supplier invoices (§3.10) -----------------------------------------------------------------

    @route("GET", "/v2/supplier_invoices", **_scope("supplier_invoice.read"))
    def list_supplier_invoices(self, request: SandboxRequest) -> SandboxResponse:
        rows = list(self.supplier_invoices.values())
        statuses = self._status_filter(request)
        if statuses - set(SUPPLIER_INVOICE_STATUSES):
            raise self._bad_param(
                "filter[status]", f"status must be one of: {', '.join(SUPPLIER_INVOICE_STATUSES)}"
            )
        if statuses:
            rows = [r for r in rows if r["status"] in statuses]
        attachment_ids = set(request.args("filter[attachment_id]", "filter[attachment_id][]"))
        if attachment_ids:
            rows = [r for r in rows if r["attachment_id"] in attachment_ids]
        issue_from = request.arg("filter[issue_date_from]")
        if issue_from:
            rows = [r for r in rows if r["issue_date"] and r["issue_date"] >= issue_from]
        rows = self._filter_dates(request, rows, ("created_at", "updated_at"))
        field_name, descending = self._sort(request, ("created_at", "updated_at"), "created_at:desc")
        rows.sort(key=lambda r: _parse_time(r[field_name]), reverse=descending)
        return self._list(request, "supplier_invoices", rows)

    @route("GET", "/v2/supplier_invoices/{invoice_id}", **_scope("supplier_invoice.read"))
    def get_supplier_invoice(self, request: SandboxRequest, invoice_id: str) -> SandboxResponse:
        if invoice_id not in self.supplier_invoices:
            raise self._missing("Supplier invoice")
        return json_response({"supplier_invoice": self.supplier_invoices[invoice_id]})

    @route("POST", "/v2/supplier_invoices/bulk", **_scope("supplier_invoice.write"))
    def bulk_create_supplier_invoices(self, request: SandboxRequest) -> SandboxResponse:
        return self._idempotent(request, lambda: self._bulk_create(request))

    def _bulk_create(self, request: SandboxRequest) -> SandboxResponse:
        """Multipart ``supplier_invoices[][file]`` + ``[idempotency_key]`` pairs; always 200 with
        per-file ``errors`` unless the request as a whole is unusable (400)."""
        if len(request.body) > BULK_UPLOAD_MAX_BYTES:
            return self.error(400, "request_too_large", "The request must not exceed 15 MB")
        try:
            parts = request.multipart()
        except ValueError:
            return self.error(400, "bad_request", "The request must be multipart/form-data")
        entries: list[dict[str, Any]] = []
        extras: dict[str, str] = {}
        for part in parts:
            prefix = "supplier_invoices[]["
            if part.name.startswith(prefix) and part.name.endswith("]"):
                key = part.name[len(prefix) : -1]
                # Rails array-of-hashes rule: a key already present in the last entry starts a new one.
                if not entries or key in entries[-1]:
                    entries.append({})
                entries[-1][key] = part
            else:
                extras[part.name] = part.data.decode("utf-8", "replace")
        if not entries:
            return self.error(
                400, "bad_request", "supplier_invoices is required", {"pointer": "/supplier_invoices"}
            )
        try:
            meta = json.loads(extras["meta"]) if extras.get("meta") else {}
        except ValueError:
            return self.error(400, "bad_request", "meta must be a JSON string", {"pointer": "/meta"})
        source = extras.get("source") or "supplier_invoices"
        created: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        now = self._now_ms()
        for index, entry in enumerate(entries):
            # inferred: the reference's error codes for bulk uploads are illustrative, not observed.
            file_part = entry.get("file")
            key_part = entry.get("idempotency_key")
            key = key_part.data.decode().strip() if key_part is not None else ""
            problem: tuple[str, str, str] | None = None
            if file_part is None or file_part.filename is None:
                problem = ("file", "blank", "file can't be blank")
            elif not file_part.data:
                problem = ("file", "invalid_file", "File is empty")
            elif self._upload_type(file_part) not in SUPPLIER_UPLOAD_TYPES:
                problem = ("file", "invalid_file", "File type not supported")
            elif not key:
                problem = ("idempotency_key", "blank", "idempotency_key can't be blank")
            if problem is not None:
                errors.append(
                    {
                        "code": problem[1],
                        "detail": problem[2],
                        "source": {"pointer": f"/supplier_invoices/{index}/{problem[0]}"},
                    }
                )
                continue
            assert file_part is not None and file_part.filename is not None
            existing = self._bulk_keys.get(key)
            if existing is not None and existing in self.supplier_invoices:
                created.append(self.supplier_invoices[existing])
                continue
            attachment = self._new_attachment(
                file_part.filename,
                now,
                file_part.filename,
                content_type=self._upload_type(file_part),
                data=file_part.data,
            )
            record = self._supplier_invoice_record(self.new_id(), attachment, now, "direct_upload", source)
            record["meta"] = meta
            self.supplier_invoices[record["id"]] = record
            self._bulk_keys[key] = record["id"]
            created.append(record)
        return json_response({"supplier_invoices": created, "errors": errors})

    @staticmethod
    def _upload_type(part: Any) -> str:
        declared = (part.content_type or "").split(";")[0].strip().lower()
        if declared and declared != "application/octet-stream":
            return declared
        name = (part.filename or "").lower()
        for suffix, kind in (
            (".pdf", "application/pdf"),
            (".jpg", "image/jpeg"),
            (".jpeg", "image/jpeg"),
            (".png", "image/png"),
        ):
            if name.endswith(suffix):
                return kind
        return declared or "application/octet-stream"

    # -- webhooks (§3.12) ------------------------------------------------------------------------------

    def sign_webhook(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return {"X-Qonto-Signature": qonto_signature(secret, body, timestamp)}

    def _subscription_view(self, record: dict[str, Any], with_secret: bool = False) -> dict[str, Any]:
        view = {k: v for k, v in record.items() if k not in ("secret", "client_id") and v is not None}
        if with_secret:
            view["secret"] = record["secret"]
        return view

    def _validate_subscription(self, body: Mapping[str, Any], partial: bool) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if "callback_url" in body or not partial:
            url = body.get("callback_url")
            if not isinstance(url, str) or not url:
                raise self._invalid("/callback_url", "blank", "callback_url can't be blank")
            if len(url) > 512:
                raise self._invalid("/callback_url", "too_long", "callback_url is too long (maximum is 512)")
            # §3.12 asks for https; plain http is let through for loopback hosts so a local hub works.
            host = url.split("://", 1)[-1].split("/", 1)[0].split(":")[0]
            if not url.startswith("https://") and not (
                url.startswith("http://") and host in ("localhost", "127.0.0.1", "::1", "[::1]", "testserver")
            ):
                raise self._invalid("/callback_url", "invalid", "callback_url must be an https URL")
            values["callback_url"] = url
        if "types" in body or not partial:
            types = body.get("types")
            if not isinstance(types, list) or not types:
                raise self._invalid("/types", "blank", "types must contain at least one event type")
            for kind in types:
                if kind not in WEBHOOK_TYPES:
                    raise self._invalid(
                        "/types", "not_in_list", f"types must be among: {', '.join(WEBHOOK_TYPES)}"
                    )
            values["types"] = list(dict.fromkeys(types))
        if "secret" in body:
            secret = body["secret"]
            if not isinstance(secret, str) or not 32 <= len(secret) <= 128:
                raise self._invalid("/secret", "invalid", "secret must be between 32 and 128 characters")
            values["secret"] = secret
        if "description" in body:
            description = body["description"]
            if description is not None and (not isinstance(description, str) or len(description) > 256):
                raise self._invalid("/description", "too_long", "description is too long (maximum is 256)")
            values["description"] = description
        return values

    def _own_subscription(self, request: SandboxRequest, subscription_id: str) -> dict[str, Any]:
        record = self.webhook_subscriptions.get(subscription_id)
        if (
            record is None
            or record["membership_id"] != request.context["membership_id"]
            or record["client_id"] != request.context["client_id"]
        ):
            raise self._missing("Webhook subscription")
        return record

    @route("POST", "/v2/webhook_subscriptions", api_key=False, **_scope("webhook"))
    def create_subscription(self, request: SandboxRequest) -> SandboxResponse:
        def create() -> SandboxResponse:
            values = self._validate_subscription(self._json_body(request), partial=False)
            now = _ts_z(self._now_ms())
            record = {
                "id": self.new_id(),
                "organization_id": self.organization_id,
                "membership_id": request.context["membership_id"],
                "client_id": request.context["client_id"],
                "callback_url": values["callback_url"],
                "types": values["types"],
                "description": values.get("description"),
                "secret": values.get("secret") or secrets.token_urlsafe(36)[:48],
                "created_at": now,
                "updated_at": now,
            }
            self.webhook_subscriptions[record["id"]] = record
            # §3.12: single resources are not wrapped; the secret is echoed on create.
            return json_response(self._subscription_view(record, with_secret=True), 201)

        return self._idempotent(request, create)

    @route("GET", "/v2/webhook_subscriptions", api_key=False, **_scope("webhook"))
    def list_subscriptions(self, request: SandboxRequest) -> SandboxResponse:
        mine = [
            self._subscription_view(r)
            for r in self.webhook_subscriptions.values()
            if r["membership_id"] == request.context["membership_id"]
            and r["client_id"] == request.context["client_id"]
        ]
        return self._list(request, "subscriptions", mine)

    @route("GET", "/v2/webhook_subscriptions/{subscription_id}", api_key=False, **_scope("webhook"))
    def get_subscription(self, request: SandboxRequest, subscription_id: str) -> SandboxResponse:
        return json_response(self._subscription_view(self._own_subscription(request, subscription_id)))

    @route("PUT", "/v2/webhook_subscriptions/{subscription_id}", api_key=False, **_scope("webhook"))
    def update_subscription(self, request: SandboxRequest, subscription_id: str) -> SandboxResponse:
        record = self._own_subscription(request, subscription_id)
        record.update(self._validate_subscription(self._json_body(request), partial=True))
        record["updated_at"] = _ts_z(self._now_ms())
        return json_response(self._subscription_view(record))

    @route("DELETE", "/v2/webhook_subscriptions/{subscription_id}", api_key=False, **_scope("webhook"))
    def delete_subscription(self, request: SandboxRequest, subscription_id: str) -> SandboxResponse:
        record = self._own_subscription(request, subscription_id)
        del self.webhook_subscriptions[record["id"]]
        self.pending_webhooks = [e for e in self.pending_webhooks if e.subscription_id != record["id"]]
        return empty_response(204)

    def emit_event(self, topic: str, event: str, data: Mapping[str, Any]) -> int:
        """Queue a ``topic`` event for every subscription to it; returns how many were queued."""
        queued = 0
        with self.lock:
            created = _ts_z(self._now_ms())
            for record in self.webhook_subscriptions.values():
                if topic not in record["types"]:
                    continue
                payload = {
                    "id": self.new_id(),
                    "subscription_id": record["id"],
                    "organization_id": self.organization_id,
                    "membership_id": record["membership_id"],
                    "type": topic,
                    "created_at": created,
                    "data": {"event": event, **data},
                }
                self.pending_webhooks.append(
                    _PendingEvent(record["id"], record["callback_url"], record["secret"], payload)
                )
                queued += 1
        return queued

    def flush_webhooks(self) -> list[WebhookDelivery]:
        """Deliver the queued events (signed); failures stay queued for the next flush, as Qonto
        retries for days. Call without holding the lock: receivers may call the sandbox back."""
        with self.lock:
            batch, self.pending_webhooks = self.pending_webhooks, []
        deliveries: list[WebhookDelivery] = []
        failed: list[_PendingEvent] = []
        for event in batch:
            event.attempts += 1
            delivery = self.deliver_webhook(event.url, event.payload, event.secret)
            deliveries.append(delivery)
            if not delivery.ok:
                failed.append(event)
        with self.lock:
            self.pending_webhooks[:0] = failed
        return deliveries

    # -- test-control helpers ----------------------------------------------------------------------------

    def transaction(self, transaction_id: str) -> dict[str, Any]:
        """The API representation of one transaction."""
        with self.lock:
            return self._tx_by_id[transaction_id].as_dict()

    def transactions_of(
        self, bank_account_id: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Every transaction of an account (default: the main one), in creation order."""
        with self.lock:
            account = self.accounts[bank_account_id or self.main_account_id]
            return [t.as_dict() for t in account.transactions if status is None or t.status == status]

    def count_transactions(self, status: str | None = None, include_external: bool = True) -> int:
        with self.lock:
            return sum(
                1
                for account in self.accounts.values()
                if include_external or not account.is_external
                for tx in account.transactions
                if status is None or tx.status == status
            )

    def add_transactions(
        self,
        n: int = 1,
        *,
        bank_account_id: str | None = None,
        status: str = "completed",
        side: str | None = None,
        amount_cents: int | None = None,
        label: str | None = None,
        reference: str | None = None,
        settle_in: float | None = None,
    ) -> list[dict[str, Any]]:
        """Create ``n`` transactions happening now (``v1/transactions`` ``created`` events).

        ``status="pending"`` ones settle after ``settle_in`` seconds of sandbox time (default:
        only through ``settle_pending()``).
        """
        if status not in ("completed", "pending", "declined"):
            raise ValueError("status must be completed, pending or declined")
        created: list[dict[str, Any]] = []
        with self.lock:
            self._settle_due()
            account = self.accounts[bank_account_id or self.main_account_id]
            profile = account.profile
            counterparties = [(c["name"] or c["last_name"], None) for c in self.clients.values()] or [
                ("Client", None)
            ]
            for _ in range(n):
                now = self._now_ms()
                shape = self._random_shape(self.rng, profile, counterparties, account.balance_cents)
                if side is not None and side != shape["side"]:
                    shape = {**shape, "side": side, "op": "transfer", "vat": None}
                if amount_cents is not None:
                    shape["amount"] = amount_cents
                if label is not None:
                    shape["label"] = label
                if reference is not None:
                    shape["reference"] = reference
                tx = self._append(self.rng, account, profile, counterparties, now, status=status, shape=shape)
                tx.emitted_ms = min(tx.emitted_ms, now)
                tx.created_ms = tx.emitted_ms + 1_000 if tx.emitted_ms + 1_000 <= now else now
                tx.updated_ms = self._stamp(max(now, tx.settled_ms or 0))
                if status == "pending" and settle_in is not None:
                    self._schedule(tx, now + int(settle_in * 1000))
                data = tx.as_dict()
                self.emit_event("v1/transactions", "created", data)
                created.append(data)
        if self.auto_webhooks:
            self.flush_webhooks()
        return created

    def settle_pending(self, transaction_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Settle pending transactions now (all, or the given ids), in the order they were emitted."""
        with self.lock:
            self._settle_due()
            wanted = set(transaction_ids) if transaction_ids is not None else None
            pending = sorted(
                (tx for tx in self._pending.values() if wanted is None or tx.id in wanted),
                key=lambda tx: (tx.emitted_ms, tx.seq),
            )
            settled = [self._settle_now(tx, self._now_ms()) for tx in pending]
        if self.auto_webhooks:
            self.flush_webhooks()
        return settled

    # Fields that `update_transaction` may change, by their API names.
    _UPDATABLE = {
        "note": "note",
        "label": "label",
        "reference": "reference",
        "attachment_ids": "attachment_ids",
        "label_ids": "label_ids",
        "vat_rate": "vat_rate",
        "vat_amount_cents": "vat_cents",
        "category": "category",
    }

    def update_transaction(self, transaction_id: str, **fields: Any) -> dict[str, Any]:
        """Change a transaction as Qonto would (bumps ``updated_at``, ``updated`` event).

        ``status="completed"`` settles a pending one, ``status="declined"`` declines it; the other
        fields are those of ``_UPDATABLE``. Balances are never rewritten.
        """
        with self.lock:
            self._settle_due()
            tx = self._tx_by_id[transaction_id]
            status = fields.pop("status", None)
            unknown = set(fields) - set(self._UPDATABLE)
            if unknown:
                raise TypeError(f"cannot update {', '.join(sorted(unknown))}")
            for name, value in fields.items():
                setattr(tx, self._UPDATABLE[name], list(value) if name.endswith("_ids") else value)
            if status == "completed" and tx.status == "pending":
                return self._settle_now(tx, self._now_ms())
            if status is not None and status != tx.status:
                if tx.status != "pending" or status != "declined":
                    raise ValueError(f"cannot move a {tx.status} transaction to {status}")
                tx.status = "declined"
                tx.settle_due_ms = None
                del self._pending[tx.id]
            tx.updated_ms = self._stamp(max(self._now_ms(), tx.updated_ms + 1))
            self._tx_version += 1
            data = tx.as_dict()
            self.emit_event("v1/transactions", "updated", data)
        if self.auto_webhooks:
            self.flush_webhooks()
        return data

    def describe(self) -> str:
        """A short summary for the command line and for debugging."""
        with self.lock:
            accounts = ", ".join(
                f"{a.name} ({a.id}, {len(a.transactions)} transactions)" for a in self.accounts.values()
            )
            return (
                f"organization {self.legal_name} slug={self.organization_slug}\n"
                f"API key header: Authorization: {self.api_key_header}\n"
                f"accounts: {accounts}\n"
                f"clients={len(self.clients)} client_invoices={len(self.client_invoices)} "
                f"credit_notes={len(self.credit_notes)} supplier_invoices={len(self.supplier_invoices)}\n"
                "OAuth: GET /oauth2/auth, POST /oauth2/token (any client id; its first secret sticks)"
            )
