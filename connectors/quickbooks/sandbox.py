"""A fake of the QuickBooks Online Accounting API v3, written from ``/work/shared/reference/peer-apis.md`` §1.

Intuit spreads QuickBooks over several hosts (§1.1, §1.2): the consent page on
``appcenter.intuit.com``, the token endpoint on ``oauth.platform.intuit.com``, revocation on
``developer.api.intuit.com`` and the API on ``quickbooks.api.intuit.com``. The hub's settings point
each of those URLs at this one sandbox, which serves all their paths under one root:

* ``GET|POST /connect/oauth2`` — the consent page; the redirect carries ``code``, ``state`` and
  ``realmId`` (§1.1, §1.2).
* ``POST /oauth2/v1/tokens/bearer`` — ``authorization_code`` and ``refresh_token`` grants with
  ``client_secret_basic`` or ``client_secret_post``; 1 h access tokens; rolling ~101 d refresh
  tokens whose value rotates (configurable) and a 5-year hard cap (§1.2).
* ``POST /v2/oauth2/tokens/revoke`` — JSON ``{"token": ...}`` with HTTP Basic client auth (§1.2).
* ``GET /.well-known/openid_configuration/`` (and the sandbox variant) — the discovery document
  ``intuit-oauth`` fetches in its constructor (§1.11).
* ``/v3/company/{realmId}/…`` — ``query`` (GET ``query=`` or POST ``application/text``, §1.4),
  ``cdc`` (§1.5), read one ``/{entity}/{id}`` (§1.3), ``companyinfo/{realmId}`` (§1.1),
  ``download/{id}`` returning a temporary URL (§1.7), and read-only faults for writes.
* ``GET /qbo-attachments/{token}`` — the short-lived file URL behind ``TempDownloadUri`` (§1.7).

Errors are QBO faults (§1.8), throttling is per realm (§1.9), webhooks are signed with
``intuit-signature`` (§1.10). The data is seeded from an integer: companies (realm ids) with
accounts, vendors, customers, bills (some paid, some with a PDF attachment), bill payments,
invoices, payments, credit memos, purchase orders and purchases. Every entity table keeps an index
sorted by ``(MetaData.LastUpdatedTime, Id)`` so incremental queries over 10,000 bills cost a
bisect and a slice. Choices the reference leaves open are marked ``inferred`` where they are made.
"""

from __future__ import annotations

import base64
import bisect
import copy
import hashlib
import hmac
import random
import re
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from connectors.sandbox.base import (
    AccessToken,
    FakeAPI,
    OAuthError,
    OAuthGrant,
    RefreshToken,
    Route,
    SandboxRequest,
    SandboxResponse,
    WebhookDelivery,
    _basic_credentials,
    empty_response,
    json_response,
    route,
    text_response,
)

try:  # §1.3: MetaData times carry an offset; Intuit's own clocks run on US Pacific time.
    from zoneinfo import ZoneInfo

    PACIFIC: Any = ZoneInfo("America/Los_Angeles")
except Exception:  # pragma: no cover - no tz database: a fixed PST offset is close enough
    PACIFIC = timezone(timedelta(hours=-8))

ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"
# §1.2 scopes (the restricted ones are not named exactly by the reference, so they are not served).
QBO_SCOPES = frozenset(
    {ACCOUNTING_SCOPE, "com.intuit.quickbooks.payment", "openid", "profile", "email", "phone", "address"}
)
# §1.2: rolling refresh-token expiry (the commonly returned 8726400 s) and the 5-year hard cap.
REFRESH_TOKEN_TTL = 8_726_400
REFRESH_HARD_TTL = 157_680_000
HARD_EXPIRY_HEADER = "x-include-refresh-token-hard-expires-in"
# §1.4: MAXRESULTS default 100, maximum 1000.
DEFAULT_MAX_RESULTS = 100
MAX_RESULTS_LIMIT = 1000
# §1.5: look-back at most 30 days; at most 1,000 objects per response.
CDC_MAX_DAYS = 30
CDC_MAX_OBJECTS = 1000
# §1.7: TempDownloadUri is short-lived; the exact lifetime is not documented (inferred: 15 min).
TEMP_DOWNLOAD_TTL = 900
# §1.9: 500 requests per minute per realm; 10 per second per realm and app.
DEFAULT_PER_MINUTE = 500
DOCUMENTED_PER_SECOND = 10
# §1.10 operations and their CloudEvents past tense (``qbo.bill.created.v1``).
WEBHOOK_OPERATIONS = {
    "Create": "created",
    "Update": "updated",
    "Delete": "deleted",
    "Merge": "merged",
    "Void": "voided",
    "Emailed": "emailed",
}

# §1.6: fields shared by every entity, then each entity's key fields. Queries may filter on these
# (first path segment, case-insensitive); anything else is a validation fault.
COMMON_FIELDS = ("Id", "SyncToken", "MetaData", "domain", "sparse", "status")
ENTITY_FIELDS: dict[str, tuple[str, ...]] = {
    "Vendor": (
        "DisplayName CompanyName Title GivenName MiddleName FamilyName Suffix PrintOnCheckName Active "
        "TaxIdentifier AcctNum Balance BillRate Vendor1099 TaxReportingBasis BillAddr PrimaryPhone Mobile "
        "Fax PrimaryEmailAddr WebAddr TermRef CurrencyRef APAccountRef"
    ).split(),
    "Customer": (
        "DisplayName CompanyName GivenName FamilyName FullyQualifiedName PrintOnCheckName Notes Active Job "
        "IsProject ParentRef BillWithParent Taxable Balance BalanceWithJobs PreferredDeliveryMethod "
        "ResaleNum PrimaryTaxIdentifier BillAddr ShipAddr PrimaryPhone Mobile PrimaryEmailAddr WebAddr "
        "DefaultTaxCodeRef SalesTermRef PaymentMethodRef CurrencyRef ARAccountRef"
    ).split(),
    "Bill": (
        "VendorRef Line DocNumber TxnDate DueDate TotalAmt Balance PrivateNote ExchangeRate "
        "GlobalTaxCalculation CurrencyRef APAccountRef SalesTermRef DepartmentRef VendorAddr TxnTaxDetail "
        "LinkedTxn"
    ).split(),
    "Invoice": (
        "CustomerRef Line DocNumber TxnDate DueDate TotalAmt Balance Deposit PrivateNote CustomerMemo "
        "BillEmail BillAddr ShipAddr CurrencyRef ExchangeRate HomeTotalAmt HomeBalance GlobalTaxCalculation "
        "TxnTaxDetail EmailStatus PrintStatus SalesTermRef DepartmentRef InvoiceLink LinkedTxn CustomField"
    ).split(),
    "CreditMemo": (
        "CustomerRef Line DocNumber TxnDate TotalAmt Balance RemainingCredit PrivateNote CustomerMemo "
        "BillEmail BillAddr CurrencyRef ExchangeRate TxnTaxDetail GlobalTaxCalculation PaymentMethodRef "
        "DepositToAccountRef"
    ).split(),
    "Payment": (
        "CustomerRef TotalAmt UnappliedAmt TxnDate PaymentRefNum PrivateNote TxnStatus CurrencyRef "
        "ExchangeRate DepositToAccountRef ARAccountRef PaymentMethodRef Line"
    ).split(),
    "BillPayment": (
        "VendorRef PayType TotalAmt TxnDate DocNumber PrivateNote CurrencyRef APAccountRef CheckPayment "
        "CreditCardPayment Line"
    ).split(),
    "Purchase": (
        "PaymentType AccountRef EntityRef Credit DocNumber TxnDate TotalAmt PrivateNote CurrencyRef "
        "ExchangeRate TxnTaxDetail GlobalTaxCalculation PaymentMethodRef RemitToAddr Line"
    ).split(),
    "PurchaseOrder": (
        "VendorRef POStatus DocNumber TxnDate DueDate TotalAmt PrivateNote Memo CurrencyRef APAccountRef "
        "VendorAddr ShipAddr TxnTaxDetail Line LinkedTxn"
    ).split(),
    "Attachable": (
        "AttachableRef FileName ContentType Size Note Category FileAccessUri TempDownloadUri "
        "ThumbnailFileAccessUri ThumbnailTempDownloadUri Lat Long PlaceName"
    ).split(),
    "Account": (
        "Name AcctNum FullyQualifiedName SubAccount ParentRef Active Classification AccountType "
        "AccountSubType CurrentBalance CurrentBalanceWithSubAccounts CurrencyRef Description TaxCodeRef"
    ).split(),
    # CompanyInfo's fields are not listed by the reference (inferred from the entity's usual shape).
    "CompanyInfo": (
        "CompanyName LegalName CompanyAddr LegalAddr CustomerCommunicationAddr Email PrimaryPhone WebAddr "
        "Country FiscalYearStartMonth SupportedLanguages CompanyStartDate NameValue"
    ).split(),
}
# §1.3: read one is ``/{entity-lowercase}/{Id}``.
ENTITY_BY_PATH = {name.lower(): name for name in ENTITY_FIELDS}
# §1.6 Account: "delete" = set Active=false; the same holds for the other name-list entities
# (inferred: QBO never hard-deletes vendors or customers either).
NAME_LIST_ENTITIES = frozenset({"Account", "Vendor", "Customer"})

# ---------------------------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------------------------


def qbo_datetime(moment: datetime) -> str:
    """``MetaData`` form (§1.3): seconds and a Pacific offset, ``2025-03-04T02:15:31-08:00``."""
    return moment.astimezone(PACIFIC).replace(microsecond=0).isoformat()


def qbo_time(moment: datetime) -> str:
    """The response ``time`` field (§1.4 example): milliseconds and offset."""
    return moment.astimezone(PACIFIC).isoformat(timespec="milliseconds")


def utc_millis(moment: datetime) -> str:
    """Webhook ``lastUpdated`` / CloudEvents ``time`` (§1.10): ``2025-03-04T10:15:00.000Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


@lru_cache(maxsize=131_072)
def parse_instant(text: str) -> float:
    """Epoch seconds of an ISO date or date-time; ``ValueError`` when it is neither.

    Accepts ``-08:00``, ``-0800``, ``-00:00`` and ``Z`` offsets (§1.4 shows both the colon and the
    legacy ``-0700`` forms). A value without an offset, or a bare date, is read in the company's
    time zone, US Pacific (inferred).
    """
    value = text.strip()
    if _DATE_RE.match(value):
        parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
    elif _DATETIME_RE.match(value):
        parsed = datetime.fromisoformat(value)
    else:
        raise ValueError(f"not a date or date-time: {text!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=PACIFIC)
    return parsed.timestamp()


def _lut(row: Mapping[str, Any]) -> float:
    return parse_instant(row["MetaData"]["LastUpdatedTime"])


# ---------------------------------------------------------------------------------------------
# The query language (§1.4)
# ---------------------------------------------------------------------------------------------


class QueryError(Exception):
    """A query the QBO parser or validator refuses; rendered as a 400 ValidationFault (§1.8).

    The codes are inferred (the reference gives the 2000-4999 validation range, §1.8): 4000 for a
    statement that does not parse, 4001 for one that parses but asks for something not allowed.
    """

    def __init__(self, detail: str, *, code: str = "4000", message: str = "Error parsing query") -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code
        self.message = message


def _invalid(detail: str) -> QueryError:
    return QueryError(detail, code="4001", message="Invalid query")


_TOKEN_RE = re.compile(
    r"""\s*(?:
    (?P<string>'(?:\\.|''|[^'\\])*')
   |(?P<number>-?\d+(?:\.\d+)?(?![\w.]))
   |(?P<op><=|>=|<>|!=|=|<|>)
   |(?P<punct>[(),*])
   |(?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    value: Any
    position: int


def tokenize(statement: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    length = len(statement)
    while position < length:
        if statement[position:].strip() == "":
            break
        match = _TOKEN_RE.match(statement, position)
        if match is None or match.end() == position:
            raise QueryError(
                f"QueryParserError: Encountered unexpected character {statement[position:].strip()[:1]!r} "
                f"at column {position + 1}"
            )
        kind = match.lastgroup or ""
        text = match.group(kind)
        value: Any = text
        if kind == "string":
            # §1.4: single-quoted strings; a backslash-escaped quote is the usual practice.
            value = re.sub(r"\\(.)", r"\1", text[1:-1].replace("''", "'"))
        elif kind == "number":
            value = float(text) if "." in text else int(text)
        tokens.append(Token(kind, text, value, match.start(kind)))
        position = match.end()
    return tokens


@dataclass(frozen=True)
class Condition:
    """``path op value``; ``op`` is one of ``= < > <= >= IN LIKE`` (§1.4)."""

    path: tuple[str, ...]
    op: str
    values: tuple[Any, ...]

    @property
    def is_last_updated(self) -> bool:
        return tuple(p.lower() for p in self.path) == ("metadata", "lastupdatedtime")

    @property
    def is_id(self) -> bool:
        return len(self.path) == 1 and self.path[0].lower() == "id"


@dataclass(frozen=True)
class Query:
    """A parsed ``SELECT * | count(*) FROM Entity [WHERE] [ORDERBY] [STARTPOSITION] [MAXRESULTS]``."""

    entity: str
    count: bool
    conditions: tuple[Condition, ...]
    order_by: tuple[tuple[tuple[str, ...], bool], ...]  # (path, descending)
    start_position: int
    max_results: int


class _Parser:
    def __init__(self, statement: str) -> None:
        self.statement = statement
        self.tokens = tokenize(statement)
        self.index = 0

    def peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def next(self, expected: str) -> Token:
        token = self.peek()
        if token is None:
            raise QueryError(f"QueryParserError: Encountered end of statement, expected {expected}")
        self.index += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "word" and token.text.upper() == word:
            self.index += 1
            return True
        return False

    def expect_keyword(self, word: str) -> None:
        token = self.next(word)
        if token.kind != "word" or token.text.upper() != word:
            raise QueryError(
                f'QueryParserError: Encountered "{token.text}" at column {token.position + 1}, expected {word}'
            )

    def expect_punct(self, char: str) -> None:
        token = self.next(f"'{char}'")
        if token.text != char:
            raise QueryError(
                f"QueryParserError: Encountered \"{token.text}\" at column {token.position + 1}, expected '{char}'"
            )

    def integer(self, clause: str) -> int:
        token = self.next(f"a number after {clause}")
        if token.kind != "number" or not isinstance(token.value, int):
            raise QueryError(f'QueryParserError: {clause} expects an integer, got "{token.text}"')
        return int(token.value)

    def literal(self) -> Any:
        token = self.next("a value")
        if token.kind in ("string", "number"):
            return token.value
        if token.kind == "word" and token.text.lower() in ("true", "false"):
            return token.text.lower() == "true"
        raise QueryError(
            f'QueryParserError: Encountered "{token.text}" at column {token.position + 1}, expected a value '
            "(string values go in single quotes)"
        )

    def path(self, what: str) -> tuple[str, ...]:
        token = self.next(what)
        if token.kind != "word" or token.text.upper() in _KEYWORDS:
            raise QueryError(
                f'QueryParserError: Encountered "{token.text}" at column {token.position + 1}, expected {what}'
            )
        return tuple(token.text.split("."))

    def parse(self) -> Query:
        self.expect_keyword("SELECT")
        count = False
        token = self.next("* or count(*)")
        if token.text == "*":
            pass
        elif token.kind == "word" and token.text.upper() in _KEYWORDS:
            raise QueryError(
                f'QueryParserError: Encountered "{token.text}" at column {token.position + 1}, expected * or count(*)'
            )
        elif token.kind == "word" and token.text.lower() == "count":
            self.expect_punct("(")
            self.expect_punct("*")
            self.expect_punct(")")
            count = True
        else:
            # §1.4: no projections in the subset served here.
            raise _invalid(
                f'QueryValidationError: only SELECT * or SELECT count(*) is supported, got "{token.text}"'
            )
        self.expect_keyword("FROM")
        entity_token = self.next("an entity name")
        entity = entity_token.text
        if entity_token.kind != "word" or entity not in ENTITY_FIELDS:
            # §1.4: the entity name is case-sensitive.
            raise QueryError(f'QueryParserError: Invalid entity "{entity}" (entity names are case-sensitive)')
        conditions: list[Condition] = []
        if self.keyword("WHERE"):
            conditions.append(self.condition(entity))
            while True:
                if self.keyword("AND"):
                    conditions.append(self.condition(entity))
                    continue
                token = self.peek()
                if token is not None and token.kind == "word" and token.text.upper() == "OR":
                    # §1.4: filters are joined with AND only.
                    raise QueryError(
                        f'QueryParserError: Encountered "OR" at column {token.position + 1}: OR is not supported'
                    )
                break
        order_by: list[tuple[tuple[str, ...], bool]] = []
        if self.keyword("ORDERBY"):
            while True:
                path = self.path("a property to order by")
                self.check_property(entity, path)
                descending = False
                if self.keyword("DESC"):
                    descending = True
                else:
                    self.keyword("ASC")
                order_by.append((path, descending))
                token = self.peek()
                if token is not None and token.text == ",":
                    self.index += 1
                    continue
                break
        start_position = 1
        max_results = DEFAULT_MAX_RESULTS
        seen: set[str] = set()
        while (token := self.peek()) is not None and token.kind == "word":
            clause = token.text.upper()
            if clause not in ("STARTPOSITION", "MAXRESULTS") or clause in seen:
                break
            self.index += 1
            seen.add(clause)
            if clause == "STARTPOSITION":
                start_position = self.integer("STARTPOSITION")
            else:
                max_results = self.integer("MAXRESULTS")
        token = self.peek()
        if token is not None:
            raise QueryError(f'QueryParserError: Encountered "{token.text}" at column {token.position + 1}')
        if start_position < 1:
            raise _invalid("QueryValidationError: STARTPOSITION starts at 1")
        if max_results < 1 or max_results > MAX_RESULTS_LIMIT:
            # §1.12: MAXRESULTS > 1000 -> validation fault.
            raise _invalid(f"QueryValidationError: MAXRESULTS must be between 1 and {MAX_RESULTS_LIMIT}")
        return Query(entity, count, tuple(conditions), tuple(order_by), start_position, max_results)

    def check_property(self, entity: str, path: tuple[str, ...]) -> None:
        known = {name.lower() for name in (*COMMON_FIELDS, *ENTITY_FIELDS[entity])}
        if path[0].lower() not in known:
            raise _invalid(f"QueryValidationError: property '{'.'.join(path)}' is not queryable for {entity}")

    def condition(self, entity: str) -> Condition:
        path = self.path("a property")
        self.check_property(entity, path)
        token = self.next("an operator")
        if token.kind == "op":
            if token.text in ("<>", "!="):
                raise QueryError(f"QueryParserError: operator {token.text} is not supported")
            return Condition(path, token.text, (self.literal(),))
        op = token.text.upper() if token.kind == "word" else token.text
        if op == "LIKE":
            value = self.literal()
            if not isinstance(value, str):
                raise QueryError("QueryParserError: LIKE expects a quoted string")
            return Condition(path, "LIKE", (value,))
        if op == "IN":
            self.expect_punct("(")
            values = [self.literal()]
            while (peeked := self.peek()) is not None and peeked.text == ",":
                self.index += 1
                values.append(self.literal())
            self.expect_punct(")")
            return Condition(path, "IN", tuple(values))
        raise QueryError(
            f'QueryParserError: Encountered "{token.text}" at column {token.position + 1}, expected an operator'
        )


_KEYWORDS = {"SELECT", "FROM", "WHERE", "AND", "OR", "ORDERBY", "STARTPOSITION", "MAXRESULTS", "IN", "LIKE"}


def parse_query(statement: str) -> Query:
    """Parse one query statement; ``QueryError`` explains a refusal."""
    if not statement or not statement.strip():
        raise QueryError("QueryParserError: the query is empty")
    return _Parser(statement).parse()


def _lookup(node: Any, key: str) -> Any:
    """Case-insensitive key lookup (field names in queries are, §1.4 ``Metadata``/``Type``)."""
    if not isinstance(node, dict):
        return None
    if key in node:
        return node[key]
    lowered = key.lower()
    for name, value in node.items():
        if name.lower() == lowered:
            return value
    return None


def path_values(row: Mapping[str, Any], path: Sequence[str]) -> list[Any]:
    """Every value at ``path``, walking into lists (``AttachableRef.EntityRef.value``)."""
    nodes: list[Any] = [row]
    for key in path:
        found: list[Any] = []
        for node in nodes:
            if isinstance(node, list):
                for item in node:
                    value = _lookup(item, key)
                    if value is not None:
                        found.extend(value if isinstance(value, list) else [value])
            else:
                value = _lookup(node, key)
                if value is not None:
                    found.extend(value if isinstance(value, list) else [value])
        nodes = found
        if not nodes:
            break
    # A reference compares by its value: ``WHERE VendorRef = '58'`` (§1.6 Ref objects).
    return [node["value"] if isinstance(node, dict) and "value" in node else node for node in nodes]


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


_INT_RE = re.compile(r"^-?\d+$")


def _compare(field_value: Any, op: str, literal: Any) -> bool:
    """One comparison, typed by the stored value (inferred semantics, see the README)."""
    if isinstance(field_value, bool) or isinstance(literal, bool):
        if isinstance(literal, str):
            literal = literal.lower() == "true"
        return op == "=" and field_value is literal
    if isinstance(field_value, (int, float)):
        number = _as_number(literal)
        if number is None:
            return False
        left, right = float(field_value), number
    elif isinstance(field_value, str):
        if isinstance(literal, (int, float)) or (_INT_RE.match(field_value) and _INT_RE.match(str(literal))):
            left_n, right_n = _as_number(field_value), _as_number(literal)
            if left_n is None or right_n is None:
                return False
            left, right = left_n, right_n
        elif _DATETIME_RE.match(field_value) and isinstance(literal, str):
            try:
                left, right = parse_instant(field_value), parse_instant(literal)
            except ValueError:
                return False
        else:
            left_s, right_s = field_value, str(literal)
            if op == "=":
                return left_s == right_s
            return _ordered(left_s, op, right_s)
    else:
        return False
    if op == "=":
        return left == right
    return _ordered(left, op, right)


def _ordered(left: Any, op: str, right: Any) -> bool:
    if op == "<":
        return bool(left < right)
    if op == ">":
        return bool(left > right)
    if op == "<=":
        return bool(left <= right)
    if op == ">=":
        return bool(left >= right)
    return False


def compile_condition(condition: Condition) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate for one condition: true when any value at the path satisfies it."""
    path, op, values = condition.path, condition.op, condition.values
    if op == "LIKE":
        # §1.4: LIKE's only wildcard is %; matching is case-insensitive (inferred).
        pattern = re.compile(
            "^" + ".*".join(re.escape(part) for part in str(values[0]).split("%")) + "$",
            re.IGNORECASE | re.DOTALL,
        )

        def like(row: Mapping[str, Any]) -> bool:
            return any(isinstance(v, str) and pattern.match(v) for v in path_values(row, path))

        return like
    if op == "IN":

        def within(row: Mapping[str, Any]) -> bool:
            return any(_compare(v, "=", literal) for v in path_values(row, path) for literal in values)

        return within
    literal = values[0]

    def compare(row: Mapping[str, Any]) -> bool:
        return any(_compare(v, op, literal) for v in path_values(row, path))

    return compare


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float)):
        return (1, float(value))
    if isinstance(value, str):
        if _INT_RE.match(value):
            return (1, int(value))
        if _DATETIME_RE.match(value):
            try:
                return (1, parse_instant(value))
            except ValueError:
                pass
        return (2, value)
    return (3, str(value))


def _id_number(row: Mapping[str, Any]) -> int:
    return int(row["Id"])


# ---------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------


class EntityTable:
    """One entity of one company: rows by Id (in Id order) and a ``(LastUpdatedTime, Id)`` index."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: dict[str, dict[str, Any]] = {}
        self.index: list[tuple[float, int]] = []
        #: CDC stubs of deleted rows (§1.5): ``{"domain","status":"Deleted","Id","MetaData"}``.
        self.deleted: dict[str, dict[str, Any]] = {}
        self.next_id = 1

    def allocate_id(self) -> str:
        value = self.next_id
        self.next_id += 1
        return str(value)

    def insert(self, row: dict[str, Any]) -> None:
        """Add a new row; its Id must be above every Id so far (``rows`` stays in Id order)."""
        number = int(row["Id"])
        self.next_id = max(self.next_id, number + 1)
        self.rows[row["Id"]] = row
        bisect.insort(self.index, (_lut(row), number))

    def bulk_load(self, rows: Iterable[dict[str, Any]]) -> None:
        """Seed many rows at once (sorted index built once)."""
        for row in rows:
            self.rows[row["Id"]] = row
            self.next_id = max(self.next_id, int(row["Id"]) + 1)
        self.index = sorted((_lut(row), int(row["Id"])) for row in self.rows.values())

    def _unindex(self, row: Mapping[str, Any]) -> None:
        key = (_lut(row), int(row["Id"]))
        position = bisect.bisect_left(self.index, key)
        if position < len(self.index) and self.index[position] == key:
            del self.index[position]

    def replace(self, old: Mapping[str, Any], new: dict[str, Any]) -> None:
        self._unindex(old)
        self.rows[new["Id"]] = new
        bisect.insort(self.index, (_lut(new), int(new["Id"])))

    def remove(self, entity_id: str, stub: dict[str, Any]) -> dict[str, Any]:
        row = self.rows.pop(entity_id)
        self._unindex(row)
        self.deleted[entity_id] = stub
        return row

    def updated_between(
        self, low: float | None, low_inclusive: bool, high: float | None, high_inclusive: bool
    ) -> list[dict[str, Any]]:
        """Rows whose LastUpdatedTime is in the range, in ``(LastUpdatedTime, Id)`` order."""
        inf = float("inf")
        start = 0
        end = len(self.index)
        if low is not None:
            start = (
                bisect.bisect_left(self.index, (low, -inf))
                if low_inclusive
                else bisect.bisect_right(self.index, (low, inf))
            )
        if high is not None:
            end = (
                bisect.bisect_right(self.index, (high, inf))
                if high_inclusive
                else bisect.bisect_left(self.index, (high, -inf))
            )
        rows = self.rows
        return [rows[str(number)] for _, number in self.index[start:end]]


@dataclass
class Company:
    """One QuickBooks company (realm) and its data."""

    realm_id: str
    name: str
    country: str
    currency: str
    tables: dict[str, EntityTable] = field(default_factory=dict)
    #: Attachable Id -> file bytes (§1.7).
    files: dict[str, bytes] = field(default_factory=dict)

    def table(self, entity: str) -> EntityTable:
        if entity not in self.tables:
            self.tables[entity] = EntityTable(entity)
        return self.tables[entity]


@dataclass
class ThrottleConfig:
    """Per-realm request limits (§1.9); ``None`` switches a limit off."""

    per_minute: int | None = DEFAULT_PER_MINUTE
    per_second: int | None = None
    #: "json" (HTTP 429 + JSON fault) or "xml" (the XML body QBO historically sent, §1.8).
    format: str = "json"


@dataclass
class WebhookSubscription:
    """An app's webhook endpoint as configured in Intuit's developer portal (§1.10)."""

    url: str
    verifier_token: str
    #: "cloudevents" (the current, mandatory shape) or "legacy" (``eventNotifications``).
    format: str = "cloudevents"
    entities: frozenset[str] | None = None
    realm_ids: frozenset[str] | None = None


@dataclass
class _RefreshMeta:
    issued_at: datetime
    uses: int = 0
    used: bool = False
    successor: str | None = None


# ---------------------------------------------------------------------------------------------
# Seed material
# ---------------------------------------------------------------------------------------------

COMPANY_NAMES = (
    ("Atelier Lumière SAS", "FR", "EUR", "Paris"),
    ("Boulangerie Martin SARL", "FR", "EUR", "Lyon"),
    ("Nordlys Design SAS", "FR", "EUR", "Nantes"),
)
VENDOR_FIRST = (
    "Atelier",
    "Imprimerie",
    "Transports",
    "Studio",
    "Cabinet",
    "Papeterie",
    "Garage",
    "Menuiserie",
    "Agence",
    "Maison",
    "Brasserie",
    "Laboratoire",
    "Fonderie",
    "Verrerie",
    "Editions",
    "Comptoir",
)
VENDOR_SECOND = (
    "Nordlys",
    "Garance",
    "Vauban",
    "Colbert",
    "Lafayette",
    "Mistral",
    "Belvédère",
    "Saint-Roch",
    "Montclair",
    "Arcadie",
    "Rivoli",
    "Beaumarchais",
    "Océane",
    "Sequoia",
    "Hélios",
    "Tramontane",
)
VENDOR_SUFFIX = ("SARL", "SAS", "SA", "EURL")
FOREIGN_VENDORS = (
    ("Cloudway Hosting Inc.", "USD", "US", "San Francisco", "94107"),
    ("Pixelforge Ltd", "GBP", "GB", "London", "EC1V 9HX"),
    ("Brightdesk Software Inc.", "USD", "US", "Austin", "78701"),
    ("Thames Legal LLP", "GBP", "GB", "Bristol", "BS1 4DJ"),
    ("Skyline Analytics Inc.", "USD", "US", "Seattle", "98101"),
)
CUSTOMER_NAMES = (
    "Hôtel du Parc",
    "Librairie Voltaire",
    "Clinique Pasteur",
    "Groupe Ardent",
    "Café des Arts",
    "Théâtre Molière",
    "Domaine Roussel",
    "Musée Carnot",
    "Fromagerie Blanc",
    "Cinéma Lumen",
    "Boutique Iris",
    "Collège Jean Moulin",
    "Pharmacie Centrale",
    "Restaurant Le Quai",
    "Galerie Opale",
)
CITIES = (
    ("Paris", "75011"),
    ("Lyon", "69002"),
    ("Marseille", "13001"),
    ("Bordeaux", "33000"),
    ("Lille", "59000"),
    ("Nantes", "44000"),
    ("Toulouse", "31000"),
    ("Strasbourg", "67000"),
)
STREETS = (
    "rue des Tanneurs",
    "avenue Jean Jaurès",
    "boulevard Voltaire",
    "rue de la République",
    "quai Saint-Antoine",
    "place Bellecour",
)
# Chart of accounts: (name, AccountType, AccountSubType, Classification, AcctNum).
ACCOUNTS = (
    ("Qonto Main", "Bank", "Checking", "Asset", "512000"),
    ("BNP Savings", "Bank", "Savings", "Asset", "512100"),
    ("Qonto USD", "Bank", "Checking", "Asset", "512200"),
    ("Amex Business", "Credit Card", "CreditCard", "Liability", "512900"),
    ("Accounts Payable (A/P)", "Accounts Payable", "AccountsPayable", "Liability", "401000"),
    ("Accounts Receivable (A/R)", "Accounts Receivable", "AccountsReceivable", "Asset", "411000"),
    ("Rent", "Expense", "RentOrLeaseOfBuildings", "Expense", "613200"),
    ("Software subscriptions", "Expense", "OfficeGeneralAdministrativeExpenses", "Expense", "651000"),
    ("Travel", "Expense", "Travel", "Expense", "625100"),
    ("Office supplies", "Expense", "SuppliesMaterials", "Expense", "606400"),
    ("Legal & professional fees", "Expense", "LegalProfessionalFees", "Expense", "622600"),
    ("Telephone & internet", "Expense", "Utilities", "Expense", "626000"),
    ("Advertising", "Expense", "AdvertisingPromotional", "Expense", "623000"),
    ("Sales", "Income", "SalesOfProductIncome", "Revenue", "701000"),
    ("Services", "Income", "ServiceFeeIncome", "Revenue", "706000"),
    ("VAT payable", "Other Current Liability", "GlobalTaxPayable", "Liability", "445710"),
)
EXPENSE_LINES = {
    "Rent": ("Studio rent", "Storage unit rent"),
    "Software subscriptions": ("Design suite licences", "Cloud hosting", "Accounting software", "CRM seats"),
    "Travel": ("Train tickets", "Hotel stay", "Taxi rides", "Flight"),
    "Office supplies": ("Paper and toner", "Printer cartridges", "Packaging", "Furniture"),
    "Legal & professional fees": ("Legal advice", "Audit fees", "Notary fees", "Consulting"),
    "Telephone & internet": ("Fibre subscription", "Mobile plans"),
    "Advertising": ("Print advertising", "Online campaign", "Trade show stand"),
}
SALES_ITEMS = (
    ("1", "Design services"),
    ("2", "Consulting hours"),
    ("3", "Printed catalogue"),
    ("4", "Workshop"),
)
# §1.6: French VAT rates as TaxCodeRef ids (inferred ids).
TAX_CODES = ((0.20, "5"), (0.10, "6"), (0.055, "7"), (0.0, "8"))
EXCHANGE_RATES = {"USD": 0.92, "GBP": 1.17, "EUR": 1.0}
CURRENCY_NAMES = {"EUR": "Euro", "USD": "United States Dollar", "GBP": "British Pound Sterling"}


def _money(value: float) -> float:
    return round(value + 1e-9, 2)


def _siren(rng: random.Random) -> int:
    """A SIREN that passes its Luhn check (python-stdnum rejects the others, as real tools do)."""
    body = rng.randrange(30_000_000, 99_999_999)
    for check in range(10):
        digits = [int(c) for c in f"{body}{check}"]
        total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits))
        if total % 10 == 0:
            return body * 10 + check
    raise AssertionError("unreachable: one check digit always completes a Luhn number")


def _vat_fr(siren: int) -> str:
    """A French VAT number with its valid key: ``FR`` + key + SIREN."""
    key = (12 + 3 * (siren % 97)) % 97
    return f"FR{key:02d}{siren:09d}"


def _pdf_escape(text: str) -> str:
    ascii_text = text.encode("ascii", "replace").decode("ascii")
    return ascii_text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def minimal_pdf(lines: Sequence[str]) -> bytes:
    """A small, valid one-page PDF 1.4 (Helvetica text), built by hand with a correct xref table."""
    content = ["BT", "/F1 12 Tf", "14 TL", "56 780 Td"]
    for line in lines:
        content.append(f"({_pdf_escape(line)}) Tj T*")
    content.append("ET")
    stream = "\n".join(content).encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: list[int] = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref_at = len(out)
    out += f"xref\n0 {len(objects) + 1}\n".encode()
    out += b"0000000000 65535 f \n"
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref_at}\n".encode()
    out += b"%%EOF\n"
    return bytes(out)


def _ref(value: str, name: str | None = None, kind: str | None = None) -> dict[str, str]:
    ref = {"value": value}
    if name is not None:
        ref["name"] = name
    if kind is not None:
        ref["type"] = kind
    return ref


def _currency_ref(code: str) -> dict[str, str]:
    return {"value": code, "name": CURRENCY_NAMES.get(code, code)}


# ---------------------------------------------------------------------------------------------
# The sandbox
# ---------------------------------------------------------------------------------------------


class QuickBooksSandbox(FakeAPI):
    """QuickBooks Online: Intuit OAuth, the v3 query/CDC/read API, attachments, throttling, webhooks."""

    slug = "quickbooks"
    default_seed = 1
    default_base_url = "https://quickbooks.sandbox.invalid"
    # §1.2: access tokens last one hour; refresh tokens roll over ~101 days.
    access_token_ttl: ClassVar[float] = 3600.0
    refresh_token_ttl: ClassVar[float] = float(REFRESH_TOKEN_TTL)
    supported_scopes = QBO_SCOPES
    # §1.2 example token values: "eyJlbmMiOi..." access tokens, "AB11..." refresh tokens.
    token_prefixes: ClassVar[Mapping[str, str]] = {
        "code": "AB11",
        "access": "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0.",
        "refresh": "AB11",
    }
    #: The hub's development OAuth client (qontohub/settings.py PROVIDERS["quickbooks"]).
    dev_client_id: ClassVar[str] = "qontohub-dev-qbo"
    dev_client_secret: ClassVar[str] = "qontohub-dev-qbo-secret"
    temp_download_ttl: ClassVar[float] = float(TEMP_DOWNLOAD_TTL)

    # -- seeding ---------------------------------------------------------------------------------

    def seed(  # type: ignore[override]
        self,
        rng: Any,
        *,
        companies: int = 1,
        vendors: int = 24,
        customers: int = 15,
        bills: int = 120,
        bill_attachment_ratio: float = 0.3,
        bill_paid_ratio: float = 0.5,
        invoices: int = 60,
        invoice_paid_ratio: float = 0.6,
        credit_memos: int = 8,
        purchase_orders: int = 12,
        purchases: int = 80,
        history_days: int = 365,
        throttle: bool = True,
        throttle_per_minute: int | None = DEFAULT_PER_MINUTE,
        throttle_per_second: int | None = None,
        throttle_format: str = "json",
        refresh_rotate_every: int = 1,
        refresh_rotate_after: float | None = None,
        refresh_grace: float = 86400.0,
        refresh_invalidate_on_successor_use: bool = True,
        auth_fault_style: str = "standard",
        webhook_format: str = "cloudevents",
        webhook_auto: bool = True,
    ) -> None:
        """Build ``companies`` realms; the first has the requested volumes, later ones a tenth.

        The options after ``history_days`` are behaviour switches (see README): throttling,
        refresh-token rotation, the 401 body style, the webhook payload shape.
        """
        if companies < 1:
            raise ValueError("companies must be >= 1")
        if throttle_format not in ("json", "xml"):
            raise ValueError("throttle_format is 'json' or 'xml'")
        if auth_fault_style not in ("standard", "lowercase"):
            raise ValueError("auth_fault_style is 'standard' or 'lowercase'")
        if webhook_format not in ("cloudevents", "legacy"):
            raise ValueError("webhook_format is 'cloudevents' or 'legacy'")
        self._local = threading.local()
        self.companies: dict[str, Company] = {}
        self.throttle_default = (
            ThrottleConfig(throttle_per_minute, throttle_per_second, throttle_format)
            if throttle
            else ThrottleConfig(None, None, throttle_format)
        )
        self.throttle_by_realm: dict[str, ThrottleConfig] = {}
        self._realm_hits: dict[str, deque[float]] = {}
        self._app_hits: dict[tuple[str, str], deque[float]] = {}
        self.refresh_rotate_every = refresh_rotate_every
        self.refresh_rotate_after = refresh_rotate_after
        self.refresh_grace = refresh_grace
        self.refresh_invalidate_on_successor_use = refresh_invalidate_on_successor_use
        self._refresh_meta: dict[str, _RefreshMeta] = {}
        self._consent_realm: str | None = None
        self.auth_fault_style = auth_fault_style
        self.webhooks: list[WebhookSubscription] = []
        self.webhook_format = webhook_format
        self.webhook_auto = webhook_auto
        self._pending_events: list[tuple[str, str, str, str, datetime]] = []
        self._download_secret = secrets.token_bytes(16)
        # The opaque CloudEvents ``source`` (§1.10), stable per seed.
        self._event_source = (
            "intuit."
            + base64.b64encode(
                hashlib.sha256(f"{self.slug}:{self.seed_value}".encode()).digest()[:24]
            ).decode()
        )
        self.register_oauth_client(self.dev_client_id, self.dev_client_secret)

        used_realms: set[str] = set()
        for number in range(companies):
            realm_id = f"9341{rng.randrange(10**12):012d}"
            while realm_id in used_realms:
                realm_id = f"9341{rng.randrange(10**12):012d}"
            used_realms.add(realm_id)
            scale = 1.0 if number == 0 else 0.1
            name, country, currency, city = COMPANY_NAMES[number % len(COMPANY_NAMES)]
            if number >= len(COMPANY_NAMES):
                name = f"{name} {number + 1}"
            company = Company(realm_id, name, country, currency)
            self.companies[realm_id] = company
            self._seed_company(
                rng,
                company,
                city=city,
                vendors=max(3, round(vendors * scale)) if vendors else 0,
                customers=max(2, round(customers * scale)) if customers else 0,
                bills=round(bills * scale),
                bill_attachment_ratio=bill_attachment_ratio,
                bill_paid_ratio=bill_paid_ratio,
                invoices=round(invoices * scale),
                invoice_paid_ratio=invoice_paid_ratio,
                credit_memos=round(credit_memos * scale),
                purchase_orders=round(purchase_orders * scale),
                purchases=round(purchases * scale),
                history_days=history_days,
            )

    def _meta(self, created: datetime, updated: datetime | None = None) -> dict[str, str]:
        return {"CreateTime": qbo_datetime(created), "LastUpdatedTime": qbo_datetime(updated or created)}

    def _seed_company(
        self,
        rng: Any,
        company: Company,
        *,
        city: str,
        vendors: int,
        customers: int,
        bills: int,
        bill_attachment_ratio: float,
        bill_paid_ratio: float,
        invoices: int,
        invoice_paid_ratio: float,
        credit_memos: int,
        purchase_orders: int,
        purchases: int,
        history_days: int,
    ) -> None:
        end = self.start_at - timedelta(minutes=5)
        begin = end - timedelta(days=history_days)
        opened = begin - timedelta(days=30)
        span = (end - begin).total_seconds()

        def moments(count: int) -> list[datetime]:
            """``count`` creation times spread over the history, ascending (Ids follow creation)."""
            points = sorted(rng.random() for _ in range(count))
            return [begin + timedelta(seconds=int(p * span)) for p in points]

        def later(created: datetime, max_days: float) -> datetime:
            room = min((end - created).total_seconds(), max_days * 86400)
            return created + timedelta(seconds=int(rng.random() * max(room, 0)))

        # CompanyInfo (§1.1: GET /companyinfo/{realmId}).
        info = {
            "Id": "1",
            "SyncToken": "0",
            "domain": "QBO",
            "sparse": False,
            "CompanyName": company.name,
            "LegalName": company.name,
            "Country": company.country,
            "CompanyAddr": {
                "Id": "1",
                "Line1": "12 rue des Tanneurs",
                "City": city,
                "PostalCode": "75011",
                "Country": company.country,
            },
            "Email": {"Address": "compta@" + re.sub(r"[^a-z]", "", company.name.lower())[:16] + ".example"},
            "WebAddr": {"URI": "https://" + re.sub(r"[^a-z]", "", company.name.lower())[:16] + ".example"},
            "FiscalYearStartMonth": "January",
            "SupportedLanguages": "fr,en",
            "CompanyStartDate": opened.date().isoformat(),
            "NameValue": [
                {"Name": "HomeCurrency", "Value": company.currency},
                {"Name": "OfferingSku", "Value": "QuickBooks Online Plus"},
            ],
            "MetaData": self._meta(opened, opened + timedelta(days=1)),
        }
        company.table("CompanyInfo").bulk_load([info])

        # Accounts (§1.6 Account; some AccountType "Bank").
        account_rows: list[dict[str, Any]] = []
        for index, (name, kind, subtype, classification, number) in enumerate(ACCOUNTS, start=1):
            row: dict[str, Any] = {
                "Id": str(index),
                "SyncToken": "0",
                "domain": "QBO",
                "sparse": False,
                "Name": name,
                "FullyQualifiedName": name,
                "AcctNum": number,
                "SubAccount": False,
                "Active": True,
                "Classification": classification,
                "AccountType": kind,
                "AccountSubType": subtype,
                "CurrencyRef": _currency_ref("USD" if name == "Qonto USD" else company.currency),
                "MetaData": self._meta(opened),
            }
            if kind in ("Bank", "Credit Card", "Accounts Payable", "Accounts Receivable"):
                balance = _money(rng.uniform(2_000, 90_000)) * (-1 if kind == "Credit Card" else 1)
                row["CurrentBalance"] = balance
                row["CurrentBalanceWithSubAccounts"] = balance
            account_rows.append(row)
        company.table("Account").bulk_load(account_rows)
        accounts = {row["Name"]: row for row in account_rows}
        ap = accounts["Accounts Payable (A/P)"]
        ar = accounts["Accounts Receivable (A/R)"]
        banks = [row for row in account_rows if row["AccountType"] == "Bank"]
        card = accounts["Amex Business"]
        expense_names = list(EXPENSE_LINES)

        # Vendors (§1.6 Vendor: DisplayName, WebAddr, TaxIdentifier, CurrencyRef, PrimaryEmailAddr).
        vendor_rows: list[dict[str, Any]] = []
        used_names: set[str] = set()
        for index, created in enumerate(moments(vendors), start=1):
            foreign = FOREIGN_VENDORS[(index // 6) % len(FOREIGN_VENDORS)] if index % 6 == 0 else None
            if foreign is not None and foreign[0] not in used_names:
                display, currency, country, vcity, postal = foreign
                tax_id = (
                    f"GB{rng.randrange(10**8, 10**9)}"
                    if country == "GB"
                    else f"{rng.randrange(10, 99)}-{rng.randrange(10**6, 10**7)}"
                )
                street = f"{rng.randrange(1, 400)} Market Street"
            else:
                display = ""
                while not display or display in used_names:
                    display = (
                        f"{rng.choice(VENDOR_FIRST)} {rng.choice(VENDOR_SECOND)} {rng.choice(VENDOR_SUFFIX)}"
                    )
                currency, country = company.currency, "FR"
                vcity, postal = rng.choice(CITIES)
                tax_id = _vat_fr(_siren(rng))
                street = f"{rng.randrange(1, 120)} {rng.choice(STREETS)}"
            used_names.add(display)
            domain = re.sub(r"[^a-z0-9]+", "-", display.lower().encode("ascii", "ignore").decode()).strip("-")
            row = {
                "Id": str(index),
                "SyncToken": "0",
                "domain": "QBO",
                "sparse": False,
                "Active": True,
                "DisplayName": display,
                "CompanyName": display,
                "PrintOnCheckName": display,
                "TaxIdentifier": tax_id,
                "AcctNum": f"V{index:04d}",
                "PrimaryEmailAddr": {"Address": f"billing@{domain}.example"},
                "BillAddr": {
                    "Id": str(100 + index),
                    "Line1": street,
                    "City": vcity,
                    "PostalCode": postal,
                    "Country": country,
                },
                "CurrencyRef": _currency_ref(currency),
                "Balance": 0.0,
                "APAccountRef": _ref(ap["Id"], ap["Name"]),
                "MetaData": self._meta(created - timedelta(days=30)),
            }
            if rng.random() < 0.8:
                row["WebAddr"] = {"URI": f"https://{domain}.example"}
            if rng.random() < 0.5:
                row["PrimaryPhone"] = {
                    "FreeFormNumber": f"+33 1 {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)} {rng.randrange(10, 99)}"
                }
            if index % 11 == 0:
                row["Active"] = False
                row["SyncToken"] = "1"
                row["MetaData"] = self._meta(created - timedelta(days=30), later(created, 200))
            vendor_rows.append(row)
        company.table("Vendor").bulk_load(vendor_rows)
        active_vendors = [v for v in vendor_rows if v["Active"]] or vendor_rows

        # Customers (§1.6 Customer; DisplayName unique across vendors and customers).
        customer_rows: list[dict[str, Any]] = []
        for index, created in enumerate(moments(customers), start=1):
            base_name = CUSTOMER_NAMES[(index - 1) % len(CUSTOMER_NAMES)]
            display = (
                base_name
                if index <= len(CUSTOMER_NAMES)
                else f"{base_name} {index // len(CUSTOMER_NAMES) + 1}"
            )
            ccity, postal = rng.choice(CITIES)
            domain = re.sub(r"[^a-z0-9]+", "-", display.lower().encode("ascii", "ignore").decode()).strip("-")
            customer_rows.append(
                {
                    "Id": str(index),
                    "SyncToken": "0",
                    "domain": "QBO",
                    "sparse": False,
                    "Active": True,
                    "DisplayName": display,
                    "CompanyName": display,
                    "FullyQualifiedName": display,
                    "PrintOnCheckName": display,
                    "Job": False,
                    "BillWithParent": False,
                    "Taxable": True,
                    "Balance": 0.0,
                    "BalanceWithJobs": 0.0,
                    "PreferredDeliveryMethod": "Email",
                    "PrimaryEmailAddr": {"Address": f"compta@{domain}.example"},
                    "PrimaryTaxIdentifier": _vat_fr(_siren(rng)),
                    "BillAddr": {
                        "Id": str(500 + index),
                        "Line1": f"{rng.randrange(1, 120)} {rng.choice(STREETS)}",
                        "City": ccity,
                        "PostalCode": postal,
                        "Country": "FR",
                    },
                    "CurrencyRef": _currency_ref(company.currency),
                    "MetaData": self._meta(created - timedelta(days=20)),
                }
            )
        company.table("Customer").bulk_load(customer_rows)

        def expense_lines(currency: str) -> tuple[list[dict[str, Any]], float, float, str]:
            """1-4 account-based expense lines, their net total, tax and tax code."""
            rate, code = rng.choice(TAX_CODES) if currency == company.currency else (0.0, "8")
            lines: list[dict[str, Any]] = []
            for number in range(1, rng.randint(1, 4) + 1):
                account = accounts[rng.choice(expense_names)]
                amount = _money(rng.uniform(15, 2400))
                lines.append(
                    {
                        "Id": str(number),
                        "LineNum": number,
                        "Description": rng.choice(EXPENSE_LINES[account["Name"]]),
                        "Amount": amount,
                        "DetailType": "AccountBasedExpenseLineDetail",
                        "AccountBasedExpenseLineDetail": {
                            "AccountRef": _ref(account["Id"], account["Name"]),
                            "TaxCodeRef": {"value": code},
                            "BillableStatus": "NotBillable",
                        },
                    }
                )
            net = _money(sum(line["Amount"] for line in lines))
            return lines, net, _money(net * rate), code

        def tax_detail(total_tax: float, code: str, net: float) -> dict[str, Any]:
            detail: dict[str, Any] = {"TxnTaxCodeRef": {"value": code}, "TotalTax": total_tax}
            if total_tax:
                detail["TaxLine"] = [
                    {
                        "Amount": total_tax,
                        "DetailType": "TaxLineDetail",
                        "TaxLineDetail": {
                            "TaxRateRef": {"value": code},
                            "PercentBased": True,
                            "TaxPercent": round(total_tax / net * 100, 1) if net else 0,
                            "NetAmountTaxable": net,
                        },
                    }
                ]
            return detail

        # Bills (§1.6 Bill), some paid by BillPayments, some with a PDF Attachable (§1.7).
        bill_rows: list[dict[str, Any]] = []
        bill_payment_rows: list[dict[str, Any]] = []
        attachable_rows: list[dict[str, Any]] = []
        year_counters: dict[str, int] = {}
        for index, created in enumerate(moments(bills), start=1):
            vendor = rng.choice(active_vendors)
            currency = vendor["CurrencyRef"]["value"]
            lines, net, tax, code = expense_lines(currency)
            txn_day = (created - timedelta(days=rng.randint(0, 4))).astimezone(PACIFIC).date()
            due_day = txn_day + timedelta(days=rng.choice((0, 15, 30, 30, 45, 60)))
            prefix = re.sub(r"[^A-Z]", "", vendor["DisplayName"].upper())[:3] or "SUP"
            year_counters[prefix] = year_counters.get(prefix, 0) + 1
            total = _money(net + tax)
            row = {
                "Id": str(index),
                "SyncToken": "0",
                "domain": "QBO",
                "sparse": False,
                "DocNumber": f"{prefix}-{txn_day.year}-{year_counters[prefix]:03d}",
                "TxnDate": txn_day.isoformat(),
                "DueDate": due_day.isoformat(),
                "VendorRef": _ref(vendor["Id"], vendor["DisplayName"]),
                "CurrencyRef": _currency_ref(currency),
                "TotalAmt": total,
                "Balance": total,
                "GlobalTaxCalculation": "TaxExcluded" if tax else "NotApplicable",
                "TxnTaxDetail": tax_detail(tax, code, net),
                "Line": lines,
                "APAccountRef": _ref(ap["Id"], ap["Name"]),
                "VendorAddr": dict(vendor["BillAddr"]),
            }
            if currency != company.currency:
                row["ExchangeRate"] = EXCHANGE_RATES.get(currency, 1.0)
            if rng.random() < 0.4:
                row["PrivateNote"] = f"{lines[0]['Description']} {txn_day.strftime('%B %Y')}"
            updated = created
            sync = 0
            if rng.random() < 0.2:  # edited later: SyncToken and LastUpdatedTime move on
                sync += rng.randint(1, 3)
                updated = later(created, 20)
            if rng.random() < bill_paid_ratio and (end - created).days > 3:
                paid_at = later(created, 45)
                bank = (
                    banks[0]
                    if currency == company.currency
                    else (banks[2] if currency == "USD" else banks[0])
                )
                bp_id = str(len(bill_payment_rows) + 1)
                bill_payment_rows.append(
                    {
                        "Id": bp_id,
                        "SyncToken": "0",
                        "domain": "QBO",
                        "sparse": False,
                        "VendorRef": dict(row["VendorRef"]),
                        "PayType": "Check",
                        "TotalAmt": total,
                        "TxnDate": paid_at.astimezone(PACIFIC).date().isoformat(),
                        "DocNumber": f"VIR-{bp_id.zfill(5)}",
                        "CurrencyRef": _currency_ref(currency),
                        "APAccountRef": _ref(ap["Id"], ap["Name"]),
                        "CheckPayment": {
                            "BankAccountRef": _ref(bank["Id"], bank["Name"]),
                            "PrintStatus": "NotSet",
                        },
                        "Line": [{"Amount": total, "LinkedTxn": [{"TxnId": row["Id"], "TxnType": "Bill"}]}],
                        "MetaData": self._meta(paid_at),
                    }
                )
                row["Balance"] = 0.0
                row["LinkedTxn"] = [{"TxnId": bp_id, "TxnType": "BillPayment"}]
                sync += 1
                updated = max(updated, paid_at)
            row["SyncToken"] = str(sync)
            row["MetaData"] = self._meta(created, updated)
            bill_rows.append(row)
            if rng.random() < bill_attachment_ratio:
                att_id = str(len(attachable_rows) + 1)
                filename = f"{row['DocNumber']}.pdf"
                content = minimal_pdf(
                    [
                        f"INVOICE {row['DocNumber']}",
                        vendor["DisplayName"],
                        f"Date: {row['TxnDate']}   Due: {row['DueDate']}",
                        *(f"{line['Description']}: {line['Amount']:.2f} {currency}" for line in lines),
                        f"VAT: {tax:.2f} {currency}",
                        f"Total: {total:.2f} {currency}",
                    ]
                )
                company.files[att_id] = content
                attachable_rows.append(
                    {
                        "Id": att_id,
                        "SyncToken": "0",
                        "domain": "QBO",
                        "sparse": False,
                        "AttachableRef": [
                            {"EntityRef": {"type": "Bill", "value": row["Id"]}, "IncludeOnSend": False}
                        ],
                        "FileName": filename,
                        "ContentType": "application/pdf",
                        "Size": len(content),
                        "Category": "Document",
                        "FileAccessUri": f"/v3/company/{company.realm_id}/download/{att_id}",
                        "MetaData": self._meta(created + timedelta(minutes=2)),
                    }
                )
        company.table("Bill").bulk_load(bill_rows)
        company.table("BillPayment").bulk_load(bill_payment_rows)
        company.table("Attachable").bulk_load(attachable_rows)
        for vendor in vendor_rows:
            vendor["Balance"] = 0.0
        vendors_by_id = {v["Id"]: v for v in vendor_rows}
        for bill in bill_rows:
            vendor = vendors_by_id[bill["VendorRef"]["value"]]
            vendor["Balance"] = _money(vendor["Balance"] + bill["Balance"])

        # Invoices and the Payments that settle some of them (§1.6 Invoice, Payment).
        invoice_rows: list[dict[str, Any]] = []
        payment_rows: list[dict[str, Any]] = []
        for index, created in enumerate(moments(invoices), start=1):
            customer = rng.choice(customer_rows)
            rate, code = rng.choice(TAX_CODES[:2])
            lines = []
            for number in range(1, rng.randint(1, 3) + 1):
                item_id, item_name = rng.choice(SALES_ITEMS)
                qty = rng.randint(1, 12)
                unit = _money(rng.uniform(40, 900))
                lines.append(
                    {
                        "Id": str(number),
                        "LineNum": number,
                        "Description": item_name,
                        "Amount": _money(qty * unit),
                        "DetailType": "SalesItemLineDetail",
                        "SalesItemLineDetail": {
                            "ItemRef": _ref(item_id, item_name),
                            "UnitPrice": unit,
                            "Qty": qty,
                            "TaxCodeRef": {"value": code},
                        },
                    }
                )
            net = _money(sum(line["Amount"] for line in lines))
            lines.append({"Amount": net, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})
            tax = _money(net * rate)
            total = _money(net + tax)
            txn_day = created.astimezone(PACIFIC).date()
            row = {
                "Id": str(index),
                "SyncToken": "0",
                "domain": "QBO",
                "sparse": False,
                "DocNumber": f"F{txn_day.year}-{index:04d}",
                "TxnDate": txn_day.isoformat(),
                "DueDate": (txn_day + timedelta(days=30)).isoformat(),
                "CustomerRef": _ref(customer["Id"], customer["DisplayName"]),
                "CurrencyRef": _currency_ref(company.currency),
                "TotalAmt": total,
                "Balance": total,
                "GlobalTaxCalculation": "TaxExcluded",
                "TxnTaxDetail": tax_detail(tax, code, net),
                "Line": lines,
                "BillEmail": dict(customer["PrimaryEmailAddr"]),
                "BillAddr": dict(customer["BillAddr"]),
                "EmailStatus": "EmailSent",
                "PrintStatus": "NotSet",
            }
            updated = created
            sync = 0
            if rng.random() < invoice_paid_ratio and (end - created).days > 3:
                paid_at = later(created, 40)
                pay_id = str(len(payment_rows) + 1)
                bank = banks[0]
                payment_rows.append(
                    {
                        "Id": pay_id,
                        "SyncToken": "0",
                        "domain": "QBO",
                        "sparse": False,
                        "CustomerRef": dict(row["CustomerRef"]),
                        "TotalAmt": total,
                        "UnappliedAmt": 0.0,
                        "TxnDate": paid_at.astimezone(PACIFIC).date().isoformat(),
                        "PaymentRefNum": f"VIR{pay_id.zfill(6)}",
                        "CurrencyRef": _currency_ref(company.currency),
                        "TxnStatus": "PAID",
                        "DepositToAccountRef": _ref(bank["Id"], bank["Name"]),
                        "ARAccountRef": _ref(ar["Id"], ar["Name"]),
                        "Line": [
                            {"Amount": total, "LinkedTxn": [{"TxnId": row["Id"], "TxnType": "Invoice"}]}
                        ],
                        "MetaData": self._meta(paid_at),
                    }
                )
                row["Balance"] = 0.0
                row["LinkedTxn"] = [{"TxnId": pay_id, "TxnType": "Payment"}]
                sync += 1
                updated = paid_at
            row["SyncToken"] = str(sync)
            row["MetaData"] = self._meta(created, updated)
            invoice_rows.append(row)
        company.table("Invoice").bulk_load(invoice_rows)
        company.table("Payment").bulk_load(payment_rows)
        customers_by_id = {c["Id"]: c for c in customer_rows}
        for invoice in invoice_rows:
            customer = customers_by_id[invoice["CustomerRef"]["value"]]
            customer["Balance"] = _money(customer["Balance"] + invoice["Balance"])
            customer["BalanceWithJobs"] = customer["Balance"]

        # Credit memos (§1.6 CreditMemo).
        memo_rows: list[dict[str, Any]] = []
        for index, created in enumerate(moments(credit_memos), start=1):
            customer = rng.choice(customer_rows)
            item_id, item_name = rng.choice(SALES_ITEMS)
            amount = _money(rng.uniform(30, 600))
            tax = _money(amount * 0.2)
            total = _money(amount + tax)
            memo_rows.append(
                {
                    "Id": str(index),
                    "SyncToken": "0",
                    "domain": "QBO",
                    "sparse": False,
                    "DocNumber": f"AV-{index:04d}",
                    "TxnDate": created.astimezone(PACIFIC).date().isoformat(),
                    "CustomerRef": _ref(customer["Id"], customer["DisplayName"]),
                    "CurrencyRef": _currency_ref(company.currency),
                    "TotalAmt": total,
                    "Balance": total,
                    "RemainingCredit": total,
                    "GlobalTaxCalculation": "TaxExcluded",
                    "TxnTaxDetail": tax_detail(tax, "5", amount),
                    "PrivateNote": f"Refund: {item_name.lower()}",
                    "Line": [
                        {
                            "Id": "1",
                            "LineNum": 1,
                            "Description": f"Credit for {item_name.lower()}",
                            "Amount": amount,
                            "DetailType": "SalesItemLineDetail",
                            "SalesItemLineDetail": {
                                "ItemRef": _ref(item_id, item_name),
                                "UnitPrice": amount,
                                "Qty": 1,
                                "TaxCodeRef": {"value": "5"},
                            },
                        },
                        {"Amount": amount, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}},
                    ],
                    "BillEmail": dict(customer["PrimaryEmailAddr"]),
                    "MetaData": self._meta(created),
                }
            )
        company.table("CreditMemo").bulk_load(memo_rows)

        # Purchase orders (§1.6 PurchaseOrder).
        po_rows: list[dict[str, Any]] = []
        for index, created in enumerate(moments(purchase_orders), start=1):
            vendor = rng.choice(active_vendors)
            currency = vendor["CurrencyRef"]["value"]
            lines, net, tax, code = expense_lines(currency)
            txn_day = created.astimezone(PACIFIC).date()
            closed = (end - created).days > 60 and rng.random() < 0.7
            po_rows.append(
                {
                    "Id": str(index),
                    "SyncToken": "1" if closed else "0",
                    "domain": "QBO",
                    "sparse": False,
                    "DocNumber": f"PO-{index:04d}",
                    "TxnDate": txn_day.isoformat(),
                    "DueDate": (txn_day + timedelta(days=21)).isoformat(),
                    "VendorRef": _ref(vendor["Id"], vendor["DisplayName"]),
                    "POStatus": "Closed" if closed else "Open",
                    "CurrencyRef": _currency_ref(currency),
                    "TotalAmt": _money(net + tax),
                    "TxnTaxDetail": tax_detail(tax, code, net),
                    "Line": lines,
                    "APAccountRef": _ref(ap["Id"], ap["Name"]),
                    "VendorAddr": dict(vendor["BillAddr"]),
                    "Memo": f"Order for {lines[0]['Description'].lower()}",
                    "MetaData": self._meta(created, later(created, 60) if closed else created),
                }
            )
        company.table("PurchaseOrder").bulk_load(po_rows)

        # Purchases / expenses (§1.6 Purchase: TotalAmt = sum of lines, PrivateNote, AccountRef).
        purchase_rows: list[dict[str, Any]] = []
        for index, created in enumerate(moments(purchases), start=1):
            vendor = rng.choice(active_vendors)
            payment_type = rng.choice(("CreditCard", "CreditCard", "Check", "Cash"))
            paying = card if payment_type == "CreditCard" else banks[0]
            currency = company.currency
            lines, net, _, _ = expense_lines(currency)
            for line in lines:
                line["AccountBasedExpenseLineDetail"]["TaxCodeRef"] = {"value": "8"}
            txn_day = created.astimezone(PACIFIC).date()
            row = {
                "Id": str(index),
                "SyncToken": "0",
                "domain": "QBO",
                "sparse": False,
                "PaymentType": payment_type,
                "AccountRef": _ref(paying["Id"], paying["Name"]),
                "EntityRef": _ref(vendor["Id"], vendor["DisplayName"], "Vendor"),
                "TxnDate": txn_day.isoformat(),
                "TotalAmt": net,
                "CurrencyRef": _currency_ref(currency),
                "PrivateNote": f"{'Card' if payment_type == 'CreditCard' else 'Bank'} payment - {lines[0]['Description']} ({vendor['DisplayName']})",
                "GlobalTaxCalculation": "NotApplicable",
                "Line": lines,
                "MetaData": self._meta(created),
            }
            if payment_type == "CreditCard":
                row["Credit"] = rng.random() < 0.05
            if payment_type == "Check":
                row["DocNumber"] = str(1000 + index)
            purchase_rows.append(row)
        company.table("Purchase").bulk_load(purchase_rows)

    # -- small accessors -------------------------------------------------------------------------

    @property
    def realm_ids(self) -> list[str]:
        """Every company's realmId, the first (default) one first."""
        return list(self.companies)

    @property
    def company_id(self) -> str:
        """The default company's realmId."""
        return next(iter(self.companies))

    def company(self, realm_id: str | None = None) -> Company:
        realm = realm_id or self.company_id
        if realm not in self.companies:
            raise KeyError(f"unknown realmId {realm!r}")
        return self.companies[realm]

    def get_entity(self, entity: str, entity_id: str, realm_id: str | None = None) -> dict[str, Any] | None:
        """A deep copy of one live entity (``None`` if absent or deleted)."""
        with self.lock:
            row = self.company(realm_id).table(self._entity_name(entity)).rows.get(str(entity_id))
            return copy.deepcopy(row) if row is not None else None

    def entities(self, entity: str, realm_id: str | None = None) -> list[dict[str, Any]]:
        """Deep copies of every live entity of a kind, in Id order."""
        with self.lock:
            return copy.deepcopy(list(self.company(realm_id).table(self._entity_name(entity)).rows.values()))

    def attachment_bytes(self, attachable_id: str, realm_id: str | None = None) -> bytes:
        return self.company(realm_id).files[str(attachable_id)]

    @staticmethod
    def _entity_name(entity: str) -> str:
        if entity in ENTITY_FIELDS:
            return entity
        try:
            return ENTITY_BY_PATH[entity.lower()]
        except KeyError:
            raise KeyError(f"unknown entity {entity!r}") from None

    def describe(self) -> str:
        """A summary for the CLI server."""
        lines = []
        for company in self.companies.values():
            counts = ", ".join(
                f"{name}={len(t.rows)}" for name, t in company.tables.items() if name != "CompanyInfo"
            )
            lines.append(f"realmId {company.realm_id} ({company.name}): {counts}")
        lines.append(f"OAuth client: {self.dev_client_id} / {self.dev_client_secret}")
        return "\n".join(lines)

    # -- time ------------------------------------------------------------------------------------

    def _next_update_time(self, previous: str | None = None) -> datetime:
        """Now, but strictly after ``previous`` (seconds resolution) so every edit is visible to ``>``."""
        moment = self.now().replace(microsecond=0)
        if previous is not None:
            floor = datetime.fromtimestamp(parse_instant(previous), UTC) + timedelta(seconds=1)
            moment = max(moment, floor)
        return moment

    # -- test-control: data ----------------------------------------------------------------------

    def _insert(self, company: Company, name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Insert a new row (caller holds the lock); queues the ``Create`` webhook."""
        table = company.table(name)
        moment = self._next_update_time()
        row: dict[str, Any] = {"Id": table.allocate_id(), "SyncToken": "0", "domain": "QBO", "sparse": False}
        row.update(
            {k: v for k, v in fields.items() if v is not None and k not in ("Id", "SyncToken", "MetaData")}
        )
        row["MetaData"] = self._meta(moment)
        table.insert(row)
        self._queue_event(company.realm_id, name, row["Id"], "Create", moment)
        return copy.deepcopy(row)

    def add_entity(self, entity: str, realm_id: str | None = None, **fields: Any) -> dict[str, Any]:
        """Create an entity as if a user typed it in QuickBooks; returns a copy (webhook ``Create``)."""
        name = self._entity_name(entity)
        with self.lock:
            result = self._insert(self.company(realm_id), name, fields)
        self.flush_webhooks()
        return result

    def add_bill(self, realm_id: str | None = None, **fields: Any) -> dict[str, Any]:
        """Create a Bill with sensible defaults (first active vendor, one 100.00 rent line, 20 % VAT).

        Any top-level field may be given (``DocNumber``, ``VendorRef``, ``Line``, ``TxnTaxDetail``,
        ``CurrencyRef``...); ``TotalAmt`` and ``Balance`` follow the lines and tax unless given.
        """
        with self.lock:
            company = self.company(realm_id)
            vendors = [v for v in company.table("Vendor").rows.values() if v.get("Active", True)]
            accounts = {a["Name"]: a for a in company.table("Account").rows.values()}
            today = self.now().astimezone(PACIFIC).date()
            defaults: dict[str, Any] = {
                "TxnDate": today.isoformat(),
                "DueDate": (today + timedelta(days=30)).isoformat(),
                "GlobalTaxCalculation": "TaxExcluded",
            }
            if vendors:
                vendor = vendors[0]
                defaults["VendorRef"] = _ref(vendor["Id"], vendor["DisplayName"])
                defaults["CurrencyRef"] = dict(vendor.get("CurrencyRef") or _currency_ref(company.currency))
            else:
                defaults["CurrencyRef"] = _currency_ref(company.currency)
            rent = accounts.get("Rent")
            if "Line" not in fields:
                defaults["Line"] = [
                    {
                        "Id": "1",
                        "LineNum": 1,
                        "Description": "Sandbox expense",
                        "Amount": 100.0,
                        "DetailType": "AccountBasedExpenseLineDetail",
                        "AccountBasedExpenseLineDetail": {
                            "AccountRef": _ref(rent["Id"], rent["Name"]) if rent else _ref("1"),
                            "TaxCodeRef": {"value": "5"},
                            "BillableStatus": "NotBillable",
                        },
                    }
                ]
            ap = accounts.get("Accounts Payable (A/P)")
            if ap:
                defaults["APAccountRef"] = _ref(ap["Id"], ap["Name"])
            merged = {**defaults, **fields}
            lines = merged.get("Line") or []
            net = _money(
                sum(
                    float(line.get("Amount", 0))
                    for line in lines
                    if line.get("DetailType") != "SubTotalLineDetail"
                )
            )
            if "TxnTaxDetail" not in merged:
                merged["TxnTaxDetail"] = (
                    {"TotalTax": _money(net * 0.2)} if "Line" not in fields else {"TotalTax": 0.0}
                )
            tax = float(merged["TxnTaxDetail"].get("TotalTax", 0) or 0)
            merged.setdefault("TotalAmt", _money(net + tax))
            merged.setdefault("Balance", merged["TotalAmt"])
            merged.setdefault("DocNumber", f"SBX-{company.table('Bill').next_id:05d}")
            result = self._insert(company, "Bill", merged)
        self.flush_webhooks()
        return result

    def edit_entity(
        self, entity: str, entity_id: str, realm_id: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Change top-level fields (``None`` removes one); bumps SyncToken and LastUpdatedTime."""
        name = self._entity_name(entity)
        with self.lock:
            company = self.company(realm_id)
            table = company.table(name)
            old = table.rows.get(str(entity_id))
            if old is None:
                raise KeyError(f"{name} {entity_id} does not exist in realm {company.realm_id}")
            new = copy.deepcopy(old)
            for key, value in fields.items():
                if key in ("Id", "MetaData", "SyncToken"):
                    continue
                if value is None:
                    new.pop(key, None)
                else:
                    new[key] = value
            if (
                name in ("Bill", "Invoice", "CreditMemo", "PurchaseOrder")
                and ("Line" in fields or "TxnTaxDetail" in fields)
                and "TotalAmt" not in fields
            ):
                lines = new.get("Line") or []
                net = _money(
                    sum(
                        float(line.get("Amount", 0))
                        for line in lines
                        if line.get("DetailType") != "SubTotalLineDetail"
                    )
                )
                tax = float((new.get("TxnTaxDetail") or {}).get("TotalTax", 0) or 0)
                paid = _money(float(old.get("TotalAmt", 0)) - float(old.get("Balance", 0)))
                new["TotalAmt"] = _money(net + tax)
                if "Balance" in old and "Balance" not in fields:
                    new["Balance"] = _money(max(new["TotalAmt"] - paid, 0))
            moment = self._next_update_time(old["MetaData"]["LastUpdatedTime"])
            new["SyncToken"] = str(int(old.get("SyncToken", "0")) + 1)
            new["MetaData"] = {
                "CreateTime": old["MetaData"]["CreateTime"],
                "LastUpdatedTime": qbo_datetime(moment),
            }
            table.replace(old, new)
            self._queue_event(company.realm_id, name, new["Id"], "Update", moment)
            result = copy.deepcopy(new)
        self.flush_webhooks()
        return result

    def edit_bill(self, bill_id: str, realm_id: str | None = None, **fields: Any) -> dict[str, Any]:
        """``edit_entity("Bill", ...)``."""
        return self.edit_entity("Bill", bill_id, realm_id, **fields)

    def delete_entity(self, entity: str, entity_id: str, realm_id: str | None = None) -> dict[str, Any]:
        """Delete a transaction (it leaves the query results; CDC shows a ``Deleted`` stub, §1.5).

        Accounts, vendors and customers are never hard-deleted in QBO: they become
        ``Active: false`` (§1.6 Account), which is an update.
        """
        name = self._entity_name(entity)
        if name in NAME_LIST_ENTITIES:
            return self.edit_entity(name, entity_id, realm_id, Active=False)
        with self.lock:
            company = self.company(realm_id)
            table = company.table(name)
            old = table.rows.get(str(entity_id))
            if old is None:
                raise KeyError(f"{name} {entity_id} does not exist in realm {company.realm_id}")
            moment = self._next_update_time(old["MetaData"]["LastUpdatedTime"])
            stub = {
                "domain": "QBO",
                "status": "Deleted",
                "Id": old["Id"],
                "MetaData": {"LastUpdatedTime": qbo_datetime(moment)},
            }
            table.remove(old["Id"], stub)
            if name == "Attachable":
                company.files.pop(old["Id"], None)
            self._queue_event(company.realm_id, name, old["Id"], "Delete", moment)
            result = copy.deepcopy(stub)
        self.flush_webhooks()
        return result

    def attach_file(
        self,
        entity: str,
        entity_id: str,
        filename: str,
        content: bytes,
        content_type: str = "application/pdf",
        realm_id: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Attach a file to an entity (an ``Attachable`` with ``AttachableRef``, §1.7)."""
        name = self._entity_name(entity)
        with self.lock:
            company = self.company(realm_id)
            if str(entity_id) not in company.table(name).rows:
                raise KeyError(f"{name} {entity_id} does not exist in realm {company.realm_id}")
            att_id = str(company.table("Attachable").next_id)
            company.files[att_id] = bytes(content)
            result = self._insert(
                company,
                "Attachable",
                {
                    "AttachableRef": [
                        {"EntityRef": {"type": name, "value": str(entity_id)}, "IncludeOnSend": False}
                    ],
                    "FileName": filename,
                    "ContentType": content_type,
                    "Size": len(content),
                    "Category": "Document",
                    "Note": note,
                    "FileAccessUri": f"/v3/company/{company.realm_id}/download/{att_id}",
                },
            )
        self.flush_webhooks()
        return result

    # -- test-control: throttling and tokens -----------------------------------------------------

    def set_throttle(
        self,
        per_minute: int | None = DEFAULT_PER_MINUTE,
        per_second: int | None = None,
        *,
        realm_id: str | None = None,
        format: str = "json",
    ) -> ThrottleConfig:
        """Limits for one realm (or the default for every realm without its own); ``None`` = off.

        ``set_throttle(per_second=10)`` adds the documented 10 req/s per realm and app (§1.9);
        ``set_throttle(None, None)`` switches throttling off; ``format="xml"`` answers throttling
        with the XML body QBO historically sent to JSON clients (§1.8).
        """
        if format not in ("json", "xml"):
            raise ValueError("format is 'json' or 'xml'")
        config = ThrottleConfig(per_minute, per_second, format)
        with self.lock:
            if realm_id is None:
                self.throttle_default = config
                self.throttle_by_realm.clear()
            else:
                self.company(realm_id)
                self.throttle_by_realm[realm_id] = config
            self._realm_hits.clear()
            self._app_hits.clear()
        return config

    def set_refresh_rotation(
        self,
        every: int = 1,
        *,
        after_seconds: float | None = None,
        grace_seconds: float = 86400.0,
        invalidate_on_successor_use: bool = True,
    ) -> None:
        """How refresh tokens rotate (§1.2, §1.12 "refresh-token rotation switch").

        A refresh returns a new refresh-token value on every ``every``-th use of the same token
        (0 = never by count) or once the token is ``after_seconds`` old (Intuit's "roughly once per
        24-26 h"). The previous value keeps working for ``grace_seconds`` (older Intuit text: 24 h),
        handing back the current value, and dies at once when its successor is used if
        ``invalidate_on_successor_use``.
        """
        with self.lock:
            self.refresh_rotate_every = every
            self.refresh_rotate_after = after_seconds
            self.refresh_grace = grace_seconds
            self.refresh_invalidate_on_successor_use = invalidate_on_successor_use

    def connect(
        self,
        realm_id: str | None = None,
        scope: str = ACCOUNTING_SCOPE,
        client_id: str | None = None,
        client_secret: str | None = None,
    ) -> dict[str, Any]:
        """Consent plus code exchange in one call: the token response with ``realmId`` added."""
        realm = realm_id or self.company_id
        client_id = client_id or self.dev_client_id
        client_secret = client_secret or self.dev_client_secret
        with self.lock:
            self.company(realm)
            redirect = "https://localhost/oauth/callback"
            code = self.issue_authorization_code(client_id, redirect, scope, subject=realm)
            body = self.exchange_authorization_code(client_id, client_secret, code, redirect)
        return {**body, "realmId": realm}

    # -- errors (§1.8) ---------------------------------------------------------------------------

    def _time(self) -> str:
        return qbo_time(self.now())

    def fault(
        self,
        status: int,
        code: str,
        message: str,
        detail: str,
        fault_type: str = "ValidationFault",
        element: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SandboxResponse:
        """A QBO fault document: ``{"Fault": {"Error": [{Message, Detail, code, element?}], "type"}, "time"}``."""
        error: dict[str, str] = {"Message": message, "Detail": detail, "code": code}
        if element is not None:
            error["element"] = element
        return json_response(
            {"Fault": {"Error": [error], "type": fault_type}, "time": self._time()}, status, headers
        )

    def _oauth_path(self) -> bool:
        path = getattr(getattr(self, "_local", None), "path", None) or ""
        return path.startswith(("/oauth2/", "/v2/oauth2/", "/connect/"))

    def error_body(self, status: int, code: str, detail: str, source: Mapping[str, Any] | None = None) -> Any:
        """Generic errors (404, 405, injected faults) in QBO's shape; OAuth paths keep RFC 6749's."""
        if self._oauth_path():
            return {"error": code, "error_description": detail}
        if status == 401:
            return self._auth_fault_body(detail)
        if status == 429:
            return self._throttle_body()
        if status == 403:
            fault = ("120", "Authorization Failure", "AuthorizationFault")
        elif status >= 500:
            # Inferred: python-quickbooks treats codes >= 10000 as severe (§1.8).
            fault = (
                "10000",
                "An application error has occurred while processing your request",
                "SystemFault",
            )
        elif status == 400:
            fault = ("2010", "Request has invalid or unsupported property", "ValidationFault")
        else:
            fault = (str(status), code.replace("_", " ").capitalize(), "SystemFault")
        error_code, message, fault_type = fault
        return {
            "Fault": {
                "Error": [{"Message": message, "Detail": detail, "code": error_code}],
                "type": fault_type,
            },
            "time": self._time(),
        }

    def _auth_fault_body(self, detail: str) -> dict[str, Any]:
        """401 (§1.8): code 3200 ``message=AuthenticationFailed; errorCode=003200; statusCode=401``."""
        message = "message=AuthenticationFailed; errorCode=003200; statusCode=401"
        if self.auth_fault_style == "lowercase":
            return {
                "warnings": None,
                "intuitObject": None,
                "fault": {
                    "error": [{"message": message, "detail": detail, "code": "3200"}],
                    "type": "AUTHENTICATION",
                },
            }
        return {
            "Fault": {
                "Error": [{"Message": message, "Detail": detail, "code": "3200"}],
                "type": "AuthenticationFault",
            },
            "time": self._time(),
        }

    def _throttle_body(self) -> dict[str, Any]:
        # §1.8: code 3001; the fault type "SERVICE" is what the XML form carries (issue threads).
        return {
            "Fault": {
                "Error": [
                    {
                        "Message": "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                        "Detail": "The request limit was reached. Try again later",
                        "code": "3001",
                    }
                ],
                "type": "SERVICE",
            },
            "time": self._time(),
        }

    def throttle_response(self, config: ThrottleConfig | None = None) -> SandboxResponse:
        """HTTP 429 with fault 3001; no Retry-After, none is documented (§1.9)."""
        if config is not None and config.format == "xml":
            # §1.8: historically returned as XML even when JSON was requested.
            body = (
                '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                f'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="{self._time()}">\n'
                '    <Fault type="SERVICE">\n'
                '        <Error code="3001">\n'
                "            <Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>\n"
                "            <Detail>The request limit was reached. Try again later</Detail>\n"
                "        </Error>\n"
                "    </Fault>\n"
                "</IntuitResponse>\n"
            )
            return text_response(body, 429, "application/xml")
        return json_response(self._throttle_body(), 429)

    def rate_limited_response(self, request: SandboxRequest, wait: float) -> SandboxResponse:
        return self.throttle_response(self.throttle_default)

    def _validation(self, error: QueryError) -> SandboxResponse:
        return self.fault(400, error.code, error.message, error.detail, "ValidationFault", element="")

    def _not_found_fault(self, entity: str, entity_id: str) -> SandboxResponse:
        # §1.8: 610 Object Not Found, as an HTTP 400 business error.
        return self.fault(
            400,
            "610",
            "Object Not Found",
            f"Object Not Found : Something you're trying to use has been made inactive or deleted ({entity} {entity_id}).",
            "ValidationFault",
            element="",
        )

    def _read_only(self, what: str) -> SandboxResponse:
        # §1.8: 500 Unsupported Operation; the hub never writes to QuickBooks.
        return self.fault(
            400,
            "500",
            "Unsupported Operation",
            f"Operation {what} is not supported: the QontoHub QuickBooks sandbox is read-only.",
            "ValidationFault",
            element="",
        )

    # -- dispatch hooks --------------------------------------------------------------------------

    def handle(self, request: SandboxRequest) -> SandboxResponse:
        # Remember the path for error_body: OAuth endpoints answer RFC 6749 errors, not faults.
        local = getattr(self, "_local", None)
        if local is not None:
            local.path = request.path
        try:
            return super().handle(request)
        finally:
            if local is not None:
                local.path = None

    def after_request(self, request: SandboxRequest, response: SandboxResponse) -> None:
        # §1.2: responses carry an ``intuit_tid`` header (useful for support).
        response.headers.setdefault(
            "intuit_tid", f"1-{int(self.now().timestamp()):08x}-{secrets.token_hex(12)}"
        )

    def authorize_route(self, request: SandboxRequest, entry: Route) -> SandboxResponse | None:
        if not entry.meta.get("api"):
            return None
        header = request.headers.get("Authorization", "").strip()
        if header[:7].lower() != "bearer " or not header[7:].strip():
            return self.error(401, "unauthorized", "Authorization header is missing or not a Bearer token")
        token, reason = self.verify_access_token(header[7:].strip())
        if token is None:
            detail = {
                "expired": "Token expired: the access token has expired; refresh it",
                "revoked": "Token revoked: the connection was revoked",
            }.get(reason, "Token invalid: the access token is not recognised")
            return self.error(401, "unauthorized", detail)
        realm = request.path_params.get("realm", "")
        if ACCOUNTING_SCOPE not in token.scopes:
            return self.fault(
                403,
                "120",
                "Authorization Failure",
                f"The token lacks the {ACCOUNTING_SCOPE} scope",
                "AuthorizationFault",
            )
        if realm not in self.companies or token.grant.subject != realm:
            return self.fault(
                403,
                "120",
                "Authorization Failure",
                f"The token is not authorised for company {realm}",
                "AuthorizationFault",
            )
        throttled = self._throttled(realm, token.grant.client_id)
        if throttled is not None:
            return throttled
        request.context.update(company=self.companies[realm], client_id=token.grant.client_id)
        return None

    def _throttled(self, realm: str, client_id: str) -> SandboxResponse | None:
        """Per-realm (and per realm+app) sliding windows on the sandbox clock (§1.9)."""
        config = self.throttle_by_realm.get(realm, self.throttle_default)
        now = self.now().timestamp()
        windows: list[tuple[deque[float], int, float]] = []
        if config.per_minute is not None:
            windows.append((self._realm_hits.setdefault(realm, deque()), config.per_minute, 60.0))
        if config.per_second is not None:
            windows.append((self._app_hits.setdefault((realm, client_id), deque()), config.per_second, 1.0))
        for hits, limit, window in windows:
            while hits and hits[0] <= now - window:
                hits.popleft()
            if len(hits) >= limit:
                return self.throttle_response(config)
        for hits, _, _ in windows:
            hits.append(now)
        return None

    # -- OAuth (§1.2) ----------------------------------------------------------------------------

    def oauth_subject(self) -> str:
        # The grant's subject is the company the user picked on the consent page.
        return self._consent_realm or self.company_id

    def consent_account_name(self) -> str:
        realm = self._consent_realm or self.company_id
        return f"{self.companies[realm].name} (realmId {realm})"

    def consent_page(self, request: SandboxRequest, params: Mapping[str, str], scopes: Sequence[str]) -> str:
        page = super().consent_page(request, params, scopes)
        chosen = self._consent_realm or self.company_id
        options = "".join(
            f'<option value="{realm}"{" selected" if realm == chosen else ""}>'
            f"{company.name.replace('<', '&lt;')} ({realm})</option>"
            for realm, company in self.companies.items()
        )
        picker = f'<p><label>Company <select name="realmId">{options}</select></label></p>'
        marker = '<button type="submit" name="decision" value="authorize">'
        return page.replace(marker, picker + marker, 1)

    @route("GET", "/connect/oauth2")
    @route("POST", "/connect/oauth2")
    def authorize(self, request: SandboxRequest) -> SandboxResponse:
        """The consent page; on Authorize, redirect with ``code``, ``state`` and ``realmId`` (§1.1)."""
        params = {k: v[-1] for k, v in request.query.items()}
        if request.method == "POST":
            params.update({k: v[-1] for k, v in request.form().items()})
        realm = params.get("realmId") or self.company_id
        if realm not in self.companies:
            return self.oauth_error_page(f"Unknown company {realm}")
        self._consent_realm = realm
        try:
            response = self.oauth_authorize(request)
        finally:
            self._consent_realm = None
        location = response.header("Location")
        if response.status in (301, 302, 303) and location:
            parts = urlsplit(location)
            values = dict(parse_qsl(parts.query, keep_blank_values=True))
            if "code" in values:
                # Intuit's callback: code, state and realmId (no scope echo).
                out = {"code": values["code"]}
                if values.get("state") is not None:
                    out["state"] = values["state"]
                out["realmId"] = realm
                response.headers["Location"] = urlunsplit(
                    (parts.scheme, parts.netloc, parts.path, urlencode(out), parts.fragment)
                )
        return response

    @route("POST", "/oauth2/v1/tokens/bearer")
    def token(self, request: SandboxRequest) -> SandboxResponse:
        """Token endpoint: Basic or body client auth, form body (§1.2)."""
        self._want_hard_expiry = request.headers.get(HARD_EXPIRY_HEADER, "").lower() == "true"
        try:
            return self.oauth_token(request)
        finally:
            self._want_hard_expiry = False

    @route("POST", "/v2/oauth2/tokens/revoke")
    def revoke(self, request: SandboxRequest) -> SandboxResponse:
        """Revocation: JSON ``{"token": ...}`` with HTTP Basic client auth; 200 on success (§1.2).

        Revoking either token disconnects the app, i.e. ends the whole grant (inferred).
        """
        basic = _basic_credentials(request.headers.get("Authorization", ""))
        try:
            if basic is None:
                raise OAuthError("invalid_client", "HTTP Basic client authentication is required", 401)
            self._authenticate_client(*basic)
            try:
                body = request.json()
            except ValueError:
                raise OAuthError(
                    "invalid_request", 'The body must be JSON: {"token": "<refresh or access token>"}'
                ) from None
            token = body.get("token") if isinstance(body, dict) else None
            if not token or not isinstance(token, str):
                raise OAuthError("invalid_request", "token is missing")
        except OAuthError as exc:
            return self.oauth_error_response(exc)
        with self.lock:
            entry: AccessToken | RefreshToken | None = self.refresh_tokens.get(
                token
            ) or self.access_tokens.get(token)
            if entry is not None:
                if entry.grant.client_id != basic[0]:
                    return self.oauth_error_response(OAuthError("invalid_grant", "Token invalid"))
                self._revoke_grant(entry.grant)
        return empty_response(200)

    @route("GET", "/.well-known/openid_configuration")
    @route("GET", "/.well-known/openid_configuration/")
    @route("GET", "/.well-known/openid_sandbox_configuration")
    @route("GET", "/.well-known/openid_sandbox_configuration/")
    @route("GET", "/.well-known/openid-sandbox-configuration")
    def discovery(self, request: SandboxRequest) -> SandboxResponse:
        """The OpenID discovery document (§1.2 table), pointing back at this sandbox."""
        return json_response(
            {
                "issuer": request.url_for("/op/v1"),
                "authorization_endpoint": request.url_for("/connect/oauth2"),
                "token_endpoint": request.url_for("/oauth2/v1/tokens/bearer"),
                "userinfo_endpoint": request.url_for("/v1/openid_connect/userinfo"),
                "revocation_endpoint": request.url_for("/v2/oauth2/tokens/revoke"),
                "jwks_uri": request.url_for("/op/v1/jwks"),
                "response_types_supported": ["code"],
                "scopes_supported": sorted(QBO_SCOPES),
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
            }
        )

    def _hard_expiry(self, grant: OAuthGrant) -> datetime:
        return grant.created_at + timedelta(seconds=REFRESH_HARD_TTL)

    def _issue_tokens(self, grant: OAuthGrant) -> dict[str, Any]:
        return self._mint(grant)

    def _mint(self, grant: OAuthGrant, refresh: RefreshToken | None = None) -> dict[str, Any]:
        """A new access token, plus a new refresh token or ``refresh`` with its rolling expiry renewed."""
        now = self.now()
        access = AccessToken(self._new_token("access"), grant, now + timedelta(seconds=self.access_token_ttl))
        self.access_tokens[access.token] = access
        rolling = now + timedelta(seconds=self.refresh_token_ttl)
        if refresh is None:
            refresh = RefreshToken(self._new_token("refresh"), grant, rolling)
            self.refresh_tokens[refresh.token] = refresh
            self._refresh_meta[refresh.token] = _RefreshMeta(issued_at=now)
        else:
            # §1.2: a rolling expiry that restarts on every use.
            refresh.expires_at = max(refresh.expires_at, rolling)
        return self.token_response_body(access, refresh)

    def token_response_body(self, access: AccessToken, refresh: RefreshToken | None) -> dict[str, Any]:
        """§1.2 token response: token_type, access_token, expires_in, refresh_token, x_refresh_token_*."""
        now = self.now()
        body: dict[str, Any] = {
            "token_type": "bearer",
            "access_token": access.token,
            "expires_in": int(self.access_token_ttl),
        }
        if refresh is not None:
            body["refresh_token"] = refresh.token
            body["x_refresh_token_expires_in"] = max(0, round((refresh.expires_at - now).total_seconds()))
            if getattr(self, "_want_hard_expiry", False):
                # §1.2: only when the request carries x-include-refresh-token-hard-expires-in: true.
                body["x_refresh_token_hard_expires_in"] = max(
                    0, round((self._hard_expiry(access.grant) - now).total_seconds())
                )
        return body

    def refresh_access_token(
        self, client_id: str | None, client_secret: str | None, refresh_token: str | None
    ) -> dict[str, Any]:
        """The refresh grant with Intuit's rotation (§1.2): see ``set_refresh_rotation``."""
        with self.lock:
            client = self._authenticate_client(client_id, client_secret)
            entry = self.refresh_tokens.get(refresh_token or "")
            now = self.now()
            if entry is None or entry.grant.client_id != client.client_id:
                raise OAuthError("invalid_grant", "Incorrect or invalid refresh token")
            if (
                entry.revoked
                or entry.grant.revoked
                or now >= entry.expires_at
                or now >= self._hard_expiry(entry.grant)
            ):
                raise OAuthError("invalid_grant", "Token has been expired or revoked.")
            meta = self._refresh_meta.setdefault(entry.token, _RefreshMeta(issued_at=now))
            if entry.rotated_at is not None and meta.successor is not None:
                successor = self.refresh_tokens.get(meta.successor)
                successor_meta = self._refresh_meta.get(meta.successor)
                successor_used = successor_meta is not None and successor_meta.used
                if (
                    successor is None
                    or successor.revoked
                    or (self.refresh_invalidate_on_successor_use and successor_used)
                    or now >= entry.rotated_at + timedelta(seconds=self.refresh_grace)
                ):
                    raise OAuthError("invalid_grant", "Incorrect or invalid refresh token")
                # Within the grace the old value still works and hands back the current one.
                return self._mint(entry.grant, refresh=successor)
            meta.used = True
            meta.uses += 1
            rotate = (self.refresh_rotate_every > 0 and meta.uses % self.refresh_rotate_every == 0) or (
                self.refresh_rotate_after is not None
                and (now - meta.issued_at).total_seconds() >= self.refresh_rotate_after
            )
            if not rotate:
                return self._mint(entry.grant, refresh=entry)
            entry.rotated_at = now
            body = self._mint(entry.grant)
            meta.successor = body["refresh_token"]
            return body

    # -- API (§1.3-§1.7) -------------------------------------------------------------------------

    def _materialize(
        self, request: SandboxRequest, company: Company, entity: str, row: dict[str, Any]
    ) -> dict[str, Any]:
        """The row as served; an Attachable gets a fresh ``TempDownloadUri`` (§1.7)."""
        if entity == "Attachable" and row["Id"] in company.files:
            return {**row, "TempDownloadUri": self._temp_url(request, company, row)}
        return row

    def _temp_url(self, request: SandboxRequest, company: Company, row: Mapping[str, Any]) -> str:
        expires = int(self.now().timestamp() + self.temp_download_ttl)
        payload = f"{company.realm_id}.{row['Id']}.{expires}"
        signature = hmac.new(self._download_secret, payload.encode(), hashlib.sha256).hexdigest()[:32]
        return request.url_for(f"/qbo-attachments/{payload}.{signature}")

    def _run_query(self, company: Company, query: Query) -> tuple[list[dict[str, Any]], int]:
        """(page rows, total matches) for a parsed query."""
        table = company.table(query.entity)
        low: float | None = None
        high: float | None = None
        low_inclusive = high_inclusive = True
        residual: list[Condition] = []
        ids: set[str] | None = None
        for condition in query.conditions:
            if (
                condition.is_last_updated
                and condition.op in ("=", ">", ">=", "<", "<=")
                and isinstance(condition.values[0], str)
            ):
                try:
                    instant = parse_instant(condition.values[0])
                except ValueError:
                    raise QueryError(f"QueryParserError: invalid date-time '{condition.values[0]}'") from None
                if condition.op in (">", ">=", "="):
                    inclusive = condition.op != ">"
                    if low is None or instant > low or (instant == low and not inclusive):
                        low, low_inclusive = instant, inclusive
                if condition.op in ("<", "<=", "="):
                    inclusive = condition.op != "<"
                    if high is None or instant < high or (instant == high and not inclusive):
                        high, high_inclusive = instant, inclusive
                continue
            if condition.is_id and condition.op in ("=", "IN"):
                wanted = {
                    str(v).removesuffix(".0") if isinstance(v, float) else str(v) for v in condition.values
                }
                ids = wanted if ids is None else ids & wanted
            residual.append(condition)

        by_lut = low is not None or high is not None
        if ids is not None:
            rows = [table.rows[i] for i in sorted(ids, key=lambda v: (len(v), v)) if i in table.rows]
            if by_lut:
                rows = [r for r in rows if self._in_range(r, low, low_inclusive, high, high_inclusive)]
                by_lut = False
        elif by_lut:
            rows = table.updated_between(low, low_inclusive, high, high_inclusive)
        else:
            rows = list(table.rows.values())
        for condition in residual:
            predicate = compile_condition(condition)
            rows = [row for row in rows if predicate(row)]
        total = len(rows)
        if query.count:
            return [], total
        if query.order_by:
            only_lut = len(query.order_by) == 1 and tuple(p.lower() for p in query.order_by[0][0]) == (
                "metadata",
                "lastupdatedtime",
            )
            if only_lut and by_lut:
                if query.order_by[0][1]:
                    rows = rows[::-1]
            else:
                for path, descending in reversed(query.order_by):
                    rows.sort(
                        key=lambda row, p=path: _sort_key(next(iter(path_values(row, p)), None)),
                        reverse=descending,
                    )
        elif by_lut:
            # Default order (no ORDERBY): ascending Id (inferred).
            rows.sort(key=_id_number)
        start = query.start_position - 1
        return rows[start : start + query.max_results], total

    @staticmethod
    def _in_range(
        row: Mapping[str, Any], low: float | None, low_inc: bool, high: float | None, high_inc: bool
    ) -> bool:
        value = _lut(row)
        if low is not None and (value < low or (value == low and not low_inc)):
            return False
        return not (high is not None and (value > high or (value == high and not high_inc)))

    @route("GET", "/v3/company/{realm}/query", api=True)
    @route("POST", "/v3/company/{realm}/query", api=True)
    def query(self, request: SandboxRequest, realm: str) -> SandboxResponse:
        """§1.4: ``query=`` on GET, the raw statement (``application/text``) on POST."""
        company: Company = request.context["company"]
        statement = request.arg("query")
        if request.method == "POST" and request.body:
            statement = request.body.decode("utf-8", "replace")
        try:
            parsed = parse_query(statement or "")
            rows, total = self._run_query(company, parsed)
        except QueryError as error:
            return self._validation(error)
        if parsed.count:
            return json_response({"QueryResponse": {"totalCount": total}, "time": self._time()})
        if not rows:
            # §1.4: when nothing matches, the entity key is absent.
            return json_response({"QueryResponse": {}, "time": self._time()})
        page = [self._materialize(request, company, parsed.entity, row) for row in rows]
        return json_response(
            {
                "QueryResponse": {
                    parsed.entity: page,
                    "startPosition": parsed.start_position,
                    "maxResults": len(page),
                },
                "time": self._time(),
            }
        )

    @route("GET", "/v3/company/{realm}/cdc", api=True)
    def cdc(self, request: SandboxRequest, realm: str) -> SandboxResponse:
        """§1.5: changes since ``changedSince`` (<= 30 days back), at most 1,000 objects."""
        company: Company = request.context["company"]
        names = [n.strip() for n in (request.arg("entities") or "").split(",") if n.strip()]
        since_text = request.arg("changedSince") or ""
        if not names:
            return self._validation(
                _invalid("CDC: the entities parameter is required (e.g. entities=Bill,Vendor)")
            )
        entities: list[str] = []
        for name in names:
            canonical = name if name in ENTITY_FIELDS else ENTITY_BY_PATH.get(name.lower())
            if canonical is None or canonical == "CompanyInfo":
                return self._validation(_invalid(f"CDC: entity '{name}' is not supported"))
            if canonical not in entities:
                entities.append(canonical)
        if not since_text:
            return self._validation(_invalid("CDC: the changedSince parameter is required"))
        try:
            since = parse_instant(since_text)
        except ValueError:
            return self._validation(_invalid(f"CDC: changedSince '{since_text}' is not an ISO date-time"))
        if since < self.now().timestamp() - CDC_MAX_DAYS * 86400:
            return self._validation(
                _invalid(f"CDC: changedSince cannot be more than {CDC_MAX_DAYS} days in the past")
            )
        # Every change since the cursor (inclusive, inferred), oldest first, capped at 1,000 overall.
        changes: list[tuple[float, int, str, dict[str, Any]]] = []
        for order, name in enumerate(entities):
            table = company.table(name)
            for row in table.updated_between(since, True, None, True):
                changes.append((_lut(row), order, name, self._materialize(request, company, name, row)))
            for stub in table.deleted.values():
                instant = _lut(stub)
                if instant >= since:
                    changes.append((instant, order, name, stub))
        changes.sort(key=lambda change: (change[0], change[1], int(change[3]["Id"])))
        grouped: dict[str, list[dict[str, Any]]] = {}
        for _, _, name, row in changes[:CDC_MAX_OBJECTS]:
            grouped.setdefault(name, []).append(row)
        responses: list[dict[str, Any]] = [
            {name: grouped[name], "startPosition": 1, "maxResults": len(grouped[name])}
            for name in entities
            if name in grouped
        ]
        return json_response({"CDCResponse": [{"QueryResponse": responses or [{}]}], "time": self._time()})

    @route("GET", "/v3/company/{realm}/companyinfo/{company_id}", api=True)
    def company_info(self, request: SandboxRequest, realm: str, company_id: str) -> SandboxResponse:
        """§1.1: the cheap "is the token alive" probe."""
        company: Company = request.context["company"]
        if company_id != realm:
            return self._not_found_fault("CompanyInfo", company_id)
        row = next(iter(company.table("CompanyInfo").rows.values()))
        return json_response({"CompanyInfo": row, "time": self._time()})

    @route("GET", "/v3/company/{realm}/download/{attachable_id}", api=True)
    def download(self, request: SandboxRequest, realm: str, attachable_id: str) -> SandboxResponse:
        """§1.7: the body is a temporary download URL (plain text)."""
        company: Company = request.context["company"]
        row = company.table("Attachable").rows.get(attachable_id)
        if row is None or attachable_id not in company.files:
            return self._not_found_fault("Attachable", attachable_id)
        return text_response(self._temp_url(request, company, row))

    @route("GET", "/qbo-attachments/{token}")
    def attachment_file(self, request: SandboxRequest, token: str) -> SandboxResponse:
        """The bytes behind a ``TempDownloadUri``: a pre-signed link, no bearer token (§1.7)."""
        try:
            realm, att_id, expires_text, signature = token.split(".")
            expires = int(expires_text)
        except ValueError:
            return text_response("Invalid download link", 403)
        payload = f"{realm}.{att_id}.{expires}"
        expected = hmac.new(self._download_secret, payload.encode(), hashlib.sha256).hexdigest()[:32]
        if not hmac.compare_digest(expected, signature):
            return text_response("Invalid download link", 403)
        if self.now().timestamp() > expires:
            return text_response("Request has expired", 403)
        company = self.companies.get(realm)
        row = company.table("Attachable").rows.get(att_id) if company else None
        if company is None or row is None or att_id not in company.files:
            return text_response("The specified key does not exist.", 404)
        filename = str(row.get("FileName") or f"attachment-{att_id}").replace('"', "")
        return SandboxResponse(
            200,
            {
                "Content-Type": str(row.get("ContentType") or "application/octet-stream"),
                "Content-Disposition": f'attachment; filename="{filename}"',
            },
            company.files[att_id],
        )

    @route("GET", "/v3/company/{realm}/{entity}/{entity_id}", api=True)
    def read_one(self, request: SandboxRequest, realm: str, entity: str, entity_id: str) -> SandboxResponse:
        """§1.3: ``{"<Entity>": {...}, "time"}``; an unknown or deleted Id is fault 610."""
        company: Company = request.context["company"]
        name = ENTITY_BY_PATH.get(entity.lower())
        if name is None:
            return self.fault(
                400,
                "500",
                "Unsupported Operation",
                f"Entity '{entity}' is not served by the QontoHub QuickBooks sandbox",
                "ValidationFault",
                element="",
            )
        if name == "CompanyInfo":
            return self._not_found_fault(name, entity_id)
        row = company.table(name).rows.get(entity_id)
        if row is None:
            return self._not_found_fault(name, entity_id)
        return json_response({name: self._materialize(request, company, name, row), "time": self._time()})

    @route("POST", "/v3/company/{realm}/upload", api=True)
    @route("POST", "/v3/company/{realm}/batch", api=True)
    @route("POST", "/v3/company/{realm}/{entity}", api=True)
    def write(self, request: SandboxRequest, realm: str, entity: str = "") -> SandboxResponse:
        """Creates, updates, deletes, uploads and batches: refused, the hub never writes (§1.3)."""
        operation = request.arg("operation") or (
            "upload" if request.path.endswith("/upload") else "create/update"
        )
        return self._read_only(f"{operation} on {request.path.rsplit('/', 1)[-1]}")

    # -- webhooks (§1.10) ------------------------------------------------------------------------

    def register_webhook(
        self,
        url: str,
        verifier_token: str,
        *,
        format: str | None = None,
        entities: Iterable[str] | None = None,
        realm_ids: Iterable[str] | None = None,
    ) -> WebhookSubscription:
        """Configure the app's webhook endpoint and verifier token (the developer-portal step)."""
        shape = format or self.webhook_format
        if shape not in ("cloudevents", "legacy"):
            raise ValueError("format is 'cloudevents' or 'legacy'")
        subscription = WebhookSubscription(
            url,
            verifier_token,
            shape,
            frozenset(self._entity_name(e) for e in entities) if entities is not None else None,
            frozenset(realm_ids) if realm_ids is not None else None,
        )
        with self.lock:
            self.webhooks.append(subscription)
        return subscription

    def sign_webhook(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        """§1.10: ``intuit-signature`` = base64(HMAC-SHA256(verifier token, raw body))."""
        return {"intuit-signature": intuit_signature(secret, body)}

    def webhook_payload(
        self, shape: str, realm_id: str, entity: str, entity_id: str, operation: str, moment: datetime
    ) -> Any:
        """The notification body for one change, legacy or CloudEvents (§1.10)."""
        if shape == "legacy":
            return {
                "eventNotifications": [
                    {
                        "realmId": realm_id,
                        "dataChangeEvent": {
                            "entities": [
                                {
                                    "name": entity,
                                    "id": entity_id,
                                    "operation": operation,
                                    "lastUpdated": utc_millis(moment),
                                }
                            ]
                        },
                    }
                ]
            }
        return [
            {
                "specversion": "1.0",
                "id": _uuid4(),
                "source": self._event_source,
                "type": f"qbo.{entity.lower()}.{WEBHOOK_OPERATIONS[operation]}.v1",
                "datacontenttype": "application/json",
                "time": utc_millis(moment),
                "intuitentityid": entity_id,
                "intuitaccountid": realm_id,
                "data": {},
            }
        ]

    def notify(
        self, entity: str, entity_id: str, operation: str = "Update", realm_id: str | None = None
    ) -> list[WebhookDelivery]:
        """Send one signed notification to every matching registered endpoint; returns deliveries."""
        if operation not in WEBHOOK_OPERATIONS:
            raise ValueError(f"operation must be one of {', '.join(WEBHOOK_OPERATIONS)}")
        name = self._entity_name(entity)
        with self.lock:
            realm = self.company(realm_id).realm_id
            row = self.companies[realm].table(name).rows.get(str(entity_id))
            moment = datetime.fromtimestamp(_lut(row), UTC) if row is not None else self.now()
            targets = self._targets(realm, name)
        return [
            self.deliver_webhook(
                sub.url,
                self.webhook_payload(sub.format, realm, name, str(entity_id), operation, moment),
                sub.verifier_token,
            )
            for sub in targets
        ]

    def _targets(self, realm: str, entity: str) -> list[WebhookSubscription]:
        return [
            sub
            for sub in self.webhooks
            if (sub.entities is None or entity in sub.entities)
            and (sub.realm_ids is None or realm in sub.realm_ids)
        ]

    def _queue_event(self, realm: str, entity: str, entity_id: str, operation: str, moment: datetime) -> None:
        if self.webhook_auto and self.webhooks:
            self._pending_events.append((realm, entity, entity_id, operation, moment))

    def flush_webhooks(self) -> list[WebhookDelivery]:
        """Deliver the notifications queued by data changes (outside the lock)."""
        with self.lock:
            events, self._pending_events = self._pending_events, []
            plan = [(event, self._targets(event[0], event[1])) for event in events]
        deliveries: list[WebhookDelivery] = []
        for (realm, entity, entity_id, operation, moment), targets in plan:
            for sub in targets:
                payload = self.webhook_payload(sub.format, realm, entity, entity_id, operation, moment)
                deliveries.append(self.deliver_webhook(sub.url, payload, sub.verifier_token))
        return deliveries


def intuit_signature(verifier_token: str, body: bytes) -> str:
    """base64(HMAC-SHA256(key=verifier token, message=raw body)) (§1.10)."""
    return base64.b64encode(hmac.new(verifier_token.encode(), body, hashlib.sha256).digest()).decode()


def _uuid4() -> str:
    value = int.from_bytes(secrets.token_bytes(16), "big")
    value = (value & ~(0xF000 << 64)) | (0x4000 << 64)
    value = (value & ~(0xC000 << 48)) | (0x8000 << 48)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
