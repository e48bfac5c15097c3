"""The outbox: every write to a provider is a :class:`~connectors.models.Push` row first.

Why a row before the call (house rules 7 and 8): the write survives a crash between "decided"
and "sent", a person can see and retry it, and its ``idempotency_key`` (unique per connection)
makes enqueuing twice a no-op here and sending twice a no-op at the provider (Qonto replays the
answer of a key it has seen: ``X-Qonto-Idempotency-Key``, or the per-file ``idempotency_key`` of
the supplier-invoice bulk upload; qonto-api.md §4.4).

Life of a push::

    PENDING ──send──► SENDING ──verified──► DONE
                        │ transient (5xx, timeout, 429 after http.py's retries)
                        ├──────► FAILED (next_attempt_at by exponential backoff) ──► … ──► DEAD
                        │ permanent (validation, per-file error, unverifiable answer)
                        └──────► DEAD (with the provider's reason)       retry_push ──► PENDING

Sending is claimed with a conditional ``UPDATE`` so two workers never send the same push at
once; a claim left behind by a dead worker expires after ``CLAIM_SECONDS`` and the push is sent
again, which the idempotency key makes safe. The connector's ``push_<action>`` method (dots in
the action become underscores) returns ``(remote_id, response)`` only after checking the
provider's answer, and raises a :class:`~connectors.base.ConnectorError` otherwise.
"""

from __future__ import annotations

import logging
import random
import traceback
from datetime import timedelta
from typing import Any

from django.core.files.base import File
from django.db.models import F, Q
from django.utils import timezone

from connectors.base import AuthRevoked, ConnectorError
from connectors.models import Connection, Push

logger = logging.getLogger(__name__)

#: Attempts before a push that keeps failing transiently is given up (DEAD).
MAX_ATTEMPTS = 8
#: First retry delay; doubles with every attempt (60 s, 2 min, 4 min … capped).
BACKOFF_BASE_SECONDS = 60
BACKOFF_CAP_SECONDS = 6 * 3600
#: How long a SENDING claim holds; a worker that died mid-send leaves it to expire.
CLAIM_SECONDS = 10 * 60
#: Pushes sent per drain: the drain runs every minute, so a backlog drains in steps.
DRAIN_BATCH = 500


def enqueue_push(
    connection: Connection,
    action: str,
    idempotency_key: str,
    payload: dict[str, Any],
    file: File | None = None,
    source: tuple[str, str] = ("", ""),
    organization_id: int | None = None,
) -> Push:
    """Record a write to send; enqueuing the same ``idempotency_key`` again returns the first push.

    ``file`` (a Django ``File``/``ContentFile`` with a name) is stored with the push until it is
    done. ``source`` is ``(type, id)`` of the hub record the write comes from, for the audit trail.
    ``organization_id`` names the organisation the write is for when the connection belongs to a
    firm (accounting software shared by its client files); it defaults to the connection's own.
    """
    if not idempotency_key:
        raise ValueError("a push needs an idempotency key: it is what makes re-sending safe")
    organization_id = organization_id or connection.organization_id
    if organization_id is None:
        raise ValueError("a push on a firm's connection must say which client organisation it is for")
    source_type, source_id = source
    push, created = Push.objects.get_or_create(
        connection=connection,
        idempotency_key=idempotency_key,
        defaults={
            "organization_id": organization_id,
            "action": action,
            "payload": payload,
            "source_type": source_type or "",
            "source_id": str(source_id or ""),
        },
    )
    if created and file is not None:
        push.file.save(getattr(file, "name", None) or f"{idempotency_key}.bin", file, save=True)
    if not created and (push.action != action or push.payload != payload):
        # Same key, different write: the first one stands (that is what the key is for), but say so.
        logger.warning(
            "push %s: key %s was enqueued again with a different action or payload; kept the first",
            push.pk, idempotency_key,
        )
    return push


def due_pushes() -> Any:
    """Pushes that should be sent now: pending or failed and due, or claims that expired."""
    now = timezone.now()
    return Push.objects.filter(
        Q(status__in=[Push.Status.PENDING, Push.Status.FAILED]) | Q(status=Push.Status.SENDING),
        next_attempt_at__lte=now,
        connection__status=Connection.Status.ACTIVE,
    )


def backoff(attempts: int, retry_after: float | None = None) -> timedelta:
    """Delay before the next attempt after ``attempts`` failed ones (jittered, never below Retry-After)."""
    delay = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * (2 ** max(0, attempts - 1)))
    delay *= random.uniform(0.8, 1.2)  # spread a burst of failures so they do not retry in lockstep
    if retry_after:
        delay = max(delay, retry_after)
    return timedelta(seconds=delay)


def send_push(push_id: int) -> Push:
    """Send one push if it is due and nobody else is sending it; returns it as it ends up."""
    push = Push.objects.select_related("connection").get(pk=push_id)
    if push.connection.status != Connection.Status.ACTIVE:
        # Waits for the connection to be repaired; the drain skips it meanwhile.
        return push
    now = timezone.now()
    claimed = (
        Push.objects.filter(pk=push_id, next_attempt_at__lte=now)
        .filter(status__in=[Push.Status.PENDING, Push.Status.FAILED, Push.Status.SENDING])
        .update(
            status=Push.Status.SENDING,
            attempts=F("attempts") + 1,
            next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS),
        )
    )
    if claimed != 1:
        return Push.objects.get(pk=push_id)
    push.refresh_from_db()
    attempt = push.attempts
    connector = push.connection.connector()
    method_name = "push_" + push.action.replace(".", "_")
    method = getattr(connector, method_name, None)
    if method is None:
        return _settle(push, attempt, Push.Status.DEAD,
                       error=f"{connector.name} cannot do {push.action!r} (no {method_name} method).")
    try:
        from connectors.oauth import ensure_fresh, install_refresh_hook

        install_refresh_hook(connector)
        ensure_fresh(connector.connection)
        remote_id, response = method(push)
    except AuthRevoked as exc:
        # Not the push's fault: the connection must be repaired. The attempt is not counted,
        # and the push goes out once someone reconnects.
        push.connection.mark_needs_attention(f"{push.action}: {exc}")
        return _settle(push, attempt, Push.Status.FAILED, error=f"Waiting for the connection to be repaired: {exc}",
                       next_attempt_at=timezone.now() + backoff(1), uncount=True)
    except ConnectorError as exc:
        if exc.permanent:
            return _settle(push, attempt, Push.Status.DEAD, error=f"{type(exc).__name__}: {exc}")
        return _retry_later(push, attempt, f"{type(exc).__name__}: {exc}", exc.retry_after)
    except Exception as exc:  # noqa: BLE001 - a bug is retried a few times, then left DEAD with its trace
        logger.exception("push %s (%s) crashed", push.pk, push.action)
        return _retry_later(push, attempt, f"Internal error: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    return _settle(push, attempt, Push.Status.DONE, remote_id=str(remote_id or ""), response=response)


def _retry_later(push: Push, attempt: int, error: str, retry_after: float | None = None) -> Push:
    if attempt >= MAX_ATTEMPTS:
        return _settle(push, attempt, Push.Status.DEAD, error=f"Gave up after {attempt} attempts. Last error: {error}")
    return _settle(push, attempt, Push.Status.FAILED, error=error,
                   next_attempt_at=timezone.now() + backoff(attempt, retry_after))


def _settle(
    push: Push,
    attempt: int,
    status: str,
    *,
    error: str = "",
    remote_id: str = "",
    response: Any = None,
    next_attempt_at: Any = None,
    uncount: bool = False,
) -> Push:
    """Write the outcome, only if our claim still stands (a stale worker must not overwrite)."""
    now = timezone.now()
    values: dict[str, Any] = {"status": status, "last_error": error[:10_000]}
    if status == Push.Status.DONE:
        values.update(remote_id=remote_id, response=response if response is not None else {}, done_at=now,
                      next_attempt_at=now)
    elif next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    else:
        values["next_attempt_at"] = now
    if uncount:
        values["attempts"] = F("attempts") - 1
    written = Push.objects.filter(pk=push.pk, status=Push.Status.SENDING, attempts=attempt).update(**values)
    if not written:
        logger.warning("push %s: outcome %s not written, another worker re-claimed it", push.pk, status)
    push.refresh_from_db()
    if written and status == Push.Status.DONE and push.file:
        # The file was only kept to be sent; the provider holds it now.
        push.file.delete(save=False)
        Push.objects.filter(pk=push.pk).update(file="")
        push.file = None  # type: ignore[assignment]
    logger.info("push %s (%s) attempt %s: %s %s", push.pk, push.action, attempt, status, error[:200])
    return push


def retry_push(push_id: int, *, send_now: bool = True) -> Push:
    """A person's retry button: a DEAD or FAILED push goes back to PENDING with a fresh budget."""
    now = timezone.now()
    changed = Push.objects.filter(pk=push_id, status__in=[Push.Status.DEAD, Push.Status.FAILED]).update(
        status=Push.Status.PENDING, attempts=0, next_attempt_at=now
    )
    if changed and send_now:
        from django_q.tasks import async_task

        async_task("connectors.tasks.send_push_task", push_id)
    return Push.objects.get(pk=push_id)


def drain_outbox(limit: int = DRAIN_BATCH) -> int:
    """Fan out one send task per due push (oldest first); returns how many were enqueued."""
    from django_q.tasks import async_task

    ids = list(due_pushes().order_by("next_attempt_at", "pk").values_list("pk", flat=True)[:limit])
    for push_id in ids:
        async_task("connectors.tasks.send_push_task", push_id)
    return len(ids)
