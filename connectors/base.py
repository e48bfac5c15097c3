"""The connector contract: what a provider folder declares and what the framework calls.

A provider is one folder (``connectors/<slug>/``) with a ``connector.py`` holding a
:class:`Connector` subclass: its auth declaration, its streams, its webhook verification and its
write methods. The framework (``http``, ``oauth``, ``sync``, ``outbox``, ``webhooks``) does the
rest. Errors raised anywhere in a connector are :class:`ConnectorError` subclasses that say
whether retrying can help.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from connectors.http import HttpClient
    from connectors.models import Connection


# --- Errors ---------------------------------------------------------------------------------
class ConnectorError(Exception):
    """A provider call failed. ``permanent`` says whether retrying the same call can help."""

    permanent: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.details = details

    def __str__(self) -> str:
        prefix = f"HTTP {self.status}: " if self.status else ""
        code = f" [{self.code}]" if self.code else ""
        return f"{prefix}{self.message}{code}"


class TransientError(ConnectorError):
    """Timeouts, connection errors, 5xx: retry later with backoff."""


class RateLimited(TransientError):
    """429 (or a provider's throttling fault): retry after ``retry_after`` seconds."""


class AuthExpired(TransientError):
    """401 with a token that a refresh can renew: refresh once and retry."""


class PermanentError(ConnectorError):
    """The provider refused the request for a reason retrying will not change."""

    permanent = True


class AuthRevoked(PermanentError):
    """The grant is gone (revoked, invalid_grant, API key regenerated): a person must reconnect."""


class ValidationFailed(PermanentError):
    """The provider rejected our payload (4xx with field errors); the record needs fixing."""


class NotFound(PermanentError):
    """The remote object does not exist (404)."""


# --- Streams and pages ----------------------------------------------------------------------
@dataclass
class Page:
    """One page read from a stream.

    ``records`` are raw provider payloads. ``position`` is what the sync engine must save with
    this page so that a crash resumes on the next page (opaque to the engine). ``high_water``
    is the largest incremental marker seen so far in this run; when the stream finishes it
    becomes the cursor's value.
    """

    records: list[dict[str, Any]]
    position: dict[str, Any] = field(default_factory=dict)
    high_water: str | None = None
    requests: int = 1


@dataclass
class CursorState:
    """What the sync engine knows of a stream when it starts reading it.

    ``value`` is the incremental marker of the last completed sync (None: never synced).
    ``position`` is the saved position of an interrupted run (empty: start afresh).
    """

    value: str | None
    position: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    """A mirror row to upsert: its natural key, promoted columns and raw payload."""

    external_id: str
    fields: dict[str, Any]
    raw: dict[str, Any]


class Stream:
    """One kind of record read from a provider, page by page, from a cursor.

    Subclasses set ``name`` and ``model`` (the mirror model's label, e.g.
    ``"connectors.BankTransaction"``) and implement ``pages`` and ``to_row``.
    """

    name: ClassVar[str]
    model: ClassVar[str]

    def pages(self, connector: Connector, cursor: CursorState) -> Iterator[Page]:
        raise NotImplementedError(f"{type(self).__name__}.pages")

    def to_row(self, connector: Connector, record: Mapping[str, Any]) -> Row:
        raise NotImplementedError(f"{type(self).__name__}.to_row")

    def after_sync(self, connector: Connector, run: Any) -> None:
        """Checks that need the whole stream (e.g. running-balance continuity); optional."""


@dataclass
class OAuthSpec:
    """How a provider does OAuth 2.0; URLs are resolved against the provider's settings."""

    authorize_url: str
    token_url: str
    revoke_url: str | None
    scopes: tuple[str, ...]
    scope_separator: str = " "
    pkce: bool = False
    #: Query parameters of the callback to keep on the connection (e.g. QuickBooks' realmId).
    callback_params: tuple[str, ...] = ()
    #: How long the provider keeps the previous refresh token valid after a refresh.
    refresh_grace_seconds: int = 0
    #: How the revoke endpoint wants its call: "form" (RFC 7009: form body with the token and the
    #: client credentials) or "json_basic" (JSON ``{"token": …}`` with HTTP Basic client auth, as
    #: Intuit does); one token is enough there, since revoking the refresh token ends the grant.
    revoke_style: str = "form"


@dataclass(frozen=True)
class FileDownload:
    """A provider file fetched on demand (attachment URLs are short-lived, never stored)."""

    name: str
    content: bytes
    content_type: str = "application/octet-stream"


@dataclass
class WebhookCheck:
    """The verdict on one inbound webhook request."""

    valid: bool
    reason: str = ""
    event_id: str = ""
    event_type: str = ""
    #: Streams whose data the event touches; processing re-reads them.
    streams: tuple[str, ...] = ()


class Connector:
    """Base class of every provider.

    ``settings.PROVIDERS[slug]`` holds the provider's base URLs and client credentials; the
    connection holds the tenant's own credentials (encrypted).
    """

    slug: ClassVar[str]
    name: ClassVar[str]
    #: Who holds the connection: "organization" (Qonto, QuickBooks…) or "firm" (the accounting
    #: software an accounting firm connects once for all its client files).
    owner: ClassVar[str] = "organization"
    #: "oauth2" or "api_key" — which ways of connecting the provider offers.
    auth_methods: ClassVar[tuple[str, ...]] = ("oauth2",)
    oauth: ClassVar[OAuthSpec | None] = None
    streams: ClassVar[tuple[type[Stream], ...]] = ()

    def __init__(self, connection: Connection, http: HttpClient | None = None) -> None:
        from connectors.http import HttpClient
        from connectors.oauth import install_refresh_hook

        self.connection = connection
        self.http = http or HttpClient(self)
        # OAuth connections get their one refresh-and-retry on 401 (connectors/oauth.py).
        install_refresh_hook(self)

    # --- configuration ----------------------------------------------------------------
    @classmethod
    def settings(cls) -> dict[str, Any]:
        from django.conf import settings

        return dict(settings.PROVIDERS.get(cls.slug, {}))

    def api_base_url(self) -> str:
        return self.settings()["api_base_url"].rstrip("/")

    def stream(self, name: str) -> Stream:
        for stream_class in self.streams:
            if stream_class.name == name:
                return stream_class()
        raise KeyError(f"{self.slug} has no stream {name!r}")

    # --- hooks the framework calls --------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate a call with the connection's current credentials."""
        raise NotImplementedError(f"{type(self).__name__}.auth_headers")

    def extra_headers(self) -> dict[str, str]:
        """Headers every call carries (API versions, staging tokens…)."""
        return {}

    def parse_error(self, status: int, body: Any, headers: Mapping[str, str]) -> ConnectorError | None:
        """Turn a provider error body into a ConnectorError; None lets ``http`` decide by status."""
        return None

    def identify(self) -> tuple[str, str]:
        """(external account id, display name) of the connected account, read after connect."""
        raise NotImplementedError(f"{type(self).__name__}.identify")

    def on_connect(self) -> None:
        """Provider-side set-up after a connection becomes active (e.g. webhook subscription)."""

    def on_disconnect(self) -> None:
        """Provider-side clean-up before the grant is revoked (e.g. delete subscriptions)."""

    def download_attachment(self, external_id: str) -> FileDownload:
        """The bytes of one attachment (a receipt, an invoice PDF) by its provider id."""
        raise NotImplementedError(f"{self.name} does not serve attachments")

    @classmethod
    def serves_attachments(cls) -> bool:
        """Whether this provider's connector implements :meth:`download_attachment`."""
        return cls.download_attachment is not Connector.download_attachment

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookCheck:
        raise NotImplementedError(f"{type(self).__name__} does not receive webhooks")
