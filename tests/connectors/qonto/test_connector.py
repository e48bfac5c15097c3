"""The Qonto connector against the Qonto sandbox: the shared contract, then Qonto's own behaviour
(incremental reads, resume after a crash, retries, pending lines settling, running-balance gaps,
uploads through the outbox, webhooks from subscription to sync)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.utils import timezone

from connectors import outbox, sync
from connectors.models import (
    Attachment,
    BankAccount,
    BankTransaction,
    Connection,
    Counterparty,
    Document,
    DocumentLine,
    Push,
    SyncEvent,
    SyncRun,
    WebhookEvent,
)
from connectors.qonto import streams as qonto_streams
from connectors.qonto.sandbox import qonto_signature
from connectors.qonto.streams import fetch_attachment_bytes
from connectors.sync import sync_connection
from tests.connectors.contract import ConnectorContract

#: Small enough to keep each test well under a second, big enough for several pages on the main
#: account (85 % of 260 transactions → 3 pages of 100).
SMALL = {
    "transactions": 260,
    "pending": 4,
    "declined": 2,
    "external_transactions": 5,
    "clients": 6,
    "client_invoices": 12,
    "supplier_invoices": 8,
}
SCOPES = (
    "offline_access organization.read attachment.read client.read client.write client_invoices.read "
    "supplier_invoice.read supplier_invoice.write webhook"
)


def api_key_connection(api: Any, organization: Any) -> Connection:
    return Connection.objects.create(
        organization=organization,
        provider="qonto",
        auth_method=Connection.AuthMethod.API_KEY,
        status=Connection.Status.ACTIVE,
        external_account_id=api.organization_slug,
        credentials={"login": api.organization_slug, "secret_key": api.secret_key},
    )


def oauth_connection(api: Any, organization: Any) -> Connection:
    """Tokens issued by the sandbox for the hub's configured OAuth client (no browser flow)."""
    config = settings.PROVIDERS["qonto"]
    token = api.issue_tokens(config["client_id"], config["client_secret"], SCOPES)
    return Connection.objects.create(
        organization=organization,
        provider="qonto",
        auth_method=Connection.AuthMethod.OAUTH2,
        status=Connection.Status.ACTIVE,
        external_account_id=api.organization_slug,
        credentials={k: token[k] for k in ("access_token", "refresh_token", "token_type")},
        token_expires_at=timezone.now() + timedelta(seconds=token["expires_in"]),
        scopes=token["scope"].split(),
    )


def event_body(api: Any, event_id: str, topic: str = "v1/transactions") -> bytes:
    transaction = api.transactions_of()[-1]
    return json.dumps(
        {
            "id": event_id,
            "subscription_id": "sub-1",
            "organization_id": api.organization_id,
            "membership_id": api.owner_id,
            "type": topic,
            "created_at": "2026-02-10T08:01:06Z",
            "data": {"event": "updated", **transaction},
        },
        separators=(",", ":"),
    ).encode()


class TestQontoContract(ConnectorContract):
    provider = "qonto"
    seed = 7
    sandbox_options = SMALL

    def connect(self, api: Any, organization: Any) -> Connection:
        connection = api_key_connection(api, organization)
        connection.webhook_secret = "s" * 48
        connection.save(update_fields=["webhook_secret"])
        return connection

    def connect_oauth(self, api: Any, organization: Any) -> Connection:
        return oauth_connection(api, organization)

    def revoke_access(self, api: Any, connection: Connection) -> None:
        api.rotate_api_key()  # regenerating the key revokes the old one (§2.1)

    def change_remotely(self, api: Any) -> int:
        api.add_transactions(2)
        pending = api.transactions_of(status="pending")[0]
        api.update_transaction(pending["id"], note="Déjeuner client")
        return 3

    def request_budget(self, api: Any, stream: str) -> int:
        # Qonto lists transactions per bank account (§3.2): one request per account.
        if stream == "transactions":
            return len(api.accounts)
        return self.max_requests_per_stream

    def webhook_request(self, api, connection, event_id, *, secret=None, timestamp=None, body=None):  # type: ignore[no-untyped-def]
        raw = body if body is not None else event_body(api, event_id)
        signed_at = int(time.time()) if timestamp is None else timestamp
        return raw, {"X-Qonto-Signature": qonto_signature(secret or connection.webhook_secret, raw, signed_at)}

    def webhook_streams(self) -> tuple[str, ...]:
        return ("transactions",)


# --- Qonto specifics -----------------------------------------------------------------------------
@pytest.fixture
def api(sandbox_for):  # type: ignore[no-untyped-def]
    return sandbox_for("qonto", 7, **SMALL)


@pytest.fixture
def conn(api, org_a) -> Connection:  # type: ignore[no-untyped-def]
    return api_key_connection(api, org_a)


def requests_to(api: Any, route: str) -> list[Any]:
    return [r for r in api.requests_made if r.route == route]


def test_full_sync_mirrors_accounts_transactions_documents_and_clients(api, conn):
    run = sync_connection(conn.pk, trigger="connect")
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error + run.traceback
    assert BankAccount.objects.filter(connection=conn).count() == len(api.accounts) == 4
    assert BankTransaction.objects.filter(connection=conn).count() == api.count_transactions()
    assert Counterparty.objects.filter(connection=conn, role="customer").count() == len(api.clients)
    kinds = dict(
        (kind, Document.objects.filter(connection=conn, kind=kind).count())
        for kind in ("client_invoice", "credit_note", "supplier_invoice")
    )
    assert kinds == {
        "client_invoice": len(api.client_invoices),
        "credit_note": len(api.credit_notes),
        "supplier_invoice": len(api.supplier_invoices),
    }
    # Every list was read 100 at a time, in creation order, with every status of transactions.
    listed = requests_to(api, "GET /v2/transactions")
    assert {r.query["per_page"][0] for r in listed} == {"100"}
    assert listed[0].query["status[]"] == ["pending", "completed", "declined"]
    assert "updated_at_from" not in listed[0].query

    main = BankAccount.objects.get(connection=conn, external_id=api.main_account_id)
    account = api.accounts[api.main_account_id]
    assert main.iban == account.iban and main.bic == "QNTOFRP1XXX"
    assert main.balance == Decimal(account.balance_cents) / 100 and isinstance(main.balance, Decimal)
    external = BankAccount.objects.get(connection=conn, raw__is_external_account=True)
    assert external.iban == ""

    settled = api.transactions_of(status="completed")[-1]
    row = BankTransaction.objects.get(connection=conn, external_id=settled["id"])
    sign = -1 if settled["side"] == "debit" else 1
    assert row.amount == sign * Decimal(settled["amount_cents"]) / 100
    assert row.balance_after == Decimal(settled["settled_balance_cents"]) / 100
    assert row.settled_at is not None and row.raw["transaction_id"] == settled["transaction_id"]
    pending = BankTransaction.objects.filter(connection=conn, status="pending")
    assert pending.count() == 4 and all(p.settled_at is None and p.balance_after is None for p in pending)

    invoice = Document.objects.filter(connection=conn, kind="client_invoice").exclude(number="").first()
    source = api.client_invoices[invoice.external_id]
    assert invoice.total_amount == Decimal(source["total_amount"]["value"]) and invoice.currency == "EUR"
    assert invoice.counterparty_external_id == source["client"]["id"]
    lines = list(DocumentLine.objects.filter(document=invoice))
    assert len(lines) == len(source["items"])
    assert sum(line.amount for line in lines) + invoice.tax_amount == invoice.total_amount
    assert {line.vat_rate for line in lines} <= {Decimal("20"), Decimal("10")}

    # Receipts' metadata came with their transactions, without the 30-minute URL.
    receipts = Attachment.objects.filter(connection=conn)
    assert receipts.exists() and all("url" not in a.raw for a in receipts)
    with_receipt = BankTransaction.objects.filter(connection=conn).exclude(attachment_ids=[]).first()
    assert receipts.filter(parent_external_id=with_receipt.external_id).exists()
    assert not SyncEvent.objects.filter(run=run).exists()


def test_incremental_sync_asks_only_for_what_changed(api, conn):
    sync_connection(conn.pk, trigger="schedule")
    api.clear_log()
    new = api.add_transactions(2, status="completed")
    changed = api.update_transaction(api.transactions_of(status="completed")[5]["id"], note="À refacturer")
    run = sync_connection(conn.pk, trigger="schedule", streams=["transactions"])
    assert run.outcome == SyncRun.Outcome.SUCCEEDED
    assert (run.created, run.updated) == (2, 1)
    # Only the records updated since the last sync (minus the look-back) came back.
    assert run.read < 10
    listed = requests_to(api, "GET /v2/transactions")
    assert len(listed) == len(api.accounts) and all("updated_at_from" in r.query for r in listed)
    assert BankTransaction.objects.get(external_id=changed["id"]).raw["note"] == "À refacturer"
    assert BankTransaction.objects.filter(external_id__in=[t["id"] for t in new]).count() == 2


def test_the_look_back_rereads_records_stamped_just_before_the_cursor(api, conn):
    sync_connection(conn.pk, trigger="schedule", streams=["bank_accounts", "transactions"])
    cursor = conn.cursors.get(stream="transactions")
    lower = requests_to(api, "GET /v2/transactions")
    api.clear_log()
    sync_connection(conn.pk, trigger="schedule", streams=["transactions"])
    sent = requests_to(api, "GET /v2/transactions")[0].query["updated_at_from"][0]
    value = qonto_streams.parse_timestamp(cursor.value, "value")
    assert qonto_streams.parse_timestamp(sent, "sent") == value - timedelta(minutes=10)
    assert lower


def test_resync_with_nothing_new_sends_one_request_per_stream_and_account(api, conn):
    sync_connection(conn.pk, trigger="schedule")
    api.clear_log()
    run = sync_connection(conn.pk, trigger="schedule")
    assert (run.created, run.updated) == (0, 0)
    counts = dict(api.request_counts)
    assert counts.pop("GET /v2/transactions") == len(api.accounts)
    assert counts == {
        "GET /v2/organization": 1,
        "GET /v2/clients": 1,
        "GET /v2/client_invoices": 1,
        "GET /v2/credit_notes": 1,
        "GET /v2/supplier_invoices": 1,
    }
    assert run.requests == sum(api.request_counts.values())


def test_a_run_killed_after_page_n_resumes_at_page_n_plus_1(api, conn, monkeypatch):
    sync_connection(conn.pk, trigger="schedule", streams=["bank_accounts"])
    main = api.main_account_id
    real_save = sync._save_page

    def die_past_page_two_of_the_main_account(connector, stream, model, run, page, **kwargs):  # type: ignore[no-untyped-def]
        # Pages fetched while the engine was writing are saved together (pipelined's merge):
        # the worker dies at the first save that reaches beyond page 2.
        if page.position.get("account") == main and page.position["page"] > 2:
            raise RuntimeError("worker killed after page 2")
        real_save(connector, stream, model, run, page, **kwargs)

    monkeypatch.setattr(sync, "_save_page", die_past_page_two_of_the_main_account)
    first = sync_connection(conn.pk, trigger="schedule", streams=["transactions"])
    assert first.outcome == SyncRun.Outcome.FAILED and "worker killed" in first.error
    position = conn.cursors.get(stream="transactions").position
    saved_pages = position["page"] if position.get("account") == main else 0
    assert saved_pages <= 2
    assert BankTransaction.objects.filter(connection=conn, bank_account_external_id=main).count() == 100 * saved_pages
    assert BankTransaction.objects.filter(connection=conn).count() == first.created

    monkeypatch.setattr(sync, "_save_page", real_save)
    api.clear_log()
    second = sync_connection(conn.pk, trigger="schedule", streams=["transactions"])
    assert second.outcome == SyncRun.Outcome.SUCCEEDED
    resumed = requests_to(api, "GET /v2/transactions")
    of_main = [r.query["page"] for r in resumed if r.query["bank_account_id"] == [main]]
    assert of_main[0] == [str(saved_pages + 1)]
    # Accounts finished before the crash are not read again (if the crash came before anything
    # of the main account was saved, the account before it is asked once for its next page).
    earlier = [r for r in resumed if r.query["bank_account_id"][0] < main]
    assert not earlier or (saved_pages == 0 and len(earlier) == 1 and earlier[0].query["bank_account_id"] == [position["account"]])
    assert {r.query["bank_account_id"][0] for r in resumed} - {r.query["bank_account_id"][0] for r in earlier} == {
        a for a in api.accounts if a >= main
    }
    # No duplicate (nothing re-created or re-read as unchanged) and no gap (everything is there).
    assert second.unchanged == 0 and first.created + second.created == api.count_transactions()
    assert BankTransaction.objects.filter(connection=conn).count() == api.count_transactions()
    assert conn.cursors.get(stream="transactions").position == {}


def test_429_and_5xx_are_retried_and_counted(api, conn):
    api.inject_fault(429, times=2, path_prefix="/v2/transactions", retry_after=1)
    api.inject_fault(503, times=1, path_prefix="/v2/clients")
    api.inject_fault(502, times=1, path_prefix="/v2/organization")
    run = sync_connection(conn.pk, trigger="schedule")
    assert run.outcome == SyncRun.Outcome.SUCCEEDED, run.error
    assert run.retries == 4 and run.requests == sum(api.request_counts.values())
    assert BankTransaction.objects.filter(connection=conn).count() == api.count_transactions()


def test_5xx_beyond_the_retries_fails_the_run_without_flagging_the_connection(api, conn):
    api.inject_fault(503, times=None, path_prefix="/v2/clients")
    run = sync_connection(conn.pk, trigger="schedule")
    assert run.outcome == SyncRun.Outcome.FAILED and "clients" in run.error and run.retries == 4
    conn.refresh_from_db()
    assert conn.status == Connection.Status.ACTIVE and "503" in conn.last_error


def test_a_pending_transaction_settling_updates_its_row(api, conn):
    sync_connection(conn.pk, trigger="schedule")
    pending = api.transactions_of(status="pending")[0]
    row = BankTransaction.objects.get(connection=conn, external_id=pending["id"])
    assert row.status == "pending" and row.settled_at is None
    settled = api.settle_pending([pending["id"]])[0]
    run = sync_connection(conn.pk, trigger="schedule", streams=["transactions"])
    assert run.updated >= 1
    row.refresh_from_db()
    assert row.status == "completed" and row.settled_at is not None
    assert row.balance_after == Decimal(settled["settled_balance_cents"]) / 100
    assert BankTransaction.objects.filter(connection=conn, external_id=pending["id"]).count() == 1
    assert not SyncEvent.objects.filter(run=run, kind="warning").exists()


def test_a_running_balance_gap_is_flagged_with_the_transactions_around_it(api, conn):
    sync_connection(conn.pk, trigger="schedule")
    history = api.transactions_of(status="completed")
    lost, after = history[-6], history[-5]
    # One settled line goes missing from the mirror; the next one changes, so the next sync
    # re-checks that stretch of the account.
    BankTransaction.objects.filter(connection=conn, external_id=lost["id"]).delete()
    api.update_transaction(after["id"], note="vu")
    run = sync_connection(conn.pk, trigger="schedule", streams=["transactions"])
    assert run.outcome == SyncRun.Outcome.SUCCEEDED
    warning = SyncEvent.objects.get(run=run, kind=SyncEvent.Kind.WARNING)
    assert warning.external_id == after["id"] and history[-7]["id"] in warning.reason
    missing = Decimal(lost["amount_cents"] * (1 if lost["side"] == "credit" else -1)) / 100
    assert Decimal(warning.data["difference"]) == missing
    assert "full resync" in warning.reason
    # A full resync brings the line back and the chain is whole again.
    run = sync_connection(conn.pk, trigger="button", full=True)
    assert run.created == 1
    assert not SyncEvent.objects.filter(run=run, kind=SyncEvent.Kind.WARNING).exists()


def test_a_record_qonto_sends_broken_is_a_failed_event_and_the_rest_syncs(api, conn):
    broken = api.transactions_of()[3]
    original = api._render_transaction

    def render(tx, includes, base_url):  # type: ignore[no-untyped-def]
        data = original(tx, includes, base_url)
        if data["id"] == broken["id"]:
            data["side"] = "sideways"
        return data

    api._render_transaction = render
    run = sync_connection(conn.pk, trigger="schedule")
    assert run.outcome == SyncRun.Outcome.PARTIAL and run.failed == 1
    event = SyncEvent.objects.get(run=run, kind=SyncEvent.Kind.FAILED)
    assert event.external_id == broken["id"] and "side 'sideways' is neither 'debit' nor 'credit'" in event.reason
    assert BankTransaction.objects.filter(connection=conn).count() == api.count_transactions() - 1


def test_attachment_bytes_are_fetched_on_demand_through_a_fresh_url(api, conn):
    sync_connection(conn.pk, trigger="schedule", streams=["bank_accounts", "transactions"])
    attachment = Attachment.objects.filter(connection=conn).first()
    api.clear_log()
    content = fetch_attachment_bytes(conn, attachment.external_id)
    assert content.startswith(b"%PDF") and len(content) == attachment.size
    download = [r for r in api.requests_made if r.path.startswith("/files/attachments/")][0]
    # The pre-signed URL is fetched without our credentials.
    assert "Authorization" not in download.headers
    # An invoice PDF (not embedded anywhere) gets its metadata row on the way.
    sync_connection(conn.pk, trigger="schedule", streams=["client_invoices"])
    invoice = Document.objects.filter(connection=conn).exclude(attachment_external_id="").first()
    assert fetch_attachment_bytes(conn, invoice.attachment_external_id).startswith(b"%PDF")
    assert Attachment.objects.filter(external_id=invoice.attachment_external_id).exists()


# --- writes through the outbox -------------------------------------------------------------------
@pytest.fixture
def media(settings, tmp_path):  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = tmp_path


def upload(conn: Connection, name: str, content: bytes, key: str) -> Push:
    return outbox.enqueue_push(
        conn, "supplier_invoice.upload", key, {"file_name": name}, file=ContentFile(content, name=name),
        source=("quickbooks.bill", "145"),
    )


PDF = b"%PDF-1.4\n% supplier invoice\n%%EOF\n"


def test_supplier_invoice_upload_is_verified_and_done(api, conn, media):
    before = len(api.supplier_invoices)
    push = outbox.send_push(upload(conn, "facture-145.pdf", PDF, "qbo-bill-145").pk)
    assert push.status == Push.Status.DONE, push.last_error
    assert push.remote_id in api.supplier_invoices and len(api.supplier_invoices) == before + 1
    created = api.supplier_invoices[push.remote_id]
    assert created["file_name"] == "facture-145.pdf" and created["status"] == "to_review"
    bulk = requests_to(api, "POST /v2/supplier_invoices/bulk")[0]
    assert b'name="supplier_invoices[][idempotency_key]"' in bulk.body and b"qbo-bill-145" in bulk.body


def test_a_per_file_error_is_a_permanent_failure_with_qontos_message(api, conn, media):
    push = outbox.send_push(upload(conn, "notes.txt", b"plain text", "qbo-bill-146").pk)
    assert push.status == Push.Status.DEAD
    assert push.last_error == "ValidationFailed: Qonto refused notes.txt: File type not supported [invalid_file]"
    assert push.attempts == 1


def test_an_upload_retried_after_a_503_is_never_posted_twice(api, conn, media):
    before = len(api.supplier_invoices)
    real = api.bulk_create_supplier_invoices
    answers = {"n": 0}

    def process_then_lose_the_answer(request):  # type: ignore[no-untyped-def]
        response = real(request)
        answers["n"] += 1
        if answers["n"] == 1:
            # Qonto stored the invoice, but the answer never reached us.
            return api.error(503, "service_unavailable", "upstream timeout")
        return response

    api.bulk_create_supplier_invoices = process_then_lose_the_answer
    push = outbox.send_push(upload(conn, "facture-147.pdf", PDF, "qbo-bill-147").pk)
    assert push.status == Push.Status.DONE and answers["n"] == 2
    assert len(api.supplier_invoices) == before + 1

    # Even when every retry of the first attempt fails, the next attempt finds the same invoice.
    api.bulk_create_supplier_invoices = real
    api.inject_fault(503, times=5, path_prefix="/v2/supplier_invoices/bulk")
    push = outbox.send_push(upload(conn, "facture-148.pdf", PDF, "qbo-bill-148").pk)
    assert push.status == Push.Status.FAILED and push.next_attempt_at > timezone.now()
    Push.objects.filter(pk=push.pk).update(next_attempt_at=timezone.now())
    push = outbox.send_push(push.pk)
    assert push.status == Push.Status.DONE and len(api.supplier_invoices) == before + 2
    # And enqueuing the same bill again is a no-op.
    assert upload(conn, "facture-148.pdf", PDF, "qbo-bill-148").pk == push.pk


def test_client_create_and_update_through_the_outbox(api, conn):
    fields = {
        "kind": "company", "name": "Imprimerie Morel SARL", "email": "compta@morel.example", "currency": "EUR",
        "locale": "fr", "billing_address": {"street_address": "2 rue Neuve", "city": "Lyon", "zip_code": "69002",
                                            "country_code": "FR"},
    }
    created = outbox.send_push(outbox.enqueue_push(conn, "client.create", "tribe-rel-9", fields).pk)
    assert created.status == Push.Status.DONE and api.clients[created.remote_id]["name"] == "Imprimerie Morel SARL"
    # A retry of the same push (same key) gets Qonto's first answer back, not a second client.
    count = len(api.clients)
    Push.objects.filter(pk=created.pk).update(status=Push.Status.PENDING)
    assert outbox.send_push(created.pk).remote_id == created.remote_id and len(api.clients) == count
    updated = outbox.send_push(
        outbox.enqueue_push(conn, "client.update", "tribe-rel-9-v2", {"client_id": created.remote_id,
                                                                       "email": "factures@morel.example"}).pk
    )
    assert updated.status == Push.Status.DONE and api.clients[created.remote_id]["email"] == "factures@morel.example"
    invalid = outbox.send_push(outbox.enqueue_push(conn, "client.create", "tribe-rel-10", {"kind": "company"}).pk)
    assert invalid.status == Push.Status.DEAD and "name can't be blank" in invalid.last_error


# --- webhooks: subscription, verification, processing ----------------------------------------------
def test_on_connect_subscribes_an_oauth_connection_with_an_encrypted_secret(api, org_a):
    connection = oauth_connection(api, org_a)
    connection.connector().on_connect()
    connection.refresh_from_db()
    state = connection.options["webhooks"]
    assert state["status"] == "subscribed"
    subscription = api.webhook_subscriptions[state["subscription_id"]]
    assert subscription["callback_url"] == (
        f"{settings.HUB_BASE_URL}/webhooks/qonto/{connection.webhook_endpoint}/"
    )
    assert subscription["secret"] == connection.webhook_secret and len(connection.webhook_secret) >= 32
    assert set(subscription["types"]) == {"v1/transactions", "v1/clients", "v1/client-invoices"}
    from tests.connectors.oauth_support import raw_column

    assert connection.webhook_secret not in raw_column(connection, "webhook_secret")

    connection.connector().on_disconnect()
    connection.refresh_from_db()
    assert not api.webhook_subscriptions and connection.webhook_secret == ""
    assert connection.options["webhooks"]["status"] == "unsubscribed"


def test_api_key_connections_record_that_they_cannot_subscribe(api, conn):
    conn.connector().on_connect()
    conn.refresh_from_db()
    assert conn.options["webhooks"]["status"] == "unavailable" and "OAuth" in conn.options["webhooks"]["reason"]
    assert not api.webhook_subscriptions and conn.webhook_secret == ""


def test_a_qonto_event_delivered_by_the_sandbox_syncs_the_new_transaction(api, org_a, client):
    connection = oauth_connection(api, org_a)
    sync_connection(connection.pk, trigger="connect")
    connection.connector().on_connect()
    connection.refresh_from_db()
    statuses: list[int] = []

    def transport(url: str, body: bytes, headers: dict[str, str]) -> int:
        extra = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items() if k != "Content-Type"}
        response = client.post(urlsplit(url).path, data=body, content_type="application/json", **extra)
        statuses.append(response.status_code)
        return response.status_code

    api.webhook_transport = transport
    new = api.add_transactions(1, status="pending")[0]
    deliveries = api.flush_webhooks()
    assert [d.status for d in deliveries] == [202]
    event = WebhookEvent.objects.get(connection=connection)
    assert event.status == WebhookEvent.Status.PROCESSED and event.event_type == "v1/transactions:created"
    assert BankTransaction.objects.filter(connection=connection, external_id=new["id"], status="pending").exists()
    # Qonto delivering the same event again (it retries and duplicates) changes nothing.
    again = api.deliver_webhook(deliveries[0].url, json.loads(deliveries[0].body), connection.webhook_secret)
    assert again.status == 200
    assert WebhookEvent.objects.filter(connection=connection, status="duplicate").count() == 1
    assert SyncRun.objects.filter(connection=connection, trigger="webhook").count() == 1


def test_signature_matches_the_documented_test_vector():
    from connectors.qonto.webhooks import signature_value

    assert signature_value("test-secret", b'{"test":"data"}', 1704110400) == (
        "t=1704110400,v1=56aff06dc227db80d6568a5070f912c601c31f20451745d257cbc0b5dfa93805"
    )


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "Missing X-Qonto-Signature"),
        ("v1=abc", "no usable t="),
        ("t=1704110400", "no v1="),
        ("t=1704110400,v1=" + "0" * 64, "does not match"),
    ],
)
def test_malformed_signature_headers_are_rejected_with_a_reason(conn, header, reason):
    conn.webhook_secret = "test-secret"
    check = conn.connector().verify_webhook({"X-Qonto-Signature": header} if header else {}, b'{"test":"data"}')
    assert not check.valid and reason in check.reason


def test_a_signed_event_without_id_or_type_is_malformed(conn):
    from connectors.base import ValidationFailed
    from connectors.qonto.webhooks import verify

    conn.webhook_secret = "test-secret"
    now = int(time.time())
    for body, words in ((b"[1]", "not a JSON object"), (b'{"type": "v1/transactions"}', "no id"),
                        (b'{"id": "e1"}', "no type")):
        with pytest.raises(ValidationFailed, match=words):
            verify(conn.connector(), {"x-qonto-signature": qonto_signature("test-secret", body, now)}, body)


def test_a_missing_staging_token_is_reported_as_such(sandbox_for, org_a, settings):
    api = sandbox_for("qonto", 7, staging_token="staging-123", **SMALL)
    connection = api_key_connection(api, org_a)
    run = sync_connection(connection.pk, trigger="schedule")
    assert run.outcome == SyncRun.Outcome.FAILED and "X-Qonto-Staging-Token" in run.error
    connection.refresh_from_db()
    assert connection.status == Connection.Status.NEEDS_ATTENTION
    # With the token configured, the same organisation syncs.
    settings.PROVIDERS = {**settings.PROVIDERS, "qonto": {**settings.PROVIDERS["qonto"], "staging_token": "staging-123"}}
    Connection.objects.filter(pk=connection.pk).update(status=Connection.Status.ACTIVE)
    assert sync_connection(connection.pk, trigger="schedule").outcome == SyncRun.Outcome.SUCCEEDED


@pytest.mark.django_db
def test_download_attachment_gives_the_file_with_its_name(sandbox_for, org_a):
    api = sandbox_for("qonto", transactions=20)
    conn = Connection.objects.create(
        organization=org_a,
        provider="qonto",
        auth_method="api_key",
        status="active",
        credentials={"login": api.organization_slug, "secret_key": api.secret_key},
    )
    sync_connection(conn.pk, trigger="button")
    with_file = next(t for t in BankTransaction.objects.filter(connection=conn) if t.attachment_ids)
    download = conn.connector().download_attachment(with_file.attachment_ids[0])
    assert download.content.startswith(b"%PDF")
    assert download.name == Attachment.objects.get(external_id=with_file.attachment_ids[0]).file_name
