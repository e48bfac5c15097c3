"""Helpers shared by the OAuth, services and views tests: a small Qonto sandbox and its consent page."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from connectors import http, services
from connectors.models import Connection

#: A small seeded organisation: the connect flows do not need thousands of transactions.
SMALL_QONTO = {
    "transactions": 20,
    "pending": 1,
    "declined": 1,
    "external_transactions": 2,
    "clients": 3,
    "client_invoices": 3,
    "supplier_invoices": 3,
}


def consent(url: str, decision: str = "authorize") -> str:
    """Play the person on the provider's consent page; returns where the browser is sent back."""
    session = http.session_for("qonto")
    page = session.get(url, allow_redirects=False)
    assert page.status_code == 200, page.text[:300]
    assert "Authorize" in page.text
    params = dict(parse_qsl(urlsplit(url).query))
    answer = session.post(url.split("?")[0], data={**params, "decision": decision}, allow_redirects=False)
    assert answer.status_code == 302, answer.text[:300]
    return answer.headers["Location"]


def callback_query(location: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(location).query))


def connect_qonto(organization: Any, user: Any) -> Connection:
    """Connect ``organization`` to the running Qonto sandbox through the real OAuth flow."""
    connection, url = services.start_connect(organization, user, "qonto", services.callback_uri("qonto"))
    params = callback_query(consent(url))
    return services.finish_connect(connection, user, params["code"], params["state"], params)


def token_grants(api: Any, grant_type: str) -> int:
    """How many token requests of ``grant_type`` reached the sandbox."""
    return sum(
        1
        for r in list(api.requests_made)
        if r.route == "POST /oauth2/token" and f"grant_type={grant_type}".encode() in r.body
    )


def raw_column(connection: Connection, column: str) -> str:
    """The value stored in the database, before decryption."""
    from django.db import connection as db

    with db.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM connectors_connection WHERE id = %s", [connection.pk])
        return cursor.fetchone()[0]
