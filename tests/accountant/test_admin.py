"""Accountant admin: the association wizard walked as the firm's accountant, entries with their
violations, chart import checked per row, exports downloaded through a tenant check, and the
outsiders (owner of another organisation, accountant of another firm) who see none of it."""

from __future__ import annotations

import pytest
from django.urls import reverse
from tablib import Dataset

from accountant import exports, services
from accountant.models import Account, ClientFile, Export, JournalEntry
from connectors.models import Connection
from qontohub.models import FirmMembership
from tests.accountant.support import (
    DEV_FIRM_TOKEN,
    active_file,
    connect,
    fetch_pdf,
    open_day,
    supplier_invoice,
)
from tests.conftest import make_user

WIZARD = "admin:accountant_clientfile_wizard"


@pytest.fixture
def rival_accountant(org_b):  # type: ignore[no-untyped-def]
    user = make_user("rival-accountant@example.test")
    FirmMembership.objects.create(firm=org_b.firm, user=user)
    return user


def test_the_wizard_connects_suggests_associates_and_activates(api, org_a, accountant, client_for):
    client = client_for(accountant)
    page = client.get(reverse(WIZARD))
    assert page.status_code == 200
    assert b"Connect Pennylane" in page.content

    response = client.post(reverse("admin:accountant_clientfile_connection") + f"?firm={org_a.firm_id}",
                           {"api_token": DEV_FIRM_TOKEN, "firm": org_a.firm_id})
    assert response.status_code == 302
    connection = Connection.objects.get(firm=org_a.firm)
    assert connection.status == "active"

    page = client.get(reverse(WIZARD))
    client_file = ClientFile.objects.get(organization=org_a)
    row = page.context["rows"][0]
    assert row["file"] == client_file and row["pair"].reason == "siren"
    assert f'value="{row["selected"]}" selected'.encode() in page.content
    assert b"same SIREN" in page.content

    response = client.post(reverse(WIZARD), {"step": "associate", "firm": org_a.firm_id,
                                             f"company_{client_file.pk}": row["selected"]})
    assert response.status_code == 302 and response["Location"].endswith("#files")
    client_file.refresh_from_db()
    assert client_file.remote_siren == org_a.siren and client_file.status == ClientFile.Status.INACTIVE

    response = client.post(reverse("admin:accountant_clientfile_button", args=[client_file.pk, "activate"]))
    assert response.status_code == 302
    client_file.refresh_from_db()
    assert client_file.status == ClientFile.Status.ACTIVE and client_file.accounts.exists()

    for action in ("refresh", "push", "disable"):
        assert client.post(reverse("admin:accountant_clientfile_button", args=[client_file.pk, action])).status_code == 302
    client_file.refresh_from_db()
    assert client_file.status == ClientFile.Status.INACTIVE

    client.post(reverse("admin:accountant_clientfile_button", args=[client_file.pk, "frequency"]),
                {"frequency": "realtime"})
    client_file.refresh_from_db()
    assert client_file.sync_frequency == "realtime"


def test_an_unmatched_file_can_be_skipped(api, org_a, accountant, client_for):
    connect(org_a, accountant)
    client = client_for(accountant)
    client_file = services.ensure_client_files(org_a.firm)[0]
    client.post(reverse(WIZARD), {"step": "associate", f"company_{client_file.pk}": ""})
    client_file.refresh_from_db()
    assert client_file.remote_company_id == ""


def test_a_wrong_token_is_refused_with_a_message(api, org_a, accountant, client_for):
    client = client_for(accountant)
    page = client.post(reverse("admin:accountant_clientfile_connection"), {"api_token": "nope"}, follow=True)
    assert b"refused this token" in page.content
    assert not Connection.objects.filter(firm=org_a.firm).exists()


def test_outsiders_see_no_client_file_anywhere_in_the_admin(api, org_a, accountant, outsider, rival_accountant,
                                                            client_for):
    client_file = active_file(org_a, accountant)
    supplier_invoice(org_a, open_day(api, client_file))
    entry = services.build_entries(client_file, fetch_pdf=fetch_pdf).created[0]
    export = exports.export_table(client_file, "csv")
    for user in (outsider, rival_accountant):
        client = client_for(user)
        for name in ("clientfile", "journalentry", "account", "export"):
            listing = client.get(reverse(f"admin:accountant_{name}_changelist"))
            assert listing.status_code in (200, 403)
            if listing.status_code == 200:
                assert listing.context["cl"].result_count == 0
        assert client.get(reverse("admin:accountant_clientfile_change", args=[client_file.pk])).status_code in (403, 404)
        assert client.get(reverse("admin:accountant_journalentry_change", args=[entry.pk])).status_code in (403, 404)
        assert client.get(reverse("admin:accountant_export_download", args=[export.pk])).status_code in (403, 404)
        assert client.post(reverse("admin:accountant_clientfile_button",
                                   args=[client_file.pk, "disable"])).status_code in (403, 404)
    # The rival firm's wizard shows its own (empty) firm, never org A's file.
    page = client_for(rival_accountant).get(reverse(WIZARD))
    assert page.status_code == 200 and org_a.name.encode() not in page.content
    # An organisation owner without a firm has no wizard.
    assert client_for(outsider).get(reverse(WIZARD)).status_code == 404
    client_file.refresh_from_db()
    assert client_file.status == ClientFile.Status.ACTIVE


def test_the_client_organisation_sees_its_file_but_cannot_change_it(api, org_a, accountant, owner_a, client_for):
    client_file = active_file(org_a, accountant)
    client = client_for(owner_a)
    assert client.get(reverse("admin:accountant_clientfile_changelist")).context["cl"].result_count == 1
    assert client.post(reverse("admin:accountant_clientfile_button",
                               args=[client_file.pk, "disable"])).status_code == 404
    client_file.refresh_from_db()
    assert client_file.status == ClientFile.Status.ACTIVE


def test_entries_admin_shows_the_violations(api, org_a, accountant, client_for):
    client_file = active_file(org_a, accountant)
    day = open_day(api, client_file)
    supplier_invoice(org_a, day)
    entry = services.build_entries(client_file, fetch_pdf=fetch_pdf).created[0]
    api.close_fiscal_year(int(client_file.remote_company_id), on=day)
    services.refresh_reference_data(client_file)
    services.check_rules(entry)
    client = client_for(accountant)
    listing = client.get(reverse("admin:accountant_journalentry_changelist"))
    assert b"is closed in Pennylane" in listing.content
    detail = client.get(reverse("admin:accountant_journalentry_change", args=[entry.pk]))
    assert b"is closed in Pennylane" in detail.content
    # The push action leaves it blocked.
    client.post(reverse("admin:accountant_journalentry_changelist"),
                {"action": "push_now", "_selected_action": [entry.pk]})
    entry.refresh_from_db()
    assert entry.status == JournalEntry.Status.BLOCKED


def test_exports_from_the_admin_and_download(api, org_a, accountant, client_for):
    client_file = active_file(org_a, accountant)
    client = client_for(accountant)
    client.post(reverse("admin:accountant_clientfile_changelist"),
                {"action": "export_xlsx", "_selected_action": [client_file.pk]})
    export = Export.objects.get(client_file=client_file, kind="xlsx")
    response = client.get(reverse("admin:accountant_export_download", args=[export.pk]))
    assert response.status_code == 200
    assert b"".join(response.streaming_content)[:2] == b"PK"  # an XLSX is a zip


def test_chart_import_is_checked_row_by_row(api, org_a, org_b, accountant, rival_accountant):
    from accountant.resources import AccountResource

    client_file = active_file(org_a, accountant)
    theirs = ClientFile.objects.create(organization=org_b, firm=org_b.firm)
    data = Dataset(headers=["client_file", "number", "label", "kind", "enabled", "remote_id"])
    data.append([client_file.pk, "622700", "Frais d'actes", "general", "1", "999"])
    result = AccountResource(user=accountant).import_data(data, dry_run=False)
    assert not result.has_errors()
    created = Account.objects.get(client_file=client_file, number="622700")
    assert created.remote_id == "" and created.organization_id == org_a.pk

    sneaky = Dataset(headers=["client_file", "number", "label", "kind", "enabled", "remote_id"])
    sneaky.append([theirs.pk, "622700", "Frais", "general", "1", ""])
    result = AccountResource(user=accountant).import_data(sneaky, dry_run=False)
    assert result.has_errors()
    assert "not one of the client files you manage" in str(result.row_errors()[0][1][0].error)
    assert not Account.objects.filter(client_file=theirs).exists()
    result = AccountResource(user=rival_accountant).import_data(data, dry_run=False)
    assert result.has_errors()
