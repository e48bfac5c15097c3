"""Who sees which organisation: memberships, firm members, support staff and outsiders."""

import pytest

from qontohub.models import Membership, Organization
from qontohub.tenancy import MANAGE_ROLES, organization_ids_for, role_in

pytestmark = pytest.mark.django_db


def test_owner_sees_only_their_organisation(owner_a, org_a, org_b):
    assert list(Organization.objects.visible_to(owner_a)) == [org_a]


def test_outsider_sees_nothing_of_org_a(outsider, org_a, org_b):
    assert org_a not in Organization.objects.visible_to(outsider)
    assert not Membership.objects.visible_to(outsider).for_org(org_a).exists()


def test_firm_member_sees_the_firms_client_organisations(accountant, org_a, org_b):
    assert list(Organization.objects.visible_to(accountant)) == [org_a]
    assert role_in(accountant, org_a, MANAGE_ROLES)
    assert not role_in(accountant, org_b, MANAGE_ROLES)


def test_support_reads_every_organisation_but_manages_none(support, org_a, org_b):
    assert set(Organization.objects.visible_to(support)) == {org_a, org_b}
    assert not role_in(support, org_a, MANAGE_ROLES)


def test_reviewer_cannot_manage(reviewer_a, org_a):
    assert org_a.pk in organization_ids_for(reviewer_a)
    assert not role_in(reviewer_a, org_a, MANAGE_ROLES)


def test_inactive_user_sees_nothing(owner_a):
    owner_a.is_active = False
    owner_a.save()
    assert not Organization.objects.visible_to(owner_a).exists()


def test_user_in_two_organisations_switches_between_them(client_for, owner_a, org_a, org_b):
    Membership.objects.create(organization=org_b, user=owner_a, role="viewer")
    client = client_for(owner_a)
    page = client.get("/admin/qontohub/organization/")
    assert "Atelier Lumière SAS" in page.text and "Boulangerie Martin SARL" in page.text

    response = client.post("/orgs/switch/", {"organization": org_b.pk, "next": "/admin/"})
    assert response.status_code == 302
    page = client.get("/admin/qontohub/organization/")
    assert "Boulangerie Martin SARL" in page.text
    assert "Atelier Lumière SAS</a>" not in page.text

    client.post("/orgs/switch/", {"organization": ""})
    page = client.get("/admin/qontohub/organization/")
    assert "Atelier Lumière SAS" in page.text


def test_switching_to_a_foreign_organisation_is_404(client_for, outsider, org_a):
    response = client_for(outsider).post("/orgs/switch/", {"organization": org_a.pk})
    assert response.status_code == 404
