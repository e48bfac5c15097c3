"""Core models: people, firms, organisations, memberships, API tokens and the heartbeat."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.utils import timezone

from qontohub.tenancy import FirmRole, Role, TenantQuerySet, organization_ids_for, sees_everything


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra: Any) -> User:
        if not email:
            raise ValueError("A user needs an email address: it is how they log in.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.update(is_staff=True, is_superuser=True)
        return self._create_user(email, password, **extra)


class User(AbstractUser):
    """A person who logs in by e-mail address.

    Every user is ``is_staff`` because the admin is the hub's main screen; what they see there is
    decided by their memberships, not by Django's model permissions.
    """

    username = None  # type: ignore[assignment]
    email = models.EmailField("email address", unique=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    objects = UserManager()  # type: ignore[misc]

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email


class Firm(models.Model):
    """An accounting practice; it holds the accounting-software connection for its clients."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class FirmMembership(models.Model):
    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="firm_memberships")
    role = models.CharField(max_length=20, choices=FirmRole.choices, default=FirmRole.ACCOUNTANT)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["firm", "user"], name="uniq_firm_member")]

    def __str__(self) -> str:
        return f"{self.user} @ {self.firm} ({self.role})"


class OrganizationQuerySet(models.QuerySet):
    def visible_to(self, user: Any) -> OrganizationQuerySet:
        if sees_everything(user):
            return self.all()
        return self.filter(pk__in=organization_ids_for(user))

    def with_role(self, user: Any, roles: frozenset[str]) -> OrganizationQuerySet:
        if getattr(user, "is_superuser", False):
            return self.all()
        return self.filter(pk__in=organization_ids_for(user, roles))


class Organization(models.Model):
    """One company's books, usually one Qonto organisation; the unit of tenancy."""

    name = models.CharField(max_length=200)
    qonto_slug = models.CharField(
        max_length=100, blank=True, help_text="The organisation's slug in Qonto (e.g. acme-1234)."
    )
    country = models.CharField(max_length=2, default="FR", help_text="ISO 3166-1 alpha-2 code.")
    time_zone = models.CharField(max_length=64, default="Europe/Paris")
    siren = models.CharField(max_length=9, blank=True, help_text="French company number (9 digits).")
    firm = models.ForeignKey(
        Firm, null=True, blank=True, on_delete=models.SET_NULL, related_name="organizations"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrganizationQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def organization_id(self) -> int:
        """Lets tenant checks treat an organisation like any row it owns."""
        return self.pk


class Membership(models.Model):
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.VIEWER)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="uniq_org_member")
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.organization} ({self.role})"


def _hash_token(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiToken(models.Model):
    """A REST client's token. Only its SHA-256 is stored: the key is shown once, at creation."""

    PREFIX_LENGTH = 8

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What this token is for, e.g. 'BI export'.")
    prefix = models.CharField(max_length=PREFIX_LENGTH, editable=False, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, user: User, name: str) -> tuple[ApiToken, str]:
        """Create a token; returns it with its plaintext key, which is never retrievable again."""
        key = "qh_" + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user, name=name, prefix=key[: cls.PREFIX_LENGTH], key_hash=_hash_token(key)
        )
        return token, key

    def set_new_key(self) -> str:
        key = "qh_" + secrets.token_urlsafe(32)
        self.prefix = key[: self.PREFIX_LENGTH]
        self.key_hash = _hash_token(key)
        return key

    @classmethod
    def authenticate(cls, key: str) -> ApiToken | None:
        token = (
            cls.objects.active().select_related("user").filter(key_hash=_hash_token(key)).first()
        )
        if token is None or not token.user.is_active:
            return None
        now = timezone.now()
        # Write last use at most once a minute so polling clients do not write on every call.
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            cls.objects.filter(pk=token.pk).update(last_used_at=now)
        return token

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


class Heartbeat(models.Model):
    """One row per process kind, touched by the scheduled heartbeat task; read by /healthz."""

    name = models.CharField(max_length=50, unique=True)
    beat_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} at {self.beat_at:%Y-%m-%d %H:%M:%S}"
