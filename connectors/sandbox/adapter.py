"""A ``requests`` transport adapter that answers from a fake API in-process.

Mounted on a session for a base URL (``https://thirdparty.qonto.com``), it hands every request
under that URL to ``FakeAPI.handle`` without opening a socket, and returns a real
``requests.Response``, so the hub's HTTP door (timeouts, retries, Retry-After, 401 refresh) is
exercised exactly as against the network. Injected delays longer than the request's timeout
raise ``requests.exceptions.ReadTimeout``, like a real slow server.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

from connectors.sandbox.base import FakeAPI, SandboxRequest, SandboxTimeout


class SandboxAdapter(BaseAdapter):
    """Route a session's calls under ``base_url`` to ``api``."""

    def __init__(self, api: FakeAPI, base_url: str) -> None:
        super().__init__()
        self.api = api
        self.base_url = base_url.rstrip("/")
        self._base_path = urlsplit(self.base_url).path

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        url = request.url or ""
        parts = urlsplit(url)
        path = parts.path
        if self._base_path and path.startswith(self._base_path):
            path = path[len(self._base_path) :]
        body = request.body
        if body is None:
            raw = b""
        elif isinstance(body, str):
            raw = body.encode("utf-8")
        elif isinstance(body, bytes):
            raw = body
        else:  # a file or a generator streamed by requests
            raw = body.read() if hasattr(body, "read") else b"".join(body)
        # requests passes (connect, read) or a single number; the read part is what a slow
        # server runs into.
        read_timeout = timeout[1] if isinstance(timeout, tuple) else timeout
        sandbox_request = SandboxRequest(
            method=request.method or "GET",
            path=path or "/",
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=CaseInsensitiveDict(request.headers),
            body=raw,
            base_url=self.base_url,
            timeout=read_timeout,
        )
        try:
            answer = self.api.handle(sandbox_request)
        except SandboxTimeout as exc:
            raise requests.exceptions.ReadTimeout(str(exc), request=request) from exc

        response = requests.Response()
        response.status_code = answer.status
        response.reason = answer.reason
        response.headers = CaseInsensitiveDict(answer.headers)
        response.headers.setdefault("Content-Length", str(len(answer.body)))
        response._content = answer.body
        response._content_consumed = True
        response.raw = io.BytesIO(answer.body)
        response.encoding = get_encoding_from_headers(response.headers)
        response.url = url
        response.request = request
        response.connection = self  # type: ignore[assignment]
        return response

    def close(self) -> None:
        """Nothing to release: there is no connection pool."""


def mount_sandbox(session: requests.Session, api: FakeAPI, *base_urls: str) -> requests.Session:
    """Mount ``api`` on ``session`` for each base URL (API host, OAuth host...)."""
    for base_url in base_urls:
        session.mount(base_url.rstrip("/") + "/", SandboxAdapter(api, base_url))
    return session
