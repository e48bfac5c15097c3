"""The QuickBooks Online connector: how the hub authenticates to Intuit and reads a company.

Facts from ``shared/reference/peer-apis.md`` §1 (section numbers below are that file's):

* **OAuth 2.0** (§1.2): Intuit's authorize, token and revoke endpoints (their URLs come from
  ``settings.PROVIDERS["quickbooks"]``), scope ``com.intuit.quickbooks.accounting``; the company
  (``realmId``) comes back on the callback next to ``code`` and ``state`` (§1.1) and is kept in
  ``connection.options["realmId"]``. Access tokens last one hour; the refresh token's value rotates
  and must be saved atomically with its access token under the per-connection lock, which
  ``connectors.oauth.refresh`` does for every provider.
* **Read-only.** The hub never writes to QuickBooks: the connector has no ``push_*`` method, and
  every call it makes is a GET (§1.3 writes are never used).
* **Requests** (§1.3): ``/v3/company/{realmId}/…`` with ``minorversion=75`` on every call and
  ``Accept: application/json``. What is read, and how, is in ``streams.py``.
* **Errors** (§1.8, §1.9): the ``Fault`` document (also a lowercase ``fault`` variant on 401s, and
  an XML body for throttling, even to JSON clients) becomes a ``ConnectorError`` in
  :meth:`QuickBooksConnector.parse_error`; a ``Fault`` inside a 200 answer is raised the same way.
* **Revocation** (§1.2): Intuit's revoke endpoint takes a JSON body ``{"token": …}`` with HTTP
  Basic client authentication, not RFC 7009's form post: the spec says so with
  ``revoke_style="json_basic"`` and ``connectors.oauth.revoke`` sends the refresh token that way
  (revoking it ends the whole grant).
* **Webhooks** (§1.10): ``intuit-signature`` is base64(HMAC-SHA256(verifier token, raw body)); the
  verifier token is the app's (``PROVIDERS["quickbooks"]["webhook_verifier_token"]``). Both body
  shapes are read (legacy ``eventNotifications`` and the CloudEvents array); the entities named for
  this connection's company become the streams an early poll re-reads.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from django.utils.dateparse import parse_datetime

from connectors.base import (
    AuthExpired,
    AuthRevoked,
    Connector,
    ConnectorError,
    FileDownload,
    NotFound,
    OAuthSpec,
    PermanentError,
    RateLimited,
    Stream,
    TransientError,
    ValidationFailed,
    WebhookCheck,
)
from connectors.http import json_body, parse_retry_after
from connectors.models import Attachment
from connectors.quickbooks.mapping import FieldMapping, mapping_for
from connectors.quickbooks.streams import STREAM_BY_ENTITY, STREAMS

ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"
#: §1.3: minor versions below 75 are unsupported since 1 August 2025.
MINOR_VERSION = "75"
#: §1.9: "on 429 wait 60 s"; Intuit sends no Retry-After.
THROTTLE_WAIT_SECONDS = 60.0
#: Webhook bodies carry the change time inside the signed bytes (§1.10), but no signed timestamp:
#: an event older than this is treated as a replay. The hourly poll reads the change anyway.
WEBHOOK_MAX_AGE = timedelta(minutes=15)
#: §1.8 codes, beyond the HTTP status.
THROTTLE_CODE = "3001"
AUTH_CODES = frozenset({"3200", "3100"})
NOT_FOUND_CODE = "610"
FORBIDDEN_CODES = frozenset({"120", "6190"})

_XML_CODE = re.compile(r"<Error[^>]*\bcode=\"(\d+)\"", re.IGNORECASE)
_XML_TEXT = re.compile(r"<(Message|Detail)>([^<]*)</\1>", re.IGNORECASE)
_XML_TYPE = re.compile(r"<Fault[^>]*\btype=\"([^\"]+)\"", re.IGNORECASE)


def read_fault(body: Any) -> dict[str, str] | None:
    """``{"code", "message", "detail", "type"}`` of a QBO fault body, or None (§1.8).

    Three shapes: ``{"Fault": {"Error": [...], "type"}}``, the 401 variant
    ``{"fault": {"error": [{"message", "detail", "code"}], "type"}}`` and, for throttling, XML.
    """
    if isinstance(body, Mapping):
        fault = body.get("Fault") or body.get("fault")
        if not isinstance(fault, Mapping):
            return None
        errors = fault.get("Error") or fault.get("error") or []
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], Mapping) else {}
        return {
            "code": str(first.get("code") or ""),
            "message": str(first.get("Message") or first.get("message") or ""),
            "detail": str(first.get("Detail") or first.get("detail") or ""),
            "type": str(fault.get("type") or ""),
        }
    if isinstance(body, str) and "<Fault" in body:
        code = _XML_CODE.search(body)
        texts = dict((name.lower(), value.strip()) for name, value in _XML_TEXT.findall(body))
        kind = _XML_TYPE.search(body)
        return {
            "code": code.group(1) if code else "",
            "message": texts.get("message", ""),
            "detail": texts.get("detail", ""),
            "type": kind.group(1) if kind else "",
        }
    return None


def intuit_signature(verifier_token: str, body: bytes) -> str:
    """§1.10: base64(HMAC-SHA256(key = verifier token, message = raw body))."""
    return base64.b64encode(hmac.new(verifier_token.encode(), body, hashlib.sha256).digest()).decode()


class QuickBooksConnector(Connector):
    slug = "quickbooks"
    name = "QuickBooks Online"
    auth_methods = ("oauth2",)
    oauth = OAuthSpec(
        authorize_url="{authorize_url}",
        token_url="{token_url}",
        revoke_url="{revoke_url}",
        # §1.2: JSON {"token"} with HTTP Basic client auth, not RFC 7009's form body.
        revoke_style="json_basic",
        scopes=(ACCOUNTING_SCOPE,),
        callback_params=("realmId",),
        # §1.2: the previous refresh token dies 24 h after a new one is issued (older Intuit text).
        refresh_grace_seconds=24 * 3600,
    )
    streams: ClassVar[tuple[type[Stream], ...]] = STREAMS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mapping: FieldMapping | None = None
        self._vendors: dict[str, dict[str, str]] | None = None

    # --- configuration --------------------------------------------------------------------
    @property
    def realm_id(self) -> str:
        realm = str((self.connection.options or {}).get("realmId") or "")
        if not realm.isdigit():
            raise PermanentError(
                "This QuickBooks connection does not know its company (no realmId was returned on "
                "the OAuth callback); reconnect it."
            )
        return realm

    def company_url(self, path: str) -> str:
        return f"/v3/company/{self.realm_id}/{path.lstrip('/')}"

    def auth_headers(self) -> dict[str, str]:
        token = (self.connection.credentials or {}).get("access_token", "")
        return {"Authorization": f"Bearer {token}"}

    def field_mapping(self) -> FieldMapping:
        """The field mapping in force, read once per connector (one sync run)."""
        if self._mapping is None:
            self._mapping = mapping_for(self.connection)
        return self._mapping

    def vendor_index(self) -> dict[str, dict[str, str]]:
        """Mirrored vendors by QuickBooks Id (name and tax id), read once per connector."""
        if self._vendors is None:
            from connectors.models import Counterparty

            rows = Counterparty.objects.filter(connection=self.connection, stream="vendors").values_list(
                "external_id", "name", "tax_id"
            )
            self._vendors = {
                external_id: {"name": name, "tax_id": tax_id} for external_id, name, tax_id in rows
            }
        return self._vendors

    # --- reading ----------------------------------------------------------------------------
    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET a company resource with ``minorversion``; a Fault in a 200 answer is raised (§1.8)."""
        response = self.http.request(
            "GET", self.company_url(path), params={**(params or {}), "minorversion": MINOR_VERSION}
        )
        try:
            body = json_body(response)
        except ValueError:
            raise TransientError(
                f"QuickBooks answered {path} with a body that is not JSON", status=response.status_code
            ) from None
        if isinstance(body, Mapping) and ("Fault" in body or "fault" in body):
            raise self.parse_error(response.status_code, body, response.headers) or PermanentError(
                f"QuickBooks answered {path} with a fault", status=response.status_code, details=body
            )
        return body

    def query(self, statement: str, entity: str) -> tuple[list[dict[str, Any]], str | None]:
        """Rows of one query statement (§1.4; an empty answer has no entity key) and the
        answer's ``time`` (Intuit's clock when it answered)."""
        body = self.get("query", {"query": statement})
        rows = (body.get("QueryResponse") or {}).get(entity) or []
        if not isinstance(rows, list):
            raise PermanentError(
                f"QuickBooks answered the {entity} query with {type(rows).__name__}, not a list"
            )
        return rows, body.get("time")

    def cdc(self, entity: str, since: str) -> tuple[list[dict[str, Any]], str | None]:
        """Changes of ``entity`` since ``since`` (inclusive), deletion stubs included (§1.5), and
        the answer's ``time``."""
        body = self.get("cdc", {"entities": entity, "changedSince": since})
        rows: list[dict[str, Any]] = []
        for block in body.get("CDCResponse") or []:
            for response in (block or {}).get("QueryResponse") or []:
                found = (response or {}).get(entity)
                if isinstance(found, list):
                    rows.extend(found)
        return rows, body.get("time")

    def identify(self) -> tuple[str, str]:
        """(realmId, company name): ``GET /companyinfo/{realmId}``, the cheap probe of §1.1."""
        info = self.get(f"companyinfo/{self.realm_id}").get("CompanyInfo") or {}
        return self.realm_id, str(
            info.get("CompanyName") or info.get("LegalName") or f"Company {self.realm_id}"
        )

    def download_attachment(self, attachable_id: str) -> FileDownload:
        """The bytes of one Attachable, its name and content type (§1.7).

        ``/download/{id}`` answers a temporary URL (plain text, short-lived and signed), fetched at
        once and without the bearer token; it is never stored.
        """
        response = self.http.request(
            "GET", self.company_url(f"download/{attachable_id}"), params={"minorversion": MINOR_VERSION}
        )
        url = response.text.strip()
        if not url.startswith(("http://", "https://")):
            raise PermanentError(
                f"QuickBooks answered the download of attachment {attachable_id} without a URL"
            )
        file_response = self.http.request("GET", url, authenticated=False)
        content_type = (
            file_response.headers.get("Content-Type", "application/octet-stream").split(";")[0].strip()
        )
        name = (
            Attachment.objects.filter(connection=self.connection, stream="attachments", external_id=attachable_id)
            .values_list("file_name", flat=True)
            .first()
        )
        return FileDownload(name or f"attachment-{attachable_id}", file_response.content, content_type)

    # --- errors -----------------------------------------------------------------------------
    def parse_error(self, status: int, body: Any, headers: Mapping[str, str]) -> ConnectorError | None:
        fault = read_fault(body)
        code = fault["code"] if fault else ""
        text = ""
        if fault:
            text = "; ".join(part for part in (fault["message"], fault["detail"]) if part)
        message = text or (body[:200] if isinstance(body, str) else f"HTTP {status}")
        if status == 429 or code == THROTTLE_CODE:
            # §1.8/§1.9: ThrottleExceeded (historically also as a 403 with code 3001); wait 60 s.
            wait = parse_retry_after(headers.get("Retry-After")) or THROTTLE_WAIT_SECONDS
            return RateLimited(
                f"QuickBooks throttled the request: {message}",
                status=status,
                code=code or THROTTLE_CODE,
                retry_after=wait,
                details=body,
            )
        if status == 401 or code in AUTH_CODES:
            return AuthExpired(
                f"QuickBooks did not accept the access token: {message}",
                status=status,
                code=code,
                details=body,
            )
        if status == 403 or code in FORBIDDEN_CODES:
            # 120: the grant does not cover this company or scope; 6190: the subscription ended.
            return AuthRevoked(
                f"QuickBooks refused access to company {self.connection.options.get('realmId')}: {message}",
                status=status,
                code=code,
                details=body,
            )
        if code == NOT_FOUND_CODE or status == 404:
            return NotFound(f"QuickBooks: {message}", status=status, code=code, details=body)
        if status >= 500 or (fault and fault["type"] in ("SystemFault", "SERVICE")):
            return TransientError(f"QuickBooks failed: {message}", status=status, code=code, details=body)
        if status == 400 or (fault and fault["type"] == "ValidationFault"):
            return ValidationFailed(
                f"QuickBooks rejected the request: {message}", status=status, code=code, details=body
            )
        return None

    # --- disconnect -----------------------------------------------------------------------------
    def on_disconnect(self) -> None:
        """Stop the uploads this connection's bills still had queued; the disconnect service then
        revokes the grant at Intuit (OAuthSpec.revoke_style)."""
        hold_uploads(self.connection)

    # --- webhooks -------------------------------------------------------------------------------
    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookCheck:
        token = str(self.settings().get("webhook_verifier_token") or "")
        if not token:
            return WebhookCheck(
                False,
                "No QuickBooks webhook verifier token is configured (QUICKBOOKS_WEBHOOK_VERIFIER_TOKEN).",
            )
        given = next((v for k, v in headers.items() if k.lower() == "intuit-signature"), "")
        if not given:
            return WebhookCheck(False, "The request carries no intuit-signature header.")
        if not hmac.compare_digest(intuit_signature(token, body).encode(), given.strip().encode()):
            return WebhookCheck(
                False, "The intuit-signature does not match the body and the app's verifier token."
            )
        try:
            payload = json.loads(body)
        except ValueError:
            raise ValidationFailed("the body is not JSON") from None
        events = webhook_events(payload)
        if events is None:
            raise ValidationFailed("the body is neither a CloudEvents array nor an eventNotifications object")
        realm = str((self.connection.options or {}).get("realmId") or "")
        mine = [event for event in events if event["realm"] == realm]
        times = [when for event in mine if (when := parse_time(event["time"])) is not None]
        if times and max(times) < datetime.now(UTC) - WEBHOOK_MAX_AGE:
            return WebhookCheck(
                False,
                f"The newest change in this notification is from {max(times):%Y-%m-%d %H:%M:%S} UTC, older than "
                f"{int(WEBHOOK_MAX_AGE.total_seconds() // 60)} minutes: treated as a replay (the hourly poll reads it).",
            )
        ids = sorted({event["id"] for event in events if event["id"]})
        if len(ids) == 1:
            event_id = ids[0]
        else:
            event_id = "qbo:" + hashlib.sha256(body if not ids else "\n".join(ids).encode()).hexdigest()[:40]
        streams = sorted({STREAM_BY_ENTITY[e["entity"]] for e in mine if e["entity"] in STREAM_BY_ENTITY})
        kinds = sorted({f"{e['entity']}.{e['operation']}" for e in mine})
        return WebhookCheck(True, event_id=event_id, event_type=",".join(kinds)[:100], streams=tuple(streams))


def parse_time(value: Any) -> datetime | None:
    parsed = parse_datetime(str(value)) if value else None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


#: CloudEvents ``type`` entity segment (``qbo.bill.created.v1``) → the entity name (§1.10).
_ENTITY_BY_LOWER = {name.lower(): name for name in STREAM_BY_ENTITY}


def webhook_events(payload: Any) -> list[dict[str, str]] | None:
    """Events of a notification as ``{"id", "realm", "entity", "operation", "time"}`` (§1.10).

    CloudEvents: a JSON array whose items carry ``id``, ``type`` (``qbo.<entity>.<op>.v1``),
    ``intuitaccountid`` (the realmId) and ``time``. Legacy: ``eventNotifications[].dataChangeEvent
    .entities[]`` with ``name``, ``id`` (the entity's), ``operation`` and ``lastUpdated``; legacy
    events carry no event id, so the id is left empty and the caller hashes the body.
    """
    events: list[dict[str, str]] = []
    if isinstance(payload, list):
        for item in payload:
            if not isinstance(item, Mapping) or not str(item.get("type") or "").startswith("qbo."):
                return None
            parts = str(item["type"]).split(".")
            entity = _ENTITY_BY_LOWER.get(
                parts[1] if len(parts) > 1 else "", parts[1] if len(parts) > 1 else ""
            )
            events.append(
                {
                    "id": str(item.get("id") or ""),
                    "realm": str(item.get("intuitaccountid") or ""),
                    "entity": entity,
                    "operation": parts[2] if len(parts) > 2 else "",
                    "time": str(item.get("time") or ""),
                }
            )
        return events
    if isinstance(payload, Mapping) and isinstance(payload.get("eventNotifications"), list):
        for notification in payload["eventNotifications"]:
            if not isinstance(notification, Mapping):
                return None
            realm = str(notification.get("realmId") or "")
            change = notification.get("dataChangeEvent") or {}
            for entity in change.get("entities") or []:
                if not isinstance(entity, Mapping):
                    return None
                events.append(
                    {
                        "id": "",
                        "realm": realm,
                        "entity": str(entity.get("name") or ""),
                        "operation": str(entity.get("operation") or "").lower(),
                        "time": str(entity.get("lastUpdated") or ""),
                    }
                )
        return events
    return None


def hold_uploads(connection: Any) -> int:
    """Cancel the Qonto uploads of this connection's bills not sent yet; how many.

    Disconnecting QuickBooks stops further writes: uploads enqueued by the QuickBooks flow carry
    ``payload["quickbooks"]["connection"]``. Nothing already written is touched; the flow sends
    the cancelled uploads again after a reconnect.
    """
    from connectors.models import Push

    return Push.objects.filter(
        action="supplier_invoice.upload",
        payload__quickbooks__connection=connection.pk,
        status__in=[Push.Status.PENDING, Push.Status.FAILED],
    ).update(
        status=Push.Status.CANCELLED, last_error="QuickBooks was disconnected before this upload was sent."
    )
