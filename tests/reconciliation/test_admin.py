"""The review queue in the admin: the list, the explanation page, one-click decisions, the
roles (outsider 404, support reads only), and a changelist that stays within 12 queries with
100,000 items."""

from __future__ import annotations

import time
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from connectors.models import BankTransaction
from qontohub.models import Membership
from qontohub.tenancy import Role
from reconciliation import services
from reconciliation.models import Decision, Match, MatchPolicy
from tests.conftest import make_user
from tests.reconciliation.conftest import review_item

pytestmark = pytest.mark.django_db

QUEUE = "/admin/reconciliation/reviewitem/"


def item_url(match: Match) -> str:
    return f"{QUEUE}{match.pk}/change/"


def decide_url(match: Match) -> str:
    return f"{QUEUE}{match.pk}/decide/"


def test_queue_lists_items_in_review_best_first(client_for, reviewer_a, mirror_a):
    low, _, _ = review_item(mirror_a, confidence=61, counterparty="FABRE FRERES", amount="650.00")
    high, _, _ = review_item(mirror_a, confidence=79, counterparty="LEROY CONSEIL")
    review_item(mirror_a, confidence=40, counterparty="REFUSED SARL", status="refused")
    page = client_for(reviewer_a).get(QUEUE)
    assert page.status_code == 200
    text = page.text
    assert text.index("LEROY CONSEIL") < text.index("FABRE FRERES")
    assert "REFUSED SARL" not in text
    assert "800.00 EUR" in text and "Qonto transactions → documents" in text
    age = (timezone.localdate() - date(2026, 3, 12)).days
    assert f"{age} d" in text
    assert "Reconcile now" in text


def test_filters_amount_age_band_route_and_counterparty_search(client_for, reviewer_a, mirror_a):
    small, _, _ = review_item(mirror_a, amount="-45.00", counterparty="PAPETERIE", on=timezone.localdate() - timedelta(days=3))
    big, _, _ = review_item(mirror_a, amount="12500.00", counterparty="GROS CLIENT", on=timezone.localdate() - timedelta(days=200))
    client = client_for(reviewer_a)

    def listed(query: str) -> set[str]:
        text = client.get(QUEUE + query).text
        return {name for name in ("PAPETERIE", "GROS CLIENT") if name in text}

    assert listed("?amount=lt100") == {"PAPETERIE"}
    assert listed("?amount=gte10k") == {"GROS CLIENT"}
    assert listed("?age=week") == {"PAPETERIE"}
    assert listed("?age=older") == {"GROS CLIENT"}
    assert listed("?band__exact=review") == {"PAPETERIE", "GROS CLIENT"}
    assert listed("?band__exact=auto") == set()
    assert listed("?route=tax_documents") == set()
    assert listed("?q=papet") == {"PAPETERIE"}


def test_detail_shows_the_transaction_beside_candidates_with_explanations(client_for, reviewer_a, mirror_a):
    match, tx, docs = review_item(mirror_a, confidence=72)
    page = client_for(reviewer_a).get(item_url(match))
    assert page.status_code == 200
    text = page.text
    assert "Bank transaction" in text and "VIR LEROY CONSEIL" in text
    assert docs[0].number in text and docs[1].number in text
    assert "amount equal" in text and "name 92% similar" in text and "paid 11 days after due date" in text
    assert 'id="qh-confidence">72<' in text
    assert text.count('name="action" value="approve"') == 2
    assert 'value="reject"' in text and 'name="q"' in text


def test_approve_from_the_page_removes_the_item_from_the_queue(client_for, reviewer_a, mirror_a):
    match, tx, docs = review_item(mirror_a, confidence=72)
    client = client_for(reviewer_a)
    response = client.post(decide_url(match), {"action": "approve", "candidate": "0", "version": str(match.version)})
    assert response.status_code == 302 and response.url == QUEUE
    match.refresh_from_db()
    assert match.status == "approved" and match.decided_by == reviewer_a
    assert list(match.links.values_list("document_id", flat=True)) == [docs[0].pk]
    assert Decision.objects.get(match=match).action == "approve"
    queue = client.get(QUEUE).text
    assert "approved" in queue.lower()  # the success message
    assert item_url(match) not in queue
    # Its page now lives in the list of all matches.
    assert client.get(item_url(match)).status_code == 302


def test_a_stale_page_gets_a_clear_conflict_message(client_for, reviewer_a, owner_a, mirror_a):
    match, tx, docs = review_item(mirror_a, confidence=72)
    services.decide(match.pk, owner_a, "reject", expected_version=match.version)
    response = client_for(reviewer_a).post(
        decide_url(match), {"action": "approve", "candidate": "0", "version": str(match.version)}, follow=True
    )
    assert "already rejected by owner-a@example.test" in response.text


def test_pin_with_the_search_box(client_for, reviewer_a, mirror_a):
    match, tx, docs = review_item(mirror_a, confidence=60)
    other = mirror_a.doc("client_invoice", "C-SPECIAL-9", "800.00", "Leroy Holding", date(2026, 2, 1), status="paid")
    client = client_for(reviewer_a)
    page = client.get(item_url(match) + "?q=SPECIAL")
    assert "C-SPECIAL-9" in page.text
    client.post(decide_url(match), {"action": "pin", "document_ids": [str(other.pk)], "version": str(match.version)})
    match.refresh_from_db()
    assert match.status == "pinned" and list(match.links.values_list("document_id", flat=True)) == [other.pk]


def test_bulk_action_approves_the_best_candidates(client_for, reviewer_a, mirror_a):
    first, _, docs1 = review_item(mirror_a, confidence=70, counterparty="ALPHA")
    second, _, docs2 = review_item(mirror_a, confidence=66, counterparty="BETA")
    response = client_for(reviewer_a).post(
        QUEUE, {"action": "approve_best_candidate", "_selected_action": [str(first.pk), str(second.pk)]}
    )
    assert response.status_code == 302
    assert set(Match.objects.filter(status="approved").values_list("pk", flat=True)) == {first.pk, second.pk}
    assert Decision.objects.filter(action="approve").count() == 2


def test_outsider_gets_404_everywhere(client_for, outsider, mirror_a):
    match, tx, docs = review_item(mirror_a, confidence=72)
    client = client_for(outsider)
    assert client.get(item_url(match)).status_code == 404
    assert client.get(f"/admin/reconciliation/match/{match.pk}/change/").status_code == 404
    assert client.post(decide_url(match), {"action": "approve"}).status_code == 404
    assert client.post(f"/admin/reconciliation/match/{match.pk}/decide/", {"action": "approve"}).status_code == 404
    assert "LEROY" not in client.get(QUEUE).text
    response = client.post(f"{QUEUE}reconcile-now/", {"organization": str(match.organization_id), "route": "qonto_transactions"})
    assert response.status_code == 404
    match.refresh_from_db()
    assert match.status == "proposed"


def test_support_reads_but_cannot_decide(client_for, support, mirror_a):
    match, tx, docs = review_item(mirror_a, confidence=72)
    client = client_for(support)
    assert "LEROY CONSEIL" in client.get(QUEUE).text
    page = client.get(item_url(match))
    assert page.status_code == 200 and "amount equal" in page.text
    assert 'value="approve"' not in page.text and 'value="reject"' not in page.text
    assert "Reconcile now" not in client.get(QUEUE).text
    assert client.post(decide_url(match), {"action": "approve"}).status_code == 403
    match.refresh_from_db()
    assert match.status == "proposed"


def test_viewer_reads_without_buttons(client_for, org_a, mirror_a):
    viewer = make_user("viewer-a@example.test")
    Membership.objects.create(organization=org_a, user=viewer, role=Role.VIEWER)
    match, tx, docs = review_item(mirror_a, confidence=72)
    page = client_for(viewer).get(item_url(match))
    assert page.status_code == 200 and 'value="approve"' not in page.text
    assert client_for(viewer).post(decide_url(match), {"action": "approve"}).status_code == 403


def test_match_admin_unmatches_a_posted_match(client_for, reviewer_a, mirror_a):
    match, tx, docs = review_item(mirror_a, confidence=72)
    services.decide(match.pk, reviewer_a, "approve")
    client = client_for(reviewer_a)
    page = client.get(f"/admin/reconciliation/match/{match.pk}/change/")
    assert page.status_code == 200 and 'value="unmatch"' in page.text and "Audit trail" in page.text
    client.post(f"/admin/reconciliation/match/{match.pk}/decide/", {"action": "unmatch", "note": "wrong one"})
    match.refresh_from_db()
    assert match.status == "unmatched" and not match.links.exists()
    assert list(Decision.objects.filter(match=match).order_by("at", "pk").values_list("action", flat=True)) == ["approve", "unmatch"]


def test_reconcile_now_enqueues_the_task(client_for, reviewer_a, org_a, mirror_a):
    mirror_a.doc("supplier_invoice", "F-1", "99.00", "Dupont SAS", date(2026, 3, 1))
    mirror_a.tx("-99.00", "DUPONT", date(2026, 3, 3), label="DUPONT F-1")
    response = client_for(reviewer_a).post(f"{QUEUE}reconcile-now/", {"organization": str(org_a.pk), "route": "qonto_transactions"})
    assert response.status_code == 302
    # Tasks run inline in tests.
    assert Match.objects.filter(organization=org_a, route="qonto_transactions").count() == 1


def test_policy_is_edited_by_owners_only(client_for, owner_a, reviewer_a, outsider, org_a):
    policy = services.policy_for(org_a)
    url = f"/admin/reconciliation/matchpolicy/{policy.pk}/change/"
    assert client_for(reviewer_a).get(url).status_code == 200
    assert client_for(reviewer_a).post(url, {"auto_threshold": "90", "review_threshold": "50"}).status_code == 403
    assert client_for(outsider).get(url).status_code == 404
    # The database check also shows as a form error.
    bad = client_for(owner_a).post(url, {"auto_threshold": "50", "review_threshold": "60"})
    assert bad.status_code == 200 and "errornote" in bad.text
    client_for(owner_a).post(url, {"auto_threshold": "90", "review_threshold": "50"})
    policy.refresh_from_db()
    assert (policy.auto_threshold, policy.review_threshold, policy.updated_by) == (90, 50, owner_a)
    assert MatchPolicy.objects.count() == 1


def _insert_transactions(mirror, count: int) -> list[int]:
    """Subjects for the 100,000 items, inserted with one executemany: what is measured is the
    changelist, and Django's bulk_create of 100,000 mirror rows would double the test's time."""
    proto = BankTransaction(
        organization=mirror.organization, connection=mirror.qonto, stream="transactions", external_id="",
        fingerprint="", bank_account_external_id="acc", amount=Decimal("1.00"), currency="EUR", side="credit",
        status="completed", counterparty_name="x", settled_at=timezone.now(),
    )
    fields = [f for f in BankTransaction._meta.concrete_fields if not f.primary_key]
    base = [f.get_db_prep_save(getattr(proto, f.attname), connection) for f in fields]
    position = [f.name for f in fields].index("external_id")
    rows = []
    for i in range(count):
        row = list(base)
        row[position] = f"bulk-{i}"
        rows.append(row)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {BankTransaction._meta.db_table} ({columns}) VALUES ({marks})", rows)
    return list(BankTransaction.objects.filter(stream="transactions", external_id__startswith="bulk-").values_list("pk", flat=True))


@pytest.mark.slow
def test_changelist_stays_within_12_queries_with_100000_items(client_for, reviewer_a, mirror_a, django_assert_max_num_queries):
    ids = _insert_transactions(mirror_a, 100_000)
    today = timezone.localdate()
    # Positional construction: Model.__init__'s keyword path would cost seconds at this size.
    fields = [f for f in Match._meta.concrete_fields]
    base = {f.attname: f.get_default() for f in fields}
    base.update(
        organization_id=mirror_a.organization.pk, route="qonto_transactions", status="proposed", band="review",
        candidates=[], engine_version="x", fingerprint="f", currency="EUR",
    )
    items = []
    for pk in ids:
        values = {
            **base, "transaction_id": pk, "confidence": 55 + pk % 30, "amount": Decimal(pk % 5000) - 2500,
            "counterparty": f"Client {pk % 997}", "occurred_on": today - timedelta(days=pk % 120),
        }
        items.append(Match(*[values[f.attname] for f in fields]))
    started = time.perf_counter()
    Match.objects.bulk_create(items, batch_size=2000)
    print(f"bulk_create of {len(items)} items: {time.perf_counter() - started:.1f} s")
    client = client_for(reviewer_a)
    client.get(QUEUE)  # warm the session and the templates
    for query in ("", "?amount=100-1k&age=month&band__exact=review", "?q=Client+42"):
        started = time.perf_counter()
        with django_assert_max_num_queries(12) as captured:
            page = client.get(QUEUE + query)
        elapsed = time.perf_counter() - started
        assert page.status_code == 200
        print(f"changelist{query or ' (all)'}: {len(captured)} queries, {elapsed * 1000:.0f} ms")
    assert "84</span>" in client.get(QUEUE).text  # best first
