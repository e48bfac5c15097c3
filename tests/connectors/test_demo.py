"""The demo workspace is wired to the Qonto sandbox, and its first sync really syncs."""

import io

import pytest
from django.core.management import call_command

from connectors.models import BankTransaction, Connection, SyncRun

pytestmark = pytest.mark.django_db


def test_seed_demo_connects_org_a_to_the_qonto_sandbox_and_syncs(sandbox_for, settings):
    sandbox_for("qonto", 4711, transactions=60)
    call_command("seed_demo", stdout=io.StringIO())  # tasks run inline in tests
    connection = Connection.objects.get(provider="qonto", organization__name="Atelier Lumière SAS")
    assert connection.status == Connection.Status.ACTIVE
    assert connection.auth_method == "api_key"
    run = SyncRun.objects.get(connection=connection)
    assert run.trigger == "connect"
    assert run.outcome in {"succeeded", "partial"}, run.error
    assert BankTransaction.objects.for_org(connection.organization).count() >= 60

    call_command("seed_demo", stdout=io.StringIO())
    assert Connection.objects.filter(provider="qonto").count() == 1
    assert SyncRun.objects.filter(connection=connection).count() == 1  # no second first-sync
