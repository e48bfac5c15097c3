"""A toy provider for the framework tests (sync engine, outbox, webhooks).

It speaks no HTTP: its "remote" is a module-level list the tests edit, so each test pins one
behaviour of the framework without a sandbox. Its stream pages by two records, keeps the page
number as position and ``updated`` as incremental marker, and counts one request per page on the
connector's HTTP client as a real stream's requests would be.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from typing import Any

from connectors.base import (
    Connector,
    CursorState,
    Page,
    Row,
    Stream,
    ValidationFailed,
    WebhookCheck,
)

#: The remote records: {"id", "updated", "name", "amount"}; tests replace or edit it.
REMOTE: list[dict[str, Any]] = []
#: Page numbers the stream was asked for, in order (to prove resume without gap or duplicate).
PAGES_READ: list[int] = []
#: Raise this exception when the page of that number is requested ({page: exception}).
FAIL_ON_PAGE: dict[int, Exception] = {}
#: What push_toy_create does, one entry per call: an exception to raise or a (remote_id, response).
PUSH_SCRIPT: list[Any] = []
PUSHES_SENT: list[str] = []
PAGE_SIZE = 2


def reset() -> None:
    REMOTE.clear()
    PAGES_READ.clear()
    FAIL_ON_PAGE.clear()
    PUSH_SCRIPT.clear()
    PUSHES_SENT.clear()


def remote(n: int, start: int = 1) -> list[dict[str, Any]]:
    return [
        {"id": f"r{i}", "updated": f"2026-01-01T00:00:{i:02d}Z", "name": f"Record {i}", "amount": f"{i}.50"}
        for i in range(start, start + n)
    ]


class ToyStream(Stream):
    name = "things"
    model = "connectors.RemoteRecord"

    def pages(self, connector: Connector, cursor: CursorState) -> Iterator[Page]:
        records = sorted(
            (r for r in REMOTE if cursor.value is None or r["updated"] >= cursor.value),
            key=lambda r: r["updated"],
        )
        page = int(cursor.position.get("page", 0)) + 1
        high: str | None = None
        while True:
            PAGES_READ.append(page)
            connector.http.requests_sent += 1
            if page in FAIL_ON_PAGE:
                raise FAIL_ON_PAGE.pop(page)
            chunk = records[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
            if not chunk and page > 1:
                return
            for record in chunk:
                high = max(high or "", record["updated"])
            yield Page(records=[dict(r) for r in chunk], position={"page": page}, high_water=high)
            if len(chunk) < PAGE_SIZE:
                return
            page += 1

    def to_row(self, connector: Connector, record: Mapping[str, Any]) -> Row:
        if record.get("amount") == "bad":
            raise ValueError("amount 'bad' is not a number")
        return Row(external_id=str(record["id"]), fields={}, raw=dict(record))


class ToyConnector(Connector):
    slug = "toy"
    name = "Toy"
    auth_methods = ("api_key",)
    streams = (ToyStream,)

    def auth_headers(self) -> dict[str, str]:
        return {}

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookCheck:
        lowered = {k.lower(): v for k, v in headers.items()}
        signature = lowered.get("x-toy-signature", "")
        expected = hmac.new(self.connection.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        if not signature or not hmac.compare_digest(signature, expected):
            return WebhookCheck(valid=False, reason="signature does not match")
        if lowered.get("x-toy-stale"):
            return WebhookCheck(valid=False, reason="timestamp too old")
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise ValidationFailed("the body is not JSON") from exc
        if not isinstance(payload, dict):
            raise ValidationFailed("the body is not a JSON object")
        return WebhookCheck(valid=True, event_id=str(payload.get("id") or ""), event_type="toy", streams=("things",))

    def push_toy_create(self, push: Any) -> tuple[str, dict[str, Any]]:
        PUSHES_SENT.append(push.idempotency_key)
        outcome = PUSH_SCRIPT.pop(0) if PUSH_SCRIPT else ("remote-1", {"ok": True})
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()





def install(monkeypatch: Any) -> None:
    """Register the toy provider for one test (the registry has one line per real provider)."""
    from connectors import registry

    monkeypatch.setitem(registry.PROVIDERS, "toy", "tests.connectors.toy.ToyConnector")
    registry.connector_class.cache_clear()
    reset()


def make_connection(organization: Any, **extra: Any) -> Any:
    from connectors.models import Connection

    values: dict[str, Any] = {
        "organization": organization,
        "provider": "toy",
        "auth_method": Connection.AuthMethod.API_KEY,
        "status": Connection.Status.ACTIVE,
        "credentials": {"secret_key": "toy"},
        "external_account_id": "toy-account",
        "webhook_secret": "toy-webhook-secret",
    }
    values.update(extra)
    return Connection.objects.create(**values)
