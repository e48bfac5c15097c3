"""The firm's accountant walks the association wizard in Chromium: connects Pennylane (sandbox),
sees org A paired with its Pennylane company by SIREN, associates it and activates it."""

from __future__ import annotations

import pytest

from accountant.models import ClientFile
from connectors.pennylane.sandbox import DEV_FIRM_TOKEN
from qontohub.models import Organization
from tests.browser.conftest import login
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_accountant_associates_and_activates_a_client_file(page, sandbox_for, accountant, org_a, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    sandbox_for("pennylane")
    # A second client of the firm that matches no Pennylane company: left unassociated.
    Organization.objects.create(name="Zèbre Quantique", firm=org_a.firm)

    login(page, accountant.email, PASSWORD)
    page.wait_for_url("**/admin/")
    page.goto("/admin/accountant/clientfile/")
    page.click("text=Association wizard")
    page.wait_for_url("**/admin/accountant/clientfile/wizard/**")

    page.click("#qh-edit-connection")
    page.fill("#id_api_token", DEV_FIRM_TOKEN)
    page.click("#qh-connection-form button[type=submit]")
    page.wait_for_url("**/wizard/?firm=*")
    assert page.get_by_text("Connected:").is_visible()

    atelier = ClientFile.objects.get(organization=org_a)
    zebre = ClientFile.objects.get(organization__name="Zèbre Quantique")
    selected = page.locator(f"#qh-company-{atelier.pk} option:checked").inner_text()
    assert "Atelier Lumière SAS" in selected and org_a.siren in selected
    assert page.locator(f"#qh-row-{atelier.pk}").get_by_text("same SIREN").is_visible()
    assert page.locator(f"#qh-company-{zebre.pk} option:checked").inner_text() == "Skip for now"

    page.click("#qh-associate")
    page.wait_for_url("**#files")
    assert page.locator(f"#qh-status-{atelier.pk}").inner_text() == "Inactive"
    assert page.locator(f"#qh-activate-{zebre.pk}").count() == 0  # skipped: nothing to activate

    page.click(f"#qh-activate-{atelier.pk}")
    page.wait_for_url("**#files")
    assert page.locator(f"#qh-status-{atelier.pk}").inner_text() == "Active"
    assert page.get_by_text("active; accounting data pulled").is_visible()
    for action in ("push", "disable", "refresh"):
        assert page.locator(f"#qh-{action}-{atelier.pk}").is_visible()

    atelier.refresh_from_db()
    assert atelier.status == ClientFile.Status.ACTIVE and atelier.remote_siren == org_a.siren
    assert atelier.accounts.filter(number="401VAUBAN").exists()
    zebre.refresh_from_db()
    assert zebre.remote_company_id == ""
