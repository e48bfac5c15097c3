"""The connector contract every provider's tests mix in (after django-allauth's shared provider tests).

A provider's test module declares one class::

    class TestQontoContract(ConnectorContract):
        provider = "qonto"
        sandbox_options = {...}          # a small seed keeps the suite fast

        def connect(self, api, organization): ...   # an active connection reaching ``api``
        ...                                        # and the other hooks below

and inherits the tests: connect, full sync, incremental sync, re-sync is a no-op within the
request budget, 401 refresh, 429 retry, permanent error marks the connection, and webhooks
accepted / forged / stale / duplicate / malformed. The class name must not start with ``Test``
(pytest would collect the mixin itself).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import pytest
from django.apps import apps
from django.urls import reverse

from connectors.models import Connection, SyncCursor, SyncRun, WebhookEvent
from connectors.sync import sync_connection


class ConnectorContract:
    provider: ClassVar[str]
    seed: ClassVar[int] = 1
    sandbox_options: ClassVar[dict[str, Any]] = {}
    #: Requests one stream may send when nothing changed remotely (see ``request_budget``).
    max_requests_per_stream: ClassVar[int] = 2

    # --- hooks a provider implements -----------------------------------------------------------
    def connect(self, api: Any, organization: Any) -> Connection:
        """An active connection whose credentials the sandbox ``api`` accepts."""
        raise NotImplementedError

    def connect_oauth(self, api: Any, organization: Any) -> Connection:
        """An active OAuth connection (with a refresh token); skip the 401 test if not offered."""
        pytest.skip(f"{self.provider} has no OAuth connections")

    def expire_access(self, api: Any) -> None:
        """Make the current access tokens expire at the provider (a refresh can renew them)."""
        api.expire_access_tokens()

    def revoke_access(self, api: Any, connection: Connection) -> None:
        """Make the connection's credentials permanently unusable (key regenerated, grant revoked)."""
        raise NotImplementedError

    def change_remotely(self, api: Any) -> int:
        """Create or change records at the provider; returns how many records changed."""
        raise NotImplementedError

    def request_budget(self, api: Any, stream: str) -> int:
        """Requests ``stream`` may send on a re-sync with nothing new."""
        return self.max_requests_per_stream

    def webhook_request(
        self, api: Any, connection: Connection, event_id: str, *, secret: str | None = None,
        timestamp: int | None = None, body: bytes | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """A webhook delivery for ``connection``: (raw body, headers), signed with ``secret``
        (default: the connection's) at ``timestamp`` (default: now). ``body`` replaces the event."""
        raise NotImplementedError

    def webhook_streams(self) -> tuple[str, ...]:
        """Streams the event built by ``webhook_request`` makes the hub re-read."""
        raise NotImplementedError

    # --- fixtures ---------------------------------------------------------------------------------
    @pytest.fixture
    def api(self, sandbox_for: Any) -> Any:
        return sandbox_for(self.provider, self.seed, **self.sandbox_options)

    @pytest.fixture
    def connection(self, api: Any, org_a: Any) -> Connection:
        return self.connect(api, org_a)

    def streams(self, connection: Connection) -> list[Any]:
        return [stream_class() for stream_class in connection.connector().streams]

    def deliver(self, client: Any, connection: Connection, body: bytes, headers: dict[str, str]) -> Any:
        url = reverse("webhook", kwargs={"slug": connection.provider, "endpoint": connection.webhook_endpoint})
        extra = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}
        return client.post(url, data=body, content_type="application/json", **extra)

    # --- the contract -----------------------------------------------------------------------------
    def test_contract_connect_gives_an_active_connection(self, connection: Connection) -> None:
        assert connection.status == Connection.Status.ACTIVE
        assert connection.provider == self.provider and connection.organization_id is not None

    def test_contract_full_sync_fills_every_stream(self, api: Any, connection: Connection) -> None:
        run = sync_connection(connection.pk, trigger="schedule", full=True)
        assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error + run.traceback
        assert run.created > 0 and run.failed == 0 and run.read == run.created
        for stream in self.streams(connection):
            cursor = SyncCursor.objects.get(connection=connection, stream=stream.name)
            assert cursor.last_success_at is not None and cursor.position == {}, stream.name
            model = apps.get_model(stream.model)
            assert model.objects.filter(connection=connection, stream=stream.name).exists(), stream.name

    def test_contract_incremental_sync_reads_what_changed(self, api: Any, connection: Connection) -> None:
        first = sync_connection(connection.pk, trigger="schedule")
        changed = self.change_remotely(api)
        run = sync_connection(connection.pk, trigger="schedule")
        assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
        assert run.created + run.updated >= changed
        assert run.read < first.read

    def test_contract_resync_is_a_no_op_within_the_request_budget(self, api: Any, connection: Connection) -> None:
        sync_connection(connection.pk, trigger="schedule")
        for stream in self.streams(connection):
            run = sync_connection(connection.pk, trigger="schedule", streams=[stream.name])
            assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
            assert run.created == 0 and run.updated == 0, stream.name
            assert run.requests <= self.request_budget(api, stream.name), (stream.name, run.requests)

    def test_contract_401_refreshes_once_and_the_sync_goes_on(self, api: Any, org_a: Any) -> None:
        connection = self.connect_oauth(api, org_a)
        before = connection.credentials["access_token"]
        self.expire_access(api)
        run = sync_connection(connection.pk, trigger="schedule")
        assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
        connection.refresh_from_db()
        assert connection.status == Connection.Status.ACTIVE
        assert connection.credentials["access_token"] != before

    def test_contract_429_is_retried_and_counted(self, api: Any, connection: Connection) -> None:
        api.inject_fault(429, times=2, retry_after=1)
        run = sync_connection(connection.pk, trigger="schedule")
        assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
        assert run.retries == 2

    def test_contract_permanent_error_marks_the_connection(self, api: Any, connection: Connection) -> None:
        self.revoke_access(api, connection)
        run = sync_connection(connection.pk, trigger="schedule")
        assert run.outcome == SyncRun.Outcome.FAILED and run.traceback
        connection.refresh_from_db()
        assert connection.status == Connection.Status.NEEDS_ATTENTION and connection.last_error
        assert sync_connection(connection.pk, trigger="schedule").outcome == SyncRun.Outcome.SKIPPED

    def test_contract_webhook_accepted_triggers_a_sync(self, client: Any, api: Any, connection: Connection) -> None:
        body, headers = self.webhook_request(api, connection, "evt-contract-1")
        started = time.monotonic()
        response = self.deliver(client, connection, body, headers)
        assert response.status_code == 202, response.content
        event = WebhookEvent.objects.get(connection=connection)
        assert event.accepted and event.event_id == "evt-contract-1"
        assert event.status == WebhookEvent.Status.PROCESSED, event.reason
        assert event.run.trigger == SyncRun.Trigger.WEBHOOK
        assert sorted(event.run.streams) == sorted(self.webhook_streams())
        assert time.monotonic() - started < 5

    def test_contract_webhook_forged_is_rejected(self, client: Any, api: Any, connection: Connection) -> None:
        body, headers = self.webhook_request(api, connection, "evt-contract-2", secret="x" * 40)
        assert self.deliver(client, connection, body, headers).status_code == 401
        event = WebhookEvent.objects.get(connection=connection)
        assert event.status == WebhookEvent.Status.REJECTED and event.reason and not event.accepted
        assert not SyncRun.objects.filter(connection=connection).exists()

    def test_contract_webhook_stale_is_rejected(self, client: Any, api: Any, connection: Connection) -> None:
        body, headers = self.webhook_request(api, connection, "evt-contract-3", timestamp=int(time.time()) - 3600)
        assert self.deliver(client, connection, body, headers).status_code == 401
        assert WebhookEvent.objects.get(connection=connection).status == WebhookEvent.Status.REJECTED

    def test_contract_webhook_duplicate_is_acknowledged_once(self, client: Any, api: Any, connection: Connection) -> None:
        body, headers = self.webhook_request(api, connection, "evt-contract-4")
        assert self.deliver(client, connection, body, headers).status_code == 202
        assert self.deliver(client, connection, body, headers).status_code == 200
        statuses = sorted(WebhookEvent.objects.filter(connection=connection).values_list("status", flat=True))
        assert statuses == [WebhookEvent.Status.DUPLICATE, WebhookEvent.Status.PROCESSED]
        assert SyncRun.objects.filter(connection=connection, trigger="webhook").count() == 1

    def test_contract_webhook_malformed_is_refused_with_a_clear_error(
        self, client: Any, api: Any, connection: Connection
    ) -> None:
        body, headers = self.webhook_request(api, connection, "evt-contract-5", body=b"{not json")
        response = self.deliver(client, connection, body, headers)
        assert response.status_code == 400 and "not JSON" in response.json()["error"]
        event = WebhookEvent.objects.get(connection=connection)
        assert event.status == WebhookEvent.Status.INVALID and event.body == "{not json"
