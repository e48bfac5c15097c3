"""PennylaneConnector against the sandbox: firm token, paging with filters resent, the rate limit
honoured, error bodies mapped, and the entry push that never creates twice."""

from __future__ import annotations

import json
from decimal import Decimal
from types import SimpleNamespace

import pytest

from connectors.base import AuthRevoked, NotFound, RateLimited, ValidationFailed
from connectors.models import Connection
from connectors.pennylane.connector import PennylaneConnector
from connectors.pennylane.sandbox import DEV_FIRM_TOKEN, OTHER_FIRM_TOKEN

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(sandbox_for):  # type: ignore[no-untyped-def]
    return sandbox_for("pennylane")


def connector_for(firm, token: str = DEV_FIRM_TOKEN) -> PennylaneConnector:  # type: ignore[no-untyped-def]
    connection = Connection.objects.create(firm=firm, provider="pennylane", auth_method="api_key",
                                           status="active", credentials={"api_key": token})
    return PennylaneConnector(connection)


@pytest.fixture
def connector(api, org_a):  # type: ignore[no-untyped-def]
    return connector_for(org_a.firm)


def atelier(api) -> str:  # type: ignore[no-untyped-def]
    return str(api.company_id_for("732829320"))


def test_the_firm_token_is_a_bearer_and_lists_only_this_firms_companies(api, connector, org_b):
    external_id, name = connector.identify()
    assert external_id.startswith("firm-") and "client compan" in name
    sirens = {c.siren for c in connector.list_companies()}
    assert "732829320" in sirens and "902118736" not in sirens
    last = api.requests_made[-1]
    assert last.headers["Authorization"] == f"Bearer {DEV_FIRM_TOKEN}"
    assert last.headers["X-Use-2026-API-Changes"] == "true"
    rival = connector_for(org_b.firm, OTHER_FIRM_TOKEN)
    assert {c.siren for c in rival.list_companies()} == {"902118736"}
    with pytest.raises(NotFound):
        rival.list_journals(atelier(api))


def test_cursor_pages_resend_the_filter(api, connector):
    company = atelier(api)
    for n in range(130):
        api.add_ledger_account(int(company), f"401T{n:03d}", f"Fournisseur {n}")
    api.clear_log()
    filters = [{"field": "number", "operator": "start_with", "value": "401T"}]
    items = list(connector._cursor_items(f"/api/external/firm/v1/companies/{company}/ledger_accounts",
                                         filters=filters, sort="id"))
    assert len(items) == 130
    pages = [r for r in api.requests_made if r.path.endswith("/ledger_accounts")]
    assert len(pages) == 2
    assert all(json.loads(r.query["filter"][0]) == filters for r in pages)
    assert "cursor" in pages[1].query and pages[1].query["limit"] == ["100"]


def test_chart_journals_and_years(api, connector):
    company = atelier(api)
    accounts = {a.number: a for a in connector.list_ledger_accounts(company)}
    assert accounts["401VAUBAN"].kind == "supplier" and accounts["411100344"].kind == "customer"
    assert accounts["512000"].kind == "general"
    assert {j.code: j.type for j in connector.list_journals(company)}["BQ1"] == "bank"
    assert [y.status for y in connector.list_fiscal_years(company)] == ["closed", "open"]


def test_the_rate_limit_is_waited_out(api, connector, settings):
    settings.HTTP_BACKOFF_CAP = 1.0  # let http.py wait the whole Retry-After (1 s)
    api.set_rate_limits([(3, 1.0)])
    company = atelier(api)
    api.clear_log()
    for _ in range(5):
        connector.list_journals(company)
    statuses = [r.status for r in api.requests_made]
    assert 429 in statuses and statuses[-1] == 200
    assert connector.http.retries >= 1


def test_a_429_body_becomes_rate_limited_with_its_wait(connector):
    error = connector.parse_error(429, "Rate limit exceeded. Please retry in 3 seconds.", {"retry-after": "3"})
    assert isinstance(error, RateLimited) and error.retry_after == 3


def test_error_bodies_say_what_is_wrong(api, connector):
    company = atelier(api)
    journal = api.journal_id_for(int(company), "OD")
    account = api.account_id_for(int(company), "512000")
    path = f"/api/external/firm/v1/companies/{company}/ledger_entries"
    unbalanced = {"date": "2026-06-01", "label": "x", "journal_id": journal, "ledger_entry_lines": [
        {"ledger_account_id": account, "debit": "10.00", "credit": "0.00"},
        {"ledger_account_id": account, "debit": "0.00", "credit": "9.00"}]}
    with pytest.raises(ValidationFailed, match="Entry lines are not balanced"):
        connector._post_once(path, json=unbalanced)
    with pytest.raises(ValidationFailed, match="NotExistRequiredKey"):
        connector._post_once(path, json={"label": "x"})
    with pytest.raises(ValidationFailed, match="journal_id is invalid"):
        connector._post_once(path, json={**unbalanced, "journal_id": 1})
    limited = connector_for(connector.connection.firm, api.add_firm_token(1, scopes=["companies:readonly"]))
    with pytest.raises(AuthRevoked, match="requires scope"):
        limited.list_journals(company)
    with pytest.raises(AuthRevoked, match="Firm Tokens"):
        connector_for(connector.connection.firm, "revoked").list_companies()


def push_for(api, connector, piece: str = "QH-ACH-000042", **extra):  # type: ignore[no-untyped-def]
    company = atelier(api)
    payload = {
        "company_id": company, "journal_id": str(api.journal_id_for(int(company), "ACH")), "date": "2026-06-01",
        "due_date": None, "label": "Facture F-42 Imprimerie Vauban", "piece_number": piece, "currency": "EUR",
        "filename": "", "lines": [
            {"account_id": str(api.account_id_for(int(company), "606400")), "account_number": "606400",
             "account_label": "", "label": "Flyers", "debit": "350.00", "credit": "0.00"},
            {"account_id": "", "account_number": "445660", "account_label": "TVA", "label": "TVA",
             "debit": "70.00", "credit": "0.00"},
            {"account_id": "", "account_number": "401NEUF", "account_label": "Fournisseur Neuf", "label": "Neuf",
             "debit": "0.00", "credit": "420.00"},
        ], **extra}
    return SimpleNamespace(pk=None, payload=payload, file=None)


def test_push_creates_missing_accounts_and_never_creates_twice(api, connector):
    company = int(atelier(api))
    push = push_for(api, connector)
    remote_id, response = connector.push_ledger_entry_create(push)
    assert response["existing"] is False
    assert set(response["accounts"]) == {"445660", "401NEUF"}
    assert response["accounts"]["401NEUF"] == str(api.account_id_for(company, "401NEUF"))
    again_id, again = connector.push_ledger_entry_create(push_for(api, connector))
    assert (again_id, again["existing"]) == (remote_id, True)
    entries = api.entries(company)
    assert len(entries) == 1 and entries[0]["piece_number"] == "QH-ACH-000042"
    assert sum(Decimal(line["debit"]) for line in entries[0]["lines"]) == Decimal("420.00")


def test_a_firm_api_without_piece_number_falls_back_to_v2(sandbox_for, org_a):
    api = sandbox_for("pennylane", strict_firm_body=True)
    connector = connector_for(org_a.firm)
    remote_id, _ = connector.push_ledger_entry_create(push_for(api, connector, piece="QH-ACH-000043"))
    assert api.entries(int(atelier(api)))[0]["piece_number"] == "QH-ACH-000043"
    assert connector.connection.options["entries_api"] == "v2"
    assert Connection.objects.get(pk=connector.connection.pk).options["entries_api"] == "v2"
