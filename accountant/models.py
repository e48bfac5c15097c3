"""The accountant hub's books: client files, their reference data, entries and exports.

* ``ClientFile`` ties one client ``Organization`` to its file ("dossier", a company) in the
  firm's accounting software, reached through the firm's ``Connection`` (organization null,
  firm set). It carries the integration's switches: status, push frequency, weekly chart sync.
* ``Account``, ``Journal`` and ``FiscalYear`` are the file's reference data as pulled from the
  software (``remote_id`` = the software's id, a string).
* ``JournalEntry`` + ``EntryLine`` are the entries the hub builds from validated Qonto documents
  and transactions, checked against the software's rules, then pushed or exported.
* ``Export`` records every FEC / CSV / XLSX file produced.

Tenancy: every row is a ``TenantModel`` owned by the client organisation (denormalised from the
client file), so ``visible_to(user)`` gives it to the organisation's members and to the members
of its firm (``qontohub.tenancy.organization_ids_for``), and to nobody else. A client file's
``firm`` must be its organisation's firm (checked in ``clean`` and by the services); that is what
keeps another firm's accountant out.

Why balance is guaranteed twice (house rule 7, "unique constraints, not hopeful checks"):

1. ``JournalEntry.total_debit`` / ``total_credit`` are denormalised sums of the lines and a
   ``CheckConstraint`` requires them equal — on every database. ``services.save_entry`` writes
   the lines and the totals in one transaction, after checking the lines.
2. On PostgreSQL a *deferred constraint trigger* (migration ``0002``) re-adds the lines at commit
   and refuses the transaction if they differ from the entry's totals, so a stray
   ``EntryLine.objects.create`` outside the service cannot leave an unbalanced entry. SQLite has
   no deferrable triggers (a per-row trigger would refuse the first line of every entry), so
   there the service check is the guard and the totals constraint is the floor.

We chose totals + constraint over a trigger alone because the constraint works on both engines
and makes "balanced" queryable (lists and the REST API read the totals without summing lines).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from qontohub.tenancy import TenantModel

MONEY = {"max_digits": 18, "decimal_places": 2}
ZERO = Decimal("0.00")


class ClientFile(TenantModel):
    """One client organisation's file in the firm's accounting software."""

    class Status(models.TextChoices):
        INACTIVE = "inactive", "Inactive"
        ACTIVE = "active", "Active"
        ERROR = "error", "Error"

    class Frequency(models.TextChoices):
        REALTIME = "realtime", "Real time (right after validation)"
        DAILY = "daily", "Daily (in the evening)"
        MANUAL = "manual", "Manual (button only)"

    firm = models.ForeignKey("qontohub.Firm", on_delete=models.CASCADE, related_name="client_files")
    connection = models.ForeignKey(
        "connectors.Connection",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="client_files",
        help_text="The firm's accounting-software connection.",
    )
    software = models.CharField(max_length=40, default="pennylane")
    remote_company_id = models.CharField(max_length=100, blank=True)
    remote_company_name = models.CharField(max_length=300, blank=True)
    remote_siren = models.CharField(max_length=20, blank=True)
    remote_client_code = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.INACTIVE, db_index=True)
    sync_frequency = models.CharField(max_length=10, choices=Frequency.choices, default=Frequency.DAILY)
    weekly_account_sync = models.BooleanField(
        default=True, help_text="Pull new accounts and journals from the software every week."
    )
    associated_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    reference_synced_at = models.DateTimeField(null=True, blank=True)
    # The local date of the last evening push, so the hourly check pushes a daily file once a day.
    daily_pushed_on = models.DateField(null=True, blank=True)
    last_push_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization__name", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["organization"], name="uniq_client_file_per_org"),
            # One software company can back one client file only: two files pushing into the
            # same books would double every entry.
            models.UniqueConstraint(
                fields=["connection", "remote_company_id"],
                condition=~Q(remote_company_id=""),
                name="uniq_client_file_remote_company",
            ),
        ]

    def __str__(self) -> str:
        remote = f" ↔ {self.remote_company_name}" if self.remote_company_name else ""
        return f"{self.organization}{remote}"

    def clean(self) -> None:
        if self.organization_id and self.firm_id and self.organization.firm_id != self.firm_id:
            raise ValidationError("A client file belongs to the firm its organisation is a client of.")
        if self.connection_id and self.connection.firm_id != self.firm_id:
            raise ValidationError("The connection must be this firm's accounting-software connection.")

    @property
    def is_associated(self) -> bool:
        return bool(self.remote_company_id)


class ClientFileChild(TenantModel):
    """A row of a client file; its organisation is the file's (set by ``save``)."""

    client_file = models.ForeignKey(ClientFile, on_delete=models.CASCADE, related_name="+")

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.client_file_id and not self.organization_id:
            self.organization_id = self.client_file.organization_id
        super().save(*args, **kwargs)


class Account(ClientFileChild):
    """A ledger account of a file: a general account or a supplier / customer auxiliary."""

    class Kind(models.TextChoices):
        GENERAL = "general", "General"
        SUPPLIER = "supplier", "Supplier (401 auxiliary)"
        CUSTOMER = "customer", "Customer (411 auxiliary)"

    client_file = models.ForeignKey(ClientFile, on_delete=models.CASCADE, related_name="accounts")
    number = models.CharField(max_length=40)
    label = models.CharField(max_length=300, blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.GENERAL)
    enabled = models.BooleanField(default=True)
    remote_id = models.CharField(max_length=100, blank=True)
    raw = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["client_file_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["client_file", "number"], name="uniq_account_number"),
            models.UniqueConstraint(
                fields=["client_file", "remote_id"], condition=~Q(remote_id=""), name="uniq_account_remote"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.number} {self.label}".strip()


class Journal(ClientFileChild):
    class Kind(models.TextChoices):
        PURCHASE = "purchase", "Purchases"
        SALE = "sale", "Sales"
        BANK = "bank", "Bank"
        EXPENSE_REPORT = "expense_report", "Expense reports"
        MISC = "misc", "Miscellaneous"

    client_file = models.ForeignKey(ClientFile, on_delete=models.CASCADE, related_name="journals")
    code = models.CharField(max_length=10)
    label = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.MISC)
    remote_id = models.CharField(max_length=100, blank=True)
    raw = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["client_file_id", "code"]
        constraints = [models.UniqueConstraint(fields=["client_file", "code"], name="uniq_journal_code")]

    def __str__(self) -> str:
        return f"{self.code} {self.label}".strip()


class FiscalYear(ClientFileChild):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    client_file = models.ForeignKey(ClientFile, on_delete=models.CASCADE, related_name="fiscal_years")
    start = models.DateField()
    end = models.DateField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    remote_id = models.CharField(max_length=100, blank=True)
    remote_status = models.CharField(max_length=20, blank=True, help_text="The software's own word.")

    class Meta:
        ordering = ["client_file_id", "start"]
        constraints = [
            models.UniqueConstraint(fields=["client_file", "start"], name="uniq_fiscal_year_start"),
            models.CheckConstraint(condition=Q(end__gte=F("start")), name="fiscal_year_ends_after_start"),
        ]

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d} → {self.end:%Y-%m-%d} ({self.status})"


class JournalEntry(ClientFileChild):
    """One balanced entry (écriture); see the module docstring for how balance is guaranteed."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        VALIDATED = "validated", "Validated (ready to push)"
        PUSHED = "pushed", "Pushed"
        BLOCKED = "blocked", "Blocked by a rule"
        ERROR = "error", "Push failed"

    class Kind(models.TextChoices):
        PURCHASE = "purchase", "Purchase"
        SALE = "sale", "Sale"
        EXPENSE_REPORT = "expense_report", "Expense report"
        BANK = "bank", "Bank"
        MISC = "misc", "Miscellaneous"

    client_file = models.ForeignKey(ClientFile, on_delete=models.CASCADE, related_name="entries")
    journal = models.ForeignKey(Journal, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.MISC)
    date = models.DateField(db_index=True)
    label = models.CharField(max_length=500)
    piece_number = models.CharField(
        max_length=60, help_text="Deterministic: the same source always gives the same number."
    )
    reference = models.CharField(max_length=100, blank=True, help_text="The document's own number.")
    due_date = models.DateField(null=True, blank=True)
    currency = models.CharField(max_length=3, default="EUR")
    source_document = models.ForeignKey(
        "connectors.Document", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source_transaction = models.ForeignKey(
        "connectors.BankTransaction", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT, db_index=True)
    violations = models.JSONField(
        default=list, blank=True, help_text="Rules of the target software this entry breaks, in words."
    )
    supporting_document_ref = models.CharField(max_length=300, blank=True)
    supporting_file = models.FileField(upload_to="accountant/pieces/%Y/%m/", blank=True)
    total_debit = models.DecimalField(**MONEY, default=ZERO)
    total_credit = models.DecimalField(**MONEY, default=ZERO)
    validated_at = models.DateTimeField(null=True, blank=True)
    # The outbox row of the current push attempt; bumping ``push_revision`` after a dead push
    # gives the corrected entry a new idempotency key (the software is still checked for the
    # piece number before creating, so a revision never duplicates).
    push = models.ForeignKey(
        "connectors.Push", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    push_revision = models.PositiveIntegerField(default=0)
    pushed_at = models.DateTimeField(null=True, blank=True)
    push_error = models.TextField(blank=True)
    remote_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["client_file_id", "date", "pk"]
        verbose_name_plural = "journal entries"
        constraints = [
            models.UniqueConstraint(fields=["client_file", "piece_number"], name="uniq_entry_piece_number"),
            models.UniqueConstraint(
                fields=["client_file", "source_document"],
                condition=Q(source_document__isnull=False),
                name="uniq_entry_source_document",
            ),
            models.UniqueConstraint(
                fields=["client_file", "source_transaction"],
                condition=Q(source_transaction__isnull=False),
                name="uniq_entry_source_transaction",
            ),
            models.CheckConstraint(condition=Q(total_debit=F("total_credit")), name="entry_balanced"),
        ]
        indexes = [models.Index(fields=["client_file", "status"])]

    def __str__(self) -> str:
        return f"{self.piece_number} {self.label[:60]}"

    @property
    def is_balanced(self) -> bool:
        return self.total_debit == self.total_credit


class EntryLine(models.Model):
    """One debit or one credit of an entry: exactly one side is positive (checked by the DB)."""

    entry = models.ForeignKey(JournalEntry, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField(default=0)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+")
    aux_account = models.ForeignKey(Account, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    label = models.CharField(max_length=500, blank=True)
    debit = models.DecimalField(**MONEY, default=ZERO)
    credit = models.DecimalField(**MONEY, default=ZERO)

    class Meta:
        ordering = ["entry_id", "position", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(debit__gt=0) & Q(credit=0)) | (Q(credit__gt=0) & Q(debit=0)),
                name="entry_line_one_positive_side",
            ),
        ]

    def __str__(self) -> str:
        side = f"D {self.debit}" if self.debit else f"C {self.credit}"
        return f"{self.account.number} {side}"


class Export(ClientFileChild):
    """A file produced from a client file's entries or chart (FEC, CSV, XLSX)."""

    class Kind(models.TextChoices):
        FEC = "fec", "FEC"
        CSV = "csv", "CSV"
        XLSX = "xlsx", "XLSX"

    client_file = models.ForeignKey(ClientFile, on_delete=models.CASCADE, related_name="exports")
    kind = models.CharField(max_length=5, choices=Kind.choices)
    what = models.CharField(max_length=20, default="entries", help_text="entries or accounts")
    file = models.FileField(upload_to="accountant/exports/%Y/%m/")
    fiscal_year = models.ForeignKey(FiscalYear, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    lines = models.PositiveIntegerField(default=0)
    violations = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        "qontohub.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.what} of {self.client_file} ({self.created_at:%Y-%m-%d})"
