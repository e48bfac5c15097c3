"""The fake-provider framework: what every provider sandbox is built on.

The machines that run QontoHub have no internet, so each provider gets a *sandbox*: an in-memory
fake of its HTTP API, written from the provider's public contract (``/work/shared/reference``).
This module holds what the fakes share, so a provider's ``sandbox.py`` is mostly route handlers
and seed data:

* ``SandboxRequest`` / ``SandboxResponse``: transport-neutral request and response values. The
  same fake is reached in-process through ``adapter.SandboxAdapter`` (a ``requests`` adapter), over
  a real port through ``as_wsgi()`` and ``server.serve()``, or through the hub's Django view.
* ``route()`` and ``FakeAPI``: a declarative route table, dispatch with 404/405 answered in the
  provider's own error shape, a lock around the in-memory state, deterministic seeding
  (``reset(seed=...)``), a request log, fault injection, a sliding-window rate limiter, a
  controllable clock, the OAuth 2.0 authorization-code machinery (codes, expiring access tokens,
  rotating refresh tokens with a grace period, revocation, an HTML consent page) and signed
  outgoing webhook deliveries.

Nothing here imports Django or reads settings: a sandbox must run in a bare ``pytest`` process,
in the benchmark and as a stand-alone server.
"""

from __future__ import annotations

import base64
import hashlib
import html
import itertools
import json
import logging
import math
import random
import re
import secrets
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from http import HTTPStatus
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import requests
from requests.structures import CaseInsensitiveDict

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


# --------------------------------------------------------------------------------------------
# Requests and responses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FormPart:
    """One part of a ``multipart/form-data`` body."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None


@dataclass
class SandboxRequest:
    """A request as a fake API sees it, whatever the transport.

    ``path`` is relative to the API root (``/v2/transactions``, not ``/sandbox/qonto/v2/...``);
    ``base_url`` is the absolute URL of that root as the caller reached it, so a fake can build
    absolute links (attachment URLs, the consent form) that lead back to itself.
    """

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: CaseInsensitiveDict[str] = field(default_factory=CaseInsensitiveDict)
    body: bytes = b""
    base_url: str = ""
    # Client read timeout in seconds, when the transport knows it (the in-process adapter does), so
    # an injected delay longer than the timeout becomes a timeout instead of a slow answer.
    timeout: float | None = None
    path_params: dict[str, str] = field(default_factory=dict)
    #: Filled by the provider's auth hook (who is calling, with which scopes) for its handlers.
    context: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.method = self.method.upper()
        if not self.path.startswith("/"):
            self.path = "/" + self.path
        if not isinstance(self.headers, CaseInsensitiveDict):
            self.headers = CaseInsensitiveDict(self.headers)

    @classmethod
    def from_url(
        cls,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        json_body: Any = None,
        form: Mapping[str, Any] | None = None,
    ) -> SandboxRequest:
        """Build a request from ``/path?query`` (tests call fakes directly with this)."""
        parts = urlsplit(url)
        hdrs: CaseInsensitiveDict[str] = CaseInsensitiveDict(headers or {})
        raw = body.encode() if isinstance(body, str) else (body or b"")
        if json_body is not None:
            raw = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif form is not None:
            raw = urlencode(form, doseq=True).encode()
            hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
        return cls(
            method=method,
            path=parts.path or "/",
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=hdrs,
            body=raw,
        )

    # -- query ---------------------------------------------------------------------------------

    def arg(self, name: str, default: str | None = None) -> str | None:
        """First value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default

    def args(self, *names: str) -> list[str]:
        """All values of one or more query parameters, e.g. ``args("status[]", "status")``."""
        out: list[str] = []
        for name in names:
            out.extend(self.query.get(name, ()))
        return out

    # -- body ----------------------------------------------------------------------------------

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    def json(self) -> Any:
        """The body decoded as JSON; raises ``ValueError`` when it is not JSON."""
        if not self.body:
            raise ValueError("empty body")
        return json.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        """The body decoded as ``application/x-www-form-urlencoded``."""
        return parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)

    def multipart(self) -> list[FormPart]:
        """The body decoded as ``multipart/form-data``, parts in order.

        Parsed by hand rather than with ``email``: uploads are binary and must come back byte
        for byte, and the ``cgi`` module is gone from recent Pythons.
        """
        header = Message()
        header["Content-Type"] = self.headers.get("Content-Type", "")
        boundary = header.get_param("boundary")
        if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
            raise ValueError("not a multipart/form-data body")
        delimiter = b"\r\n--" + boundary.encode("latin-1")
        chunks = (b"\r\n" + self.body).split(delimiter)
        parts: list[FormPart] = []
        for chunk in chunks[1:]:
            if chunk.startswith(b"--"):
                break
            head, sep, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
            if not sep:
                raise ValueError("malformed multipart part")
            part_headers = Message()
            for line in head.decode("utf-8", "replace").split("\r\n"):
                key, _, value = line.partition(":")
                if key:
                    part_headers[key.strip()] = value.strip()
            name = part_headers.get_param("name", header="content-disposition")
            filename = part_headers.get_param("filename", header="content-disposition")
            parts.append(
                FormPart(
                    name=str(name or ""),
                    data=data,
                    filename=str(filename) if filename is not None else None,
                    content_type=part_headers.get("Content-Type"),
                )
            )
        return parts

    def url_for(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        """An absolute URL for ``path`` (relative to the API root) on the caller's base URL."""
        url = self.base_url.rstrip("/") + path
        return f"{url}?{urlencode(query, doseq=True)}" if query else url


@dataclass
class SandboxResponse:
    """A fake's answer: status, headers and raw body bytes."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def reason(self) -> str:
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return "Unknown"

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str, default: str | None = None) -> str | None:
        """Header lookup, case-insensitive like HTTP."""
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return default


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> SandboxResponse:
    """A JSON response (compact separators: payloads of 100 transactions add up)."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return SandboxResponse(status, {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})}, body)


def text_response(
    text: str,
    status: int = 200,
    content_type: str = "text/plain; charset=utf-8",
    headers: Mapping[str, str] | None = None,
) -> SandboxResponse:
    return SandboxResponse(status, {"Content-Type": content_type, **(headers or {})}, text.encode())


def html_response(page: str, status: int = 200) -> SandboxResponse:
    return text_response(page, status, "text/html; charset=utf-8")


def redirect_response(location: str, status: int = 302) -> SandboxResponse:
    return SandboxResponse(status, {"Location": location}, b"")


def empty_response(status: int = 204, headers: Mapping[str, str] | None = None) -> SandboxResponse:
    return SandboxResponse(status, dict(headers or {}), b"")


def add_query(url: str, params: Mapping[str, str | None]) -> str:
    """Append query parameters to ``url`` (a redirect_uri may already carry some)."""
    parts = urlsplit(url)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class SandboxTimeout(Exception):
    """Raised by ``FakeAPI.handle`` when an injected delay outlasts the client's timeout."""


class Abort(Exception):
    """Raised by a handler (or a helper it calls) to answer with ``response`` at once."""

    def __init__(self, response: SandboxResponse) -> None:
        super().__init__(response.status)
        self.response = response


# --------------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------------

Handler = Callable[..., SandboxResponse]
F = TypeVar("F", bound=Handler)

_PARAM = re.compile(r"{(\w+)}")


@dataclass(frozen=True)
class Route:
    """One entry of a fake's route table."""

    method: str
    pattern: str
    handler_name: str
    regex: re.Pattern[str]
    # Free-form metadata for the provider (required scope, API-key access, ...).
    meta: Mapping[str, Any]

    @property
    def key(self) -> str:
        return f"{self.method} {self.pattern}"


def route(method: str, pattern: str, **meta: Any) -> Callable[[F], F]:
    """Declare a handler: ``@route("GET", "/v2/clients/{id}", scope="client.read")``.

    Path parameters are passed to the handler as keyword arguments; ``meta`` is kept on the
    ``Route`` for the provider's ``authorize_route`` hook.
    """

    def decorate(func: F) -> F:
        routes = list(getattr(func, "_sandbox_routes", ()))
        routes.append((method.upper(), pattern, meta))
        func._sandbox_routes = routes  # type: ignore[attr-defined]
        return func

    return decorate


def _compile(pattern: str) -> re.Pattern[str]:
    regex = ""
    position = 0
    for match in _PARAM.finditer(pattern):
        regex += re.escape(pattern[position : match.start()]) + f"(?P<{match.group(1)}>[^/]+)"
        position = match.end()
    return re.compile("^" + regex + re.escape(pattern[position:]) + "$")


# --------------------------------------------------------------------------------------------
# Faults, rate limits, log
# --------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """An injected failure: the next ``times`` matching requests get it (``None`` = forever)."""

    status: int | None
    times: int | None
    path_prefix: str | None = None
    method: str | None = None
    retry_after: float | None = None
    body: bytes | str | Mapping[str, Any] | None = None
    delay: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)

    def matches(self, request: SandboxRequest) -> bool:
        if self.method and self.method.upper() != request.method:
            return False
        return self.path_prefix is None or request.path.startswith(self.path_prefix)


@dataclass
class RateLimit:
    """At most ``limit`` requests per sliding ``window`` seconds (sandbox clock)."""

    limit: int
    window: float
    hits: deque[float] = field(default_factory=deque)


@dataclass(frozen=True)
class RecordedRequest:
    """One entry of the request log."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    route: str | None
    status: int
    at: datetime

    def json(self) -> Any:
        return json.loads(self.body)


# --------------------------------------------------------------------------------------------
# OAuth 2.0
# --------------------------------------------------------------------------------------------


class OAuthError(Exception):
    """An RFC 6749 error (``invalid_grant``, ``invalid_client``, ...) and its HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


@dataclass
class OAuthClient:
    client_id: str
    # None until first use when the fake accepts unknown clients (trust on first use).
    client_secret: str | None
    redirect_uris: tuple[str, ...] = ()
    scopes: frozenset[str] | None = None


@dataclass
class OAuthGrant:
    """One consent: a client acting for a subject with scopes. Revoking it kills its tokens."""

    grant_id: str
    client_id: str
    subject: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked: bool = False


@dataclass
class AuthorizationCode:
    code: str
    grant: OAuthGrant
    redirect_uri: str
    expires_at: datetime
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    used: bool = False


@dataclass
class AccessToken:
    token: str
    grant: OAuthGrant
    expires_at: datetime
    revoked: bool = False

    @property
    def scopes(self) -> tuple[str, ...]:
        return self.grant.scopes


@dataclass
class RefreshToken:
    token: str
    grant: OAuthGrant
    expires_at: datetime
    # Set on first use: the token stays usable until rotated_at + grace, then is dead.
    rotated_at: datetime | None = None
    revoked: bool = False


@dataclass
class WebhookDelivery:
    """One outgoing webhook POST and its outcome."""

    url: str
    headers: dict[str, str]
    body: bytes
    status: int | None
    error: str | None
    at: datetime

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)


WebhookTransport = Callable[[str, bytes, dict[str, str]], int]


# --------------------------------------------------------------------------------------------
# The fake API
# --------------------------------------------------------------------------------------------


class FakeAPI:
    """Base class of every provider sandbox.

    Subclasses declare routes with ``@route``, build their data in ``seed(rng, **options)`` and
    override the hooks (``error_body``, ``authorize_route``, ``sign_webhook``, ...) for the
    provider's own shapes. ``handle()`` is safe to call from several threads: handlers run under
    ``self.lock``, which they may also take (it is re-entrant) in test-control helpers.
    """

    slug: ClassVar[str] = "sandbox"
    default_seed: ClassVar[int] = 1
    #: ``(limit, window seconds)`` pairs applied from ``reset()``; see ``set_rate_limits``.
    default_rate_limits: ClassVar[Sequence[tuple[int, float]]] = ()
    #: Base URL used for absolute links when a request does not say how it reached the fake.
    default_base_url: ClassVar[str] = "http://sandbox.invalid"

    # OAuth settings (RFC 6749 defaults; providers override with their documented values).
    auth_code_ttl: ClassVar[float] = 600.0
    access_token_ttl: ClassVar[float] = 3600.0
    refresh_token_ttl: ClassVar[float] = 90 * 86400.0
    refresh_grace_seconds: ClassVar[float] = 0.0
    #: Scope a grant needs to receive a refresh token (``offline_access`` for Ory-style servers).
    refresh_token_scope: ClassVar[str | None] = None
    #: Known scopes; ``None`` accepts any.
    supported_scopes: ClassVar[frozenset[str] | None] = None
    require_state: ClassVar[bool] = True
    token_prefixes: ClassVar[Mapping[str, str]] = {"code": "ac_", "access": "at_", "refresh": "rt_"}
    #: Unknown client ids are registered on first sight and keep the first secret they present,
    #: so the hub's configured credentials work without the fake knowing them in advance.
    open_client_registration: ClassVar[bool] = True

    _routes: ClassVar[list[Route]]
    _static_routes: ClassVar[dict[str, dict[str, Route]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table: dict[tuple[str, str], Route] = {}
        # Walk the MRO base-first so a subclass can re-declare (override) a route.
        for klass in reversed(cls.__mro__):
            for name, member in vars(klass).items():
                for method, pattern, meta in getattr(member, "_sandbox_routes", ()):
                    table[(method, pattern)] = Route(method, pattern, name, _compile(pattern), meta)
        cls._routes = list(table.values())
        # Paths without parameters are looked up in a dict; only the rest are matched by regex.
        cls._static_routes = {}
        for entry in cls._routes:
            if "{" not in entry.pattern:
                cls._static_routes.setdefault(entry.pattern, {})[entry.method] = entry

    def __init__(self, seed: int | None = None, **options: Any) -> None:
        self.lock = threading.RLock()
        self.requests_made: list[RecordedRequest] = []
        self.request_counts: Counter[str] = Counter()
        self.max_logged_requests = 20_000
        #: Bodies longer than this are cut in the log (uploads would otherwise pile up in memory).
        self.max_logged_body = 64 * 1024
        self.faults: list[Fault] = []
        self.rate_limits: list[RateLimit] = []
        #: Seconds every request sleeps before being handled (simulates a slow provider).
        self.delay = 0.0
        #: Re-raise handler exceptions instead of answering 500 (useful while writing a fake).
        self.raise_server_errors = False
        self.server_errors: list[str] = []
        self.webhook_deliveries: list[WebhookDelivery] = []
        #: Replaces the ``requests.post`` used for webhooks, e.g. with a Django test client call.
        self.webhook_transport: WebhookTransport | None = None
        self.webhook_timeout = 5.0
        self.auto_approve = False
        self._frozen_at: datetime | None = None
        self._start_at = datetime.now(UTC)
        self._clock_base = self._start_at
        self._mono0 = time.monotonic()
        self._offset = 0.0
        self.reset(seed, **options)

    # -- lifecycle -----------------------------------------------------------------------------

    def reset(self, seed: int | None = None, *, start_at: datetime | None = None, **options: Any) -> None:
        """Forget everything and rebuild the seeded state.

        The same ``seed`` and ``start_at`` give the same data. The clock restarts at
        ``start_at`` (default: the real time, to the second) and then runs in real time.
        """
        with self.lock:
            self.seed_value = self.default_seed if seed is None else seed
            self.options = dict(options)
            self.rng = random.Random(self.seed_value)
            self._frozen_at = None
            self._offset = 0.0
            self._mono0 = time.monotonic()
            self._start_at = (start_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
            self._clock_base = self._start_at
            self.faults.clear()
            self.delay = 0.0
            self.set_rate_limits(self.default_rate_limits)
            self.webhook_deliveries.clear()
            self.server_errors.clear()
            self.oauth_clients: dict[str, OAuthClient] = {}
            self.authorization_codes: dict[str, AuthorizationCode] = {}
            self.access_tokens: dict[str, AccessToken] = {}
            self.refresh_tokens: dict[str, RefreshToken] = {}
            self.clear_log()
            self.seed(self.rng, **options)

    def seed(self, rng: random.Random, **options: Any) -> None:
        """Build the provider's data. ``rng`` is the only randomness allowed here."""
        if options:
            raise TypeError(f"unknown sandbox options: {', '.join(sorted(options))}")

    def new_id(self) -> str:
        """A UUID4 string drawn from the seeded generator (deterministic per seed)."""
        return str(_uuid4(self.rng))

    # -- clock ---------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The sandbox's time: ``start_at`` plus real elapsed time plus ``advance()`` jumps."""
        if self._frozen_at is not None:
            return self._frozen_at
        elapsed = time.monotonic() - self._mono0 + self._offset
        return self._clock_base + timedelta(seconds=elapsed)

    @property
    def start_at(self) -> datetime:
        """When the clock started at the last reset (seed data is laid out before it)."""
        return self._start_at

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward (token expiry, settlements, rate-limit windows)."""
        with self.lock:
            if self._frozen_at is not None:
                self._frozen_at += timedelta(seconds=seconds)
            else:
                self._offset += seconds
            return self.now()

    def freeze(self, at: datetime | None = None) -> datetime:
        """Stop the clock (at ``at`` or now); ``advance()`` still moves it."""
        with self.lock:
            self._frozen_at = (at or self.now()).astimezone(UTC)
            return self._frozen_at

    def unfreeze(self) -> None:
        with self.lock:
            if self._frozen_at is not None:
                self._clock_base, self._mono0, self._offset = self._frozen_at, time.monotonic(), 0.0
                self._frozen_at = None

    # -- request log ---------------------------------------------------------------------------

    def clear_log(self) -> None:
        with self.lock:
            self.requests_made.clear()
            self.request_counts.clear()

    def calls(self, method: str, pattern: str) -> int:
        """How many requests reached the route ``method pattern`` (e.g. ``GET /v2/clients/{id}``)."""
        return self.request_counts[f"{method.upper()} {pattern}"]

    def _record(self, request: SandboxRequest, entry: Route | None, status: int) -> None:
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=request.query,
            headers=dict(request.headers),
            body=request.body[: self.max_logged_body],
            route=entry.key if entry else None,
            status=status,
            at=self.now(),
        )
        with self.lock:
            self.requests_made.append(record)
            if len(self.requests_made) > self.max_logged_requests:
                # A long-running dev server must not grow without bound; keep the recent half.
                del self.requests_made[: self.max_logged_requests // 2]
            self.request_counts[record.route or f"{request.method} <unrouted>"] += 1

    # -- faults and rate limits ----------------------------------------------------------------

    def inject_fault(
        self,
        status: int | None = 503,
        times: int | None = 1,
        path_prefix: str | None = None,
        retry_after: float | None = None,
        body: bytes | str | Mapping[str, Any] | None = None,
        *,
        delay: float = 0.0,
        method: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Make the next ``times`` matching requests fail (``times=None``: until cleared).

        ``status=None`` with a ``delay`` makes the requests slow but otherwise normal; a delay
        longer than the client's timeout becomes a timeout. Without ``body`` the error is
        rendered in the provider's error shape.
        """
        fault = Fault(status, times, path_prefix, method, retry_after, body, delay, headers or {})
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def _take_fault(self, request: SandboxRequest) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(request):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self.faults.remove(fault)
                    return fault
        return None

    def _fault_response(self, fault: Fault, request: SandboxRequest) -> SandboxResponse:
        assert fault.status is not None
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            headers["Retry-After"] = _seconds_header(fault.retry_after)
        if fault.body is None:
            response = self.error(fault.status, _default_code(fault.status), _phrase(fault.status))
        elif isinstance(fault.body, Mapping):
            response = json_response(fault.body, fault.status)
        else:
            raw = fault.body.encode() if isinstance(fault.body, str) else fault.body
            response = SandboxResponse(fault.status, {"Content-Type": JSON_CONTENT_TYPE}, raw)
        response.headers.update(headers)
        return response

    def set_rate_limits(self, limits: Iterable[tuple[int, float]]) -> None:
        """Replace the limits: e.g. ``[(1000, 10), (10000, 600)]``; ``[]`` disables limiting."""
        with self.lock:
            self.rate_limits = [RateLimit(limit, window) for limit, window in limits]

    def _rate_limited(self) -> float | None:
        """Count one request; return the seconds to wait if a window is full (not counted)."""
        with self.lock:
            if not self.rate_limits:
                return None
            now = self.now().timestamp()
            wait = 0.0
            for limit in self.rate_limits:
                while limit.hits and limit.hits[0] <= now - limit.window:
                    limit.hits.popleft()
                if len(limit.hits) >= limit.limit:
                    wait = max(wait, limit.hits[0] + limit.window - now)
            if wait > 0:
                return wait
            for limit in self.rate_limits:
                limit.hits.append(now)
            return None

    def _sleep(self, seconds: float, request: SandboxRequest) -> None:
        if request.timeout is not None and seconds > request.timeout:
            time.sleep(request.timeout)
            raise SandboxTimeout(f"no answer within {request.timeout}s")
        time.sleep(seconds)

    # -- dispatch ------------------------------------------------------------------------------

    def resolve(self, method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
        """Find the route for ``method path``: (route, path params, methods allowed on path)."""
        method = method.upper()
        static = self._static_routes.get(path)
        if static:
            if method in static:
                return static[method], {}, []
            # HEAD is answered by GET, as every HTTP server does.
            if method == "HEAD" and "GET" in static:
                return static["GET"], {}, []
        allowed: list[str] = sorted(static) if static else []
        for entry in self._routes:
            if "{" not in entry.pattern:
                continue
            match = entry.regex.match(path)
            if match:
                if entry.method == method or (method == "HEAD" and entry.method == "GET"):
                    return entry, match.groupdict(), []
                allowed.append(entry.method)
        return None, {}, sorted(set(allowed))

    def handle(self, request: SandboxRequest) -> SandboxResponse:
        """Answer one request: faults, rate limit, routing, the provider's auth hook, handler."""
        entry, params, allowed = self.resolve(request.method, request.path)
        request.path_params = params
        if not request.base_url:
            request.base_url = self.default_base_url
        response = self._dispatch(request, entry, allowed)
        if request.method == "HEAD":
            response = SandboxResponse(response.status, response.headers, b"")
        self._record(request, entry, response.status)
        self.after_request(request, response)
        return response

    def _dispatch(self, request: SandboxRequest, entry: Route | None, allowed: list[str]) -> SandboxResponse:
        fault = self._take_fault(request)
        if fault is not None:
            if fault.delay:
                self._sleep(fault.delay, request)
            if fault.status is not None:
                return self._fault_response(fault, request)
        if self.delay:
            self._sleep(self.delay, request)
        wait = self._rate_limited()
        if wait is not None:
            return self.rate_limited_response(request, wait)
        if entry is None:
            if allowed:
                return self.method_not_allowed(request, allowed)
            return self.not_found(request)
        try:
            with self.lock:
                self.before_request(request)
                denied = self.authorize_route(request, entry)
                if denied is not None:
                    return denied
                handler = getattr(self, entry.handler_name)
                return handler(request, **request.path_params)
        except Abort as abort:
            return abort.response
        except SandboxTimeout:
            raise
        except Exception:
            if self.raise_server_errors:
                raise
            self.server_errors.append(traceback.format_exc())
            logger.exception("sandbox %s: handler failed for %s %s", self.slug, request.method, request.path)
            return self.error(500, "internal_server_error", "The sandbox failed to handle the request")

    # -- hooks for providers -------------------------------------------------------------------

    def before_request(self, request: SandboxRequest) -> None:
        """Called under the lock before routing auth, e.g. to apply time-driven state changes."""

    def after_request(self, request: SandboxRequest, response: SandboxResponse) -> None:
        """Called outside the lock after each request, e.g. to deliver queued webhooks."""

    def authorize_route(self, request: SandboxRequest, entry: Route) -> SandboxResponse | None:
        """Return an error response to refuse the request (auth, scopes); ``None`` to proceed."""
        return None

    def error_body(self, status: int, code: str, detail: str, source: Mapping[str, Any] | None = None) -> Any:
        """The provider's error document; the default is the RFC 6749 style pair."""
        return {"error": code, "error_description": detail}

    def error(
        self,
        status: int,
        code: str,
        detail: str,
        source: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SandboxResponse:
        """An error response in the provider's shape (see ``error_body``)."""
        return json_response(self.error_body(status, code, detail, source), status, headers)

    def not_found(self, request: SandboxRequest) -> SandboxResponse:
        return self.error(404, "not_found", f"No route for {request.method} {request.path}")

    def method_not_allowed(self, request: SandboxRequest, allowed: list[str]) -> SandboxResponse:
        return self.error(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on {request.path}",
            headers={"Allow": ", ".join(allowed)},
        )

    def rate_limited_response(self, request: SandboxRequest, wait: float) -> SandboxResponse:
        return self.error(
            429,
            "too_many_requests",
            "Rate limit exceeded",
            headers={"Retry-After": _seconds_header(wait)},
        )

    # -- paging --------------------------------------------------------------------------------

    @staticmethod
    def paginate(items: Sequence[Any], page: int, per_page: int) -> tuple[Sequence[Any], PageInfo]:
        """Slice one page (1-based) out of an already filtered and sorted sequence."""
        total = len(items)
        total_pages = math.ceil(total / per_page) if per_page else 0
        start = (page - 1) * per_page
        info = PageInfo(
            current_page=page,
            per_page=per_page,
            total_count=total,
            total_pages=total_pages,
            next_page=page + 1 if page < total_pages else None,
            prev_page=page - 1 if page > 1 else None,
        )
        return items[start : start + per_page], info

    # -- OAuth 2.0 -----------------------------------------------------------------------------

    def register_oauth_client(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: Iterable[str] = (),
        scopes: Iterable[str] | None = None,
    ) -> OAuthClient:
        """Register an app; a registered client is checked strictly (secret, redirect URIs)."""
        client = OAuthClient(
            client_id,
            client_secret,
            tuple(redirect_uris),
            frozenset(scopes) if scopes is not None else None,
        )
        with self.lock:
            self.oauth_clients[client_id] = client
        return client

    def _client(self, client_id: str | None) -> OAuthClient:
        if not client_id:
            raise OAuthError("invalid_client", "client_id is missing", 401)
        client = self.oauth_clients.get(client_id)
        if client is None:
            if not self.open_client_registration:
                raise OAuthError("invalid_client", "Client authentication failed (unknown client)", 401)
            client = self.oauth_clients[client_id] = OAuthClient(client_id, None)
        return client

    def _authenticate_client(self, client_id: str | None, client_secret: str | None) -> OAuthClient:
        client = self._client(client_id)
        if client.client_secret is None and client_secret:
            client.client_secret = client_secret
        if not client_secret or not secrets.compare_digest(client.client_secret or "", client_secret):
            raise OAuthError("invalid_client", "Client authentication failed (bad client_secret)", 401)
        return client

    def _new_token(self, kind: str) -> str:
        # Tokens come from `secrets`, not the seeded generator: they must not repeat across resets.
        return self.token_prefixes[kind] + secrets.token_urlsafe(24) + "." + secrets.token_urlsafe(16)

    def validate_scopes(self, client: OAuthClient, scope: str) -> tuple[str, ...]:
        """Split a space-separated scope string and check it; raises ``invalid_scope``."""
        scopes = tuple(dict.fromkeys(scope.split()))
        known = self.supported_scopes
        for name in scopes:
            if known is not None and name not in known:
                raise OAuthError("invalid_scope", f"The requested scope '{name}' is unknown", 400)
            if client.scopes is not None and name not in client.scopes:
                raise OAuthError(
                    "invalid_scope",
                    f"The OAuth 2.0 Client is not allowed to request scope '{name}'",
                    400,
                )
        return scopes

    def issue_authorization_code(
        self,
        client_id: str,
        redirect_uri: str,
        scope: str | Iterable[str],
        subject: str | None = None,
        code_challenge: str | None = None,
        code_challenge_method: str | None = None,
    ) -> str:
        """Grant consent directly (what the Authorize button does); returns the code."""
        with self.lock:
            client = self._client(client_id)
            scope_text = scope if isinstance(scope, str) else " ".join(scope)
            grant = OAuthGrant(
                grant_id=secrets.token_hex(8),
                client_id=client.client_id,
                subject=subject or self.oauth_subject(),
                scopes=self.validate_scopes(client, scope_text),
                created_at=self.now(),
            )
            code = AuthorizationCode(
                code=self._new_token("code"),
                grant=grant,
                redirect_uri=redirect_uri,
                expires_at=self.now() + timedelta(seconds=self.auth_code_ttl),
                code_challenge=code_challenge,
                code_challenge_method=code_challenge_method,
            )
            self.authorization_codes[code.code] = code
            return code.code

    def exchange_authorization_code(
        self,
        client_id: str | None,
        client_secret: str | None,
        code: str | None,
        redirect_uri: str | None,
        code_verifier: str | None = None,
    ) -> dict[str, Any]:
        """The ``authorization_code`` grant; returns the token response body."""
        with self.lock:
            client = self._authenticate_client(client_id, client_secret)
            entry = self.authorization_codes.get(code or "")
            if entry is None or entry.grant.client_id != client.client_id:
                raise OAuthError("invalid_grant", "The authorization code is invalid")
            if entry.used:
                # RFC 6749 §4.1.2: a replayed code should revoke what it produced.
                self._revoke_grant(entry.grant)
                raise OAuthError("invalid_grant", "The authorization code has already been used")
            if self.now() >= entry.expires_at:
                raise OAuthError("invalid_grant", "The authorization code has expired")
            if redirect_uri != entry.redirect_uri:
                raise OAuthError("invalid_grant", "The redirect_uri does not match the authorization request")
            if entry.code_challenge and not _pkce_ok(entry, code_verifier):
                raise OAuthError("invalid_grant", "The PKCE code_verifier does not match")
            entry.used = True
            return self._issue_tokens(entry.grant)

    def refresh_access_token(
        self, client_id: str | None, client_secret: str | None, refresh_token: str | None
    ) -> dict[str, Any]:
        """The ``refresh_token`` grant with rotation.

        Every refresh returns a new refresh token. The one presented stays valid for
        ``refresh_grace_seconds`` after its first use (so a client that lost the response, or
        two workers racing, can retry) and is dead afterwards.
        """
        with self.lock:
            client = self._authenticate_client(client_id, client_secret)
            entry = self.refresh_tokens.get(refresh_token or "")
            now = self.now()
            if entry is None or entry.grant.client_id != client.client_id:
                raise OAuthError("invalid_grant", "The refresh token is invalid")
            if entry.revoked or entry.grant.revoked:
                raise OAuthError("invalid_grant", "The refresh token has been revoked")
            if now >= entry.expires_at:
                raise OAuthError("invalid_grant", "The refresh token has expired")
            if entry.rotated_at is not None:
                if now >= entry.rotated_at + timedelta(seconds=self.refresh_grace_seconds):
                    raise OAuthError("invalid_grant", "The refresh token has already been used")
            else:
                entry.rotated_at = now
            return self._issue_tokens(entry.grant)

    def issue_tokens(
        self,
        client_id: str,
        client_secret: str,
        scope: str | Iterable[str],
        redirect_uri: str = "https://localhost/oauth/callback",
    ) -> dict[str, Any]:
        """Consent and code exchange in one call, for tests that need a connected client."""
        with self.lock:
            code = self.issue_authorization_code(client_id, redirect_uri, scope)
            return self.exchange_authorization_code(client_id, client_secret, code, redirect_uri)

    def _issue_tokens(self, grant: OAuthGrant) -> dict[str, Any]:
        now = self.now()
        access = AccessToken(self._new_token("access"), grant, now + timedelta(seconds=self.access_token_ttl))
        self.access_tokens[access.token] = access
        refresh: RefreshToken | None = None
        if self.refresh_token_scope is None or self.refresh_token_scope in grant.scopes:
            refresh = RefreshToken(
                self._new_token("refresh"), grant, now + timedelta(seconds=self.refresh_token_ttl)
            )
            self.refresh_tokens[refresh.token] = refresh
        return self.token_response_body(access, refresh)

    def token_response_body(self, access: AccessToken, refresh: RefreshToken | None) -> dict[str, Any]:
        """The token endpoint's JSON; providers add their extras (id_token, realm ids, ...)."""
        body: dict[str, Any] = {
            "access_token": access.token,
            "expires_in": int(self.access_token_ttl),
            "scope": " ".join(access.scopes),
            "token_type": "bearer",
        }
        if refresh is not None:
            body["refresh_token"] = refresh.token
        return body

    def verify_access_token(self, token: str) -> tuple[AccessToken | None, str]:
        """(token, "") when valid, else (None, reason) with reason unknown/expired/revoked."""
        with self.lock:
            entry = self.access_tokens.get(token)
            if entry is None:
                return None, "unknown"
            if entry.revoked or entry.grant.revoked:
                return None, "revoked"
            if self.now() >= entry.expires_at:
                return None, "expired"
            return entry, ""

    def revoke_token(self, token: str) -> bool:
        """RFC 7009: revoking a refresh token ends its grant; an access token dies alone."""
        with self.lock:
            if token in self.refresh_tokens:
                self._revoke_grant(self.refresh_tokens[token].grant)
                return True
            if token in self.access_tokens:
                self.access_tokens[token].revoked = True
                return True
            return False

    def _revoke_grant(self, grant: OAuthGrant) -> None:
        grant.revoked = True

    def revoke_all_tokens(self) -> None:
        """Every grant revoked: the next API call gets 401 and refreshes fail (user disconnected)."""
        with self.lock:
            for entry in itertools.chain(self.access_tokens.values(), self.refresh_tokens.values()):
                self._revoke_grant(entry.grant)

    def expire_access_tokens(self) -> None:
        """Make every access token expired now, without touching refresh tokens."""
        with self.lock:
            past = self.now() - timedelta(seconds=1)
            for entry in self.access_tokens.values():
                entry.expires_at = min(entry.expires_at, past)

    def oauth_subject(self) -> str:
        """Who consents on the authorize page (a membership, a user, a company...)."""
        return "sandbox-user"

    # OAuth HTTP endpoints: providers wire them to their documented paths with @route.

    def oauth_authorize(self, request: SandboxRequest) -> SandboxResponse:
        """The browser consent page: GET shows it, POST (Authorize / Deny) redirects back."""
        params = {k: v[-1] for k, v in request.query.items()}
        if request.method == "POST":
            params.update({k: v[-1] for k, v in request.form().items()})
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        state = params.get("state")
        # Errors about the client or the redirect URI must not redirect (RFC 6749 §4.1.2.1).
        try:
            client = self._client(client_id)
        except OAuthError as exc:
            return self.oauth_error_page(exc.description)
        if not redirect_uri or not urlsplit(redirect_uri).scheme:
            return self.oauth_error_page("redirect_uri is missing or not absolute")
        if client.redirect_uris and redirect_uri not in client.redirect_uris:
            return self.oauth_error_page("redirect_uri is not registered for this client")

        def back(**values: str | None) -> SandboxResponse:
            return redirect_response(add_query(redirect_uri, {**values, "state": state}))

        if params.get("response_type") != "code":
            return back(error="unsupported_response_type", error_description="response_type must be 'code'")
        if self.require_state and not state:
            return back(error="invalid_request", error_description="state is required")
        try:
            scopes = self.validate_scopes(client, params.get("scope", ""))
        except OAuthError as exc:
            return back(error=exc.error, error_description=exc.description)
        decision = params.get("decision") if request.method == "POST" else None
        if decision == "deny":
            return back(error="access_denied", error_description="The resource owner denied the request")
        if decision == "authorize" or self.auto_approve:
            code = self.issue_authorization_code(
                client.client_id,
                redirect_uri,
                scopes,
                code_challenge=params.get("code_challenge"),
                code_challenge_method=params.get("code_challenge_method"),
            )
            return back(code=code, scope=" ".join(scopes))
        return html_response(self.consent_page(request, params, scopes))

    def consent_page(self, request: SandboxRequest, params: Mapping[str, str], scopes: Sequence[str]) -> str:
        """The HTML consent form; hidden fields carry the authorize parameters to the POST."""
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in params.items()
            if k != "decision"
        )
        items = "".join(f"<li><code>{html.escape(s)}</code></li>" for s in scopes)
        action = html.escape(request.url_for(request.path))
        title = html.escape(f"{self.slug} sandbox")
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>Authorize - {title}</title></head><body>"
            f"<h1>{title}</h1><p>The application <strong>{html.escape(params.get('client_id', ''))}"
            f"</strong> asks to access <strong>{html.escape(self.consent_account_name())}</strong> "
            f"with these permissions:</p><ul>{items}</ul>"
            f'<form method="post" action="{action}">{hidden}'
            '<button type="submit" name="decision" value="authorize">Authorize</button> '
            '<button type="submit" name="decision" value="deny">Deny</button>'
            "</form></body></html>"
        )

    def consent_account_name(self) -> str:
        return "your account"

    def oauth_error_page(self, message: str) -> SandboxResponse:
        return html_response(
            "<!doctype html><html><body><h1>Authorization error</h1>"
            f"<p>{html.escape(message)}</p></body></html>",
            400,
        )

    def oauth_token(self, request: SandboxRequest) -> SandboxResponse:
        """The token endpoint: form body; client credentials in the body or HTTP Basic."""
        form = {k: v[-1] for k, v in request.form().items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = _basic_credentials(request.headers.get("Authorization", ""))
        if basic is not None:
            client_id, client_secret = basic
        try:
            if request.content_type != "application/x-www-form-urlencoded":
                raise OAuthError("invalid_request", "The request must be application/x-www-form-urlencoded")
            grant_type = form.get("grant_type")
            if grant_type == "authorization_code":
                body = self.exchange_authorization_code(
                    client_id,
                    client_secret,
                    form.get("code"),
                    form.get("redirect_uri"),
                    form.get("code_verifier"),
                )
            elif grant_type == "refresh_token":
                body = self.refresh_access_token(client_id, client_secret, form.get("refresh_token"))
            else:
                raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")
        except OAuthError as exc:
            return self.oauth_error_response(exc)
        return json_response(body, 200, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def oauth_revoke(self, request: SandboxRequest) -> SandboxResponse:
        """RFC 7009 revocation: 200 even for unknown tokens, once the client is authenticated."""
        form = {k: v[-1] for k, v in request.form().items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = _basic_credentials(request.headers.get("Authorization", ""))
        if basic is not None:
            client_id, client_secret = basic
        try:
            self._authenticate_client(client_id, client_secret)
            if not form.get("token"):
                raise OAuthError("invalid_request", "token is missing")
        except OAuthError as exc:
            return self.oauth_error_response(exc)
        self.revoke_token(form["token"])
        return empty_response(200)

    def oauth_error_response(self, exc: OAuthError) -> SandboxResponse:
        return json_response({"error": exc.error, "error_description": exc.description}, exc.status)

    # -- outgoing webhooks ---------------------------------------------------------------------

    def sign_webhook(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        """Headers that sign ``body``; every provider signs differently."""
        raise NotImplementedError(f"{type(self).__name__} does not sign webhooks")

    def deliver_webhook(self, url: str, payload: Any, secret: str) -> WebhookDelivery:
        """POST ``payload`` as JSON to ``url``, signed; records and returns the outcome.

        Call it without holding ``self.lock``: the receiver may call the sandbox back.
        """
        body = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": f"{self.slug}-sandbox-webhooks"}
        headers.update(self.sign_webhook(body, secret, int(self.now().timestamp())))
        status: int | None = None
        error: str | None = None
        try:
            if self.webhook_transport is not None:
                status = self.webhook_transport(url, body, headers)
            else:
                status = requests.post(
                    url, data=body, headers=headers, timeout=self.webhook_timeout
                ).status_code
        except Exception as exc:  # noqa: BLE001 - a failed delivery is an outcome, not a crash
            error = f"{type(exc).__name__}: {exc}"
        delivery = WebhookDelivery(url, headers, body, status, error, self.now())
        with self.lock:
            self.webhook_deliveries.append(delivery)
        return delivery

    # -- WSGI ----------------------------------------------------------------------------------

    def as_wsgi(self) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
        """A WSGI application serving this fake at the server's root (or SCRIPT_NAME)."""

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
            for key, value in environ.items():
                if key.startswith("HTTP_"):
                    headers[key[5:].replace("_", "-").title()] = value
            if environ.get("CONTENT_TYPE"):
                headers["Content-Type"] = environ["CONTENT_TYPE"]
            if length:
                headers["Content-Length"] = str(length)
            host = environ.get("HTTP_HOST") or f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
            request = SandboxRequest(
                method=environ["REQUEST_METHOD"],
                path=environ.get("PATH_INFO") or "/",
                query=parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
                headers=headers,
                body=body,
                base_url=f"{environ['wsgi.url_scheme']}://{host}{environ.get('SCRIPT_NAME', '')}",
            )
            response = self.handle(request)
            out_headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
            out_headers.append(("Content-Length", str(len(response.body))))
            start_response(f"{response.status} {response.reason}", out_headers)
            yield response.body

        return app


@dataclass(frozen=True)
class PageInfo:
    """Where a page sits in its list; providers render it as their own ``meta``."""

    current_page: int
    per_page: int
    total_count: int
    total_pages: int
    next_page: int | None
    prev_page: int | None


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _uuid4(rng: random.Random) -> str:
    value = rng.getrandbits(128)
    # Set the version (4) and variant (RFC 4122) bits, as uuid.uuid4() does.
    value = (value & ~(0xF000 << 64)) | (0x4000 << 64)
    value = (value & ~(0xC000 << 48)) | (0x8000 << 48)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _pkce_ok(entry: AuthorizationCode, verifier: str | None) -> bool:
    if not verifier or not entry.code_challenge:
        return False
    if (entry.code_challenge_method or "plain").upper() == "S256":
        digest = hashlib.sha256(verifier.encode()).digest()
        expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    else:
        expected = verifier
    return secrets.compare_digest(expected, entry.code_challenge)


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        user, _, password = base64.b64decode(value).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


def _seconds_header(seconds: float) -> str:
    # Retry-After takes whole seconds; round up so a client waiting that long is let through.
    return str(max(1, math.ceil(seconds)))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _default_code(status: int) -> str:
    return _phrase(status).lower().replace(" ", "_").replace("-", "_")
