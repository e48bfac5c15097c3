"""seed_demo gives a newcomer the demo workspace the README promises, and can run twice."""

import io

import pytest
from django.core.management import call_command
from django.test import Client

from qontohub.models import Membership, Organization, User

pytestmark = pytest.mark.django_db


def seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def test_seed_creates_the_documented_people_and_prints_their_passwords():
    output = seed()
    for email in ["owner-a@demo.test", "reviewer-a@demo.test", "owner-b@demo.test", "support@demo.test"]:
        assert email in output
        assert User.objects.filter(email=email).exists()
    assert "qontohub-demo" in output
    org_a = Organization.objects.get(name="Atelier Lumière SAS")
    assert Membership.objects.get(user__email="owner-a@demo.test").organization == org_a
    assert Membership.objects.get(user__email="reviewer-a@demo.test").role == "reviewer"
    client = Client()
    assert client.login(username="owner-a@demo.test", password="qontohub-demo")


def test_seed_twice_changes_nothing():
    seed()
    counts = (User.objects.count(), Organization.objects.count(), Membership.objects.count())
    seed()
    assert (User.objects.count(), Organization.objects.count(), Membership.objects.count()) == counts


def test_seed_refuses_to_run_in_production(settings):
    from django.core.management.base import CommandError

    settings.PRODUCTION = True
    with pytest.raises(CommandError, match="not in production"):
        seed()
