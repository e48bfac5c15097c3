"""django-q2 tasks of reconciliation: plain functions taking ids, safe to run twice.

``after_sync`` is named in ``settings.AFTER_SYNC_TASKS``: the connectors' sync enqueues each
dotted path listed there after a sync that brought new or changed records, so connectors never
import reconciliation. Running a reconciliation twice is harmless: unchanged inputs write
nothing (fingerprints) and decided matches are never touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django_q.tasks import async_task

from connectors.models import Connection
from reconciliation import services, tax_pull
from reconciliation.routes import TRANSACTION, get_route, routes_for_provider

TASK = "reconciliation.tasks.reconcile_organization_task"


def reconcile_organization_task(
    organization_id: int,
    route: str = "qonto_transactions",
    touched_subject_ids: list[int] | None = None,
    touched_document_ids: list[int] | None = None,
) -> dict[str, Any]:
    """Reconcile one organisation on one route; the summary is kept as the task result.

    Without touched ids it is a full run: every undecided item whose inputs changed is
    re-scored (the "Reconcile now" button, a sync that only gives a count of changes).
    """
    full = touched_subject_ids is None and touched_document_ids is None
    summary = services.reconcile_organization(
        organization_id, route, touched_subject_ids, touched_document_ids, full=full
    )
    return summary.as_dict()


def enqueue_reconcile(organization_id: int, route: str) -> str:
    """Queue a full run of ``route`` for the organisation; returns the task id."""
    get_route(route)  # fail now, in the request, on a route that does not exist
    return async_task(TASK, organization_id, route)


def after_sync(connection_id: int, changed: int | Mapping[str, list[int]] | None = None) -> list[str]:
    """Reconcile the connection's organisation on every route fed by its provider.

    ``changed`` is what the sync reported: a count of new and changed records (then each route
    runs in full), or ``{"transactions": [pk…], "documents": [pk…]}`` (then only those records'
    subjects, and the subjects whose candidates they are, are re-scored). Nothing changed,
    or a firm's connection (no organisation of its own), enqueues nothing.
    """
    if not changed:
        return []
    connection = Connection.objects.filter(pk=connection_id).values("organization_id", "provider").first()
    if connection is None or connection["organization_id"] is None:
        return []
    task_ids = []
    for route in routes_for_provider(connection["provider"]):
        if isinstance(changed, Mapping):
            transactions = list(changed.get("transactions", ()))
            documents = list(changed.get("documents", ()))
            # Which ids are subjects and which are targets depends on the route's direction.
            if route.subject_kind == TRANSACTION:
                subjects, targets = transactions, documents
            elif route.target_kind == TRANSACTION:
                subjects, targets = documents, transactions
            else:
                subjects, targets = documents, documents
            task_ids.append(async_task(TASK, connection["organization_id"], route.slug, subjects, targets))
        else:
            task_ids.append(async_task(TASK, connection["organization_id"], route.slug))
    return task_ids


def pull_tax_documents() -> int:
    """Daily schedule ``tax-documents-pull``: one pull task per active client file (fan-out only)."""
    return tax_pull.pull_all()


def pull_tax_documents_for(client_file_id: int) -> dict[str, Any]:
    """One client file's pull for its tax adviser; the summary is kept as the task result."""
    return tax_pull.pull_client_file(client_file_id).as_dict()
