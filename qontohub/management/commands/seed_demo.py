"""Seed a demo workspace: a firm, two client organisations and their people.

Idempotent: running it again keeps existing rows and resets the demo passwords. Each app adds
its own demo data through the seeders listed in ``settings.DEMO_SEEDERS`` (dotted paths to
functions taking the demo objects), so this command stays the one entry point.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils.module_loading import import_string

from qontohub.models import Firm, FirmMembership, Membership, Organization, User
from qontohub.tenancy import SUPPORT_GROUP, FirmRole, Role

DEMO_PASSWORD_DEFAULT = "qontohub-demo"


class Command(BaseCommand):
    help = "Create (or refresh) the demo firm, organisations and users, and print their logins."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--quiet", action="store_true", help="Do not print the logins.")

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            raise CommandError("seed_demo creates users with known passwords: not in production.")
        password = os.environ.get("DEMO_PASSWORD", DEMO_PASSWORD_DEFAULT)
        with transaction.atomic():
            demo = seed_core(password)
        for path in settings.DEMO_SEEDERS:
            import_string(path)(demo, stdout=self.stdout)
        if options["quiet"]:
            return
        self.stdout.write(self.style.SUCCESS("Demo workspace ready. Log in at http://127.0.0.1:8000/"))
        for email, what in [
            ("admin@demo.test", "operator (superuser)"),
            ("owner-a@demo.test", f"owner of {demo['org_a'].name}"),
            ("reviewer-a@demo.test", f"reviewer in {demo['org_a'].name}"),
            ("accountant@demo.test", f"accountant at {demo['firm'].name} (client: {demo['org_a'].name})"),
            ("owner-b@demo.test", f"owner of {demo['org_b'].name}"),
            ("support@demo.test", "support staff (read-only, all organisations)"),
        ]:
            self.stdout.write(f"  {email:<24} password: {password:<16} {what}")


def seed_core(password: str) -> dict[str, Any]:
    firm, _ = Firm.objects.get_or_create(slug="cabinet-demo", defaults={"name": "Cabinet Demo Expertise"})
    org_a, _ = Organization.objects.get_or_create(
        qonto_slug="atelier-lumiere-4821",
        defaults={"name": "Atelier Lumière SAS", "country": "FR", "siren": "732829320", "firm": firm},
    )
    org_b, _ = Organization.objects.get_or_create(
        qonto_slug="boulangerie-martin-7713",
        defaults={"name": "Boulangerie Martin SARL", "country": "FR", "siren": "542051180"},
    )
    support_group, _ = Group.objects.get_or_create(name=SUPPORT_GROUP)

    def person(email: str, **extra: Any) -> User:
        user = User.objects.filter(email=email).first()
        if user is None:
            user = User.objects.create_user(email=email, password=password, **extra)
        else:
            user.set_password(password)
            for key, value in extra.items():
                setattr(user, key, value)
            user.save()
        return user

    admin = person("admin@demo.test", is_superuser=True)
    owner_a = person("owner-a@demo.test", first_name="Amélie", last_name="Roux")
    reviewer_a = person("reviewer-a@demo.test", first_name="Romain", last_name="Petit")
    owner_b = person("owner-b@demo.test", first_name="Bruno", last_name="Martin")
    accountant = person("accountant@demo.test", first_name="Claire", last_name="Durand")
    support = person("support@demo.test", first_name="Sam", last_name="Support")
    support.groups.add(support_group)
    Membership.objects.update_or_create(organization=org_a, user=owner_a, defaults={"role": Role.OWNER})
    Membership.objects.update_or_create(
        organization=org_a, user=reviewer_a, defaults={"role": Role.REVIEWER}
    )
    Membership.objects.update_or_create(organization=org_b, user=owner_b, defaults={"role": Role.OWNER})
    FirmMembership.objects.update_or_create(
        firm=firm, user=accountant, defaults={"role": FirmRole.ACCOUNTANT}
    )
    return {
        "firm": firm,
        "org_a": org_a,
        "org_b": org_b,
        "admin": admin,
        "owner_a": owner_a,
        "reviewer_a": reviewer_a,
        "owner_b": owner_b,
        "accountant": accountant,
        "support": support,
        "password": password,
    }
