"""A reviewer works the queue in a real browser: opens it, reads why the engine proposes a
candidate, approves an item of the review band (55–85), and the item leaves the queue."""

import pytest

from reconciliation.models import Decision, Match
from tests.browser.conftest import login
from tests.conftest import PASSWORD
from tests.reconciliation.conftest import Mirror, review_item

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_reviewer_reads_the_explanation_and_approves_an_item(page, reviewer_a, org_a):
    mirror = Mirror(org_a)
    item, tx, docs = review_item(mirror, confidence=72, counterparty="LEROY CONSEIL")
    other, _, _ = review_item(mirror, confidence=64, counterparty="FABRE FRERES", amount="650.00")
    assert 55 <= item.confidence < 85

    login(page, reviewer_a.email, PASSWORD)
    page.wait_for_url("**/admin/")
    page.goto("/admin/reconciliation/reviewitem/")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    assert "LEROY CONSEIL" in rows.nth(0).inner_text()  # best first

    rows.nth(0).locator("a").first.click()
    page.wait_for_url(f"**/reviewitem/{item.pk}/change/")
    assert page.locator("#qh-confidence").inner_text() == "72"
    best = page.locator("#qh-candidate-0")
    assert docs[0].number in best.inner_text()
    explanations = best.locator(".qh-explanation").all_inner_texts()
    assert "amount equal" in explanations and any("92% similar" in text for text in explanations)

    best.get_by_role("button", name="Approve #1").click()
    page.wait_for_url("**/admin/reconciliation/reviewitem/")
    assert page.locator(".messagelist .success").count() == 1
    remaining = page.locator("#result_list tbody tr").all_inner_texts()
    assert len(remaining) == 1 and "FABRE FRERES" in remaining[0]

    item.refresh_from_db()
    assert item.status == Match.Status.APPROVED and item.decided_by == reviewer_a
    assert Decision.objects.get(match=item).action == "approve"
