"""Writes to Qonto, called by the outbox (``connectors/outbox.py``) with a ``Push`` row.

Each function sends one write with the push's idempotency key and returns ``(remote id, answer)``
only once the answer proves the write happened; anything else raises a ConnectorError that says
whether retrying can help. Facts from ``shared/reference/qonto-api.md``:

* Clients (§3.5): ``POST /v2/clients`` and ``PATCH /v2/clients/{id}`` take a **flat** body and
  answer ``{"client": {...}}``. ``X-Qonto-Idempotency-Key`` (§4.4) makes a retried POST return the
  first answer instead of creating a second client (Qonto has no uniqueness rule on clients).
* Supplier invoices (§3.10): ``POST /v2/supplier_invoices/bulk`` is multipart with repeated
  ``supplier_invoices[][file]`` / ``supplier_invoices[][idempotency_key]`` pairs, one key per file,
  and answers **200 even when a file is refused**: the refusals are in ``errors``, so a 200 alone
  proves nothing.
"""

from __future__ import annotations

import mimetypes
from typing import TYPE_CHECKING, Any

from connectors.base import PermanentError, ValidationFailed

if TYPE_CHECKING:
    from connectors.base import Connector
    from connectors.models import Push

#: §3.10: "Whole request <= 15 MB"; checked before sending so the refusal names the file.
BULK_UPLOAD_MAX_BYTES = 15 * 1024 * 1024


def _idempotency(push: Push) -> dict[str, str]:
    return {"X-Qonto-Idempotency-Key": push.idempotency_key}


def _client_from(answer: Any, action: str) -> dict[str, Any]:
    client = answer.get("client") if isinstance(answer, dict) else None
    if not isinstance(client, dict) or not client.get("id"):
        raise PermanentError(f"Qonto answered the {action} without a client id; the result is unknown: {answer!r:.300}")
    return client


def push_client_create(connector: Connector, push: Push) -> tuple[str, dict[str, Any]]:
    """Create a client from ``push.payload`` (Qonto's flat client fields)."""
    payload = dict(push.payload)
    response = connector.http.request("POST", "/v2/clients", json=payload, headers=_idempotency(push))
    answer = response.json()
    client = _client_from(answer, "client creation")
    return str(client["id"]), answer


def push_client_update(connector: Connector, push: Push) -> tuple[str, dict[str, Any]]:
    """Update a client: ``push.payload`` holds ``client_id`` and the fields to change."""
    payload = dict(push.payload)
    client_id = payload.pop("client_id", None) or payload.pop("id", None)
    if not client_id:
        raise ValidationFailed("the push names no client_id to update")
    response = connector.http.request(
        "PATCH", f"/v2/clients/{client_id}", json=payload, headers=_idempotency(push)
    )
    answer = response.json()
    client = _client_from(answer, "client update")
    if str(client["id"]) != str(client_id):
        raise PermanentError(f"Qonto answered the update of client {client_id} with client {client['id']}")
    return str(client["id"]), answer


def push_supplier_invoice_upload(connector: Connector, push: Push) -> tuple[str, dict[str, Any]]:
    """Upload ``push.file`` as one supplier invoice, keyed by the push's idempotency key.

    ``push.payload`` may carry ``file_name``, ``content_type``, ``source`` and ``meta`` (a dict,
    sent as the JSON string Qonto expects).
    """
    if not push.file:
        raise ValidationFailed("the push has no file to upload")
    with push.file.open("rb") as handle:
        # Bytes, not the file object: http.py may send the request more than once.
        content = handle.read()
    if len(content) > BULK_UPLOAD_MAX_BYTES:
        raise ValidationFailed(f"the file is {len(content)} bytes; Qonto accepts at most 15 MB per upload")
    payload = dict(push.payload)
    file_name = str(payload.get("file_name") or push.file.name.rsplit("/", 1)[-1])
    content_type = str(payload.get("content_type") or mimetypes.guess_type(file_name)[0] or "application/pdf")
    # Every part goes in ``files`` so the order is kept: Qonto pairs ``supplier_invoices[][...]``
    # fields into one entry by order (a repeated key starts the next entry).
    parts: list[tuple[str, tuple[str | None, Any] | tuple[str | None, Any, str]]] = [
        ("supplier_invoices[][file]", (file_name, content, content_type)),
        ("supplier_invoices[][idempotency_key]", (None, push.idempotency_key)),
    ]
    if payload.get("source"):
        parts.append(("source", (None, str(payload["source"]))))
    if payload.get("meta"):
        import json

        parts.append(("meta", (None, json.dumps(payload["meta"]))))
    response = connector.http.request("POST", "/v2/supplier_invoices/bulk", files=parts)
    answer = response.json()
    if not isinstance(answer, dict):
        raise PermanentError(f"Qonto's bulk upload answer is not an object: {answer!r:.300}")
    errors = answer.get("errors") or []
    if errors:
        first = errors[0] if isinstance(errors[0], dict) else {"detail": str(errors[0])}
        detail = first.get("detail") or first.get("code") or "refused"
        code = first.get("code")
        # ConnectorError's str() appends the code: "Qonto refused x.txt: File type not supported [invalid_file]".
        raise ValidationFailed(f"Qonto refused {file_name}: {detail}", code=code, details=errors)
    invoices = answer.get("supplier_invoices") or []
    if len(invoices) != 1 or not isinstance(invoices[0], dict) or not invoices[0].get("id"):
        raise PermanentError(
            f"Qonto's bulk upload answered {len(invoices)} invoice(s) and no error for one file; the result is unknown"
        )
    return str(invoices[0]["id"]), answer
