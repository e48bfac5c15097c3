"""Inbound webhooks: one view for every provider, ``POST /webhooks/<slug>/<endpoint-uuid>/``.

Order of work, after dj-stripe (house rule 8):

1. **Store** the request as a :class:`~connectors.models.WebhookEvent` before anything else
   (headers minus secrets, raw body), so a rejected or crashing delivery still leaves a row.
2. **Verify** with the provider's ``verify_webhook(headers, body)``. A bad or stale signature
   ends as ``REJECTED`` (401). A correctly signed body the provider's code cannot read (not
   JSON, no event id) ends as ``INVALID`` (400): connectors signal it by raising
   :class:`~connectors.base.ValidationFailed` from ``verify_webhook``, or by returning a valid
   check without an event id.
3. **De-duplicate** by event id: the partial unique constraint on accepted events is the
   guarantee (providers deliver twice, and two deliveries may race); the loser is ``DUPLICATE``
   and still answered 200 so the provider stops retrying.
4. **Answer 202** at once and leave the work to a django-q2 task (Qonto gives a receiver one
   second, qonto-api.md §3.12): :func:`process_webhook` re-reads the streams the event touches
   through the sync engine rather than trusting the payload, so an out-of-order or replayed
   event can never write stale data.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from connectors.base import ValidationFailed, WebhookCheck
from connectors.models import Connection, SyncRun, WebhookEvent

logger = logging.getLogger(__name__)

#: Header names never stored: they authenticate someone, and the event row is shown to support.
SECRET_HEADER_WORDS = ("authorization", "cookie", "token", "secret", "password", "api-key", "apikey")
#: Bodies larger than this are refused before they are stored (no provider sends that much).
MAX_BODY_BYTES = 1024 * 1024
#: When another sync holds the connection, processing waits this long before leaving the change
#: to the next scheduled sync (which reads it anyway through its incremental cursor).
LEASE_WAIT_SECONDS = 10.0
LEASE_POLL_SECONDS = 0.5


def safe_headers(request: HttpRequest) -> dict[str, str]:
    kept: dict[str, str] = {}
    for name, value in request.headers.items():
        if any(word in name.lower() for word in SECRET_HEADER_WORDS):
            continue
        kept[name] = value
    return kept


def _answer(http_status: int, /, **data: Any) -> JsonResponse:
    return JsonResponse(data, status=http_status)


@csrf_exempt
@require_POST
def receive(request: HttpRequest, slug: str, endpoint: Any) -> HttpResponse:
    """Store, verify, de-duplicate, enqueue; answer within milliseconds."""
    connection = (
        Connection.objects.filter(provider=slug, webhook_endpoint=endpoint)
        .only("pk", "organization_id", "provider", "auth_method", "webhook_secret", "status", "options")
        .first()
    )
    if connection is None or connection.organization_id is None:
        # Firm-owned connections (accounting software) receive no webhooks.
        return _answer(404, error="unknown webhook endpoint")
    body = request.body
    if len(body) > MAX_BODY_BYTES:
        return _answer(413, error="payload too large")
    event = WebhookEvent.objects.create(
        organization_id=connection.organization_id,
        connection=connection,
        provider=slug,
        headers=safe_headers(request),
        body=body.decode("utf-8", "replace"),
    )
    outcome = verify_event(event, connection, dict(request.headers.items()), body)
    if event.status == WebhookEvent.Status.REJECTED:
        return _answer(401, error=event.reason)
    if event.status == WebhookEvent.Status.INVALID:
        return _answer(400, error=event.reason)
    if event.status == WebhookEvent.Status.DUPLICATE:
        return _answer(200, status="duplicate", event_id=event.event_id)
    assert outcome is not None
    from django_q.tasks import async_task

    async_task("connectors.tasks.process_webhook", event.pk)
    return _answer(202, status="accepted", event_id=event.event_id)


def verify_event(
    event: WebhookEvent, connection: Connection, headers: dict[str, str], body: bytes
) -> WebhookCheck | None:
    """Verify and de-duplicate a stored event; sets its status. Returns the check if accepted."""
    connector = connection.connector()
    try:
        check = connector.verify_webhook(headers, body)
    except ValidationFailed as exc:
        return _mark(event, WebhookEvent.Status.INVALID, f"Malformed payload: {exc.message}")
    except Exception as exc:  # noqa: BLE001 - a crash in verification must leave a readable row
        logger.exception("webhook %s: verification crashed", event.pk)
        return _mark(event, WebhookEvent.Status.INVALID, f"Could not be verified: {type(exc).__name__}: {exc}")
    if not check.valid:
        return _mark(event, WebhookEvent.Status.REJECTED, check.reason or "signature verification failed")
    if not check.event_id:
        return _mark(event, WebhookEvent.Status.INVALID, "Malformed payload: the event carries no id")
    event.event_id = check.event_id[:200]
    event.event_type = (check.event_type or "")[:100]
    event.streams = list(check.streams)
    event.accepted = True
    try:
        with transaction.atomic():
            event.save(update_fields=["event_id", "event_type", "streams", "accepted"])
    except IntegrityError:
        event.accepted = False
        first = (
            WebhookEvent.objects.filter(connection=connection, event_id=event.event_id, accepted=True)
            .values_list("pk", flat=True)
            .first()
        )
        return _mark(event, WebhookEvent.Status.DUPLICATE, f"Already received as event #{first}; ignored.")
    return check


def _mark(event: WebhookEvent, status: str, reason: str) -> None:
    event.status = status
    event.reason = reason
    event.save(update_fields=["status", "reason", "event_id", "event_type", "streams", "accepted"])
    return None


def process_webhook(event_id: int) -> WebhookEvent:
    """Re-read what an accepted event touched and record the outcome on the event."""
    from connectors.sync import sync_connection

    event = WebhookEvent.objects.select_related("connection").get(pk=event_id)
    if not event.accepted or event.status not in (WebhookEvent.Status.RECEIVED, WebhookEvent.Status.FAILED):
        # Processed already (a task may run twice) or never accepted: nothing to do.
        return event
    if not event.streams:
        return _processed(event, None, f"{event.event_type or 'This event'} needs no re-read.")
    deadline = time.monotonic() + LEASE_WAIT_SECONDS
    while True:
        run = sync_connection(event.connection_id, trigger=SyncRun.Trigger.WEBHOOK, streams=event.streams)
        # Skipped while the connection is active means another sync holds the lease.
        busy = (
            run.outcome == SyncRun.Outcome.SKIPPED
            and Connection.objects.filter(pk=event.connection_id, status=Connection.Status.ACTIVE).exists()
        )
        if not busy or time.monotonic() >= deadline:
            break
        time.sleep(LEASE_POLL_SECONDS)
    if run.outcome in (SyncRun.Outcome.SUCCEEDED, SyncRun.Outcome.PARTIAL):
        return _processed(event, run, "")
    event.status = WebhookEvent.Status.FAILED
    event.reason = f"Sync run #{run.pk} {run.get_outcome_display().lower()}: {run.error}"
    if busy:
        event.reason += " The next scheduled sync reads the change; replay the event to read it sooner."
    event.run = run
    event.processed_at = timezone.now()
    event.save(update_fields=["status", "reason", "run", "processed_at"])
    return event


def _processed(event: WebhookEvent, run: SyncRun | None, reason: str) -> WebhookEvent:
    event.status = WebhookEvent.Status.PROCESSED
    event.reason = reason
    event.run = run
    event.processed_at = timezone.now()
    event.save(update_fields=["status", "reason", "run", "processed_at"])
    return event


def replay_webhook(event_id: int) -> WebhookEvent:
    """The admin's replay: process an accepted event again (its signature was checked on receipt).

    Rejected, invalid and duplicate events are never processed: replaying them would let a
    forged request through.
    """
    event = WebhookEvent.objects.get(pk=event_id)
    if not event.accepted:
        raise ValueError(
            f"Event #{event.pk} was {event.get_status_display().lower()} on receipt and cannot be replayed."
        )
    WebhookEvent.objects.filter(pk=event.pk).update(status=WebhookEvent.Status.RECEIVED, reason="")
    return process_webhook(event.pk)
