"""Qonto webhooks: verifying deliveries, and the subscription made at connect time.

Facts from ``shared/reference/qonto-api.md`` §3.12:

* Deliveries carry ``X-Qonto-Signature: t={unix seconds},v1={hex}``, where ``hex`` is the
  lowercase HMAC-SHA256 of ``"{t}.{raw body}"`` keyed with the subscription's secret (the raw
  bytes, never re-serialised JSON). Qonto documents no replay window; like other integrators we
  refuse a ``t`` more than 5 minutes away from our clock.
* The envelope is ``{id, subscription_id, organization_id, membership_id, type, created_at,
  data: {event, ...resource}}``; ``id`` is the event id we de-duplicate on (events arrive twice
  and out of order), ``type`` the topic (``v1/transactions``…).
* Subscriptions (``/v2/webhook_subscriptions``, scope ``webhook``) exist for OAuth connections
  only; the body is flat, ``secret`` 32–128 characters, answered 201 unwrapped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from connectors.base import ConnectorError, NotFound, ValidationFailed, WebhookCheck

if TYPE_CHECKING:
    from connectors.base import Connector

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Qonto-Signature"
#: How far the signed timestamp may be from our clock, either way.
TOLERANCE_SECONDS = 5 * 60
#: Topics we subscribe to and the streams each one makes us re-read. Processing re-reads the
#: stream rather than trusting the payload, so a late or repeated event never writes old data.
TOPIC_STREAMS: dict[str, tuple[str, ...]] = {
    "v1/transactions": ("transactions",),
    "v1/accounts": ("bank_accounts",),
    "v1/clients": ("clients",),
    "v1/client-invoices": ("client_invoices", "credit_notes"),
}
SUBSCRIBED_TOPICS = ("v1/transactions", "v1/clients", "v1/client-invoices")
#: Where the connection's options record the subscription (non-secret; the secret is encrypted).
OPTION_KEY = "webhooks"


def signature_value(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _header(headers: Mapping[str, str], name: str) -> str:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return ""


def verify(connector: Connector, headers: Mapping[str, str], body: bytes, now: float | None = None) -> WebhookCheck:
    """Check the signature and freshness, then read the envelope.

    Returns an invalid check for a forged or stale delivery; raises ``ValidationFailed`` for a
    correctly signed body that is not a Qonto event (the webhook view answers 400 to that).
    """
    secret = connector.connection.webhook_secret
    if not secret:
        return WebhookCheck(valid=False, reason="This connection has no webhook secret (no Qonto subscription).")
    header = _header(headers, SIGNATURE_HEADER)
    if not header:
        return WebhookCheck(valid=False, reason=f"Missing {SIGNATURE_HEADER} header.")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value.strip())
    try:
        timestamp = int(parts.get("t", [""])[0])
    except ValueError:
        return WebhookCheck(valid=False, reason=f"{SIGNATURE_HEADER} has no usable t= timestamp.")
    candidates = parts.get("v1") or []
    if not candidates:
        return WebhookCheck(valid=False, reason=f"{SIGNATURE_HEADER} has no v1= signature.")
    expected = signature_value(secret, body, timestamp).partition("v1=")[2]
    if not any(hmac.compare_digest(expected, candidate.lower()) for candidate in candidates):
        return WebhookCheck(valid=False, reason="Signature does not match (forged, or signed with another secret).")
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > TOLERANCE_SECONDS:
        return WebhookCheck(
            valid=False,
            reason=f"Signed {int(age)} s ago, outside the {TOLERANCE_SECONDS} s tolerance (replayed or delayed).",
        )
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise ValidationFailed(f"the body is not JSON ({exc.msg} at character {exc.pos})") from exc
    if not isinstance(payload, dict):
        raise ValidationFailed("the body is not a JSON object")
    event_id, topic = payload.get("id"), payload.get("type")
    if not event_id or not isinstance(event_id, str | int):
        raise ValidationFailed("the event has no id")
    if not topic or not isinstance(topic, str):
        raise ValidationFailed("the event has no type (topic such as v1/transactions)")
    data = payload.get("data")
    action = data.get("event") if isinstance(data, dict) else None
    return WebhookCheck(
        valid=True,
        event_id=str(event_id),
        event_type=f"{topic}:{action}" if action else topic,
        streams=TOPIC_STREAMS.get(topic, ()),
    )


def callback_url(connector: Connector) -> str:
    path = reverse("webhook", kwargs={"slug": connector.slug, "endpoint": connector.connection.webhook_endpoint})
    return settings.HUB_BASE_URL.rstrip("/") + path


def subscribe(connector: Connector) -> None:
    """Subscribe the connection's endpoint; API-key connections cannot (Qonto allows it to OAuth
    apps only, §3.12), which is recorded, not raised: their data still arrives by schedule."""
    connection = connector.connection
    options = dict(connection.options or {})
    if connection.auth_method != "oauth2":
        options[OPTION_KEY] = {
            "status": "unavailable",
            "reason": "Qonto offers webhooks to OAuth connections only; this API-key connection is synced "
                      "on schedule.",
        }
        _save(connection, options)
        return
    previous = (options.get(OPTION_KEY) or {}).get("subscription_id")
    if previous:
        # A reconnect: the old subscription may still exist and would deliver with an old secret.
        unsubscribe(connector)
        options = dict(connection.options or {})
    secret = secrets.token_urlsafe(48)  # 64 characters, within Qonto's 32-128
    url = callback_url(connector)
    try:
        response = connector.http.request(
            "POST",
            "/v2/webhook_subscriptions",
            json={
                "callback_url": url,
                "types": list(SUBSCRIBED_TOPICS),
                "secret": secret,
                "description": f"QontoHub connection {connection.pk}",
            },
            headers={"X-Qonto-Idempotency-Key": f"qontohub-subscribe-{connection.webhook_endpoint}-{secret[:8]}"},
        )
        body: Any = response.json()
    except ConnectorError as exc:
        options[OPTION_KEY] = {"status": "failed", "reason": f"Subscribing {url} failed: {exc}",
                               "at": timezone.now().isoformat()}
        _save(connection, options)
        logger.warning("qonto connection %s: webhook subscription failed: %s", connection.pk, exc)
        return
    subscription_id = body.get("id") if isinstance(body, dict) else None
    if not subscription_id:
        options[OPTION_KEY] = {"status": "failed", "reason": "Qonto answered without a subscription id."}
        _save(connection, options)
        return
    # Qonto may replace the secret we proposed; the one it echoes is the one it signs with.
    connection.webhook_secret = body.get("secret") or secret
    options[OPTION_KEY] = {
        "status": "subscribed",
        "subscription_id": str(subscription_id),
        "callback_url": url,
        "types": list(body.get("types") or SUBSCRIBED_TOPICS),
        "at": timezone.now().isoformat(),
    }
    _save(connection, options, "webhook_secret")


def unsubscribe(connector: Connector) -> None:
    """Delete the subscription (before the grant is revoked, while we can still call Qonto)."""
    connection = connector.connection
    options = dict(connection.options or {})
    subscription_id = (options.get(OPTION_KEY) or {}).get("subscription_id")
    if not subscription_id:
        return
    try:
        connector.http.request("DELETE", f"/v2/webhook_subscriptions/{subscription_id}")
    except NotFound:
        pass  # already gone: the outcome we wanted
    options[OPTION_KEY] = {"status": "unsubscribed", "at": timezone.now().isoformat()}
    connection.webhook_secret = ""
    _save(connection, options, "webhook_secret")


def _save(connection: Any, options: dict[str, Any], *extra: str) -> None:
    connection.options = options
    connection.save(update_fields=["options", "updated_at", *extra])
