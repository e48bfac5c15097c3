"""The only door through which the hub sends HTTP to a provider.

Every call gets a timeout; transient failures (connection errors, timeouts, 429, 5xx) are retried
with exponential backoff and full jitter, honouring ``Retry-After``; a 401 triggers one token
refresh and one retry; error bodies become :class:`~connectors.base.ConnectorError` subclasses
that say whether they are permanent. Log lines name the method, URL path and status — never a
header or body value, and query strings are redacted.

Tests and the benchmark reach the sandboxes through the same client: either over real HTTP
(``make run``, benchmarks) or in-process through ``connectors.sandbox.adapter`` mounted on
``HttpClient.session``.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
import requests
from django.conf import settings

from connectors.base import (
    AuthExpired,
    AuthRevoked,
    ConnectorError,
    NotFound,
    PermanentError,
    RateLimited,
    TransientError,
    ValidationFailed,
)

if TYPE_CHECKING:
    from connectors.base import Connector

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

#: A process-wide session per provider keeps TCP connections alive across calls.
_sessions: dict[str, requests.Session] = {}

#: Test hook: called with each new session so tests can mount the in-process sandbox adapter.
session_factory: Callable[[str], requests.Session] | None = None


class _ConnectorAuth(requests.auth.AuthBase):
    """The session's default authentication: the request as the connector built it."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


class HubSession(requests.Session):
    """A ``requests.Session`` that reads the proxy and CA-bundle environment once a minute per host,
    and never ``~/.netrc``.

    requests reads the environment on every request (``merge_environment_settings`` scans
    ``os.environ`` twice, a sizeable share of a request's own CPU on a long sync); the settings a
    host got are kept :attr:`ENV_TTL` seconds. Explicit ``proxies`` or ``trust_env = False``
    bypass the cache. A request without ``auth`` would also look for a ``.netrc`` file each
    time and, if it named the provider's host, replace the ``Authorization`` header the connector
    set with the file's login: a connection's credentials are its own, so the session's default
    authentication leaves the request as it is.
    """

    ENV_TTL = 60.0

    def __init__(self) -> None:
        super().__init__()
        self.auth = _ConnectorAuth()
        self._env_settings: dict[tuple[Any, ...], tuple[float, dict[str, Any]]] = {}

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> dict[str, Any]:
        if proxies or not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(str(url))
        key = (parts.scheme, parts.netloc, stream, verify, cert if not isinstance(cert, list) else tuple(cert))
        now = time.monotonic()
        cached = self._env_settings.get(key)
        if cached is None or now - cached[0] > self.ENV_TTL:
            cached = self._env_settings[key] = (now, super().merge_environment_settings(url, proxies, stream, verify, cert))
        merged = dict(cached[1])
        merged["proxies"] = dict(merged["proxies"])
        return merged


def new_session() -> requests.Session:
    return HubSession()


def session_for(provider: str) -> requests.Session:
    session = _sessions.get(provider)
    if session is None:
        session = session_factory(provider) if session_factory else new_session()
        _sessions[provider] = session
    return session


def reset_sessions() -> None:
    for session in _sessions.values():
        session.close()
    _sessions.clear()


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Full-jitter exponential backoff, never shorter than the provider's Retry-After."""
    cap = settings.HTTP_BACKOFF_CAP
    delay = random.uniform(0, min(cap, settings.HTTP_BACKOFF_BASE * (2**attempt)))
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap * 4))
    return delay


def describe_body(body: Any) -> str:
    """A short human message out of a provider error body, for ConnectorError messages."""
    if isinstance(body, dict):
        for key in ("message", "error_description", "detail", "error", "errors"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, list) and value:
                first = value[0]
                if isinstance(first, dict):
                    parts = [str(first.get(k)) for k in ("code", "detail", "message") if first.get(k)]
                    return ": ".join(parts) or str(first)
                return str(first)
    if isinstance(body, str):
        return body[:300]
    return "no error body"


def json_body(response: requests.Response) -> Any:
    """The response's JSON, parsed by orjson (several times faster than ``response.json()`` on
    the large pages a first sync reads). A body orjson refuses — not UTF-8, or JSON it does not
    take, such as ``NaN`` — goes through ``response.json()``, which decodes it by its declared
    charset and raises ``ValueError`` when it is not JSON at all, as before."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.json()


def error_from_response(
    response: requests.Response, connector: Connector | None = None
) -> ConnectorError:
    status = response.status_code
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:2000]
    headers = response.headers
    if connector is not None:
        specific = connector.parse_error(status, body, headers)
        if specific is not None:
            if specific.status is None:
                specific.status = status
            return specific
    message = describe_body(body)
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if status == 429:
        return RateLimited(f"rate limited: {message}", status=status, retry_after=retry_after, details=body)
    if status == 401:
        return AuthExpired(f"not authorised: {message}", status=status, details=body)
    if status == 403:
        return AuthRevoked(f"forbidden: {message}", status=status, details=body)
    if status == 404:
        return NotFound(f"not found: {message}", status=status, details=body)
    if status in RETRYABLE_STATUSES or status >= 500:
        return TransientError(f"provider error: {message}", status=status, retry_after=retry_after, details=body)
    if status in (400, 409, 410, 413, 415, 422):
        return ValidationFailed(f"rejected: {message}", status=status, details=body)
    return PermanentError(f"unexpected answer: {message}", status=status, details=body)


def safe_url(url: str) -> str:
    """The URL without its query string (which may carry codes or tokens), for logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?…" if parts.query else "")


class HttpClient:
    """Sends a connector's requests. One per connector instance; sessions are shared."""

    def __init__(self, connector: Connector | None = None, *, provider: str | None = None) -> None:
        self.connector = connector
        self.provider = provider or (connector.slug if connector else "generic")
        self.requests_sent = 0
        self.retries = 0
        #: Called with an AuthExpired once per call; returns True if credentials were renewed.
        self.refresh_hook: Callable[[], bool] | None = None

    @property
    def session(self) -> requests.Session:
        return session_for(self.provider)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        data: Any = None,
        files: Any = None,
        headers: Mapping[str, str] | None = None,
        authenticated: bool = True,
        timeout: tuple[float, float] | float | None = None,
        max_retries: int | None = None,
        expected: tuple[int, ...] = (),
    ) -> requests.Response:
        """Send one logical request, retrying transient failures; raise ConnectorError on failure.

        ``url`` may be absolute or a path relative to the connector's API base URL.
        ``expected`` lists non-2xx statuses the caller handles itself (returned, not raised).
        """
        if not url.startswith(("http://", "https://")):
            if self.connector is None:
                raise ValueError("a relative URL needs a connector")
            url = self.connector.api_base_url() + "/" + url.lstrip("/")
        retries_left = settings.HTTP_MAX_RETRIES if max_retries is None else max_retries
        refreshed = False
        attempt = 0
        while True:
            all_headers: dict[str, str] = {"Accept": "application/json", "User-Agent": "QontoHub/1.0"}
            if self.connector is not None:
                all_headers.update(self.connector.extra_headers())
                if authenticated:
                    all_headers.update(self.connector.auth_headers())
            all_headers.update(headers or {})
            started = time.monotonic()
            error: ConnectorError
            try:
                self.requests_sent += 1
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    data=data,
                    files=files,
                    headers=all_headers,
                    timeout=timeout or settings.HTTP_TIMEOUT,
                    allow_redirects=False,
                )
            except requests.Timeout as exc:
                error = TransientError(f"timed out calling {safe_url(url)}: {type(exc).__name__}")
            except requests.ConnectionError as exc:
                error = TransientError(f"could not reach {safe_url(url)}: {type(exc).__name__}")
            else:
                elapsed_ms = (time.monotonic() - started) * 1000
                logger.debug(
                    "%s %s %s -> %s in %.0f ms", self.provider, method, safe_url(url), response.status_code, elapsed_ms
                )
                if response.status_code < 400 or response.status_code in expected:
                    return response
                error = error_from_response(response, self.connector)
            if isinstance(error, AuthExpired) and authenticated and not refreshed and self.refresh_hook:
                refreshed = True
                logger.info("%s %s %s: 401, refreshing credentials once", self.provider, method, safe_url(url))
                if self.refresh_hook():
                    continue
                raise AuthRevoked(
                    f"{error.message}; refreshing the credentials did not help", status=error.status
                ) from error
            if isinstance(error, AuthExpired) and (refreshed or not self.refresh_hook):
                # A 401 that a refresh cannot cure means the grant or key is no longer valid.
                raise AuthRevoked(error.message, status=error.status, details=error.details) from error
            if error.permanent or retries_left <= 0:
                logger.warning("%s %s %s failed: %s", self.provider, method, safe_url(url), error)
                raise error
            delay = backoff_delay(attempt, error.retry_after)
            logger.info(
                "%s %s %s: %s; retry %d in %.1f s", self.provider, method, safe_url(url), error, attempt + 1, delay
            )
            retries_left -= 1
            attempt += 1
            self.retries += 1
            time.sleep(delay)

    def get_json(self, url: str, **kwargs: Any) -> Any:
        return json_body(self.request("GET", url, **kwargs))
