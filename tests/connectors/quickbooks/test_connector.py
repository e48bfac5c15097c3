"""The QuickBooks connector against the QuickBooks sandbox: the shared contract, then QuickBooks'
own behaviour (OAuth with realmId, query paging, CDC, throttling 3001, faults, webhook signatures
in both shapes, field-mapping overrides applied forward with their version kept)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.conf import settings
from django.utils import timezone

from connectors import http, services
from connectors.base import AuthExpired, AuthRevoked, NotFound, RateLimited, TransientError, ValidationFailed
from connectors.models import (
    Attachment,
    BankAccount,
    BankTransaction,
    Connection,
    Counterparty,
    Document,
    SyncCursor,
    SyncRun,
    WebhookEvent,
)
from connectors.quickbooks import streams as qbo_streams
from connectors.quickbooks.connector import intuit_signature, read_fault
from connectors.quickbooks.mapping import VERSION_KEY, MappingError, mapping_for, set_override
from connectors.sync import sync_connection
from tests.connectors.contract import ConnectorContract

#: A small company keeps each test well under a second.
SMALL = {
    "vendors": 8,
    "customers": 5,
    "bills": 30,
    "invoices": 10,
    "credit_memos": 3,
    "purchase_orders": 3,
    "purchases": 10,
}
QUERY_PATH = "/v3/company/{realm}/query"
CDC_PATH = "/v3/company/{realm}/cdc"
QUERY = f"GET {QUERY_PATH}"


def quickbooks_connection(api: Any, organization: Any, realm_id: str | None = None) -> Connection:
    """Tokens issued by the sandbox for the hub's OAuth client (no browser), realmId kept."""
    token = api.connect(realm_id)
    return Connection.objects.create(
        organization=organization,
        provider="quickbooks",
        auth_method=Connection.AuthMethod.OAUTH2,
        status=Connection.Status.ACTIVE,
        external_account_id=token["realmId"],
        options={"realmId": token["realmId"]},
        credentials={k: token[k] for k in ("access_token", "refresh_token", "token_type")},
        token_expires_at=timezone.now() + timedelta(seconds=token["expires_in"]),
        scopes=["com.intuit.quickbooks.accounting"],
    )


def cloud_event(
    realm: str,
    event_id: str,
    entity: str = "bill",
    operation: str = "updated",
    entity_id: str = "1",
    at: datetime | None = None,
) -> dict[str, Any]:
    """One CloudEvents item as Intuit sends it (peer-apis.md §1.10)."""
    when = (at or datetime.now(UTC)).astimezone(UTC)
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "intuit.hubTestSource=",
        "type": f"qbo.{entity}.{operation}.v1",
        "datacontenttype": "application/json",
        "time": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "intuitentityid": entity_id,
        "intuitaccountid": realm,
        "data": {},
    }


def signed(body: bytes, token: str | None = None) -> dict[str, str]:
    return {
        "intuit-signature": intuit_signature(
            token or settings.PROVIDERS["quickbooks"]["webhook_verifier_token"], body
        )
    }


class TestQuickBooksContract(ConnectorContract):
    provider = "quickbooks"
    sandbox_options = SMALL

    def connect(self, api: Any, organization: Any) -> Connection:
        return quickbooks_connection(api, organization)

    def connect_oauth(self, api: Any, organization: Any) -> Connection:
        return quickbooks_connection(api, organization)

    def revoke_access(self, api: Any, connection: Connection) -> None:
        api.revoke_all_tokens()

    def change_remotely(self, api: Any) -> int:
        api.add_bill(DocNumber="CONTRACT-1")
        vendor = api.entities("Vendor")[0]
        api.edit_entity("Vendor", vendor["Id"], WebAddr={"URI": "https://changed.example"})
        return 2

    def webhook_request(
        self,
        api: Any,
        connection: Connection,
        event_id: str,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
        body: bytes | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        at = datetime.fromtimestamp(timestamp, UTC) if timestamp is not None else None
        raw = (
            body
            if body is not None
            else json.dumps([cloud_event(connection.options["realmId"], event_id, at=at)]).encode()
        )
        return raw, signed(raw, secret)

    def webhook_streams(self) -> tuple[str, ...]:
        return ("bills",)


@pytest.fixture
def api(sandbox_for: Any) -> Any:
    return sandbox_for("quickbooks", 1, **SMALL)


@pytest.fixture
def connection(api: Any, org_a: Any) -> Connection:
    return quickbooks_connection(api, org_a)


# --- OAuth with realmId -------------------------------------------------------------------------
def test_oauth_connect_keeps_the_realm_id_from_the_callback(api: Any, org_a: Any, owner_a: Any) -> None:
    connection, url = services.start_connect(
        org_a, owner_a, "quickbooks", services.callback_uri("quickbooks")
    )
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["scope"] == "com.intuit.quickbooks.accounting" and query["response_type"] == "code"
    session = http.session_for("quickbooks")
    page = session.get(url, allow_redirects=False)
    assert page.status_code == 200 and "Authorize" in page.text
    answer = session.post(
        url.split("?")[0],
        data={**query, "decision": "authorize", "realmId": api.company_id},
        allow_redirects=False,
    )
    params = dict(parse_qsl(urlsplit(answer.headers["Location"]).query))
    assert params["realmId"] == api.company_id

    connection = services.finish_connect(connection, owner_a, params["code"], params["state"], params)

    assert connection.status == Connection.Status.ACTIVE
    assert connection.options["realmId"] == api.company_id
    assert connection.external_account_id == api.company_id
    assert connection.display_name == api.company().name
    assert connection.credentials["refresh_token"] and connection.token_expires_at is not None
    run = sync_connection(connection.pk, trigger="connect")
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    # Read-only: nothing but GETs ever reached the company's API.
    assert {r.method for r in api.requests_made if r.path.startswith("/v3/")} == {"GET"}


def test_disconnect_revokes_the_grant_in_intuits_format(
    api: Any, connection: Connection, owner_a: Any
) -> None:
    token = connection.credentials["access_token"]
    connection = services.disconnect(connection, owner_a)
    assert connection.status == Connection.Status.DISCONNECTED and connection.last_error == ""
    revoke = [r for r in api.requests_made if r.route == "POST /v2/oauth2/tokens/revoke"]
    assert len(revoke) == 1 and revoke[0].status == 200 and "token" in revoke[0].json()
    assert revoke[0].headers["Authorization"].startswith("Basic ")
    assert api.verify_access_token(token)[1] == "revoked"


# --- reading ------------------------------------------------------------------------------------
def test_first_sync_mirrors_every_entity_with_the_mapped_fields(api: Any, connection: Connection) -> None:
    run = sync_connection(connection.pk, trigger="schedule")
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error

    bill = api.entities("Bill")[0]
    vendor = api.get_entity("Vendor", bill["VendorRef"]["value"])
    doc = Document.objects.get(connection=connection, stream="bills", external_id=bill["Id"])
    assert doc.kind == Document.Kind.BILL
    assert doc.total_amount == Decimal(repr(bill["TotalAmt"])).quantize(Decimal("0.01"))
    assert doc.tax_amount == Decimal(repr(bill["TxnTaxDetail"]["TotalTax"])).quantize(Decimal("0.01"))
    assert doc.currency == bill["CurrencyRef"]["value"]
    assert doc.issue_date.isoformat() == bill["TxnDate"] and doc.due_date.isoformat() == bill["DueDate"]
    assert doc.number == bill["DocNumber"]
    assert (
        doc.counterparty_name == vendor["DisplayName"] and doc.counterparty_tax_id == vendor["TaxIdentifier"]
    )
    assert doc.lines.count() == len(bill["Line"]) and doc.mapping_version == 1

    party = Counterparty.objects.get(connection=connection, stream="vendors", external_id=vendor["Id"])
    assert party.name == vendor["DisplayName"] and party.tax_id == vendor["TaxIdentifier"]
    assert party.website == (vendor.get("WebAddr") or {}).get("URI", "") and party.raw[VERSION_KEY] == 1

    purchase = api.entities("Purchase")[0]
    tx = BankTransaction.objects.get(connection=connection, stream="purchases", external_id=purchase["Id"])
    assert tx.amount == -Decimal(repr(purchase["TotalAmt"])).quantize(Decimal("0.01")) or purchase.get(
        "Credit"
    )
    assert tx.label == purchase["PrivateNote"] and tx.emitted_at.date().isoformat() == purchase["TxnDate"]

    banks = [a for a in api.entities("Account") if a["AccountType"] == "Bank"]
    assert BankAccount.objects.filter(connection=connection).count() == len(banks)
    with_file = {a["AttachableRef"][0]["EntityRef"]["value"] for a in api.entities("Attachable")}
    assert (
        set(
            Document.objects.filter(connection=connection, stream="bills")
            .exclude(attachment_external_id="")
            .values_list("external_id", flat=True)
        )
        == with_file
    )
    assert not any("TempDownloadUri" in a.raw for a in Attachment.objects.filter(connection=connection))
    # Every query asked for minor version 75, ordered by LastUpdatedTime, at most 1000 rows.
    for request in api.requests_made:
        if request.route == QUERY:
            assert request.query["minorversion"] == ["75"]
            statement = request.query["query"][0]
            assert "ORDERBY MetaData.LastUpdatedTime" in statement and "MAXRESULTS 1000" in statement


def test_history_start_limits_the_first_import(api: Any, connection: Connection) -> None:
    bills = api.entities("Bill")
    cut = sorted(b["TxnDate"] for b in bills)[len(bills) // 2]
    connection.options = {**connection.options, "history_start": cut}
    connection.save(update_fields=["options"])
    sync_connection(connection.pk, trigger="connect")
    dates = list(
        Document.objects.filter(connection=connection, stream="bills").values_list("issue_date", flat=True)
    )
    assert dates and min(dates).isoformat() >= cut
    assert len(dates) == sum(1 for b in bills if b["TxnDate"] >= cut)
    # Name lists are read whole.
    assert Counterparty.objects.filter(connection=connection, stream="vendors").count() == len(
        api.entities("Vendor")
    )


def test_query_pages_by_startposition_and_keyset_without_gap(
    api: Any, connection: Connection, monkeypatch: Any
) -> None:
    monkeypatch.setattr(qbo_streams, "MAX_RESULTS", 7)
    # Twelve bills stamped in the same second straddle page boundaries.
    api.freeze()
    for number in range(12):
        api.add_bill(DocNumber=f"SAME-{number:02d}")
    api.unfreeze()
    api.advance(5)
    run = sync_connection(connection.pk, trigger="schedule", streams=["bills"])
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    assert run.read == run.created == len(api.entities("Bill"))
    statements = [r.query["query"][0] for r in api.requests_made if r.route == QUERY]
    assert len(statements) >= len(api.entities("Bill")) // 7
    assert "MetaData.LastUpdatedTime >=" in statements[1]
    assert any("STARTPOSITION 8 MAXRESULTS 7" in s for s in statements)

    # Beyond CDC's window the incremental read is a query, strictly after the cursor.
    monkeypatch.setattr(qbo_streams, "CDC_WINDOW_DAYS", -1)
    cursor = SyncCursor.objects.get(connection=connection, stream="bills")
    api.clear_log()
    again = sync_connection(connection.pk, trigger="schedule", streams=["bills"])
    assert again.created == again.updated == 0 and again.requests == 1
    statement = api.requests_made[-1].query["query"][0]
    assert f"MetaData.LastUpdatedTime > '{cursor.value}'" in statement


def test_cdc_reads_changes_and_deletions_within_its_window(api: Any, connection: Connection) -> None:
    sync_connection(connection.pk, trigger="schedule")
    gone = api.entities("Bill")[3]
    api.delete_entity("Bill", gone["Id"])
    new = api.add_bill(DocNumber="CDC-NEW")
    api.clear_log()

    run = sync_connection(connection.pk, trigger="webhook", streams=["bills"])

    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    assert api.calls("GET", CDC_PATH) == 1 and api.calls("GET", QUERY_PATH) == 0
    assert run.created == 1 and run.updated == 1
    assert (
        Document.objects.get(connection=connection, stream="bills", external_id=gone["Id"]).status
        == "deleted"
    )
    assert Document.objects.filter(
        connection=connection, stream="bills", external_id=new["Id"], number="CDC-NEW"
    ).exists()
    # Nothing changed since: the same CDC request, nothing written.
    quiet = sync_connection(connection.pk, trigger="schedule", streams=["bills"])
    assert quiet.created == quiet.updated == 0 and quiet.requests == 1


# --- throttling and faults ----------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["json", "xml"])
def test_throttling_3001_is_retried_then_left_to_the_next_poll(
    api: Any, connection: Connection, shape: str
) -> None:
    api.set_throttle(per_minute=2, format=shape)
    run = sync_connection(connection.pk, trigger="schedule")
    assert run.outcome == SyncRun.Outcome.FAILED and "RateLimited" in run.error and "3001" in run.error
    assert run.retries == settings.HTTP_MAX_RETRIES
    connection.refresh_from_db()
    # Throttling is transient: the connection stays active for the next hourly poll.
    assert connection.status == Connection.Status.ACTIVE and "throttled" in connection.last_error
    api.set_throttle(None, None)
    assert sync_connection(connection.pk, trigger="schedule").outcome == SyncRun.Outcome.SUCCEEDED


def test_fault_bodies_become_connector_errors(connection: Connection) -> None:
    connector = connection.connector()
    xml = (
        '<IntuitResponse><Fault type="SERVICE"><Error code="3001"><Message>message=ThrottleExceeded; '
        "errorCode=003001; statusCode=429</Message><Detail>The request limit was reached.</Detail>"
        "</Error></Fault></IntuitResponse>"
    )
    assert read_fault(xml) == {
        "code": "3001",
        "message": "message=ThrottleExceeded; errorCode=003001; statusCode=429",
        "detail": "The request limit was reached.",
        "type": "SERVICE",
    }
    throttled = connector.parse_error(429, xml, {})
    assert isinstance(throttled, RateLimited) and throttled.retry_after == 60
    # Historically 403 with code 3001 (§1.8): still throttling, not a revoked grant.
    assert isinstance(connector.parse_error(403, {"Fault": {"Error": [{"code": "3001"}]}}, {}), RateLimited)
    lowercase = {
        "fault": {
            "error": [{"message": "message=AuthenticationFailed", "code": "3200"}],
            "type": "AUTHENTICATION",
        }
    }
    assert isinstance(connector.parse_error(401, lowercase, {}), AuthExpired)
    assert isinstance(
        connector.parse_error(403, {"Fault": {"Error": [{"code": "120"}], "type": "AuthorizationFault"}}, {}),
        AuthRevoked,
    )
    assert isinstance(
        connector.parse_error(
            400,
            {"Fault": {"Error": [{"code": "610", "Message": "Object Not Found"}], "type": "ValidationFault"}},
            {},
        ),
        NotFound,
    )
    assert isinstance(
        connector.parse_error(400, {"Fault": {"Error": [{"code": "4000"}], "type": "ValidationFault"}}, {}),
        ValidationFailed,
    )
    assert isinstance(
        connector.parse_error(503, {"Fault": {"Error": [{"code": "10000"}], "type": "SystemFault"}}, {}),
        TransientError,
    )


def test_a_fault_inside_a_200_answer_fails_the_run(api: Any, connection: Connection) -> None:
    fault = {
        "Fault": {"Error": [{"Message": "Invalid Company Status", "code": "6190"}], "type": "ValidationFault"}
    }
    api.inject_fault(200, times=1, body=fault)
    run = sync_connection(connection.pk, trigger="schedule")
    assert run.outcome == SyncRun.Outcome.FAILED and "6190" in run.error
    connection.refresh_from_db()
    assert connection.status == Connection.Status.NEEDS_ATTENTION


# --- webhooks -----------------------------------------------------------------------------------
def test_signature_matches_the_reference_test_vector() -> None:
    body = (
        b'{"eventNotifications":[{"realmId":"9341452000000001","dataChangeEvent":{"entities":[{"name":"Bill",'
        b'"id":"145","operation":"Create","lastUpdated":"2025-03-04T10:15:00.000Z"}]}}]}'
    )
    assert intuit_signature("hub-test-verifier-token", body) == "FnjwqTj9eSG7ga8uoA8axStti8JLnFEEZlA3SNhhNFI="


def _deliver(client: Any, connection: Connection, body: bytes, headers: dict[str, str]) -> Any:
    return TestQuickBooksContract().deliver(client, connection, body, headers)


def test_webhook_from_the_sandbox_triggers_an_early_poll_of_the_named_entities(
    client: Any, api: Any, connection: Connection
) -> None:
    sync_connection(connection.pk, trigger="schedule")
    realm = connection.options["realmId"]
    bill = api.add_bill(DocNumber="HOOK-1")
    vendor = api.entities("Vendor")[1]
    body = json.dumps(
        [
            cloud_event(realm, "evt-a", "bill", "created", bill["Id"]),
            cloud_event(realm, "evt-b", "vendor", "updated", vendor["Id"]),
            cloud_event("123", "evt-c", "invoice", "created", "9"),  # another company: ignored
        ]
    ).encode()
    api.clear_log()
    response = _deliver(client, connection, body, signed(body))
    assert response.status_code == 202, response.content
    event = WebhookEvent.objects.get(connection=connection)
    assert event.status == WebhookEvent.Status.PROCESSED, event.reason
    assert sorted(event.streams) == ["bills", "vendors"] and event.event_id.startswith("qbo:")
    assert sorted(event.run.streams) == ["bills", "vendors"] and event.run.created == 1
    # Both streams were read an instant ago: one CDC request each, no query.
    cdc = [r for r in api.requests_made if r.route == f"GET {CDC_PATH}"]
    assert sorted(r.query["entities"][0] for r in cdc) == ["Bill", "Vendor"]
    assert api.calls("GET", QUERY_PATH) == 0
    assert Document.objects.filter(connection=connection, number="HOOK-1").exists()


def test_legacy_webhook_is_verified_and_read(client: Any, api: Any, connection: Connection) -> None:
    bill = api.entities("Bill")[0]
    payload = api.webhook_payload(
        "legacy", connection.options["realmId"], "Bill", bill["Id"], "Update", datetime.now(UTC)
    )
    body = json.dumps(payload).encode()
    assert _deliver(client, connection, body, signed(body)).status_code == 202
    event = WebhookEvent.objects.get(connection=connection)
    assert event.status == WebhookEvent.Status.PROCESSED and event.streams == ["bills"]
    forged = body.replace(b"Update", b"Delete")
    assert _deliver(client, connection, forged, signed(body)).status_code == 401
    assert (
        WebhookEvent.objects.filter(connection=connection, status=WebhookEvent.Status.REJECTED).count() == 1
    )


# --- field mapping ------------------------------------------------------------------------------
def test_mapping_override_applies_to_records_read_after_it_and_keeps_the_version(
    api: Any, connection: Connection
) -> None:
    sync_connection(connection.pk, trigger="schedule")
    first, second = api.entities("Bill")[:2]
    assert mapping_for(connection).version == 1

    override = set_override(
        connection, "Bill", "PrivateNote", "invoice_number", note="numbers live in the memo"
    )
    assert override.version == 2 and mapping_for(connection).path("Bill", "invoice_number") == "PrivateNote"
    # Already stored: untouched until read again.
    untouched = Document.objects.get(connection=connection, stream="bills", external_id=first["Id"])
    assert untouched.number == first["DocNumber"] and untouched.mapping_version == 1

    api.edit_bill(first["Id"], PrivateNote="MEMO-42")
    sync_connection(connection.pk, trigger="schedule")

    edited = Document.objects.get(connection=connection, stream="bills", external_id=first["Id"])
    assert edited.number == "MEMO-42" and edited.mapping_version == 2
    other = Document.objects.get(connection=connection, stream="bills", external_id=second["Id"])
    assert other.number == second["DocNumber"] and other.mapping_version == 1

    # Back to the default, as a new version: nothing moves backwards.
    assert set_override(connection, "Bill", "DocNumber", "invoice_number").version == 3
    with pytest.raises(MappingError):
        set_override(connection, "Bill", "PrivateNote", "no_such_field")
    with pytest.raises(MappingError):
        set_override(connection, "Customer", "DisplayName", "supplier_name")
