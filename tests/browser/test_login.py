"""A person logs in through the real login page and sees only their organisation's admin."""

import pytest

from tests.browser.conftest import login
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_owner_of_org_a_sees_org_a_and_not_org_b(page, owner_a, org_a, org_b):
    login(page, owner_a.email, PASSWORD)
    page.wait_for_url("**/admin/")
    page.goto("/admin/qontohub/organization/")
    table = page.locator("#result_list")
    assert table.get_by_text(org_a.name).is_visible()
    assert page.get_by_text(org_b.name).count() == 0
    # The organisation switcher offers org A only.
    options = page.locator("#org-switcher-select option").all_inner_texts()
    assert options == ["All my organisations", org_a.name]
    # Org B's page is a 404 for this person.
    response = page.goto(f"/admin/qontohub/organization/{org_b.pk}/change/")
    assert response is not None and response.status == 404


def test_a_wrong_password_is_refused_with_a_message(page, owner_a):
    login(page, owner_a.email, "not-the-password")
    assert "/accounts/login/" in page.url
    assert page.get_by_text("not correct").count() + page.get_by_text("incorrect").count() > 0
