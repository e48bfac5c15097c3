"""REST access: hashed tokens shown once, revocation, and tenant scoping."""

import pytest
from rest_framework.test import APIClient

from qontohub.models import ApiToken

pytestmark = pytest.mark.django_db


def api(key: str | None = None) -> APIClient:
    client = APIClient()
    if key:
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_anonymous_clients_are_refused():
    response = api().get("/api/v1/organizations/")
    assert response.status_code == 401


def test_token_lists_only_the_callers_organisations(owner_a, org_a, org_b):
    _, key = ApiToken.issue(owner_a, "bi export")
    response = api(key).get("/api/v1/organizations/")
    assert response.status_code == 200
    assert [o["name"] for o in response.json()] == [org_a.name]
    assert response.json()[0]["role"] == "owner"


def test_outsider_gets_404_on_org_a(outsider, org_a):
    _, key = ApiToken.issue(outsider, "script")
    assert api(key).get(f"/api/v1/organizations/{org_a.pk}/").status_code == 404


def test_only_the_hash_is_stored_and_revocation_is_immediate(owner_a):
    token, key = ApiToken.issue(owner_a, "cron")
    stored = ApiToken.objects.values_list("key_hash", "prefix").get(pk=token.pk)
    assert key not in stored[0]
    assert key.startswith(stored[1])
    assert api(key).get("/api/v1/organizations/").status_code == 200
    token.revoke()
    response = api(key).get("/api/v1/organizations/")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_admin_creates_a_token_and_shows_it_once(client_for, owner_a):
    client = client_for(owner_a)
    response = client.post("/admin/qontohub/apitoken/add/", {"name": "Power BI"}, follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert any("it will not be shown again" in m for m in shown)
    key = next(word for m in shown for word in m.split() if word.startswith("qh_"))
    token = ApiToken.objects.get(name="Power BI")
    assert token.user == owner_a
    assert api(key).get("/api/v1/organizations/").status_code == 200
    # The change page never shows the key again.
    page = client.get(f"/admin/qontohub/apitoken/{token.pk}/change/")
    assert key not in page.text


def test_openapi_schema_is_served(owner_a, client_for):
    response = client_for(owner_a).get("/api/schema/")
    assert response.status_code == 200
    assert b"/api/v1/organizations/" in response.content


def test_endpoints_answer_with_or_without_the_trailing_slash(owner_a, org_a):
    _, key = ApiToken.issue(owner_a, "no-slash client")
    assert api(key).get("/api/v1/organizations").status_code == 200
    assert api(key).get(f"/api/v1/organizations/{org_a.pk}").status_code == 200
