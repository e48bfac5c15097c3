"""Tests of the QuickBooks Online sandbox against ``shared/reference/peer-apis.md`` §1.

Plain tests (no database): OAuth with realmId, refresh rotation and revocation, the query grammar
and paging, CDC's 30-day window, reads, attachments, throttling, faults and signed webhooks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests

from connectors.quickbooks.sandbox import (
    ACCOUNTING_SCOPE,
    QuickBooksSandbox,
    intuit_signature,
    minimal_pdf,
    parse_instant,
    qbo_datetime,
)
from connectors.sandbox.adapter import mount_sandbox
from connectors.sandbox.base import SandboxRequest, SandboxResponse
from connectors.sandbox.registry import create_sandbox

START = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
BASE = "https://sandbox.hub.test/sandbox/quickbooks"
CLIENT_ID = "qontohub-dev-qbo"
CLIENT_SECRET = "qontohub-dev-qbo-secret"
REDIRECT = "https://hub.test/connectors/quickbooks/callback"


def basic(client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def call(
    api: QuickBooksSandbox,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> SandboxResponse:
    request = SandboxRequest.from_url(method, url, headers=headers, **kwargs)
    request.base_url = BASE
    return api.handle(request)


class Session:
    """A connected hub: the realm and a bearer token, with query/get helpers."""

    def __init__(self, api: QuickBooksSandbox, realm_id: str | None = None) -> None:
        self.api = api
        self.tokens = api.connect(realm_id)
        self.realm = self.tokens["realmId"]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens['access_token']}", "Accept": "application/json"}

    def get(self, path: str, **kwargs: Any) -> SandboxResponse:
        sep = "&" if "?" in path else "?"
        return call(
            self.api,
            "GET",
            f"/v3/company/{self.realm}{path}{sep}minorversion=75",
            headers=self.headers,
            **kwargs,
        )

    def query(self, statement: str) -> SandboxResponse:
        return self.get("/query?query=" + quote(statement))

    def post_query(self, statement: str) -> SandboxResponse:
        return call(
            self.api,
            "POST",
            f"/v3/company/{self.realm}/query?minorversion=75",
            headers={**self.headers, "Content-Type": "application/text"},
            body=statement,
        )


@pytest.fixture
def api() -> QuickBooksSandbox:
    sandbox = QuickBooksSandbox(7, start_at=START)
    sandbox.freeze()
    return sandbox


@pytest.fixture
def qb(api: QuickBooksSandbox) -> Session:
    return Session(api)


def assert_fault(response: SandboxResponse, status: int, code: str, fault_type: str) -> dict[str, Any]:
    assert response.status == status, response.body
    body = response.json()
    error = body["Fault"]["Error"][0]
    assert error["code"] == code
    assert {"Message", "Detail", "code"} <= set(error)
    assert body["Fault"]["type"] == fault_type
    assert "time" in body
    return error


# -- seed --------------------------------------------------------------------------------------------


def test_seed_is_deterministic_and_realistic() -> None:
    one = QuickBooksSandbox(3, start_at=START, companies=2)
    two = QuickBooksSandbox(3, start_at=START, companies=2)
    other = QuickBooksSandbox(4, start_at=START, companies=2)
    assert one.realm_ids == two.realm_ids != other.realm_ids
    assert all(re.fullmatch(r"\d{16}", realm) for realm in one.realm_ids)
    assert one.entities("Bill") == two.entities("Bill")
    assert one.company_id == one.realm_ids[0]

    bills = one.entities("Bill")
    vendors = {v["Id"]: v for v in one.entities("Vendor")}
    assert len(bills) == 120
    for bill in bills:
        assert isinstance(bill["Id"], str) and bill["SyncToken"].isdigit()
        assert bill["VendorRef"]["value"] in vendors
        assert bill["Line"][0]["DetailType"] == "AccountBasedExpenseLineDetail"
        assert "AccountRef" in bill["Line"][0]["AccountBasedExpenseLineDetail"]
        net = round(sum(line["Amount"] for line in bill["Line"]), 2)
        assert bill["TotalAmt"] == pytest.approx(net + bill["TxnTaxDetail"]["TotalTax"], abs=0.011)
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", bill["TxnDate"]) and bill["DueDate"] >= bill["TxnDate"]
        meta = bill["MetaData"]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[-+]\d{2}:\d{2}", meta["LastUpdatedTime"])
        assert parse_instant(meta["CreateTime"]) <= parse_instant(meta["LastUpdatedTime"]) < START.timestamp()
    assert {b["CurrencyRef"]["value"] for b in bills} >= {"EUR"}
    assert any(b["Balance"] == 0 and b["LinkedTxn"][0]["TxnType"] == "BillPayment" for b in bills)
    vendor = next(iter(vendors.values()))
    assert {"DisplayName", "TaxIdentifier", "CurrencyRef", "PrimaryEmailAddr"} <= set(vendor)
    assert any("WebAddr" in v for v in vendors.values())
    assert any(a["AccountType"] == "Bank" for a in one.entities("Account"))
    for entity in ("Customer", "Invoice", "Payment", "CreditMemo", "PurchaseOrder", "Purchase", "Attachable"):
        assert one.entities(entity), entity
    purchase = one.entities("Purchase")[0]
    assert purchase["TotalAmt"] == pytest.approx(sum(line["Amount"] for line in purchase["Line"]))
    assert purchase["PrivateNote"]
    # The second company is smaller and has its own data.
    assert 0 < len(one.entities("Bill", one.realm_ids[1])) < len(bills)


def test_registry_and_default_client() -> None:
    sandbox = create_sandbox("quickbooks", 1)
    assert isinstance(sandbox, QuickBooksSandbox)
    assert sandbox.oauth_clients[CLIENT_ID].client_secret == CLIENT_SECRET
    assert "realmId" in sandbox.describe()


# -- OAuth (§1.2) ------------------------------------------------------------------------------------


def test_authorization_code_flow_returns_realm_id(api: QuickBooksSandbox) -> None:
    authorize = (
        f"/connect/oauth2?client_id={CLIENT_ID}&response_type=code&scope={quote(ACCOUNTING_SCOPE)}"
        f"&redirect_uri={quote(REDIRECT)}&state=xyz"
    )
    page = call(api, "GET", authorize)
    assert page.status == 200 and b"Authorize" in page.body and b"Deny" in page.body
    assert api.company_id.encode() in page.body  # the company picker

    consent = call(api, "POST", authorize, form={"decision": "authorize", "realmId": api.company_id})
    assert consent.status == 302
    location = urlsplit(consent.header("Location") or "")
    params = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    assert set(params) == {"code", "state", "realmId"}
    assert params["state"] == "xyz" and params["realmId"] == api.company_id

    token = call(
        api,
        "POST",
        "/oauth2/v1/tokens/bearer",
        headers={"Authorization": basic(), "Accept": "application/json"},
        form={"grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT},
    )
    assert token.status == 200
    body = token.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    assert body["x_refresh_token_expires_in"] == 8726400
    assert "x_refresh_token_hard_expires_in" not in body
    assert body["refresh_token"].startswith("AB11") and body["access_token"]

    info = call(
        api,
        "GET",
        f"/v3/company/{api.company_id}/companyinfo/{api.company_id}",
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert info.status == 200 and info.json()["CompanyInfo"]["CompanyName"] == "Atelier Lumière SAS"

    denied = call(api, "POST", authorize, form={"decision": "deny"})
    assert parse_qs(urlsplit(denied.header("Location") or "").query)["error"] == ["access_denied"]


def test_consent_for_a_second_company_and_client_secret_post() -> None:
    api = QuickBooksSandbox(2, start_at=START, companies=2)
    second = api.realm_ids[1]
    code = api.issue_authorization_code(CLIENT_ID, REDIRECT, ACCOUNTING_SCOPE, subject=second)
    token = call(
        api,
        "POST",
        "/oauth2/v1/tokens/bearer",
        headers={HARD: "true"},
        form={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    ).json()
    assert token["x_refresh_token_hard_expires_in"] == 157680000
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    assert call(api, "GET", f"/v3/company/{second}/companyinfo/{second}", headers=headers).status == 200
    # A token is bound to the company that was consented.
    other = call(api, "GET", f"/v3/company/{api.company_id}/companyinfo/{api.company_id}", headers=headers)
    assert_fault(other, 403, "120", "AuthorizationFault")


HARD = "x-include-refresh-token-hard-expires-in"


def refresh(api: QuickBooksSandbox, token: str, secret: str = CLIENT_SECRET) -> SandboxResponse:
    return call(
        api,
        "POST",
        "/oauth2/v1/tokens/bearer",
        headers={"Authorization": basic(secret=secret)},
        form={"grant_type": "refresh_token", "refresh_token": token},
    )


def test_refresh_rotation_and_reuse_of_an_old_refresh_token(api: QuickBooksSandbox) -> None:
    r1 = api.connect()["refresh_token"]
    first = refresh(api, r1)
    assert first.status == 200
    r2 = first.json()["refresh_token"]
    assert r2 != r1  # rotates on every refresh by default
    # Inside the grace, before the new value is used, the old one hands back the current value.
    assert refresh(api, r1).json()["refresh_token"] == r2
    r3 = refresh(api, r2).json()["refresh_token"]
    assert r3 not in (r1, r2)
    # Once its successor has been used, the old value is dead.
    reused = refresh(api, r1)
    assert reused.status == 400
    assert reused.json() == {
        "error": "invalid_grant",
        "error_description": "Incorrect or invalid refresh token",
    }
    assert reused.header("intuit_tid")
    # And a superseded value dies after the grace even if its successor was never used.
    r4 = refresh(api, r3).json()["refresh_token"]
    api.advance(86400 + 1)
    assert refresh(api, r3).json()["error"] == "invalid_grant"
    assert refresh(api, r4).status == 200

    # Wrong client secret: invalid_client, 401.
    bad = refresh(api, r4, secret="nope")
    assert bad.status == 401 and bad.json()["error"] == "invalid_client"


def test_refresh_rotation_is_configurable(api: QuickBooksSandbox) -> None:
    api.set_refresh_rotation(every=0, after_seconds=86400)
    r1 = api.connect()["refresh_token"]
    again = refresh(api, r1).json()
    assert again["refresh_token"] == r1 and again["x_refresh_token_expires_in"] == 8726400
    api.advance(86400)
    r2 = refresh(api, r1).json()["refresh_token"]
    assert r2 != r1


def test_access_token_expiry_and_auth_fault_shapes(api: QuickBooksSandbox, qb: Session) -> None:
    assert qb.query("SELECT count(*) FROM Bill").status == 200
    api.advance(3601)  # §1.2: access tokens last one hour
    error = assert_fault(qb.query("SELECT count(*) FROM Bill"), 401, "3200", "AuthenticationFault")
    assert error["Message"] == "message=AuthenticationFailed; errorCode=003200; statusCode=401"
    qb.tokens = api.connect()
    api.expire_access_tokens()
    assert qb.query("SELECT count(*) FROM Bill").status == 401
    missing = call(api, "GET", f"/v3/company/{qb.realm}/query?query=x")
    assert missing.status == 401

    lower = QuickBooksSandbox(7, start_at=START, auth_fault_style="lowercase")
    response = call(
        lower,
        "GET",
        f"/v3/company/{lower.company_id}/query?query=x",
        headers={"Authorization": "Bearer nope"},
    )
    assert response.status == 401
    assert response.json()["fault"]["error"][0]["code"] == "3200"
    assert response.json()["fault"]["type"] == "AUTHENTICATION"


def test_revoke_ends_the_connection(api: QuickBooksSandbox, qb: Session) -> None:
    url = "/v2/oauth2/tokens/revoke"
    form = call(
        api, "POST", url, headers={"Authorization": basic()}, form={"token": qb.tokens["refresh_token"]}
    )
    assert form.status == 400 and form.json()["error"] == "invalid_request"
    no_auth = call(api, "POST", url, json_body={"token": qb.tokens["refresh_token"]})
    assert no_auth.status == 401 and no_auth.json()["error"] == "invalid_client"

    revoked = call(
        api,
        "POST",
        url,
        headers={"Authorization": basic(), "Accept": "application/json"},
        json_body={"token": qb.tokens["refresh_token"]},
    )
    assert revoked.status == 200
    assert qb.query("SELECT * FROM Vendor").status == 401
    assert refresh(api, qb.tokens["refresh_token"]).json()["error"] == "invalid_grant"

    qb.tokens = api.connect()
    api.revoke_all_tokens()
    assert qb.query("SELECT * FROM Vendor").status == 401


def test_discovery_document_points_at_the_sandbox(api: QuickBooksSandbox) -> None:
    doc = call(api, "GET", "/.well-known/openid_sandbox_configuration/").json()
    assert doc["token_endpoint"] == f"{BASE}/oauth2/v1/tokens/bearer"
    assert doc["authorization_endpoint"] == f"{BASE}/connect/oauth2"
    assert doc["revocation_endpoint"] == f"{BASE}/v2/oauth2/tokens/revoke"
    assert set(doc["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "client_secret_post"}


# -- query (§1.4) ------------------------------------------------------------------------------------


def test_incremental_query_on_last_updated_time(api: QuickBooksSandbox, qb: Session) -> None:
    bills = api.entities("Bill")
    cursor = sorted(parse_instant(b["MetaData"]["LastUpdatedTime"]) for b in bills)[len(bills) // 2]
    since = qbo_datetime(datetime.fromtimestamp(cursor, UTC))
    expected = sorted(
        (b for b in bills if parse_instant(b["MetaData"]["LastUpdatedTime"]) > cursor),
        key=lambda b: (parse_instant(b["MetaData"]["LastUpdatedTime"]), int(b["Id"])),
    )
    response = qb.query(
        f"SELECT * FROM Bill WHERE MetaData.LastUpdatedTime > '{since}' ORDERBY MetaData.LastUpdatedTime MAXRESULTS 1000"
    )
    assert response.status == 200
    body = response.json()
    assert set(body) == {"QueryResponse", "time"}
    page = body["QueryResponse"]
    assert [b["Id"] for b in page["Bill"]] == [b["Id"] for b in expected]
    assert page["startPosition"] == 1 and page["maxResults"] == len(expected)
    assert "totalCount" not in page
    # The legacy spelling and offset form (§1.4: ``Metadata.LastUpdatedTime > '...-0700'``) work too.
    utc = datetime.fromtimestamp(cursor, UTC).strftime("%Y-%m-%dT%H:%M:%S-0000")
    legacy = qb.query(f"select * from Bill where Metadata.LastUpdatedTime > '{utc}' maxresults 1000")
    assert sorted(b["Id"] for b in legacy.json()["QueryResponse"]["Bill"]) == sorted(
        b["Id"] for b in expected
    )
    # Descending order and the default (Id) order.
    desc = qb.query(
        f"SELECT * FROM Bill WHERE MetaData.LastUpdatedTime > '{since}' ORDERBY MetaData.LastUpdatedTime DESC MAXRESULTS 1000"
    )
    assert [b["Id"] for b in desc.json()["QueryResponse"]["Bill"]] == [b["Id"] for b in reversed(expected)]
    plain = qb.query(f"SELECT * FROM Bill WHERE MetaData.LastUpdatedTime > '{since}' MAXRESULTS 1000")
    ids = [int(b["Id"]) for b in plain.json()["QueryResponse"]["Bill"]]
    assert ids == sorted(ids)


def test_equality_in_and_like_filters(api: QuickBooksSandbox, qb: Session) -> None:
    bills = api.entities("Bill")
    target = bills[5]
    one = qb.query(f"SELECT * FROM Bill WHERE DocNumber = '{target['DocNumber']}'").json()["QueryResponse"]
    assert [b["Id"] for b in one["Bill"]] == [target["Id"]]

    ids = [bills[1]["Id"], bills[3]["Id"], bills[8]["Id"]]
    listed = qb.query(f"SELECT * FROM Bill WHERE Id IN ('{ids[0]}', '{ids[1]}', '{ids[2]}')").json()
    assert [b["Id"] for b in listed["QueryResponse"]["Bill"]] == ids

    vendor_id = target["VendorRef"]["value"]
    open_for_vendor = [b["Id"] for b in bills if b["VendorRef"]["value"] == vendor_id and b["Balance"] > 0]
    both = qb.query(f"SELECT * FROM Bill WHERE VendorRef = '{vendor_id}' AND Balance > '0' ORDERBY Id").json()
    assert [b["Id"] for b in both["QueryResponse"].get("Bill", [])] == open_for_vendor

    vendor = api.get_entity("Vendor", vendor_id)
    assert vendor is not None
    word = vendor["DisplayName"].split()[0]
    like = qb.query(f"SELECT * FROM Vendor WHERE DisplayName LIKE '{word}%'").json()["QueryResponse"][
        "Vendor"
    ]
    assert vendor_id in {v["Id"] for v in like}
    assert all(v["DisplayName"].startswith(word) for v in like)

    banks = qb.query("SELECT * FROM Account WHERE AccountType = 'Bank'").json()["QueryResponse"]["Account"]
    assert banks and {a["AccountType"] for a in banks} == {"Bank"}
    dated = qb.query(
        f"SELECT * FROM Bill WHERE TxnDate >= '{target['TxnDate']}' AND TxnDate <= '{target['TxnDate']}'"
    )
    assert target["Id"] in {b["Id"] for b in dated.json()["QueryResponse"]["Bill"]}

    empty = qb.query("SELECT * FROM Bill WHERE DocNumber = 'does-not-exist'")
    assert empty.status == 200 and empty.json()["QueryResponse"] == {}


def test_paging_with_startposition_and_maxresults(api: QuickBooksSandbox, qb: Session) -> None:
    total = len(api.entities("Bill"))
    assert qb.query("SELECT count(*) FROM Bill").json()["QueryResponse"] == {"totalCount": total}
    counted = qb.query("SELECT COUNT(*) FROM Bill WHERE Balance > '0'").json()["QueryResponse"]["totalCount"]
    assert counted == sum(1 for b in api.entities("Bill") if b["Balance"] > 0)

    seen: list[str] = []
    position = 1
    while True:
        page = qb.query(
            f"SELECT * FROM Bill ORDERBY MetaData.LastUpdatedTime STARTPOSITION {position} MAXRESULTS 25"
        )
        body = page.json()["QueryResponse"]
        rows = body.get("Bill", [])
        if rows:
            assert body["startPosition"] == position and body["maxResults"] == len(rows)
        seen.extend(b["Id"] for b in rows)
        if len(rows) < 25:  # §1.4: the client stops on a short page
            break
        position += 25
    assert len(seen) == total == len(set(seen))
    beyond = qb.query(f"SELECT * FROM Bill STARTPOSITION {total + 1} MAXRESULTS 10").json()
    assert beyond["QueryResponse"] == {}
    default = qb.query("SELECT * FROM Bill").json()["QueryResponse"]
    assert default["maxResults"] == 100  # §1.4: default page size

    posted = qb.post_query("SELECT * FROM Vendor STARTPOSITION 2 MAXRESULTS 3").json()["QueryResponse"]
    assert posted["startPosition"] == 2 and [v["Id"] for v in posted["Vendor"]] == ["2", "3", "4"]


@pytest.mark.parametrize(
    ("statement", "code"),
    [
        ("SELECT FROM Bill", "4000"),
        ("SELECT * FROM bill", "4000"),  # entity names are case-sensitive
        ("SELECT * FROM Bill WHERE DocNumber = 'a' OR DocNumber = 'b'", "4000"),
        ("SELECT * FROM Bill WHERE DocNumber = unquoted", "4000"),
        ("SELECT * FROM Bill WHERE DocNumber 'a'", "4000"),
        ("SELECT * FROM Bill MAXRESULTS 1001", "4001"),
        ("SELECT * FROM Bill STARTPOSITION 0", "4001"),
        ("SELECT Id, DocNumber FROM Bill", "4001"),
        ("SELECT * FROM Bill WHERE NoSuchField = '1'", "4001"),
        ("SELECT * FROM Bill WHERE MetaData.LastUpdatedTime > 'yesterday'", "4000"),
        ("", "4000"),
    ],
)
def test_malformed_queries_are_validation_faults(qb: Session, statement: str, code: str) -> None:
    response = qb.query(statement)
    error = assert_fault(response, 400, code, "ValidationFault")
    assert error["Detail"]


def test_attachables_for_a_bill_and_download(api: QuickBooksSandbox, qb: Session) -> None:
    attachable = api.entities("Attachable")[0]
    bill_id = attachable["AttachableRef"][0]["EntityRef"]["value"]
    found = qb.query(
        "select * from Attachable where AttachableRef.EntityRef.Type = 'Bill' "
        f"and AttachableRef.EntityRef.value = '{bill_id}'"
    ).json()["QueryResponse"]["Attachable"]
    assert [a["Id"] for a in found] == [attachable["Id"]]
    assert found[0]["ContentType"] == "application/pdf" and found[0]["FileName"].endswith(".pdf")
    temp = found[0]["TempDownloadUri"]
    assert temp.startswith(BASE + "/")

    link = qb.get(f"/download/{attachable['Id']}")
    assert link.status == 200 and link.header("Content-Type", "").startswith("text/plain")
    url = link.body.decode()
    assert url.startswith(BASE + "/")
    pdf = call(api, "GET", url[len(BASE) :])
    assert pdf.status == 200 and pdf.header("Content-Type") == "application/pdf"
    assert pdf.body == api.attachment_bytes(attachable["Id"])
    assert len(pdf.body) == attachable["Size"]
    assert pdf.body.startswith(b"%PDF-1.4") and pdf.body.rstrip().endswith(b"%%EOF")
    # The xref offset and every object offset are right (a valid PDF, not just the magic).
    startxref = int(pdf.body.rsplit(b"startxref", 1)[1].split()[0])
    assert pdf.body[startxref:].startswith(b"xref")
    entries = pdf.body[startxref:].split(b"\n")[3:8]
    for number, entry in enumerate(entries, start=1):
        offset = int(entry.split()[0])
        assert pdf.body[offset:].startswith(f"{number} 0 obj".encode())

    # Temporary: the link dies after 15 minutes; a tampered link is refused.
    assert call(api, "GET", temp[len(BASE) :] + "0").status == 403
    api.advance(901)
    assert call(api, "GET", url[len(BASE) :]).status == 403
    assert_fault(qb.get("/download/999999"), 400, "610", "ValidationFault")


def test_attach_file_helper_and_minimal_pdf(api: QuickBooksSandbox, qb: Session) -> None:
    bill = api.add_bill(DocNumber="SUP-2026-001")
    content = minimal_pdf(["Hello (world)"])
    att = api.attach_file("Bill", bill["Id"], "scan.pdf", content)
    rows = qb.query(f"SELECT * FROM Attachable WHERE AttachableRef.EntityRef.value = '{bill['Id']}'").json()
    assert [a["Id"] for a in rows["QueryResponse"]["Attachable"]] == [att["Id"]]
    url = qb.get(f"/download/{att['Id']}").body.decode()
    assert call(api, "GET", url[len(BASE) :]).body == content


# -- reads, CDC, writes (§1.3, §1.5) -----------------------------------------------------------------


def test_read_one_and_not_found(api: QuickBooksSandbox, qb: Session) -> None:
    bill = api.entities("Bill")[0]
    response = qb.get(f"/bill/{bill['Id']}")
    assert response.status == 200 and response.json()["Bill"] == bill and "time" in response.json()
    assert qb.get("/vendor/1").json()["Vendor"]["Id"] == "1"
    assert_fault(qb.get("/bill/987654"), 400, "610", "ValidationFault")
    assert qb.get(f"/companyinfo/{qb.realm}").json()["CompanyInfo"]["Country"] == "FR"


def test_helpers_bump_sync_token_and_last_updated_time(api: QuickBooksSandbox, qb: Session) -> None:
    before = qbo_datetime(api.now() - timedelta(seconds=1))
    bill = api.add_bill(DocNumber="SUP-9", TxnTaxDetail={"TotalTax": 20.0})
    assert bill["TotalAmt"] == 120.0 and bill["SyncToken"] == "0"
    edited = api.edit_bill(bill["Id"], PrivateNote="corrected")
    assert edited["SyncToken"] == "1" and edited["PrivateNote"] == "corrected"
    assert parse_instant(edited["MetaData"]["LastUpdatedTime"]) > parse_instant(
        bill["MetaData"]["LastUpdatedTime"]
    )
    assert edited["MetaData"]["CreateTime"] == bill["MetaData"]["CreateTime"]
    changed = qb.query(f"SELECT * FROM Bill WHERE MetaData.LastUpdatedTime > '{before}'").json()[
        "QueryResponse"
    ]
    assert [b["Id"] for b in changed["Bill"]] == [bill["Id"]]
    assert changed["Bill"][0]["SyncToken"] == "1"

    api.delete_entity("Bill", bill["Id"])
    assert qb.query(f"SELECT * FROM Bill WHERE Id = '{bill['Id']}'").json()["QueryResponse"] == {}
    vendor = api.delete_entity("Vendor", "2")  # name-list entities become inactive (§1.6)
    assert vendor["Active"] is False and qb.get("/vendor/2").json()["Vendor"]["Active"] is False


def test_cdc_inside_and_outside_30_days(api: QuickBooksSandbox, qb: Session) -> None:
    since = qbo_datetime(api.now())
    api.advance(60)
    edited = api.edit_bill(api.entities("Bill")[0]["Id"], PrivateNote="cdc")
    deleted_id = api.entities("Bill")[1]["Id"]
    api.delete_entity("Bill", deleted_id)
    vendor = api.add_entity("Vendor", DisplayName="CDC Vendor SAS", CurrencyRef={"value": "EUR"})

    response = qb.get(f"/cdc?entities=Bill,Vendor&changedSince={quote(since)}")
    assert response.status == 200
    body = response.json()
    groups = body["CDCResponse"][0]["QueryResponse"]
    by_name = {
        name: group for group in groups for name in group if name not in ("startPosition", "maxResults")
    }
    assert [b["Id"] for b in by_name["Bill"]["Bill"]] == [edited["Id"], deleted_id]
    stub = by_name["Bill"]["Bill"][1]
    assert stub["status"] == "Deleted" and set(stub) == {"domain", "status", "Id", "MetaData"}
    assert by_name["Bill"]["maxResults"] == 2 and by_name["Bill"]["startPosition"] == 1
    assert [v["Id"] for v in by_name["Vendor"]["Vendor"]] == [vendor["Id"]]

    quiet = qb.get(
        f"/cdc?entities=Invoice,Customer&changedSince={quote(qbo_datetime(api.now() + timedelta(minutes=1)))}"
    )
    assert quiet.json()["CDCResponse"] == [{"QueryResponse": [{}]}]

    inside = qb.get(f"/cdc?entities=Bill&changedSince={quote(qbo_datetime(api.now() - timedelta(days=29)))}")
    assert inside.status == 200
    outside = qb.get(f"/cdc?entities=Bill&changedSince={quote(qbo_datetime(api.now() - timedelta(days=31)))}")
    error = assert_fault(outside, 400, "4001", "ValidationFault")
    assert "30 days" in error["Detail"]
    assert qb.get("/cdc?entities=Bill").status == 400
    assert qb.get(f"/cdc?entities=Nope&changedSince={quote(since)}").status == 400


def test_cdc_caps_at_1000_objects() -> None:
    api = QuickBooksSandbox(1, start_at=START, bills=0, vendors=3, customers=2, invoices=0, purchases=0)
    api.freeze()
    qb = Session(api)
    since = qbo_datetime(api.now())
    for number in range(1005):
        api.add_bill(DocNumber=f"B{number}")
    body = qb.get(f"/cdc?entities=Bill&changedSince={quote(since)}").json()
    group = body["CDCResponse"][0]["QueryResponse"][0]
    assert len(group["Bill"]) == group["maxResults"] == 1000
    assert group["Bill"][0]["DocNumber"] == "B0"  # oldest changes first


def test_writes_are_refused_as_read_only(qb: Session) -> None:
    response = call(
        qb.api,
        "POST",
        f"/v3/company/{qb.realm}/bill?minorversion=75",
        headers={**qb.headers, "Content-Type": "application/json"},
        json_body={"VendorRef": {"value": "1"}, "Line": []},
    )
    error = assert_fault(response, 400, "500", "ValidationFault")
    assert "read-only" in error["Detail"]


# -- throttling and faults (§1.8, §1.9) --------------------------------------------------------------


def test_throttling_per_realm_with_documented_fault() -> None:
    api = QuickBooksSandbox(5, start_at=START, companies=2)
    api.freeze()
    first, second = Session(api), Session(api, api.realm_ids[1])
    api.set_throttle(per_minute=3)
    for _ in range(3):
        assert first.query("SELECT count(*) FROM Bill").status == 200
    throttled = first.query("SELECT count(*) FROM Bill")
    error = assert_fault(throttled, 429, "3001", "SERVICE")
    assert error["Message"] == "message=ThrottleExceeded; errorCode=003001; statusCode=429"
    assert error["Detail"] == "The request limit was reached. Try again later"
    assert second.query("SELECT count(*) FROM Bill").status == 200  # another realm has its own budget
    api.advance(61)
    assert first.query("SELECT count(*) FROM Bill").status == 200

    api.set_throttle(per_minute=None, per_second=10, realm_id=second.realm, format="xml")
    for _ in range(10):
        assert second.query("SELECT count(*) FROM Bill").status == 200
    xml = second.query("SELECT count(*) FROM Bill")
    assert xml.status == 429 and xml.header("Content-Type", "").startswith("application/xml")
    assert b'<Error code="3001">' in xml.body and b"ThrottleExceeded" in xml.body
    api.advance(1.5)
    assert second.query("SELECT count(*) FROM Bill").status == 200

    api.set_throttle(None, None)
    for _ in range(20):
        assert first.query("SELECT count(*) FROM Bill").status == 200


def test_default_limit_is_500_per_minute(api: QuickBooksSandbox, qb: Session) -> None:
    statuses = [qb.get(f"/companyinfo/{qb.realm}").status for _ in range(501)]
    assert statuses.count(200) == 500 and statuses[-1] == 429


def test_injected_server_errors_use_the_fault_shape(api: QuickBooksSandbox, qb: Session) -> None:
    api.inject_fault(503, times=1, path_prefix="/v3/")
    assert_fault(qb.query("SELECT * FROM Bill"), 503, "10000", "SystemFault")
    assert qb.query("SELECT * FROM Bill").status == 200
    api.inject_fault(500, times=1, path_prefix="/oauth2/")
    failed = refresh(api, qb.tokens["refresh_token"])
    assert failed.status == 500 and set(failed.json()) == {"error", "error_description"}
    api.inject_fault(429, times=1)
    assert_fault(qb.query("SELECT * FROM Bill"), 429, "3001", "SERVICE")


# -- webhooks (§1.10) --------------------------------------------------------------------------------


def test_signature_matches_the_reference_vector() -> None:
    body = (
        b'{"eventNotifications":[{"realmId":"9341452000000001","dataChangeEvent":{"entities":'
        b'[{"name":"Bill","id":"145","operation":"Create","lastUpdated":"2025-03-04T10:15:00.000Z"}]}}]}'
    )
    assert intuit_signature("hub-test-verifier-token", body) == "FnjwqTj9eSG7ga8uoA8axStti8JLnFEEZlA3SNhhNFI="


def test_webhooks_are_signed_with_the_verifier_token(api: QuickBooksSandbox) -> None:
    received: list[tuple[str, bytes, dict[str, str]]] = []

    def transport(url: str, body: bytes, headers: dict[str, str]) -> int:
        received.append((url, body, headers))
        return 200

    api.webhook_transport = transport
    api.register_webhook("https://hub.test/webhooks/quickbooks", "qontohub-dev-qbo-verifier", format="legacy")
    bill = api.entities("Bill")[0]
    deliveries = api.notify("Bill", bill["Id"], "Update")
    assert len(deliveries) == 1 and deliveries[0].ok
    url, body, headers = received[-1]
    assert url == "https://hub.test/webhooks/quickbooks"
    expected = base64.b64encode(
        hmac.new(b"qontohub-dev-qbo-verifier", body, hashlib.sha256).digest()
    ).decode()
    assert headers["intuit-signature"] == expected
    payload = json.loads(body)
    notification = payload["eventNotifications"][0]
    assert notification["realmId"] == api.company_id
    entity = notification["dataChangeEvent"]["entities"][0]
    assert entity == {
        "name": "Bill",
        "id": bill["Id"],
        "operation": "Update",
        "lastUpdated": entity["lastUpdated"],
    }
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", entity["lastUpdated"])

    # CloudEvents (the current shape), sent automatically when data changes.
    api.webhooks.clear()
    api.register_webhook("https://hub.test/webhooks/quickbooks", "other-verifier", entities=["Bill"])
    created = api.add_bill()
    url, body, headers = received[-1]
    assert headers["intuit-signature"] == intuit_signature("other-verifier", body)
    events = json.loads(body)
    assert isinstance(events, list) and len(events) == 1
    event = events[0]
    assert event["specversion"] == "1.0" and event["type"] == "qbo.bill.created.v1"
    assert event["intuitentityid"] == created["Id"] and event["intuitaccountid"] == api.company_id
    assert event["source"].startswith("intuit.") and event["data"] == {}
    assert {"id", "time", "datacontenttype"} <= set(event)
    count = len(received)
    api.add_entity("Vendor", DisplayName="Not subscribed SAS")  # entity filter: no delivery
    assert len(received) == count
    api.delete_entity("Bill", created["Id"])
    assert json.loads(received[-1][1])[0]["type"] == "qbo.bill.deleted.v1"
    with pytest.raises(ValueError):
        api.notify("Bill", created["Id"], "Exploded")


# -- through requests, and at benchmark scale --------------------------------------------------------


def test_through_a_requests_session(api: QuickBooksSandbox) -> None:
    session = mount_sandbox(requests.Session(), api, BASE)
    token = session.post(
        f"{BASE}/oauth2/v1/tokens/bearer",
        auth=(CLIENT_ID, CLIENT_SECRET),
        data={
            "grant_type": "authorization_code",
            "code": api.issue_authorization_code(CLIENT_ID, REDIRECT, ACCOUNTING_SCOPE),
            "redirect_uri": REDIRECT,
        },
        headers={"Accept": "application/json"},
    ).json()
    headers = {"Authorization": f"Bearer {token['access_token']}", "Accept": "application/json"}
    realm = api.company_id
    response = session.get(
        f"{BASE}/v3/company/{realm}/query",
        params={"query": "SELECT * FROM Attachable MAXRESULTS 1", "minorversion": "75"},
        headers=headers,
    )
    attachable = response.json()["QueryResponse"]["Attachable"][0]
    pdf = session.get(attachable["TempDownloadUri"])
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    posted = session.post(
        f"{BASE}/v3/company/{realm}/query?minorversion=75",
        data="SELECT count(*) FROM Vendor",
        headers={**headers, "Content-Type": "application/text"},
    )
    assert posted.json()["QueryResponse"]["totalCount"] == len(api.entities("Vendor"))
    revoke = session.post(
        f"{BASE}/v2/oauth2/tokens/revoke",
        auth=(CLIENT_ID, CLIENT_SECRET),
        json={"token": token["refresh_token"]},
        headers={"Accept": "application/json"},
    )
    assert revoke.status_code == 200


def test_ten_thousand_bills_page_quickly() -> None:
    started = time.perf_counter()
    api = QuickBooksSandbox(11, start_at=START, bills=10_000, bill_attachment_ratio=0.05)
    api.freeze()
    qb = Session(api)
    since = qbo_datetime(START - timedelta(days=400))
    seen = 0
    position = 1
    while True:
        response = qb.query(
            f"SELECT * FROM Bill WHERE MetaData.LastUpdatedTime > '{since}' "
            f"ORDERBY MetaData.LastUpdatedTime STARTPOSITION {position} MAXRESULTS 1000"
        )
        rows = response.json()["QueryResponse"].get("Bill", [])
        seen += len(rows)
        if len(rows) < 1000:
            break
        position += 1000
    assert seen == 10_000
    assert time.perf_counter() - started < 15
