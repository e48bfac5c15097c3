"""REST review queue: list and filter items, read one with its explanations, decide (403 for
viewers and support, 404 for outsiders, 409 on a conflict), list every match."""

from __future__ import annotations

from datetime import date

import pytest

from qontohub.models import Membership
from qontohub.tenancy import Role
from reconciliation import services
from reconciliation.models import Decision, Match
from tests.conftest import make_user
from tests.reconciliation.conftest import review_item

pytestmark = pytest.mark.django_db

ITEMS = "/api/v1/review-items/"


def decision_url(match: Match) -> str:
    # As the issue documents it: no trailing slash (the router accepts both).
    return f"{ITEMS}{match.pk}/decision"


@pytest.fixture
def queue(mirror_a):
    high, _, _ = review_item(mirror_a, confidence=80, counterparty="ALPHA")
    low, _, _ = review_item(mirror_a, confidence=60, counterparty="BETA")
    refused, _, _ = review_item(mirror_a, confidence=30, counterparty="GAMMA", status="refused")
    return high, low, refused


def ids(response) -> set[int]:
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def test_list_shows_items_in_review_with_filters(client_for, reviewer_a, org_a, queue):
    high, low, refused = queue
    client = client_for(reviewer_a)
    assert ids(client.get(ITEMS)) == {high.pk, low.pk}
    assert ids(client.get(ITEMS, {"status": "refused"})) == {refused.pk}
    assert ids(client.get(ITEMS, {"status": "proposed,refused"})) == {high.pk, low.pk, refused.pk}
    assert ids(client.get(ITEMS, {"band": "refused", "status": "refused"})) == {refused.pk}
    assert ids(client.get(ITEMS, {"organization": org_a.pk})) == {high.pk, low.pk}
    assert ids(client.get(ITEMS, {"route": "tax_documents"})) == set()
    assert client.get(ITEMS, {"status": "bogus"}).status_code == 400
    row = client.get(ITEMS).json()["results"][0]
    assert {"confidence", "band", "amount", "counterparty", "occurred_on", "route", "version"} <= row.keys()


def test_detail_carries_the_candidates_and_their_explanations(client_for, reviewer_a, queue):
    high, _, _ = queue
    body = client_for(reviewer_a).get(f"{ITEMS}{high.pk}/").json()
    assert body["confidence"] == 80 and body["target_type"] == "document" and body["subject_type"] == "bank_transaction"
    assert len(body["candidates"]) == 2
    assert body["candidates"][0]["features"][0] == {"name": "amount", "score": 6.1, "explanation": "amount equal"}


def test_reviewer_approves_and_a_second_decision_gets_409(client_for, reviewer_a, owner_a, queue):
    high, _, _ = queue
    response = client_for(reviewer_a).post(
        decision_url(high), {"action": "approve", "candidate": 1, "note": "ok", "version": high.version},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "approved"
    high.refresh_from_db()
    assert list(high.links.values_list("document_id", flat=True)) == high.candidates[1]["target_ids"]
    assert Decision.objects.get(match=high).note == "ok"

    late = client_for(owner_a).post(
        decision_url(high), {"action": "reject", "version": high.version - 1}, content_type="application/json"
    )
    assert late.status_code == 409
    assert "already approved by reviewer-a@example.test" in late.json()["detail"]
    # The item left the queue.
    assert high.pk not in ids(client_for(owner_a).get(ITEMS))


def test_pin_and_bad_requests(client_for, reviewer_a, mirror_a, queue):
    _, low, _ = queue
    doc = mirror_a.doc("client_invoice", "C-777", "800.00", "Beta", date(2026, 3, 1))
    client = client_for(reviewer_a)
    assert client.post(decision_url(low), {"action": "explode"}, content_type="application/json").status_code == 400
    assert client.post(decision_url(low), {"action": "approve", "candidate": 9}, content_type="application/json").status_code == 400
    assert client.post(decision_url(low), {"action": "pin", "document_ids": []}, content_type="application/json").status_code == 400
    ok = client.post(decision_url(low), {"action": "pin", "document_ids": [doc.pk]}, content_type="application/json")
    assert ok.status_code == 200 and ok.json()["status"] == "pinned"


def test_viewer_and_support_get_403(client_for, org_a, support, queue):
    high, _, _ = queue
    viewer = make_user("viewer-a@example.test")
    Membership.objects.create(organization=org_a, user=viewer, role=Role.VIEWER)
    for user in (viewer, support):
        client = client_for(user)
        assert high.pk in ids(client.get(ITEMS))  # they read
        response = client.post(decision_url(high), {"action": "approve"}, content_type="application/json")
        assert response.status_code == 403, user
    high.refresh_from_db()
    assert high.status == "proposed"


def test_outsider_gets_404_and_an_empty_list(client_for, outsider, queue):
    high, _, _ = queue
    client = client_for(outsider)
    assert ids(client.get(ITEMS)) == set()
    assert ids(client.get("/api/v1/matches/")) == set()
    assert client.get(f"{ITEMS}{high.pk}/").status_code == 404
    assert client.get(f"/api/v1/matches/{high.pk}/").status_code == 404
    assert client.post(decision_url(high), {"action": "approve"}, content_type="application/json").status_code == 404


def test_matches_lists_every_status(client_for, reviewer_a, queue):
    high, low, refused = queue
    services.decide(low.pk, reviewer_a, "reject")
    client = client_for(reviewer_a)
    assert ids(client.get("/api/v1/matches/")) == {high.pk, low.pk, refused.pk}
    assert ids(client.get("/api/v1/matches/", {"status": "rejected"})) == {low.pk}


def test_anonymous_is_refused(client, queue):
    assert client.get(ITEMS).status_code in (401, 403)
