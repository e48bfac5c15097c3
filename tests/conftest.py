"""Shared fixtures: the personas every tenant test uses, and the lane rules.

Personas: ``owner_a`` (owner of org A), ``reviewer_a`` (reviewer in org A), ``outsider`` (owner of
org B, who must never see org A), ``support`` (read-only operator), ``accountant`` (member of the
firm that has org A as a client).
"""

from __future__ import annotations

import os

import pytest
from django.contrib.auth.models import Group
from django_q.conf import Conf

from qontohub.models import Firm, FirmMembership, Membership, Organization, User
from qontohub.tenancy import SUPPORT_GROUP, FirmRole, Role

# Tasks run inline in tests: a test asserts what a task did, not that it was queued.
Conf.SYNC = True

PASSWORD = "correct-horse-battery-staple"
IN_CI = os.environ.get("CI") == "true"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from django.conf import settings

    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    require_pg = os.environ.get("QONTOHUB_REQUIRE_POSTGRES") == "1"
    browser_on = os.environ.get("QONTOHUB_BROWSER_TESTS") == "1" or IN_CI
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            if require_pg:
                item.add_marker(pytest.mark.usefixtures("_postgres_is_missing"))
            else:
                item.add_marker(
                    pytest.mark.skip(
                        reason="needs PostgreSQL: runs in the PostgreSQL lane (make test-postgres)"
                    )
                )
        if "browser" in item.keywords and not browser_on:
            item.add_marker(
                pytest.mark.skip(
                    reason="browser test: apt-get install chromium, then make test-browser"
                )
            )


@pytest.fixture
def _postgres_is_missing() -> None:
    pytest.fail("This lane requires PostgreSQL (QONTOHUB_REQUIRE_POSTGRES=1) but DATABASE_URL is not one.")


@pytest.fixture
def org_a(db: None) -> Organization:
    firm = Firm.objects.create(name="Cabinet Alpha", slug="cabinet-alpha")
    return Organization.objects.create(
        name="Atelier Lumière SAS", qonto_slug="atelier-lumiere-4821", siren="732829320", firm=firm
    )


@pytest.fixture
def org_b(db: None) -> Organization:
    firm = Firm.objects.create(name="Cabinet Beta", slug="cabinet-beta")
    return Organization.objects.create(
        name="Boulangerie Martin SARL", qonto_slug="boulangerie-martin-7713", siren="542051180", firm=firm
    )


def make_user(email: str, **extra: object) -> User:
    return User.objects.create_user(email=email, password=PASSWORD, **extra)


@pytest.fixture
def owner_a(org_a: Organization) -> User:
    user = make_user("owner-a@example.test")
    Membership.objects.create(organization=org_a, user=user, role=Role.OWNER)
    return user


@pytest.fixture
def reviewer_a(org_a: Organization) -> User:
    user = make_user("reviewer-a@example.test")
    Membership.objects.create(organization=org_a, user=user, role=Role.REVIEWER)
    return user


@pytest.fixture
def outsider(org_b: Organization) -> User:
    user = make_user("owner-b@example.test")
    Membership.objects.create(organization=org_b, user=user, role=Role.OWNER)
    return user


@pytest.fixture
def accountant(org_a: Organization) -> User:
    user = make_user("accountant@example.test")
    FirmMembership.objects.create(firm=org_a.firm, user=user, role=FirmRole.ACCOUNTANT)
    return user


@pytest.fixture
def support(db: None) -> User:
    user = make_user("support@example.test")
    user.groups.add(Group.objects.get_or_create(name=SUPPORT_GROUP)[0])
    return user


@pytest.fixture
def client_for(client):  # type: ignore[no-untyped-def]
    """Log the test client in as a persona: ``client_for(owner_a)``."""

    def login(user: User):  # type: ignore[no-untyped-def]
        client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
        return client

    return login


@pytest.fixture
def media_root(settings, tmp_path):  # type: ignore[no-untyped-def]
    """Files a test writes (exports, pulled documents) go under a temporary media root."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def sandbox_for(settings):  # type: ignore[no-untyped-def]
    """Route a provider's HTTP to a fresh in-process sandbox: ``api = sandbox_for("qonto")``.

    The hub's HTTP door (``connectors.http``) is used unchanged; only the transport under the
    provider's configured base URLs is the sandbox adapter, so retries, timeouts and token
    refresh behave as against the network. Backoff is shortened so retried tests stay fast.
    """
    import requests

    from connectors import http
    from connectors.sandbox.adapter import mount_sandbox
    from connectors.sandbox.registry import create_sandbox

    settings.HTTP_BACKOFF_BASE = 0.001
    settings.HTTP_BACKOFF_CAP = 0.01
    apis: dict[str, object] = {}

    def factory(provider: str) -> requests.Session:
        session = requests.Session()
        if provider in apis:
            config = settings.PROVIDERS[provider]
            urls = {v for k, v in config.items() if k.endswith("_url") and v}
            mount_sandbox(session, apis[provider], *urls)
        return session

    def start(slug: str, seed: int = 1, **options: object):  # type: ignore[no-untyped-def]
        apis[slug] = create_sandbox(slug, seed, **options)
        http.reset_sessions()
        return apis[slug]

    previous = http.session_factory
    http.session_factory = factory
    http.reset_sessions()
    yield start
    http.session_factory = previous
    http.reset_sessions()
