"""Tests of the sandbox framework: routing, faults, rate limits, clock, OAuth, adapter, server."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from connectors.sandbox.adapter import SandboxAdapter, mount_sandbox
from connectors.sandbox.base import (
    FakeAPI,
    OAuthError,
    SandboxRequest,
    SandboxResponse,
    json_response,
    route,
)
from connectors.sandbox.server import serve

BASE = "https://api.toy.example"


class ToyAPI(FakeAPI):
    """A minimal provider: a list of widgets, an OAuth server and a custom error shape."""

    slug = "toy"
    supported_scopes = frozenset({"read", "write", "offline"})
    refresh_token_scope = "offline"
    refresh_grace_seconds = 60

    def seed(self, rng: Any, size: int = 5) -> None:
        self.widgets = {self.new_id(): {"n": i, "weight": rng.randint(1, 100)} for i in range(size)}

    def error_body(self, status: int, code: str, detail: str, source: Any = None) -> Any:
        return {"fault": {"code": code, "message": detail}}

    @route("GET", "/widgets")
    def list_widgets(self, request: SandboxRequest) -> SandboxResponse:
        page, info = self.paginate(list(self.widgets), int(request.arg("page", "1") or 1), 2)
        return json_response({"ids": list(page), "next": info.next_page, "total": info.total_count})

    @route("GET", "/widgets/{widget_id}")
    def get_widget(self, request: SandboxRequest, widget_id: str) -> SandboxResponse:
        if widget_id not in self.widgets:
            return self.error(404, "missing", "no such widget")
        return json_response(self.widgets[widget_id])

    @route("POST", "/echo")
    def echo(self, request: SandboxRequest) -> SandboxResponse:
        return json_response({"got": request.json(), "ct": request.headers.get("content-type")}, 201)

    @route("POST", "/upload")
    def upload(self, request: SandboxRequest) -> SandboxResponse:
        parts = request.multipart()
        return json_response([[p.name, p.filename, len(p.data), p.data[:4].hex()] for p in parts])

    @route("GET", "/boom")
    def boom(self, request: SandboxRequest) -> SandboxResponse:
        raise RuntimeError("bug")

    @route("GET", "/oauth/authorize")
    @route("POST", "/oauth/authorize")
    def authorize(self, request: SandboxRequest) -> SandboxResponse:
        return self.oauth_authorize(request)

    @route("POST", "/oauth/token")
    def token(self, request: SandboxRequest) -> SandboxResponse:
        return self.oauth_token(request)

    @route("POST", "/oauth/revoke")
    def revoke(self, request: SandboxRequest) -> SandboxResponse:
        return self.oauth_revoke(request)

    def sign_webhook(self, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
        return {"X-Toy-Signature": f"{timestamp}:{secret}:{len(body)}"}


@pytest.fixture
def api() -> ToyAPI:
    return ToyAPI(seed=7)


def call(api: FakeAPI, method: str, url: str, **kwargs: Any) -> SandboxResponse:
    return api.handle(SandboxRequest.from_url(method, url, **kwargs))


# -- routing and seeding --------------------------------------------------------------------------


def test_routes_path_params_and_provider_error_shape(api: ToyAPI) -> None:
    widget_id = next(iter(api.widgets))
    assert call(api, "GET", f"/widgets/{widget_id}").json() == api.widgets[widget_id]
    missing = call(api, "GET", "/widgets/nope")
    assert missing.status == 404 and missing.json() == {
        "fault": {"code": "missing", "message": "no such widget"}
    }
    unrouted = call(api, "GET", "/nowhere")
    assert unrouted.status == 404 and "fault" in unrouted.json()
    wrong_method = call(api, "DELETE", "/widgets")
    assert wrong_method.status == 405 and wrong_method.header("allow") == "GET"
    assert call(api, "POST", "/echo", json_body={"a": 1}).json() == {
        "got": {"a": 1},
        "ct": "application/json",
    }


def test_seed_is_deterministic_and_reset_restores(api: ToyAPI) -> None:
    assert ToyAPI(seed=7).widgets == api.widgets
    assert ToyAPI(seed=8).widgets != api.widgets
    api.widgets.clear()
    api.reset(7, size=3)
    assert list(api.widgets) == list(ToyAPI(seed=7).widgets)[:3]
    with pytest.raises(TypeError):
        FakeAPI(unknown_option=1)


def test_handler_exception_becomes_500(api: ToyAPI) -> None:
    answer = call(api, "GET", "/boom")
    assert answer.status == 500 and answer.json()["fault"]["code"] == "internal_server_error"
    assert "RuntimeError: bug" in api.server_errors[0]
    api.raise_server_errors = True
    with pytest.raises(RuntimeError):
        call(api, "GET", "/boom")


def test_request_log_and_counters(api: ToyAPI) -> None:
    widget_id = next(iter(api.widgets))
    call(api, "GET", "/widgets?page=2")
    call(api, "GET", f"/widgets/{widget_id}")
    call(api, "GET", "/widgets/other")
    assert api.calls("GET", "/widgets/{widget_id}") == 2
    assert api.request_counts["GET /widgets"] == 1
    assert api.requests_made[0].query == {"page": ["2"]}
    assert [r.status for r in api.requests_made] == [200, 200, 404]
    api.clear_log()
    assert api.requests_made == [] and api.calls("GET", "/widgets") == 0


def test_multipart_parsing_keeps_binary_bytes(api: ToyAPI) -> None:
    prepared = requests.Request(
        "POST",
        f"{BASE}/upload",
        files=[
            ("doc[][file]", ("a.pdf", b"%PDF\r\n\x00\xff--x", "application/pdf")),
            ("doc[][key]", (None, "k1")),
        ],
    ).prepare()
    answer = api.handle(SandboxRequest("POST", "/upload", headers=dict(prepared.headers), body=prepared.body))
    assert answer.json() == [["doc[][file]", "a.pdf", 11, "25504446"], ["doc[][key]", None, 2, "6b31"]]


# -- faults, delays, rate limits ----------------------------------------------------------------------


def test_fault_injection_counts_down_and_filters_by_path(api: ToyAPI) -> None:
    api.inject_fault(503, times=2, path_prefix="/widgets", retry_after=7)
    assert call(api, "POST", "/echo", json_body={}).status == 201
    first = call(api, "GET", "/widgets")
    assert first.status == 503 and first.header("Retry-After") == "7"
    assert first.json() == {"fault": {"code": "service_unavailable", "message": "Service Unavailable"}}
    assert call(api, "GET", "/widgets").status == 503
    assert call(api, "GET", "/widgets").status == 200


def test_fault_with_custom_body_and_permanent_fault(api: ToyAPI) -> None:
    api.inject_fault(500, times=None, body={"custom": True})
    for _ in range(3):
        answer = call(api, "GET", "/widgets")
        assert answer.status == 500 and answer.json() == {"custom": True}
    api.clear_faults()
    assert call(api, "GET", "/widgets").status == 200


def test_rate_limit_answers_429_with_retry_after_until_window_slides(api: ToyAPI) -> None:
    api.freeze()
    api.set_rate_limits([(3, 10)])
    assert [call(api, "GET", "/widgets").status for _ in range(3)] == [200, 200, 200]
    limited = call(api, "GET", "/widgets")
    assert limited.status == 429 and limited.header("Retry-After") == "10"
    api.advance(4)
    assert call(api, "GET", "/widgets").header("Retry-After") == "6"
    api.advance(6)
    assert call(api, "GET", "/widgets").status == 200


def test_delay_longer_than_timeout_is_a_timeout_through_the_adapter(api: ToyAPI) -> None:
    session = mount_sandbox(requests.Session(), api, BASE)
    api.inject_fault(None, delay=0.2)
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.get(f"{BASE}/widgets", timeout=0.05)
    api.inject_fault(None, delay=0.05)
    assert session.get(f"{BASE}/widgets", timeout=1).status_code == 200


# -- clock ------------------------------------------------------------------------------------------


def test_clock_starts_at_start_at_and_advances() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    toy = ToyAPI(seed=1, start_at=start)
    assert toy.start_at == start and 0 <= (toy.now() - start).total_seconds() < 5
    frozen = toy.freeze()
    assert toy.now() == frozen
    assert (toy.advance(3600) - frozen).total_seconds() == 3600
    toy.unfreeze()
    assert (toy.now() - frozen).total_seconds() >= 3600


# -- OAuth ------------------------------------------------------------------------------------------


def token_call(api: FakeAPI, **form: str) -> SandboxResponse:
    return call(api, "POST", "/oauth/token", form=form)


def test_authorize_page_authorize_and_deny(api: ToyAPI) -> None:
    query = "client_id=app&redirect_uri=https%3A%2F%2Fhub.example%2Fcb%3Fx%3D1&response_type=code&scope=read+offline&state=s1"
    page = call(api, "GET", f"/oauth/authorize?{query}")
    assert page.status == 200 and b"Authorize" in page.body and b"Deny" in page.body
    assert b'name="decision" value="authorize"' in page.body
    allowed = call(api, "POST", f"/oauth/authorize?{query}", form={"decision": "authorize"})
    assert allowed.status == 302
    location = allowed.header("Location") or ""
    assert location.startswith("https://hub.example/cb?x=1&code=ac_") and "state=s1" in location
    denied = call(api, "POST", f"/oauth/authorize?{query}", form={"decision": "deny"})
    assert "error=access_denied" in (denied.header("Location") or "") and "state=s1" in denied.header(
        "Location"
    )
    bad_scope = call(
        api, "GET", query.join(["/oauth/authorize?", "&scope=admin"]).replace("scope=read+offline&", "")
    )
    assert "error=invalid_scope" in (bad_scope.header("Location") or "")
    no_redirect = call(api, "GET", "/oauth/authorize?client_id=app&response_type=code&state=s")
    assert no_redirect.status == 400 and b"redirect_uri" in no_redirect.body


def test_code_exchange_refresh_rotation_and_grace(api: ToyAPI) -> None:
    api.freeze()
    api.register_oauth_client("app", "shh", ["https://hub.example/cb"])
    code = api.issue_authorization_code("app", "https://hub.example/cb", "read offline")
    bad = token_call(
        api,
        grant_type="authorization_code",
        code=code,
        client_id="app",
        client_secret="nope",
        redirect_uri="https://hub.example/cb",
    )
    assert bad.status == 401 and bad.json()["error"] == "invalid_client"
    tokens = token_call(
        api,
        grant_type="authorization_code",
        code=code,
        client_id="app",
        client_secret="shh",
        redirect_uri="https://hub.example/cb",
    ).json()
    assert tokens["expires_in"] == 3600 and tokens["scope"] == "read offline"
    assert api.verify_access_token(tokens["access_token"])[0] is not None
    replay = token_call(
        api,
        grant_type="authorization_code",
        code=code,
        client_id="app",
        client_secret="shh",
        redirect_uri="https://hub.example/cb",
    )
    assert replay.json()["error"] == "invalid_grant"
    # The replayed code revoked the grant it produced (RFC 6749 §4.1.2).
    assert api.verify_access_token(tokens["access_token"]) == (None, "revoked")


def test_refresh_rotation_with_grace_period(api: ToyAPI) -> None:
    api.freeze()
    code = api.issue_authorization_code("app2", "https://hub.example/cb", ["read", "offline"])
    first = api.exchange_authorization_code("app2", "secret", code, "https://hub.example/cb")
    second = api.refresh_access_token("app2", "secret", first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"]
    api.advance(59)
    retry = api.refresh_access_token("app2", "secret", first["refresh_token"])  # within the grace
    assert retry["access_token"] != second["access_token"]
    api.advance(2)
    with pytest.raises(OAuthError) as exc:
        api.refresh_access_token("app2", "secret", first["refresh_token"])
    assert exc.value.error == "invalid_grant"
    assert api.refresh_access_token("app2", "secret", second["refresh_token"])["access_token"]


def test_access_token_expiry_revocation_and_no_refresh_without_scope(api: ToyAPI) -> None:
    api.freeze()
    code = api.issue_authorization_code("app3", "https://hub.example/cb", "read")
    tokens = api.exchange_authorization_code("app3", "s", code, "https://hub.example/cb")
    assert "refresh_token" not in tokens
    api.advance(3600)
    assert api.verify_access_token(tokens["access_token"]) == (None, "expired")
    code = api.issue_authorization_code("app3", "https://hub.example/cb", "read offline")
    tokens = api.exchange_authorization_code("app3", "s", code, "https://hub.example/cb")
    api.expire_access_tokens()
    assert api.verify_access_token(tokens["access_token"])[1] == "expired"
    revoked = call(
        api,
        "POST",
        "/oauth/revoke",
        form={"client_id": "app3", "client_secret": "s", "token": tokens["refresh_token"]},
    )
    assert revoked.status == 200
    with pytest.raises(OAuthError):
        api.refresh_access_token("app3", "s", tokens["refresh_token"])


def test_pkce_is_checked(api: ToyAPI) -> None:
    import base64
    import hashlib

    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    code = api.issue_authorization_code(
        "p", "https://cb.example", "read", code_challenge=challenge, code_challenge_method="S256"
    )
    with pytest.raises(OAuthError):
        api.exchange_authorization_code("p", "s", code, "https://cb.example", "wrong")
    code = api.issue_authorization_code(
        "p", "https://cb.example", "read", code_challenge=challenge, code_challenge_method="S256"
    )
    assert api.exchange_authorization_code("p", "s", code, "https://cb.example", verifier)["access_token"]


# -- webhooks ---------------------------------------------------------------------------------------


def test_deliver_webhook_signs_and_records(api: ToyAPI) -> None:
    seen: list[tuple[str, bytes, dict[str, str]]] = []

    def transport(url: str, body: bytes, headers: dict[str, str]) -> int:
        seen.append((url, body, headers))
        return 204

    api.webhook_transport = transport
    delivery = api.deliver_webhook("https://hub.example/hook", {"a": 1}, "sec")
    assert delivery.ok and seen[0][1] == b'{"a":1}'
    assert seen[0][2]["X-Toy-Signature"].endswith(":sec:7")
    api.webhook_transport = None
    failed = api.deliver_webhook("http://127.0.0.1:9/closed", {"a": 1}, "sec")  # discard port: refused
    assert not failed.ok and failed.error


# -- adapter and real server ------------------------------------------------------------------------


def test_adapter_returns_real_responses(api: ToyAPI) -> None:
    session = requests.Session()
    session.mount(f"{BASE}/", SandboxAdapter(api, BASE))
    answer = session.post(f"{BASE}/echo", json={"x": [1, 2]}, headers={"X-Trace": "t"})
    assert isinstance(answer, requests.Response)
    assert answer.status_code == 201 and answer.json()["got"] == {"x": [1, 2]}
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.url == f"{BASE}/echo" and answer.request.method == "POST"
    assert api.requests_made[-1].headers["X-Trace"] == "t"
    listed = session.get(f"{BASE}/widgets", params={"page": 3})
    assert listed.json()["ids"] == list(api.widgets)[4:] and listed.reason == "OK"
    assert b"".join(listed.iter_content(3)) == listed.content
    with pytest.raises(requests.HTTPError):
        session.get(f"{BASE}/widgets/none").raise_for_status()


def test_adapter_with_base_path_and_redirects_not_followed(api: ToyAPI) -> None:
    session = mount_sandbox(requests.Session(), api, "http://hub.local/sandbox/toy")
    answer = session.get("http://hub.local/sandbox/toy/widgets")
    assert answer.status_code == 200
    query = "client_id=a&redirect_uri=https%3A%2F%2Fhub.example%2Fcb&response_type=code&scope=read&state=z"
    api.auto_approve = True
    redirect = session.get(f"http://hub.local/sandbox/toy/oauth/authorize?{query}", allow_redirects=False)
    assert redirect.status_code == 302 and redirect.headers["Location"].startswith(
        "https://hub.example/cb?code="
    )


def test_wsgi_server_on_a_real_port(api: ToyAPI) -> None:
    server, base_url = serve(api)
    try:
        assert base_url.startswith("http://127.0.0.1:")
        answers: list[int] = []

        def fetch() -> None:
            answers.append(requests.get(f"{base_url}/widgets", timeout=5).status_code)

        threads = [threading.Thread(target=fetch) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [200] * 8
        posted = requests.post(
            f"{base_url}/echo",
            data=json.dumps({"k": "é"}),
            timeout=5,
            headers={"Content-Type": "application/json"},
        )
        assert posted.status_code == 201 and posted.json()["got"] == {"k": "é"}
        assert requests.get(f"{base_url}/nowhere", timeout=5).status_code == 404
        page = requests.get(
            f"{base_url}/oauth/authorize?client_id=a&redirect_uri=https://x.example/cb"
            "&response_type=code&scope=read&state=q",
            timeout=5,
        )
        assert f'action="{base_url}/oauth/authorize"'.encode() in page.content
        assert api.calls("GET", "/widgets") == 8
    finally:
        server.shutdown()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base_url}/widgets", timeout=2)
