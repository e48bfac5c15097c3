"""What the reconciliation engine proposed and what people decided, per organisation.

* ``MatchPolicy`` — one per organisation: the auto and review thresholds (Fellegi–Sunter's two
  cut-offs, see shared/reference/anchors.md §2.5). Owners edit it; the services read it.
* ``Match`` — one *subject* of one route (a Qonto bank transaction, a QuickBooks bill, a paid Qonto
  document) with the engine's ranked candidates and the current decision. The queue's columns
  (amount, currency, counterparty, occurred_on) are copied from the subject so the review-queue
  changelist needs no joins with 100,000 rows; ``version`` lets two reviewers race safely.
* ``MatchLink`` — what a posted match settles: one row per target with the allocated amount.
* ``Decision`` — the audit trail: every auto-post, approval, pin, rejection and unmatch, with
  who, when, why, the engine version and the candidate as it was shown.
* ``ReviewItem`` — proxy of ``Match`` restricted to the items waiting for a reviewer.

The rules (who may decide, which transitions are allowed, locking) live in
``reconciliation.services``; these classes only hold data and constraints.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from qontohub.tenancy import TenantModel, TenantQuerySet

MONEY = {"max_digits": 18, "decimal_places": 2}

DEFAULT_AUTO_THRESHOLD = 85
DEFAULT_REVIEW_THRESHOLD = 55


class MatchPolicy(TenantModel):
    """An organisation's confidence bands: auto-post from ``auto_threshold``, review from
    ``review_threshold``, refused below (candidates are kept)."""

    auto_threshold = models.PositiveSmallIntegerField(
        default=DEFAULT_AUTO_THRESHOLD,
        help_text="A best candidate at or above this confidence is posted without review.",
    )
    review_threshold = models.PositiveSmallIntegerField(
        default=DEFAULT_REVIEW_THRESHOLD,
        help_text="From this confidence up to the auto threshold, a reviewer decides.",
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = "match policy"
        verbose_name_plural = "match policies"
        constraints = [
            models.UniqueConstraint(fields=["organization"], name="uniq_match_policy_per_org"),
            models.CheckConstraint(
                condition=Q(review_threshold__gte=0)
                & Q(review_threshold__lt=models.F("auto_threshold"))
                & Q(auto_threshold__lte=100),
                name="match_policy_thresholds_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"auto ≥ {self.auto_threshold}, review ≥ {self.review_threshold}"


class MatchQuerySet(TenantQuerySet):
    def undecided(self) -> MatchQuerySet:
        return self.filter(status__in=Match.UNDECIDED)

    def posted(self) -> MatchQuerySet:
        return self.filter(status__in=Match.POSTED)


class Match(TenantModel):
    class Status(models.TextChoices):
        AUTO_POSTED = "auto_posted", "Auto-posted"
        PROPOSED = "proposed", "In review"
        REFUSED = "refused", "Refused (no confident candidate)"
        APPROVED = "approved", "Approved"
        PINNED = "pinned", "Pinned by hand"
        REJECTED = "rejected", "Rejected"
        UNMATCHED = "unmatched", "Unmatched"

    class Band(models.TextChoices):
        AUTO = "auto", "Auto"
        REVIEW = "review", "Review"
        REFUSED = "refused", "Refused"

    # Statuses the engine may overwrite when it scores the subject again; every other status
    # is a decision (by a person or by the auto band) and is never changed silently.
    UNDECIDED = frozenset({Status.PROPOSED, Status.REFUSED})
    # Statuses whose MatchLinks are live (the targets are settled by this subject).
    POSTED = frozenset({Status.AUTO_POSTED, Status.APPROVED, Status.PINNED})

    route = models.CharField(max_length=40, db_index=True)
    # The subject: exactly one of the two is set (check constraint below).
    transaction = models.ForeignKey(
        "connectors.BankTransaction", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    document = models.ForeignKey(
        "connectors.Document", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PROPOSED)
    band = models.CharField(max_length=8, choices=Band.choices)
    confidence = models.PositiveSmallIntegerField(default=0)
    # Up to five candidates, best first: {"target_ids": [pk…], "labels": [number…],
    # "allocations": ["12.50"…], "confidence": int, "features": [{"name", "score", "explanation"}]}.
    candidates = models.JSONField(default=list, blank=True)
    engine_version = models.CharField(max_length=40)
    fingerprint = models.CharField(
        max_length=64, help_text="Hash of the engine inputs that produced the candidates."
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True)
    # Optimistic concurrency: every decision increments it; a form posts the version it showed.
    version = models.PositiveIntegerField(default=1)
    # Denormalised from the subject so the queue lists, filters and sorts without joins.
    amount = models.DecimalField(**MONEY, help_text="Signed: negative for money going out.")
    currency = models.CharField(max_length=3)
    counterparty = models.CharField(max_length=300, blank=True)
    label = models.CharField(max_length=500, blank=True)
    occurred_on = models.DateField()
    scored_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = MatchQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "matches"
        ordering = ["-confidence", "-pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(transaction__isnull=False, document__isnull=True)
                | Q(transaction__isnull=True, document__isnull=False),
                name="match_exactly_one_subject",
            ),
            models.UniqueConstraint(
                fields=["route", "transaction"],
                condition=Q(transaction__isnull=False),
                name="uniq_match_route_transaction",
            ),
            models.UniqueConstraint(
                fields=["route", "document"],
                condition=Q(document__isnull=False),
                name="uniq_match_route_document",
            ),
            models.CheckConstraint(condition=Q(confidence__lte=100), name="match_confidence_0_100"),
        ]
        indexes = [
            # The queue: one status, best first (the changelist's ORDER BY).
            models.Index(fields=["status", "-confidence", "-id"], name="match_queue"),
            models.Index(fields=["organization", "status", "-confidence"], name="match_org_queue"),
            models.Index(fields=["organization", "route", "status"], name="match_org_route"),
        ]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} {self.counterparty or self.label}".strip()

    @property
    def subject_id(self) -> int:
        return self.transaction_id if self.transaction_id is not None else self.document_id  # type: ignore[return-value]

    @property
    def is_decided(self) -> bool:
        return self.status not in self.UNDECIDED

    def age_days(self, today: Any = None) -> int:
        today = today or timezone.localdate()
        return (today - self.occurred_on).days

    def best_candidate(self) -> dict[str, Any] | None:
        return self.candidates[0] if self.candidates else None


class ReviewItemManager(models.Manager.from_queryset(MatchQuerySet)):  # type: ignore[misc]
    def get_queryset(self) -> MatchQuerySet:
        return super().get_queryset().filter(status=Match.Status.PROPOSED)


class ReviewItem(Match):
    """A match waiting for a reviewer (status "in review")."""

    objects = ReviewItemManager()

    class Meta:
        proxy = True
        verbose_name = "review item"
        verbose_name_plural = "review queue"
        ordering = ["-confidence", "-pk"]


class MatchLink(TenantModel):
    """One pair settled by a posted match, with the amount allocated to it.

    A link names the records it ties, whichever side was the subject: on the payment routes
    (Qonto transactions ↔ documents, in either direction) both ``transaction`` and ``document``
    are set, so "is this document settled?" and "is this transaction used?" are single-table
    sums; on ``quickbooks_bills`` only ``document`` (the Qonto supplier invoice) is set. Links
    exist only while their match is posted: unmatching deletes them.
    """

    match = models.ForeignKey(Match, on_delete=models.CASCADE, related_name="links")
    # Copied from the match so open amounts are computed without a join.
    route = models.CharField(max_length=40)
    document = models.ForeignKey(
        "connectors.Document", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    transaction = models.ForeignKey(
        "connectors.BankTransaction", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    allocated_amount = models.DecimalField(**MONEY, default=Decimal("0"))
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(transaction__isnull=False) | Q(document__isnull=False),
                name="match_link_has_a_target",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "route", "document"], name="match_link_document"),
            models.Index(fields=["organization", "route", "transaction"], name="match_link_transaction"),
        ]

    def __str__(self) -> str:
        return f"match {self.match_id}: tx {self.transaction_id} / doc {self.document_id} ({self.allocated_amount})"


class Decision(TenantModel):
    """One line of the audit trail; never updated, never deleted by the hub."""

    class Action(models.TextChoices):
        AUTO = "auto", "Auto-posted"
        APPROVE = "approve", "Approved"
        PIN = "pin", "Pinned"
        REJECT = "reject", "Rejected"
        UNMATCH = "unmatch", "Unmatched"

    match = models.ForeignKey(Match, on_delete=models.CASCADE, related_name="decisions")
    action = models.CharField(max_length=8, choices=Action.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(default=timezone.now, db_index=True)
    note = models.TextField(blank=True)
    engine_version = models.CharField(max_length=40)
    confidence = models.PositiveSmallIntegerField(default=0)
    # The candidate as the decider saw it (or the pinned targets); self-describing on its own.
    candidate = models.JSONField(default=dict, blank=True)
    from_status = models.CharField(max_length=12, blank=True)
    to_status = models.CharField(max_length=12, blank=True)

    class Meta:
        ordering = ["-at", "-pk"]

    def __str__(self) -> str:
        who = self.user or "engine"
        return f"{self.get_action_display()} by {who} at {self.at:%Y-%m-%d %H:%M}"
