"""The Pennylane connector: the accounting firm's side of Pennylane, through its Firm API v1.

Facts from ``shared/reference/pennylane-api.md`` (section numbers are its own):

* One **firm API token** (§2.2) reaches the firm's client companies; every accounting resource is
  under ``/api/external/firm/v1/companies/{company_id}/…`` (§4). It is sent as
  ``Authorization: Bearer <token>``; we also send ``X-Use-2026-API-Changes: true`` as new
  integrations are told to (§1; harmless after 2026-07-01).
* Paging (§3.1): ``/companies`` and ``/fiscal_years`` use ``page``/``per_page``; everything else
  uses ``cursor``/``limit`` (≤ 100 on the Firm API) and answers ``items``/``has_more``/
  ``next_cursor``. Filters and sort are **not** carried by the cursor, so they are resent with
  every page (``_cursor_items``).
* Rate limit 25 requests / 5 s per token (§3.5), 429 in plain text with ``retry-after``:
  ``connectors.http`` waits and retries reads; ``parse_error`` turns the answer into
  ``RateLimited`` with the wait, falling back on ``ratelimit-reset`` when ``retry-after`` is absent.
* Errors (§3.4) come in several shapes (``{error,status}``, ``{message,field,code}``,
  ``{error:"unprocessable_entity",message,details}``); ``parse_error`` reads all of them.
* **No idempotency** on the server (§3.6): a ledger entry is created with a deterministic
  ``piece_number`` and, before every creation attempt, the company's entries of that journal and
  date are searched for that piece number (``find_ledger_entry``). The create ``POST`` itself is
  sent once per attempt (no transport-level retry on a 5xx, whose outcome is unknown): the outbox
  retries the whole push, which searches again first. The outbox's unique idempotency key stops
  the hub from enqueuing the same entry twice.
* The supporting PDF is uploaded first (``POST …/file_attachments``, multipart) and its id goes
  in ``file_attachment_id`` (§5.6); the id is kept on the push so a retry never uploads twice.
* Accounts that the entry needs but the company lacks (a new supplier's ``401…`` auxiliary, for
  instance) are created first (``POST …/ledger_accounts``; a 401/411 number creates the third
  party too, §4), after looking them up by number.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar

from connectors.base import (
    AuthRevoked,
    Connector,
    ConnectorError,
    NotFound,
    PermanentError,
    RateLimited,
    Stream,
    TransientError,
    ValidationFailed,
)
from connectors.http import describe_body, parse_retry_after

FIRM = "/api/external/firm/v1"
V2 = "/api/external/v2"
#: Firm API cursor lists take at most 100 items per page (§3.1).
PAGE_LIMIT = 100
#: ``/companies`` takes up to 1000 per page (§4).
COMPANIES_PER_PAGE = 1000
#: How many times a create POST waits out a 429 itself (the request was not processed, §3.5).
POST_RATE_LIMIT_WAITS = 3


@dataclass(frozen=True)
class RemoteCompany:
    """A client company ("dossier") of the firm in Pennylane (§4 company object)."""

    id: str
    name: str
    siren: str
    client_code: str
    trade_name: str = ""


@dataclass(frozen=True)
class RemoteAccount:
    id: str
    number: str
    label: str
    enabled: bool
    #: "supplier" / "customer" when a third party points at this account, else "general".
    kind: str
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class RemoteJournal:
    id: str
    code: str
    label: str
    type: str
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class RemoteFiscalYear:
    id: str
    start: date
    finish: date
    status: str


class PennylaneConnector(Connector):
    slug = "pennylane"
    name = "Pennylane"
    auth_methods = ("api_key",)
    #: Pennylane is the firm's accounting software: its connection belongs to a firm, not to an
    #: organisation (``Connection.firm``).
    owner = "firm"
    streams: ClassVar[tuple[type[Stream], ...]] = ()

    # --- framework hooks ------------------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        credentials: dict[str, Any] = self.connection.credentials or {}
        return {"Authorization": f"Bearer {credentials.get('api_key', '')}"}

    def extra_headers(self) -> dict[str, str]:
        return {"X-Use-2026-API-Changes": "true"}

    def parse_error(self, status: int, body: Any, headers: Mapping[str, str]) -> ConnectorError | None:
        message = _error_message(body)
        if status == 429:
            wait = parse_retry_after(headers.get("retry-after"))
            if wait is None:
                # Only on 429 is retry-after promised; the window reset is the fallback (§3.5).
                reset = headers.get("ratelimit-reset")
                if reset and reset.isdigit():
                    wait = max(0.0, int(reset) - time.time())
            return RateLimited(f"Pennylane rate limit: {message}", retry_after=wait, details=body)
        if status == 401:
            return AuthRevoked(
                f"Pennylane refused the firm API token ({message}): generate a new one in Pennylane "
                "(Firm settings > Firm Tokens) and enter it again.",
                details=body,
            )
        if status == 403:
            return AuthRevoked(
                f"The Pennylane token lacks a permission: {message} Generate a token with the "
                "accounting scopes (companies, journals, ledger accounts, ledger entries, file attachments).",
                details=body,
            )
        if status == 404:
            return NotFound(f"Pennylane: {message}", details=body)
        if status in (400, 409, 413, 415, 422):
            return ValidationFailed(f"Pennylane refused the request: {message}", details=body)
        if status >= 500 or status in (408, 425):
            return TransientError(f"Pennylane error: {message}", retry_after=parse_retry_after(headers.get("retry-after")), details=body)
        return PermanentError(f"Pennylane answered {status}: {message}", details=body)

    def identify(self) -> tuple[str, str]:
        """Check the token by listing the firm's companies (there is no firm ``/me``, §4)."""
        body = self.http.get_json(f"{FIRM}/companies", params={"page": 1, "per_page": 1})
        count = body.get("total_items")
        firm = getattr(self.connection, "firm", None)
        label = f"Pennylane — {firm.name}" if firm is not None else "Pennylane firm"
        if isinstance(count, int):
            label += f" ({count} client compan{'y' if count == 1 else 'ies'})"
        external = f"firm-{self.connection.firm_id}" if self.connection.firm_id else "firm"
        return external, label

    # --- paging ---------------------------------------------------------------------------------
    def _cursor_items(
        self, path: str, *, filters: list[dict[str, Any]] | None = None, sort: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every item of a cursor list; ``filter``/``sort`` are sent again with each page (§3.1)."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": PAGE_LIMIT}
            if filters:
                params["filter"] = json.dumps(filters, separators=(",", ":"))
            if sort:
                params["sort"] = sort
            if cursor:
                params["cursor"] = cursor
            body = self.http.get_json(path, params=params)
            yield from body.get("items") or []
            cursor = body.get("next_cursor")
            # ``has_more`` is nullable on ledger accounts (§8): the cursor decides.
            if not cursor or body.get("has_more") is False:
                return

    def _page_items(self, path: str, *, per_page: int, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            body = self.http.get_json(path, params={**(params or {}), "page": page, "per_page": per_page})
            items = body.get("items") or []
            yield from items
            total_pages = body.get("total_pages")
            if not items or (isinstance(total_pages, int) and page >= total_pages):
                return
            page += 1

    @staticmethod
    def _company_path(company_id: str, resource: str) -> str:
        return f"{FIRM}/companies/{company_id}/{resource}"

    # --- reads ----------------------------------------------------------------------------------
    def list_companies(self) -> list[RemoteCompany]:
        """The firm's client companies with their SIREN and the firm's client code (§4)."""
        return [
            RemoteCompany(
                id=str(item["id"]),
                name=str(item.get("name") or ""),
                siren=str(item.get("siren") or "").replace(" ", ""),
                client_code=str(item.get("client_code") or ""),
                trade_name=str(item.get("billing_company_name") or ""),
            )
            for item in self._page_items(f"{FIRM}/companies", per_page=COMPANIES_PER_PAGE)
        ]

    def third_party_account_ids(self, company_id: str) -> dict[str, str]:
        """Ledger-account id → "supplier" / "customer" for the accounts third parties point at (§5.3-5.4)."""
        kinds: dict[str, str] = {}
        for resource, kind in (("suppliers", "supplier"), ("customers", "customer")):
            for item in self._cursor_items(self._company_path(company_id, resource)):
                ref = item.get("ledger_account") or {}
                if ref.get("id") is not None:
                    kinds[str(ref["id"])] = kind
        return kinds

    def list_ledger_accounts(self, company_id: str) -> list[RemoteAccount]:
        """The chart: general accounts and the 401/411 auxiliaries, each tagged with its kind."""
        third_parties = self.third_party_account_ids(company_id)
        accounts = []
        for item in self._cursor_items(self._company_path(company_id, "ledger_accounts"), sort="id"):
            account_id = str(item["id"])
            accounts.append(
                RemoteAccount(
                    id=account_id,
                    number=str(item.get("number") or ""),
                    label=str(item.get("label") or ""),
                    enabled=bool(item.get("enabled", True)) and not item.get("archived_at"),
                    kind=third_parties.get(account_id, "general"),
                    raw=item,
                )
            )
        return accounts

    def list_journals(self, company_id: str) -> list[RemoteJournal]:
        return [
            RemoteJournal(
                id=str(item["id"]),
                code=str(item.get("code") or ""),
                label=str(item.get("label") or ""),
                type=str(item.get("type") or ""),
                raw=item,
            )
            for item in self._cursor_items(self._company_path(company_id, "journals"), sort="id")
        ]

    def list_fiscal_years(self, company_id: str) -> list[RemoteFiscalYear]:
        return [
            RemoteFiscalYear(
                id=str(item["id"]),
                start=date.fromisoformat(item["start"]),
                finish=date.fromisoformat(item["finish"]),
                status=str(item.get("status") or ""),
            )
            for item in self._page_items(self._company_path(company_id, "fiscal_years"), per_page=PAGE_LIMIT)
        ]

    def find_ledger_entry(self, company_id: str, journal_id: str, day: str, piece_number: str) -> dict[str, Any] | None:
        """The company's entry of that journal and date carrying ``piece_number``, if any.

        The Firm API filters entries on ``journal_id`` and ``date`` but not on ``piece_number``
        (§5.5), so the comparison is ours.
        """
        filters = [
            {"field": "journal_id", "operator": "eq", "value": int(journal_id)},
            {"field": "date", "operator": "eq", "value": day},
        ]
        for item in self._cursor_items(self._company_path(company_id, "ledger_entries"), filters=filters):
            if str(item.get("piece_number") or "") == piece_number:
                return item
        return None

    def find_ledger_account(self, company_id: str, number: str) -> dict[str, Any] | None:
        filters = [{"field": "number", "operator": "eq", "value": number}]
        for item in self._cursor_items(self._company_path(company_id, "ledger_accounts"), filters=filters):
            if str(item.get("number")) == number:
                return item
        return None

    # --- writes ---------------------------------------------------------------------------------
    def _post_once(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """POST a write without transport retries on 5xx/timeouts (their outcome is unknown).

        A 429 means the request was not processed, so waiting ``retry-after`` and sending it again
        is safe; anything else goes up to the outbox, which looks before it writes again.
        """
        for attempt in range(POST_RATE_LIMIT_WAITS + 1):
            try:
                return self.http.request("POST", path, max_retries=0, **kwargs).json()
            except RateLimited as exc:
                if attempt >= POST_RATE_LIMIT_WAITS:
                    raise
                time.sleep(min(max(exc.retry_after or 1.0, 0.0), 10.0))
        raise AssertionError("unreachable")  # pragma: no cover

    def create_ledger_account(self, company_id: str, number: str, label: str) -> dict[str, Any]:
        return self._post_once(
            self._company_path(company_id, "ledger_accounts"), json={"number": number, "label": label[:255] or number}
        )

    def upload_file(self, company_id: str, filename: str, content: bytes) -> dict[str, Any]:
        return self._post_once(
            self._company_path(company_id, "file_attachments"),
            files={"file": (filename, content, "application/pdf")},
            data={"filename": filename[:255]},
        )

    def push_ledger_entry_create(self, push: Any) -> tuple[str, dict[str, Any]]:
        """Outbox action ``ledger_entry.create``: one balanced entry with its PDF, never twice.

        ``push.payload``: ``company_id``, ``journal_id``, ``date``, ``label``, ``piece_number``,
        ``currency``, ``due_date``, ``filename`` and ``lines`` (``account_id`` or
        ``account_number`` + ``account_label``, ``label``, ``debit``, ``credit`` as strings).
        Returns the Pennylane entry id and what the hub keeps (ids of accounts created, of the
        attachment, whether the entry already existed).
        """
        payload = dict(push.payload)
        company_id = str(payload["company_id"])
        journal_id = str(payload["journal_id"])
        piece_number = str(payload["piece_number"])
        existing = self.find_ledger_entry(company_id, journal_id, payload["date"], piece_number)
        if existing is not None:
            # Created by an earlier attempt whose answer was lost: done, not created again.
            return str(existing["id"]), {"id": existing["id"], "piece_number": piece_number, "existing": True,
                                         "accounts": {}, "file_attachment_id": payload.get("file_attachment_id")}

        created_accounts: dict[str, str] = {}
        lines = []
        debit = credit = Decimal("0")
        for line in payload["lines"]:
            account_id = str(line.get("account_id") or "")
            if not account_id:
                number = str(line["account_number"])
                found = self.find_ledger_account(company_id, number)
                if found is None:
                    found = self.create_ledger_account(company_id, number, str(line.get("account_label") or number))
                account_id = str(found["id"])
                created_accounts[number] = account_id
            debit += Decimal(line["debit"])
            credit += Decimal(line["credit"])
            entry_line: dict[str, Any] = {
                "ledger_account_id": int(account_id),
                "debit": line["debit"],
                "credit": line["credit"],
            }
            if line.get("label"):
                entry_line["label"] = str(line["label"])[:255]
            lines.append(entry_line)
        if debit != credit:
            # The hub never sends this (its own check and the database refuse it); if it ever
            # did, Pennylane would answer 422 "Entry lines are not balanced".
            raise ValidationFailed(f"entry {piece_number} is not balanced: debit {debit}, credit {credit}")

        attachment_id = payload.get("file_attachment_id")
        if attachment_id is None and push.file:
            push.file.open("rb")
            try:
                content = push.file.read()
            finally:
                push.file.close()
            uploaded = self.upload_file(company_id, payload.get("filename") or f"{piece_number}.pdf", content)
            attachment_id = uploaded["id"]
            # Kept on the push at once: a retry after a failed entry creation reuses it instead
            # of leaving a second, orphan attachment in Pennylane (§5.6: one id per document).
            payload["file_attachment_id"] = attachment_id
            type(push).objects.filter(pk=push.pk).update(payload=payload)
            push.payload = payload

        body: dict[str, Any] = {
            "date": payload["date"],
            "label": payload["label"],
            "journal_id": int(journal_id),
            "piece_number": piece_number,
            "currency": payload.get("currency") or "EUR",
            "ledger_entry_lines": lines,
        }
        if payload.get("due_date"):
            body["due_date"] = payload["due_date"]
        if attachment_id is not None:
            body["file_attachment_id"] = int(attachment_id)
        created = self._create_entry(company_id, body)
        if not created.get("id") or str(created.get("piece_number") or piece_number) != piece_number:
            raise ValidationFailed(f"Pennylane's answer does not confirm entry {piece_number}: {created!r}"[:500])
        return str(created["id"]), {
            "id": created["id"],
            "piece_number": piece_number,
            "existing": False,
            "accounts": created_accounts,
            "file_attachment_id": attachment_id,
            "status": created.get("status"),
        }


    def _create_entry(self, company_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST the entry on the Firm API, or on the Company API v2 for this company.

        The July-2026 Firm API spec has no ``piece_number`` in the entry body (§5.5); a firm whose
        Pennylane refuses it gets its entries created through v2 with ``X-Company-Id`` (§2.5),
        which takes it, so the piece number — our dedup key — is never dropped. The choice is
        remembered on the connection.
        """
        if self.connection.options.get("entries_api") != "v2":
            try:
                return self._post_once(self._company_path(company_id, "ledger_entries"), json=body)
            except ValidationFailed as exc:
                details = exc.details if isinstance(exc.details, dict) else {}
                if details.get("field") != "piece_number" or details.get("code") != "NotExistPropertyDefinition":
                    raise
            self.connection.options = {**self.connection.options, "entries_api": "v2"}
            if self.connection.pk:
                type(self.connection).objects.filter(pk=self.connection.pk).update(options=self.connection.options)
        return self._post_once(f"{V2}/ledger_entries", json=body, headers={"X-Company-Id": str(company_id)})


def _error_message(body: Any) -> str:
    """One readable sentence out of any of Pennylane's error shapes (§3.4)."""
    if isinstance(body, dict):
        message = body.get("message")
        error = body.get("error")
        details = body.get("details")
        parts: list[str] = []
        if isinstance(message, str) and message:
            parts.append(message)
        elif isinstance(error, str) and error:
            parts.append(error)
        if isinstance(details, dict) and details:
            parts.append(", ".join(f"{k}: {v}" for k, v in details.items()))
        field = body.get("field")
        if isinstance(field, str) and field and field not in " ".join(parts):
            parts.append(f"field {field}")
        code = body.get("code")
        if isinstance(code, str) and code:
            parts.append(f"[{code}]")
        if parts:
            return " — ".join(parts[:2]) + (" " + " ".join(parts[2:]) if len(parts) > 2 else "")
    text = describe_body(body)
    return text.strip() or "no error body"
