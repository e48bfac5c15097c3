"""Demo connections (``seed_demo`` calls ``seed_connections`` via settings.DEMO_SEEDERS).

Connects the demo organisation A to the Qonto sandbox mounted on this hub with the sandbox
organisation's API key, and queues its first sync, so a newcomer who runs ``make run`` sees a
real first sync (runs, events, mirrored accounts and transactions) within a minute. The
sandbox is deterministic: the instance the web server serves has the same login and secret key
as the one built here to read them. Only when SANDBOX_ENABLED; idempotent.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone
from django_q.tasks import async_task

from connectors.models import Connection, SyncRun
from connectors.sandbox.registry import create_sandbox


def seed_connections(demo: dict[str, Any], stdout: Any = None) -> Connection | None:
    if not settings.SANDBOX_ENABLED:
        return None
    api: Any = create_sandbox("qonto")
    connection, created = Connection.objects.get_or_create(
        organization=demo["org_a"],
        provider="qonto",
        external_account_id=api.organization_slug,
        defaults={
            "auth_method": Connection.AuthMethod.API_KEY,
            "display_name": f"{api.legal_name} (Qonto sandbox)",
            "status": Connection.Status.ACTIVE,
            "connected_at": timezone.now(),
            "created_by": demo["owner_a"],
        },
    )
    if created or connection.status != Connection.Status.ACTIVE:
        connection.credentials = {"login": api.organization_slug, "secret_key": api.secret_key}
        connection.status = Connection.Status.ACTIVE
        connection.last_error = ""
        connection.save()
        # The cluster started by `make run` picks this up once the web server (and with it the
        # sandbox) answers; http.py retries the first calls if the cluster is quicker.
        async_task("connectors.tasks.sync_connection_task", connection.pk, trigger=SyncRun.Trigger.CONNECT)
        if stdout is not None:
            stdout.write(f"Connected {demo['org_a'].name} to the Qonto sandbox; first sync queued.")
    return connection
