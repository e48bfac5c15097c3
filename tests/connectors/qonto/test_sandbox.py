"""The Qonto sandbox follows the contract in /work/shared/reference/qonto-api.md.

OAuth (code flow, rotation with the 60 s grace, expiry, revocation), the API key, the staging
gate, paging ``meta``, transaction filters and running balances, errors, clients, invoices,
the supplier bulk upload (per-file errors, idempotency), attachments and signed webhooks.
No database: the sandbox is reached in-process through ``requests`` or over a real port.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from connectors.qonto.sandbox import QontoSandbox, qonto_signature
from connectors.sandbox.adapter import mount_sandbox
from connectors.sandbox.server import serve

API = "https://thirdparty.qonto.com"
OAUTH = "https://oauth.qonto.com"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
REDIRECT = "https://hub.example/oauth/qonto/callback"


@pytest.fixture
def qonto() -> QontoSandbox:
    api = QontoSandbox(seed=3, transactions=450, pending=9, declined=3, start_at=START)
    api.freeze(START)
    return api


@pytest.fixture
def http(qonto: QontoSandbox) -> requests.Session:
    return mount_sandbox(requests.Session(), qonto, API, OAUTH)


@pytest.fixture
def key(qonto: QontoSandbox) -> dict[str, str]:
    return {"Authorization": qonto.api_key_header}


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def connect(http: requests.Session, scope: str = "offline_access organization.read") -> dict[str, Any]:
    """The whole browser round trip: consent page, Authorize, code exchange."""
    params = {
        "client_id": "hub-client",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": scope,
        "state": "st-42",
    }
    page = http.get(f"{OAUTH}/oauth2/auth", params=params)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b">Authorize</button>" in page.content and b">Deny</button>" in page.content
    decision = http.post(
        f"{OAUTH}/oauth2/auth", params=params, data={"decision": "authorize"}, allow_redirects=False
    )
    assert decision.status_code == 302
    location = urlsplit(decision.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["st-42"] and query["code"][0].startswith("ory_ac_")
    answer = http.post(
        f"{OAUTH}/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "client_id": "hub-client",
            "client_secret": "hub-secret",
            "redirect_uri": REDIRECT,
        },
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def refresh(http: requests.Session, token: str) -> requests.Response:
    return http.post(
        f"{OAUTH}/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": token,
            "client_id": "hub-client",
            "client_secret": "hub-secret",
        },
    )


def assert_error(response: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """§4.3: ``{"errors": [{code, detail, source?}], "trace_id"}`` with the trace id in X-Tyk-Trace-Id."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errors", "trace_id"} and body["errors"] and "detail" in body["errors"][0]
    assert response.headers["X-Tyk-Trace-Id"] == body["trace_id"]
    if code is not None:
        assert body["errors"][0]["code"] == code
    return body["errors"][0]


# -- OAuth (§2.2) -----------------------------------------------------------------------------


def test_code_flow_gives_hour_long_tokens_with_rotating_refresh(
    http: requests.Session, qonto: QontoSandbox
) -> None:
    tokens = connect(http)
    assert tokens["access_token"].startswith("ory_at_") and tokens["refresh_token"].startswith("ory_rt_")
    assert tokens["expires_in"] == 3600 and tokens["token_type"] == "bearer"
    assert tokens["scope"] == "offline_access organization.read"
    assert http.get(f"{API}/v2/organization", headers=bearer(tokens)).status_code == 200

    rotated = refresh(http, tokens["refresh_token"]).json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    qonto.advance(59)  # the previous refresh token keeps a 60-second grace after its first use
    assert refresh(http, tokens["refresh_token"]).status_code == 200
    qonto.advance(2)
    late = refresh(http, tokens["refresh_token"])
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant"
    assert refresh(http, rotated["refresh_token"]).status_code == 200


def test_access_token_expires_after_an_hour(http: requests.Session, qonto: QontoSandbox) -> None:
    tokens = connect(http)
    qonto.advance(3599)
    assert http.get(f"{API}/v2/organization", headers=bearer(tokens)).status_code == 200
    qonto.advance(1)
    expired = http.get(f"{API}/v2/organization", headers=bearer(tokens))
    assert assert_error(expired, 401, "unauthorized")["detail"] == "The access token expired"
    fresh = refresh(http, tokens["refresh_token"]).json()
    assert http.get(f"{API}/v2/organization", headers=bearer(fresh)).status_code == 200
    qonto.expire_access_tokens()
    assert http.get(f"{API}/v2/organization", headers=bearer(fresh)).status_code == 401


def test_refresh_token_only_with_offline_access_and_id_token_with_openid(http: requests.Session) -> None:
    tokens = connect(http, scope="organization.read openid")
    assert "refresh_token" not in tokens and tokens["id_token"].count(".") == 2


def test_code_is_single_use_and_expires(qonto: QontoSandbox) -> None:
    code = qonto.issue_authorization_code("hub", REDIRECT, "organization.read")
    qonto.advance(601)  # codes live 10 minutes
    with pytest.raises(Exception, match="expired"):
        qonto.exchange_authorization_code("hub", "s", code, REDIRECT)


def test_deny_unknown_scope_and_wrong_secret(http: requests.Session) -> None:
    params = {"client_id": "hub-client", "redirect_uri": REDIRECT, "response_type": "code", "state": "x"}
    denied = http.post(
        f"{OAUTH}/oauth2/auth",
        params={**params, "scope": "organization.read"},
        data={"decision": "deny"},
        allow_redirects=False,
    )
    assert parse_qs(urlsplit(denied.headers["Location"]).query)["error"] == ["access_denied"]
    unknown = http.get(
        f"{OAUTH}/oauth2/auth", params={**params, "scope": "bank.everything"}, allow_redirects=False
    )
    assert parse_qs(urlsplit(unknown.headers["Location"]).query)["error"] == ["invalid_scope"]
    connect(http)  # the first secret presented for a new client id sticks
    wrong = http.post(
        f"{OAUTH}/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": "x",
            "client_id": "hub-client",
            "client_secret": "no",
        },
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


def test_scopes_are_enforced(http: requests.Session) -> None:
    tokens = connect(http, scope="offline_access organization.read")
    forbidden = http.get(f"{API}/v2/clients", headers=bearer(tokens))
    assert "missing required oauth scope" in assert_error(forbidden, 403, "forbidden")["detail"]
    assert http.get(f"{API}/v2/transactions/does-not-exist", headers=bearer(tokens)).status_code == 404


def test_revocation_paths(http: requests.Session, qonto: QontoSandbox) -> None:
    tokens = connect(http)
    revoked = http.post(
        f"{OAUTH}/oauth2/revoke",
        data={"client_id": "hub-client", "client_secret": "hub-secret", "token": tokens["refresh_token"]},
    )
    assert revoked.status_code == 200
    assert refresh(http, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert http.get(f"{API}/v2/organization", headers=bearer(tokens)).status_code == 401

    tokens = connect(http)
    assert http.delete(f"{API}/v2/oauth2/consents", headers=bearer(tokens)).status_code == 204
    assert http.get(f"{API}/v2/organization", headers=bearer(tokens)).status_code == 401

    tokens = connect(http)
    qonto.revoke_all_tokens()
    assert http.get(f"{API}/v2/organization", headers=bearer(tokens)).status_code == 401
    assert refresh(http, tokens["refresh_token"]).status_code == 400


# -- API key and staging token (§2.1, §1) ------------------------------------------------------


def test_api_key_header_is_slug_colon_secret(
    http: requests.Session, qonto: QontoSandbox, key: dict[str, str]
) -> None:
    answer = http.get(f"{API}/v2/organization", headers=key)
    assert answer.status_code == 200 and answer.headers["X-Request-Id"]
    organization = answer.json()["organization"]
    assert organization["slug"] == qonto.organization_slug
    assert qonto.api_key_header == f"{qonto.organization_slug}:{qonto.secret_key}"
    assert_error(http.get(f"{API}/v2/organization"), 401, "unauthorized")
    assert_error(
        http.get(f"{API}/v2/organization", headers={"Authorization": f"{qonto.organization_slug}:bad"}), 401
    )
    basic = requests.auth._basic_auth_str(qonto.organization_slug, qonto.secret_key)  # type: ignore[attr-defined]
    assert http.get(f"{API}/v2/organization", headers={"Authorization": basic}).status_code == 401
    # Webhooks are OAuth-only (§2.1).
    assert_error(http.get(f"{API}/v2/webhook_subscriptions", headers=key), 403)
    old = dict(key)
    qonto.rotate_api_key()
    assert http.get(f"{API}/v2/organization", headers=old).status_code == 401


def test_organization_and_bank_accounts(http: requests.Session, key: dict[str, str]) -> None:
    organization = http.get(f"{API}/v2/organization", headers=key).json()["organization"]
    accounts = organization["bank_accounts"]
    assert len(accounts) == 3 and sum(a["main"] for a in accounts) == 1
    for account in accounts:
        assert (
            account["iban"].startswith("FR76")
            and len(account["iban"]) == 27
            and account["bic"] == "QNTOFRP1XXX"
        )
        assert int(account["iban"][4:] + "1527" + account["iban"][2:4]) % 97 == 1  # ISO 13616 check digits
        assert account["balance_cents"] == round(account["balance"] * 100)
        assert account["authorized_balance_cents"] <= account["balance_cents"]
    with_external = http.get(f"{API}/v2/organization?include_external_accounts=true", headers=key).json()
    external = [a for a in with_external["organization"]["bank_accounts"] if a["is_external_account"]]
    assert len(external) == 1 and external[0]["iban"] is None
    listed = http.get(f"{API}/v2/bank_accounts", headers=key).json()
    assert [a["id"] for a in listed["bank_accounts"]] == [a["id"] for a in accounts]
    one = http.get(f"{API}/v2/bank_accounts/{accounts[0]['id']}", headers=key).json()
    assert one["bank_account"]["id"] == accounts[0]["id"]


def test_staging_token_gate_answers_html(qonto: QontoSandbox) -> None:
    qonto.reset(3, transactions=20, start_at=START, staging_token="stg-123")
    http = mount_sandbox(requests.Session(), qonto, API, OAUTH)
    headers = {"Authorization": qonto.api_key_header}
    gated = http.get(f"{API}/v2/organization", headers=headers)
    assert gated.status_code == 200 and gated.headers["Content-Type"].startswith("text/html")
    token = http.post(f"{OAUTH}/oauth2/token", data={"grant_type": "refresh_token"})
    assert token.headers["Content-Type"].startswith("text/html")
    ok = http.get(f"{API}/v2/organization", headers={**headers, "X-Qonto-Staging-Token": "stg-123"})
    assert ok.json()["organization"]["slug"] == qonto.organization_slug
    # The consent page is a browser page: gated by the web login in reality, not by the header.
    page = http.get(
        f"{OAUTH}/oauth2/auth?client_id=a&redirect_uri={REDIRECT}&response_type=code&scope=webhook&state=s"
    )
    assert b"Authorize" in page.content


# -- paging and transactions (§3.2, §4.2) ---------------------------------------------------------


def test_pagination_meta_exactly_as_documented(
    http: requests.Session, qonto: QontoSandbox, key: dict[str, str]
) -> None:
    account = qonto.main_account_id
    completed = len(qonto.transactions_of(account, status="completed"))
    url = f"{API}/v2/transactions?bank_account_id={account}"
    first = http.get(f"{url}&per_page=100", headers=key).json()
    pages = -(-completed // 100)
    assert first["meta"] == {
        "current_page": 1,
        "next_page": 2,
        "prev_page": None,
        "total_pages": pages,
        "total_count": completed,
        "per_page": 100,
    }
    assert len(first["transactions"]) == 100
    last = http.get(f"{url}&current_page={pages}", headers=key).json()  # the current_page alias
    assert last["meta"]["next_page"] is None and last["meta"]["prev_page"] == pages - 1
    assert len(last["transactions"]) == completed - 100 * (pages - 1)
    beyond = http.get(f"{url}&page={pages + 1}", headers=key).json()
    assert beyond["transactions"] == [] and beyond["meta"]["next_page"] is None
    assert http.get(url, headers=key).json()["meta"]["per_page"] == 100  # default
    error = assert_error(http.get(f"{url}&per_page=101", headers=key), 400, "invalid_parameter")
    assert error["source"] == {"parameter": "per_page"}
    assert_error(http.get(f"{url}&page=0", headers=key), 400)


def test_every_transaction_is_read_once_across_pages(
    http: requests.Session, qonto: QontoSandbox, key: dict[str, str]
) -> None:
    seen: list[str] = []
    page: int | None = 1
    while page:
        body = http.get(
            f"{API}/v2/transactions",
            params={
                "bank_account_id": qonto.main_account_id,
                "status[]": ["pending", "declined", "completed"],
                "sort_by": "updated_at:asc",
                "per_page": 37,
                "page": page,
            },
            headers=key,
        ).json()
        seen += [t["id"] for t in body["transactions"]]
        page = body["meta"]["next_page"]
    assert len(seen) == len(set(seen)) == len(qonto.transactions_of(qonto.main_account_id))


def test_default_status_is_completed_and_status_filter(
    http: requests.Session, qonto: QontoSandbox, key: dict[str, str]
) -> None:
    url = f"{API}/v2/transactions?bank_account_id={qonto.main_account_id}"
    default = http.get(url, headers=key).json()
    assert {t["status"] for t in default["transactions"]} == {"completed"}
    pending = http.get(f"{url}&status[]=pending", headers=key).json()["transactions"]
    assert pending and all(t["status"] == "pending" and t["settled_at"] is None for t in pending)
    both = http.get(f"{url}&status[]=pending&status[]=completed", headers=key).json()["meta"]["total_count"]
    assert both == default["meta"]["total_count"] + len(pending)
    assert_error(http.get(f"{url}&status[]=lost", headers=key), 400)


def test_transaction_shape(http: requests.Session, qonto: QontoSandbox, key: dict[str, str]) -> None:
    tx = http.get(
        f"{API}/v2/transactions?bank_account_id={qonto.main_account_id}&per_page=1", headers=key
    ).json()["transactions"][0]
    for name in (
        "id transaction_id amount amount_cents settled_balance settled_balance_cents local_amount local_amount_cents "
        "local_currency currency side operation_type label clean_counterparty_name settled_at emitted_at created_at "
        "updated_at status note reference vat_amount vat_amount_cents vat_rate initiator_id label_ids attachment_ids "
        "attachment_lost attachment_required card_last_digits category cashflow_category cashflow_subcategory "
        "subject_type bank_account_id is_external_transaction"
    ).split():
        assert name in tx, name
    assert tx["amount"] > 0 and tx["amount_cents"] == round(tx["amount"] * 100)
    assert tx["side"] in ("credit", "debit")
    assert tx["transaction_id"].startswith(f"{qonto.organization_slug}-transaction-")
    datetime.strptime(tx["settled_at"], "%Y-%m-%dT%H:%M:%S.%fZ")  # the format OCA parses
    one = http.get(f"{API}/v2/transactions/{tx['id']}", headers=key).json()["transaction"]
    assert one == tx


def test_running_balances_are_continuous(
    http: requests.Session, qonto: QontoSandbox, key: dict[str, str]
) -> None:
    for account in http.get(f"{API}/v2/bank_accounts", headers=key).json()["bank_accounts"]:
        rows: list[dict[str, Any]] = []
        page: int | None = 1
        while page:
            body = http.get(
                f"{API}/v2/transactions",
                params={"bank_account_id": account["id"], "sort_by": "settled_at:asc", "page": page},
                headers=key,
            ).json()
            rows += body["transactions"]
            page = body["meta"]["next_page"]
        settled_at = [r["settled_at"] for r in rows]
        assert settled_at == sorted(settled_at) and len(set(settled_at)) == len(settled_at)
        for previous, current in zip(rows, rows[1:], strict=False):
            signed = current["amount_cents"] if current["side"] == "credit" else -current["amount_cents"]
            assert previous["settled_balance_cents"] + signed == current["settled_balance_cents"]
        assert rows[-1]["settled_balance_cents"] == account["balance_cents"]
        assert min(r["settled_balance_cents"] for r in rows) >= 0


def test_date_filters_sorting_and_account_selection(
    http: requests.Session, qonto: QontoSandbox, key: dict[str, str]
) -> None:
    account = qonto.main_account_id
    everything = qonto.transactions_of(account, status="completed")
    start, end = everything[100]["settled_at"], everything[199]["settled_at"]
    window = http.get(
        f"{API}/v2/transactions",
        params={
            "bank_account_id": account,
            "settled_at_from": start,
            "settled_at_to": end,
            "sort_by": "settled_at:asc",
        },
        headers=key,
    ).json()
    assert [t["id"] for t in window["transactions"]] == [
        t["id"] for t in everything[100:200]
    ]  # inclusive bounds
    desc = http.get(
        f"{API}/v2/transactions",
        params={"bank_account_id": account, "settled_at_from": start, "settled_at_to": end},
        headers=key,
    ).json()
    assert [t["id"] for t in desc["transactions"]] == [t["id"] for t in reversed(everything[100:200])]

    iban = next(a for a in qonto.accounts.values() if a.id == account).iban
    by_iban = http.get(f"{API}/v2/transactions?iban={iban}", headers=key).json()
    assert by_iban["meta"]["total_count"] == len(everything)
    other = next(a for a in qonto.accounts.values() if not a.main and not a.is_external)
    wins = http.get(f"{API}/v2/transactions?iban={iban}&bank_account_id={other.id}", headers=key).json()
    assert {t["bank_account_id"] for t in wins["transactions"]} == {other.id}

    credits = http.get(f"{API}/v2/transactions?bank_account_id={account}&side=credit", headers=key).json()
    assert {t["side"] for t in credits["transactions"]} == {"credit"}
    cards = http.get(
        f"{API}/v2/transactions?bank_account_id={account}&operation_type[]=card", headers=key
    ).json()
    assert {t["operation_type"] for t in cards["transactions"]} == {"card"}
    with_files = http.get(
        f"{API}/v2/transactions?bank_account_id={account}&with_attachments=true", headers=key
    ).json()
    assert all(t["attachment_ids"] for t in with_files["transactions"])

    bad = http.get(f"{API}/v2/transactions?bank_account_id={account}&settled_at_to=2026-13-45", headers=key)
    assert "ISO 8601" in assert_error(bad, 400)["detail"]
    assert_error(
        http.get(f"{API}/v2/transactions?bank_account_id={account}&sort_by=amount:asc", headers=key), 400
    )
    assert_error(http.get(f"{API}/v2/transactions", headers=key), 400)
    assert_error(http.get(f"{API}/v2/transactions?bank_account_id=nope", headers=key), 404, "not_found")


def test_incremental_sync_sees_new_and_changed_transactions(
    http: requests.Session, qonto: QontoSandbox, key: dict[str, str]
) -> None:
    account = qonto.main_account_id
    params = {"bank_account_id": account, "status[]": ["pending", "completed"], "sort_by": "updated_at:asc"}
    last = max(qonto.transactions_of(account), key=lambda t: t["updated_at"])
    cursor = last["updated_at"]
    qonto.advance(60)
    added = qonto.add_transactions(3)
    changed = qonto.update_transaction(
        qonto.transactions_of(account, status="completed")[5]["id"], note="Refacturé"
    )
    delta = http.get(
        f"{API}/v2/transactions", params={**params, "updated_at_from": cursor}, headers=key
    ).json()
    ids = [t["id"] for t in delta["transactions"]]
    # Bounds are inclusive, so the row the cursor came from is read again.
    assert ids[0] == last["id"]
    assert set(ids[1:]) == {t["id"] for t in added} | {changed["id"]}
    assert ids[-1] == changed["id"] and changed["note"] == "Refacturé"
    assert added[-1]["settled_balance_cents"] == qonto.accounts[account].balance_cents


def test_pending_transactions_settle_as_the_clock_moves(
    http: requests.Session, qonto: QontoSandbox, key: dict[str, str]
) -> None:
    account = qonto.main_account_id
    url = f"{API}/v2/transactions?bank_account_id={account}&status[]=pending"
    before = http.get(url, headers=key).json()["meta"]["total_count"]
    assert before > 0
    qonto.advance(3 * 86400 + 1)  # seeded pending transactions settle within 3 days
    assert http.get(url, headers=key).json()["meta"]["total_count"] == 0
    newest = max(qonto.transactions_of(account, status="completed"), key=lambda t: t["settled_at"])
    assert newest["settled_balance_cents"] == qonto.accounts[account].balance_cents

    new = qonto.add_transactions(2, status="pending")
    assert all(t["status"] == "pending" for t in new)
    settled = qonto.settle_pending()
    assert {t["id"] for t in settled} == {t["id"] for t in new}
    assert all(t["status"] == "completed" and t["settled_at"] for t in settled)
    later = qonto.add_transactions(1, status="pending", settle_in=30)[0]
    qonto.advance(31)
    assert (
        http.get(f"{API}/v2/transactions/{later['id']}", headers=key).json()["transaction"]["status"]
        == "completed"
    )


def test_seeding_exactly_n_transactions_is_deterministic() -> None:
    first = QontoSandbox(seed=9, transactions=1234, pending=0, declined=0, start_at=START)
    assert first.count_transactions(include_external=False) == 1234
    assert first.count_transactions(status="completed", include_external=False) == 1234
    second = QontoSandbox(seed=9, transactions=1234, pending=0, declined=0, start_at=START)
    assert first.transactions_of() == second.transactions_of()
    assert first.clients == second.clients and first.supplier_invoices == second.supplier_invoices


def test_invoice_payments_appear_as_transfers(qonto: QontoSandbox) -> None:
    by_reference = {t["reference"]: t for t in qonto.transactions_of() if t["reference"]}
    paid = [
        i for i in qonto.client_invoices.values() if i["status"] == "paid" and i["number"] in by_reference
    ]
    assert paid
    for invoice in paid:
        tx = by_reference[invoice["number"]]
        assert tx["side"] == "credit" and tx["amount_cents"] == invoice["total_amount_cents"]
    linked = [s for s in qonto.supplier_invoices.values() if s["matched_transactions_ids"]]
    assert linked
    for invoice in linked:
        tx = qonto.transaction(invoice["matched_transactions_ids"][0])
        assert tx["side"] == "debit" and tx["reference"] == invoice["invoice_number"]
        assert invoice["attachment_id"] in tx["attachment_ids"]


# -- errors and rate limits (§4.3, §4.5) -------------------------------------------------------------


def test_unknown_route_is_the_gateways_plain_404(http: requests.Session, key: dict[str, str]) -> None:
    answer = http.get(f"{API}/v2/organizations", headers=key)
    assert answer.status_code == 404 and answer.headers["Content-Type"].startswith("text/plain")
    assert "X-Request-Id" not in answer.headers


def test_rate_limit_and_injected_faults(
    http: requests.Session, qonto: QontoSandbox, key: dict[str, str]
) -> None:
    qonto.set_rate_limits([(5, 10)])
    statuses = [http.get(f"{API}/v2/organization", headers=key).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    limited = http.get(f"{API}/v2/organization", headers=key)
    assert_error(limited, 429) and limited.headers["Retry-After"] == "10"
    qonto.advance(10)
    assert http.get(f"{API}/v2/organization", headers=key).status_code == 200
    qonto.set_rate_limits([])
    qonto.inject_fault(503, times=1, path_prefix="/v2/transactions", retry_after=2)
    failed = http.get(f"{API}/v2/transactions?bank_account_id={qonto.main_account_id}", headers=key)
    assert_error(failed, 503) and failed.headers["Retry-After"] == "2"


def test_too_many_unauthorized_answers_are_throttled(http: requests.Session) -> None:
    statuses = [
        http.get(f"{API}/v2/organization", headers={"Authorization": "x:y"}).status_code for _ in range(201)
    ]
    assert statuses[:200] == [401] * 200 and statuses[200] == 429


# -- attachments (§3.3) ---------------------------------------------------------------------------


def test_attachment_urls_are_short_lived(
    http: requests.Session, qonto: QontoSandbox, key: dict[str, str]
) -> None:
    tx = next(t for t in qonto.transactions_of(status="completed") if t["attachment_ids"])
    listed = http.get(f"{API}/v2/transactions/{tx['id']}/attachments", headers=key).json()
    assert listed["meta"]["total_count"] == len(tx["attachment_ids"])
    attachment = http.get(f"{API}/v2/attachments/{tx['attachment_ids'][0]}", headers=key).json()["attachment"]
    assert isinstance(attachment["file_size"], str) and attachment["probative_attachment"]["status"]
    assert attachment["url"].startswith(f"{API}/files/") and "X-Amz-Expires=1800" in attachment["url"]
    download = http.get(attachment["url"])
    assert download.status_code == 200 and download.content.startswith(b"%PDF")
    assert str(len(download.content)) == attachment["file_size"]
    included = http.get(
        f"{API}/v2/transactions/{tx['id']}?includes[]=attachments&includes[]=labels", headers=key
    )
    assert included.json()["transaction"]["attachments"][0]["id"] == attachment["id"]
    qonto.advance(1801)
    expired = http.get(attachment["url"])
    assert expired.status_code == 403 and b"Request has expired" in expired.content
    tampered = http.get(attachment["url"].replace("X-Amz-Signature=", "X-Amz-Signature=0"))
    assert tampered.status_code == 403


# -- clients, invoices, credit notes (§3.5-3.7) -------------------------------------------------------


def test_clients_list_filters_create_update_delete(
    http: requests.Session, qonto: QontoSandbox, key: dict[str, str]
) -> None:
    listed = http.get(f"{API}/v2/clients", headers=key).json()
    names = [c["name"] or f"{c['first_name']} {c['last_name']}" for c in listed["clients"]]
    assert listed["meta"]["total_count"] == len(qonto.clients) and len(names) == len(qonto.clients)

    created = http.post(
        f"{API}/v2/clients",
        json={
            "kind": "company",
            "name": "Société Générale des Élixirs",
            "email": "compta@elixirs.example",
            "currency": "EUR",
            "locale": "fr",
            "billing_address": {
                "street_address": "1 rue A",
                "city": "Paris",
                "zip_code": "75001",
                "country_code": "FR",
            },
        },
        headers=key,
    )
    assert created.status_code == 200
    client = created.json()["client"]
    assert client["type"] == "company" and client["city"] == "Paris"
    found = http.get(f"{API}/v2/clients", params={"filter[name]": "generale des elix"}, headers=key).json()
    assert [c["id"] for c in found["clients"]] == [client["id"]]  # partial, case- and accent-insensitive
    by_email = http.get(
        f"{API}/v2/clients", params={"filter[email]": "COMPTA@elixirs.example"}, headers=key
    ).json()
    assert by_email["meta"]["total_count"] == 1

    patched = http.patch(
        f"{API}/v2/clients/{client['id']}", json={"email": "hello@elixirs.example"}, headers=key
    )
    assert patched.json()["client"]["email"] == "hello@elixirs.example"
    invalid = http.post(f"{API}/v2/clients", json={"kind": "company"}, headers=key)
    assert assert_error(invalid, 422, "blank")["source"] == {"pointer": "/name"}
    assert http.delete(f"{API}/v2/clients/{client['id']}", headers=key).status_code == 204
    assert_error(http.get(f"{API}/v2/clients/{client['id']}", headers=key), 404, "not_found")


def test_idempotency_key_replays_the_first_success(
    http: requests.Session, qonto: QontoSandbox, key: dict[str, str]
) -> None:
    headers = {**key, "X-Qonto-Idempotency-Key": str(uuid.uuid4())}
    first = http.post(
        f"{API}/v2/clients",
        json={"kind": "individual", "first_name": "Ana", "last_name": "Roy"},
        headers=headers,
    )
    again = http.post(
        f"{API}/v2/clients",
        json={"kind": "individual", "first_name": "Zed", "last_name": "Q"},
        headers=headers,
    )
    assert first.json() == again.json()  # even with a different body (§4.4)
    assert len(qonto.clients) == 41
    qonto.advance(30 * 60 + 1)
    third = http.post(
        f"{API}/v2/clients",
        json={"kind": "individual", "first_name": "Zed", "last_name": "Q"},
        headers=headers,
    )
    assert third.json()["client"]["id"] != first.json()["client"]["id"]


def test_client_invoices_and_credit_notes(
    http: requests.Session, qonto: QontoSandbox, key: dict[str, str]
) -> None:
    listed = http.get(
        f"{API}/v2/client_invoices", params={"filter[status]": "paid,unpaid", "per_page": 10}, headers=key
    )
    body = listed.json()
    assert body["meta"]["per_page"] == 10 and body["meta"]["total_count"] == sum(
        1 for i in qonto.client_invoices.values() if i["status"] in ("paid", "unpaid")
    )
    invoice = body["client_invoices"][0]
    assert invoice["total_amount"]["currency"] == "EUR" and isinstance(invoice["total_amount"]["value"], str)
    assert invoice["total_amount_cents"] == sum(item["total_amount_cents"] for item in invoice["items"])
    assert invoice["number"].startswith("F-")
    created = [i["created_at"] for i in body["client_invoices"]]
    assert created == sorted(created, reverse=True)
    drafts = http.get(f"{API}/v2/client_invoices?filter[status]=draft", headers=key).json()["client_invoices"]
    assert all(d["finalized_at"] == "" and d["number"] is None for d in drafts)
    assert_error(http.get(f"{API}/v2/client_invoices?filter[status]=lost", headers=key), 400)
    notes = http.get(f"{API}/v2/credit_notes", headers=key).json()
    assert notes["meta"]["total_count"] == len(qonto.credit_notes)
    note = notes["credit_notes"][0]
    assert note["invoice_id"] in qonto.client_invoices
    assert http.get(f"{API}/v2/credit_notes/{note['id']}", headers=key).json()["credit_note"] == note


# -- supplier invoices (§3.10) ---------------------------------------------------------------------


def bulk(
    http: requests.Session, key: dict[str, str], files: list[tuple[str, Any]], **headers: str
) -> requests.Response:
    return http.post(f"{API}/v2/supplier_invoices/bulk", files=files, headers={**key, **headers})


def test_bulk_upload_reports_per_file_errors_in_a_200(
    http: requests.Session, qonto: QontoSandbox, key: dict[str, str]
) -> None:
    before = len(qonto.supplier_invoices)
    answer = bulk(
        http,
        key,
        [
            ("supplier_invoices[][file]", ("bill-1.pdf", b"%PDF-1.4 one", "application/pdf")),
            ("supplier_invoices[][idempotency_key]", (None, "key-1")),
            ("supplier_invoices[][file]", ("virus.exe", b"MZ...", "application/x-msdownload")),
            ("supplier_invoices[][idempotency_key]", (None, "key-2")),
            ("supplier_invoices[][file]", ("bill-3.png", b"\x89PNG...", "image/png")),
            ("meta", (None, '{"integration_type":"quickbooks","connector":"qontohub"}')),
        ],
    )
    assert answer.status_code == 200
    body = answer.json()
    assert [s["file_name"] for s in body["supplier_invoices"]] == ["bill-1.pdf"]
    assert body["supplier_invoices"][0]["status"] == "to_review"
    assert body["supplier_invoices"][0]["meta"] == {"integration_type": "quickbooks", "connector": "qontohub"}
    assert [e["source"]["pointer"] for e in body["errors"]] == [
        "/supplier_invoices/1/file",
        "/supplier_invoices/2/idempotency_key",
    ]
    assert len(qonto.supplier_invoices) == before + 1
    created = body["supplier_invoices"][0]
    fetched = http.get(f"{API}/v2/supplier_invoices/{created['id']}", headers=key).json()["supplier_invoice"]
    assert fetched == created
    attachment = http.get(f"{API}/v2/attachments/{created['attachment_id']}", headers=key).json()[
        "attachment"
    ]
    assert http.get(attachment["url"]).content == b"%PDF-1.4 one"


def test_bulk_upload_idempotency(http: requests.Session, qonto: QontoSandbox, key: dict[str, str]) -> None:
    files = [
        ("supplier_invoices[][file]", ("bill.pdf", b"%PDF-1.4 a", "application/pdf")),
        ("supplier_invoices[][idempotency_key]", (None, "per-file-key")),
    ]
    first = bulk(http, key, files).json()["supplier_invoices"][0]
    again = bulk(http, key, files).json()["supplier_invoices"][0]  # same per-file key: no duplicate
    assert again["id"] == first["id"]
    request_key = str(uuid.uuid4())
    other = [
        ("supplier_invoices[][file]", ("other.pdf", b"%PDF-1.4 b", "application/pdf")),
        ("supplier_invoices[][idempotency_key]", (None, "other-key")),
    ]
    one = bulk(http, key, other, **{"X-Qonto-Idempotency-Key": request_key})
    two = bulk(http, key, files, **{"X-Qonto-Idempotency-Key": request_key})
    assert one.content == two.content
    count = len(qonto.supplier_invoices)
    assert (
        sum(1 for s in qonto.supplier_invoices.values() if s["file_name"] in ("bill.pdf", "other.pdf")) == 2
    )
    assert_error(bulk(http, key, [("source", (None, "integration"))]), 400)
    huge = [("supplier_invoices[][file]", ("big.pdf", b"%" * (15 * 1024 * 1024 + 1), "application/pdf"))]
    assert_error(bulk(http, key, huge), 400)
    assert len(qonto.supplier_invoices) == count


def test_supplier_invoice_list_filters(
    http: requests.Session, qonto: QontoSandbox, key: dict[str, str]
) -> None:
    paid = http.get(f"{API}/v2/supplier_invoices?filter[status][]=paid&per_page=5", headers=key).json()
    assert paid["meta"]["total_count"] == sum(
        1 for s in qonto.supplier_invoices.values() if s["status"] == "paid"
    )
    assert all(
        s["status"] == "paid" and s["total_amount"]["currency"] == "EUR" for s in paid["supplier_invoices"]
    )
    cutoff = sorted(s["updated_at"] for s in qonto.supplier_invoices.values())[-10]
    recent = http.get(
        f"{API}/v2/supplier_invoices", params={"filter[updated_at_from]": cutoff}, headers=key
    ).json()
    assert recent["meta"]["total_count"] >= 10


# -- webhooks (§3.12) ---------------------------------------------------------------------------


def test_documented_signature_test_vector() -> None:
    assert qonto_signature("test-secret", b'{"test":"data"}', 1704110400) == (
        "t=1704110400,v1=56aff06dc227db80d6568a5070f912c601c31f20451745d257cbc0b5dfa93805"
    )


def test_webhook_subscriptions_and_signed_deliveries(http: requests.Session, qonto: QontoSandbox) -> None:
    tokens = connect(http, scope="offline_access organization.read webhook")
    auth = bearer(tokens)
    secret = "s" * 40
    created = http.post(
        f"{API}/v2/webhook_subscriptions",
        json={
            "callback_url": "https://hub.example/webhooks/qonto/abc/",
            "types": ["v1/transactions"],
            "secret": secret,
        },
        headers=auth,
    )
    assert created.status_code == 201
    subscription = created.json()
    assert "subscription" not in subscription and subscription["secret"] == secret  # flat, secret echoed
    listed = http.get(f"{API}/v2/webhook_subscriptions", headers=auth).json()
    assert [s["id"] for s in listed["subscriptions"]] == [subscription["id"]] and "meta" in listed
    assert "secret" not in listed["subscriptions"][0]
    bad = http.post(
        f"{API}/v2/webhook_subscriptions", json={"callback_url": "ftp://x", "types": ["v1/x"]}, headers=auth
    )
    assert_error(bad, 422)

    received: list[tuple[str, bytes, dict[str, str]]] = []
    qonto.webhook_transport = lambda url, body, headers: received.append((url, body, headers)) or 200
    added = qonto.add_transactions(1)[0]
    deliveries = qonto.flush_webhooks()
    assert len(deliveries) == 1 and deliveries[0].ok
    url, body, headers = received[0]
    assert url == "https://hub.example/webhooks/qonto/abc/"
    timestamp, signature = (part.split("=", 1)[1] for part in headers["X-Qonto-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    payload = deliveries[0].json()
    assert payload["type"] == "v1/transactions" and payload["subscription_id"] == subscription["id"]
    assert payload["data"]["event"] == "created" and payload["data"]["id"] == added["id"]
    assert set(payload) == {
        "id",
        "subscription_id",
        "organization_id",
        "membership_id",
        "type",
        "created_at",
        "data",
    }

    qonto.webhook_transport = lambda url, body, headers: 500
    qonto.update_transaction(added["id"], note="n")
    assert not qonto.flush_webhooks()[0].ok and len(qonto.pending_webhooks) == 1  # kept for a retry
    qonto.webhook_transport = lambda url, body, headers: 204
    assert qonto.flush_webhooks()[0].ok and qonto.pending_webhooks == []

    assert (
        http.delete(f"{API}/v2/webhook_subscriptions/{subscription['id']}", headers=auth).status_code == 204
    )
    assert http.get(f"{API}/v2/webhook_subscriptions", headers=auth).json()["subscriptions"] == []


def test_webhook_delivery_over_a_real_port(qonto: QontoSandbox) -> None:
    """The hub side: a receiver on a real port gets a POST it can verify."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    got: list[tuple[bytes, str]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            got.append(
                (self.rfile.read(int(self.headers["Content-Length"])), self.headers["X-Qonto-Signature"])
            )
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    import threading

    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        delivery = qonto.deliver_webhook(
            f"http://127.0.0.1:{receiver.server_address[1]}/hook", {"test": "data"}, "k" * 32
        )
        assert delivery.ok
        body, header = got[0]
        t = header.split(",")[0][2:]
        assert header == qonto_signature("k" * 32, body, int(t)) and body == b'{"test":"data"}'
    finally:
        receiver.shutdown()
        receiver.server_close()


# -- over a real port, at benchmark size -----------------------------------------------------------


def test_fifty_thousand_transactions_page_fast_over_http() -> None:
    started = time.perf_counter()
    api = QontoSandbox(seed=1, transactions=50_000, pending=0, declined=0)
    seeded = time.perf_counter() - started
    assert seeded < 10
    server, base_url = serve(api)
    try:
        session = requests.Session()
        headers = {"Authorization": api.api_key_header}
        accounts = session.get(f"{base_url}/v2/bank_accounts", headers=headers).json()["bank_accounts"]
        total = 0
        started = time.perf_counter()
        for account in accounts:
            page: int | None = 1
            while page:
                body = session.get(
                    f"{base_url}/v2/transactions",
                    params={"bank_account_id": account["id"], "sort_by": "updated_at:asc", "page": page},
                    headers=headers,
                ).json()
                total += len(body["transactions"])
                page = body["meta"]["next_page"]
        elapsed = time.perf_counter() - started
    finally:
        server.shutdown()
    assert total == 50_000
    assert elapsed < 30, f"paging 50,000 transactions took {elapsed:.1f}s"


def test_clock_starts_at_start_at(qonto: QontoSandbox) -> None:
    assert qonto.now() == START
    newest = max(t["settled_at"] for t in qonto.transactions_of(status="completed"))
    assert newest < START.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert qonto.advance(60) == START + timedelta(seconds=60)
