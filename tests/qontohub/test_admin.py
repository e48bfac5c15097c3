"""The admin applies tenancy: outsiders get 404, support reads without changing."""

import pytest

pytestmark = pytest.mark.django_db


def test_admin_requires_login(client):
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"] or "/admin/login/" in response["Location"]


def test_owner_sees_their_organisation_in_the_admin(client_for, owner_a, org_a, org_b):
    page = client_for(owner_a).get("/admin/qontohub/organization/")
    assert page.status_code == 200
    assert org_a.name in page.text
    assert org_b.name not in page.text


def test_outsider_gets_404_on_org_a_in_the_admin(client_for, outsider, org_a):
    client = client_for(outsider)
    assert client.get(f"/admin/qontohub/organization/{org_a.pk}/change/").status_code == 404
    assert client.get(f"/admin/qontohub/organization/{org_a.pk}/history/").status_code == 404
    assert client.get(f"/admin/qontohub/organization/{org_a.pk}/delete/").status_code == 404
    listing = client.get("/admin/qontohub/organization/")
    assert org_a.name not in listing.text


def test_support_reads_but_cannot_change(client_for, support, org_a):
    client = client_for(support)
    page = client.get(f"/admin/qontohub/organization/{org_a.pk}/change/")
    assert page.status_code == 200
    assert "Save" not in page.text  # a read-only view has no save buttons
    response = client.post(
        f"/admin/qontohub/organization/{org_a.pk}/change/",
        {"name": "Hijacked", "country": "FR", "time_zone": "UTC"},
    )
    assert response.status_code == 403
    org_a.refresh_from_db()
    assert org_a.name == "Atelier Lumière SAS"


def test_owner_can_rename_their_organisation(client_for, owner_a, org_a):
    response = client_for(owner_a).post(
        f"/admin/qontohub/organization/{org_a.pk}/change/",
        {
            "name": "Atelier Lumière",
            "qonto_slug": org_a.qonto_slug,
            "country": "FR",
            "time_zone": "Europe/Paris",
            "siren": org_a.siren,
            "memberships-TOTAL_FORMS": "1",
            "memberships-INITIAL_FORMS": "1",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
            "memberships-0-id": org_a.memberships.get().pk,
            "memberships-0-organization": org_a.pk,
        },
    )
    assert response.status_code == 302, response.content[:2000]
    org_a.refresh_from_db()
    assert org_a.name == "Atelier Lumière"


def test_reviewer_cannot_change_the_organisation(client_for, reviewer_a, org_a):
    response = client_for(reviewer_a).post(
        f"/admin/qontohub/organization/{org_a.pk}/change/", {"name": "x"}
    )
    assert response.status_code == 403


def test_people_admin_is_for_operators_only(client_for, owner_a):
    assert client_for(owner_a).get("/admin/qontohub/user/").status_code == 403
