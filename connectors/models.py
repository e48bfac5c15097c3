"""Connections to providers, their sync bookkeeping, and the mirror of what they hold.

Bookkeeping: ``Connection`` (one authorised link to one provider account), ``SyncCursor`` (where
each stream stands), ``SyncRun`` and ``SyncEvent`` (what each sync did, for support staff),
``WebhookEvent`` (every inbound webhook, kept even when rejected), ``Push`` (the outbox of writes
to providers), ``RecordLink`` (what a source record became elsewhere: the second line of dedup)
and ``ValueMapping`` (units, VAT groups, accounts that differ between systems).

Mirror: ``Counterparty``, ``BankAccount``, ``BankTransaction``, ``Document`` (+ ``DocumentLine``),
``Attachment`` and ``RemoteRecord`` keep each provider record's raw payload and promote the
fields the hub queries to typed columns (Decimal money with its currency, aware datetimes).
A mirror row is unique on ``(connection, stream, external_id)``: providers such as QuickBooks
number each entity type separately, so the stream is part of the natural key.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, ClassVar

from django.db import models
from django.db.models import Q
from django.utils import timezone

from qontohub.crypto import EncryptedJSONField, EncryptedTextField
from qontohub.tenancy import TenantModel, TenantQuerySet

MONEY = {"max_digits": 18, "decimal_places": 2}


class ConnectionQuerySet(TenantQuerySet):
    """Connections belong to an organisation, or (accounting software) to a firm."""

    def active(self) -> ConnectionQuerySet:
        return self.filter(status=Connection.Status.ACTIVE)

    def visible_to(self, user: Any) -> ConnectionQuerySet:
        from qontohub.tenancy import organization_ids_for, sees_everything

        if sees_everything(user):
            return self.all()
        if not getattr(user, "is_authenticated", False) or not user.is_active:
            return self.none()
        firm_ids = list(user.firm_memberships.values_list("firm_id", flat=True))
        return self.filter(Q(organization__in=organization_ids_for(user)) | Q(firm__in=firm_ids))


class Connection(TenantModel):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACTIVE = "active", "Active"
        NEEDS_ATTENTION = "needs_attention", "Needs attention"
        DISCONNECTED = "disconnected", "Disconnected"

    class AuthMethod(models.TextChoices):
        OAUTH2 = "oauth2", "OAuth 2.0"
        API_KEY = "api_key", "API key"

    # An organisation's own connection (Qonto, QuickBooks…), or a firm's (its accounting
    # software, shared by the firm's client files): exactly one of the two is set.
    organization = models.ForeignKey(
        "qontohub.Organization", null=True, blank=True, on_delete=models.CASCADE, related_name="connections"
    )
    firm = models.ForeignKey(
        "qontohub.Firm", null=True, blank=True, on_delete=models.CASCADE, related_name="connections"
    )
    provider = models.CharField(max_length=40, db_index=True)
    auth_method = models.CharField(max_length=10, choices=AuthMethod.choices, default=AuthMethod.OAUTH2)
    external_account_id = models.CharField(max_length=200, blank=True)
    display_name = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    # Tokens or API key, one encrypted JSON document; never shown in forms, logs or the API.
    credentials = EncryptedJSONField(default=dict, blank=True)
    scopes = models.JSONField(default=list, blank=True)
    token_expires_at = models.DateTimeField(null=True, blank=True)
    # Non-secret provider settings: environment, realm id, history start date, mapping overrides.
    options = models.JSONField(default=dict, blank=True)
    webhook_endpoint = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    webhook_secret = EncryptedTextField(blank=True, default="")
    # Lease: one sync per connection at a time, across every worker of every cluster.
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_sync_at = models.DateTimeField(null=True, blank=True)
    connected_at = models.DateTimeField(null=True, blank=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        "qontohub.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ConnectionQuerySet.as_manager()

    class Meta:
        ordering = ["organization_id", "provider", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "provider", "external_account_id"],
                condition=~Q(external_account_id=""),
                name="uniq_connection_account",
            ),
            models.CheckConstraint(
                condition=Q(organization__isnull=False, firm__isnull=True)
                | Q(organization__isnull=True, firm__isnull=False),
                name="connection_owned_by_org_or_firm",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider}: {self.display_name or self.external_account_id or 'pending'}"

    def connector(self) -> Any:
        from connectors.registry import connector_class

        return connector_class(self.provider)(self)

    def set_active(self, external_id: str, display_name: str) -> None:
        """Connected now to the account ``external_id`` (not saved: the caller saves with the
        credentials it sets)."""
        self.external_account_id = external_id
        self.display_name = display_name[:200]
        self.status = self.Status.ACTIVE
        self.connected_at = timezone.now()
        self.disconnected_at = None
        self.last_error = ""
        self.last_error_at = None

    def mark_needs_attention(self, reason: str) -> None:
        self.status = self.Status.NEEDS_ATTENTION
        self.last_error = reason
        self.last_error_at = timezone.now()
        self.save(update_fields=["status", "last_error", "last_error_at", "updated_at"])


class SyncCursor(models.Model):
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="cursors")
    stream = models.CharField(max_length=60)
    # Incremental marker of the last completed sync of this stream (e.g. an updated_at).
    value = models.CharField(max_length=200, blank=True)
    # Position inside an interrupted run (page number, window…); empty when the last run finished.
    position = models.JSONField(default=dict, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "stream"], name="uniq_cursor_stream")
        ]

    def __str__(self) -> str:
        return f"{self.connection_id}/{self.stream} @ {self.value or '—'}"


class SyncRun(TenantModel):
    #: What a run reports to support staff, in the admin and the REST API alike.
    REPORT_FIELDS: ClassVar[tuple[str, ...]] = (
        "organization",
        "connection",
        "trigger",
        "full",
        "streams",
        "current_stream",
        "outcome",
        "read",
        "created",
        "updated",
        "unchanged",
        "failed",
        "requests",
        "retries",
        "started_at",
        "finished_at",
        "duration_ms",
        "error",
    )

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        BUTTON = "button", "Button"
        WEBHOOK = "webhook", "Webhook"
        CONNECT = "connect", "Connect"

    class Outcome(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        PARTIAL = "partial", "Succeeded with failed records"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped (another sync was running)"

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="runs")
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    full = models.BooleanField(default=False, help_text="Full resync: cursors were ignored.")
    streams = models.JSONField(default=list, blank=True)
    current_stream = models.CharField(max_length=60, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.RUNNING)
    read = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    requests = models.PositiveIntegerField(default=0)
    retries = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-pk"]
        indexes = [models.Index(fields=["organization", "-started_at"])]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.connection} ({self.outcome})"

    @property
    def changed(self) -> int:
        """New plus changed records: non-zero means downstream work (reconciliation) is due."""
        return self.created + self.updated


class SyncEvent(TenantModel):
    class Kind(models.TextChoices):
        CREATED = "created", "Created"
        UPDATED = "updated", "Updated"
        FAILED = "failed", "Failed"
        WARNING = "warning", "Warning"

    run = models.ForeignKey(SyncRun, on_delete=models.CASCADE, related_name="events")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    stream = models.CharField(max_length=60, blank=True)
    external_id = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    reason = models.TextField(help_text="What happened, in words a support person can act on.")
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.kind} {self.stream}/{self.external_id}: {self.reason[:60]}"


class WebhookEvent(TenantModel):
    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        REJECTED = "rejected", "Rejected (signature)"
        DUPLICATE = "duplicate", "Duplicate"
        INVALID = "invalid", "Invalid payload"
        PROCESSED = "processed", "Processed"
        FAILED = "failed", "Processing failed"

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="webhook_events")
    provider = models.CharField(max_length=40)
    event_id = models.CharField(max_length=200, blank=True)
    event_type = models.CharField(max_length=100, blank=True)
    # Streams the event touches, decided at verification; processing and replays re-read them.
    streams = models.JSONField(default=list, blank=True)
    headers = models.JSONField(default=dict, blank=True)
    body = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    reason = models.TextField(blank=True)
    # True once verified and first of its event id; the partial unique constraint de-duplicates.
    accepted = models.BooleanField(default=False)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    run = models.ForeignKey(SyncRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-received_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "event_id"],
                condition=Q(accepted=True),
                name="uniq_accepted_webhook_event",
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.event_type or 'event'} {self.event_id} ({self.status})"


class Push(TenantModel):
    """One write to a provider, recorded before it is sent and done only once verified."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed (will retry)"
        DEAD = "dead", "Failed permanently"
        CANCELLED = "cancelled", "Cancelled"

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="pushes")
    action = models.CharField(max_length=60, help_text="What to do, e.g. supplier_invoice.upload")
    idempotency_key = models.CharField(max_length=100)
    payload = models.JSONField(default=dict, blank=True)
    # A file to upload with the push (PDF), kept until the push is done.
    file = models.FileField(upload_to="outbox/%Y/%m/", blank=True)
    source_type = models.CharField(max_length=60, blank=True)
    source_id = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)
    last_error = models.TextField(blank=True)
    response = models.JSONField(default=dict, blank=True)
    remote_id = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "idempotency_key"], name="uniq_push_idempotency_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.idempotency_key} ({self.status})"


class RecordLink(TenantModel):
    """A source record and what it became in another system (bill ↔ supplier invoice…)."""

    source_provider = models.CharField(max_length=40)
    source_type = models.CharField(max_length=60)
    source_id = models.CharField(max_length=200)
    target_provider = models.CharField(max_length=40)
    target_type = models.CharField(max_length=60)
    target_id = models.CharField(max_length=200, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "source_provider", "source_type", "source_id", "target_provider", "target_type"],
                name="uniq_record_link",
            )
        ]

    def __str__(self) -> str:
        return f"{self.source_provider}:{self.source_type}:{self.source_id} → {self.target_provider}:{self.target_id}"


class ValueMapping(TenantModel):
    """A value that differs between two systems: a unit, a VAT group, an account number."""

    class Kind(models.TextChoices):
        UNIT = "unit", "Unit"
        VAT_GROUP = "vat_group", "VAT group"
        ACCOUNT = "account", "Ledger account"
        FIELD = "field", "Field mapping override"

    connection = models.ForeignKey(
        Connection, null=True, blank=True, on_delete=models.CASCADE, related_name="mappings"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    source_value = models.CharField(max_length=200)
    target_value = models.CharField(max_length=200)
    note = models.CharField(max_length=200, blank=True)
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "connection", "kind", "source_value"], name="uniq_value_mapping"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.source_value} → {self.target_value}"


# --- Mirror -----------------------------------------------------------------------------------
class MirrorRecord(TenantModel):
    """What every mirrored provider record has: its key, raw payload and change fingerprint."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    stream = models.CharField(max_length=60)
    external_id = models.CharField(max_length=200)
    raw = models.JSONField(default=dict)
    fingerprint = models.CharField(max_length=64)
    remote_updated_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True

    @classmethod
    def natural_key_constraint(cls, name: str) -> models.UniqueConstraint:
        return models.UniqueConstraint(fields=["connection", "stream", "external_id"], name=name)


class Counterparty(MirrorRecord):
    """A customer, client, supplier or vendor as a provider knows it."""

    class Role(models.TextChoices):
        CUSTOMER = "customer", "Customer"
        SUPPLIER = "supplier", "Supplier"

    role = models.CharField(max_length=10, choices=Role.choices)
    name = models.CharField(max_length=300)
    legal_name = models.CharField(max_length=300, blank=True)
    tax_id = models.CharField(max_length=50, blank=True)
    vat_number = models.CharField(max_length=50, blank=True)
    iban = models.CharField(max_length=50, blank=True)
    email = models.CharField(max_length=254, blank=True)
    website = models.CharField(max_length=300, blank=True)
    country = models.CharField(max_length=2, blank=True)
    currency = models.CharField(max_length=3, blank=True)

    class Meta:
        constraints = [MirrorRecord.natural_key_constraint("uniq_counterparty")]
        indexes = [models.Index(fields=["organization", "name"])]

    def __str__(self) -> str:
        return self.name


class BankAccount(MirrorRecord):
    name = models.CharField(max_length=200)
    iban = models.CharField(max_length=50, blank=True)
    bic = models.CharField(max_length=20, blank=True)
    currency = models.CharField(max_length=3, default="EUR")
    balance = models.DecimalField(**MONEY, null=True, blank=True)
    authorized_balance = models.DecimalField(**MONEY, null=True, blank=True)
    status = models.CharField(max_length=20, blank=True)

    class Meta:
        constraints = [MirrorRecord.natural_key_constraint("uniq_bank_account")]

    def __str__(self) -> str:
        return f"{self.name} ({self.iban[-4:] if self.iban else self.external_id})"


class BankTransaction(MirrorRecord):
    class Side(models.TextChoices):
        DEBIT = "debit", "Debit"
        CREDIT = "credit", "Credit"

    # The busiest mirror table (a first sync writes tens of thousands of rows): no index that
    # another one already covers. The natural key starts with the connection, the period index
    # with the organisation, and the account index serves the running-balance check.
    organization = models.ForeignKey("qontohub.Organization", on_delete=models.CASCADE, related_name="+", db_index=False)
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+", db_index=False)
    bank_account_external_id = models.CharField(max_length=200)
    amount = models.DecimalField(**MONEY, help_text="Signed: negative for a debit.")
    currency = models.CharField(max_length=3)
    local_amount = models.DecimalField(**MONEY, null=True, blank=True)
    local_currency = models.CharField(max_length=3, blank=True)
    side = models.CharField(max_length=6, choices=Side.choices)
    status = models.CharField(max_length=20, help_text="pending, completed, declined, reversed")
    counterparty_name = models.CharField(max_length=300, blank=True)
    label = models.CharField(max_length=500, blank=True)
    reference = models.CharField(max_length=300, blank=True)
    operation_type = models.CharField(max_length=40, blank=True)
    emitted_at = models.DateTimeField(null=True, blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)
    balance_after = models.DecimalField(**MONEY, null=True, blank=True)
    attachment_ids = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [MirrorRecord.natural_key_constraint("uniq_bank_transaction")]
        indexes = [
            models.Index(fields=["organization", "settled_at"]),
            models.Index(fields=["connection", "bank_account_external_id", "settled_at"], name="bank_txn_account_settled"),
        ]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} {self.counterparty_name or self.label}"


class Document(MirrorRecord):
    """An invoice-like document: client or supplier invoice, credit note, bill, purchase order."""

    class Kind(models.TextChoices):
        CLIENT_INVOICE = "client_invoice", "Client invoice"
        SUPPLIER_INVOICE = "supplier_invoice", "Supplier invoice"
        CREDIT_NOTE = "credit_note", "Credit note"
        BILL = "bill", "Bill"
        PURCHASE_ORDER = "purchase_order", "Purchase order"
        EXPENSE = "expense", "Expense"

    kind = models.CharField(max_length=20, choices=Kind.choices, db_index=True)
    number = models.CharField(max_length=100, blank=True, db_index=True)
    counterparty_external_id = models.CharField(max_length=200, blank=True)
    counterparty_name = models.CharField(max_length=300, blank=True)
    counterparty_tax_id = models.CharField(max_length=50, blank=True)
    counterparty_iban = models.CharField(max_length=50, blank=True)
    total_amount = models.DecimalField(**MONEY, default=Decimal("0"))
    tax_amount = models.DecimalField(**MONEY, null=True, blank=True)
    currency = models.CharField(max_length=3, default="EUR")
    issue_date = models.DateField(null=True, blank=True)
    due_date = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=30, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    attachment_external_id = models.CharField(max_length=200, blank=True)
    # Which mapping version produced the promoted columns (mapping overrides apply forward).
    mapping_version = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [MirrorRecord.natural_key_constraint("uniq_document")]
        indexes = [models.Index(fields=["organization", "kind", "status"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.number or self.external_id}"


class DocumentLine(models.Model):
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField(default=0)
    description = models.CharField(max_length=500, blank=True)
    quantity = models.DecimalField(max_digits=18, decimal_places=4, default=Decimal("1"))
    unit = models.CharField(max_length=30, blank=True)
    unit_price = models.DecimalField(max_digits=18, decimal_places=4, null=True, blank=True)
    amount = models.DecimalField(**MONEY, default=Decimal("0"))
    vat_rate = models.DecimalField(max_digits=6, decimal_places=3, null=True, blank=True)
    account_code = models.CharField(max_length=30, blank=True)

    class Meta:
        ordering = ["document_id", "position"]

    def __str__(self) -> str:
        return f"{self.description or 'line'} {self.amount}"


class Attachment(MirrorRecord):
    """A file's metadata; the bytes are fetched on demand (provider URLs are short-lived)."""

    # A first Qonto sync writes a receipt for every fourth transaction: no index on the
    # connection alone, which the natural key (connection, stream, external id) starts with.
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+", db_index=False)
    file_name = models.CharField(max_length=300, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    size = models.PositiveBigIntegerField(null=True, blank=True)
    parent_external_id = models.CharField(max_length=200, blank=True, db_index=True)
    # The bytes, kept once pulled for the tax advisers (reconciliation.tax_pull): the provider's
    # URLs expire, and the accountant needs the PDF long after the sync that listed it.
    file = models.FileField(upload_to="attachments/%Y/%m/", blank=True)

    class Meta:
        constraints = [MirrorRecord.natural_key_constraint("uniq_attachment")]


class RemoteRecord(MirrorRecord):
    """Records the hub mirrors without promoting columns (payments, accounts…)."""

    class Meta:
        constraints = [MirrorRecord.natural_key_constraint("uniq_remote_record")]
