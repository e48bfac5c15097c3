"""Secrets at rest: ciphertext in the database, plaintext only in Python, keys rotatable."""

import io
import logging

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection as db
from django.test import override_settings

from connectors.models import Connection
from qontohub.crypto import DecryptionError
from qontohub.logging import RedactSecretsFilter

pytestmark = pytest.mark.django_db

SECRET = "ory_rt_super-secret-refresh-token-123"


def raw_row(pk: int) -> tuple[str, str]:
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT credentials, webhook_secret FROM connectors_connection WHERE id = %s", [pk]
        )
        return cursor.fetchone()


def make_connection(org) -> Connection:
    return Connection.objects.create(
        organization=org,
        provider="qonto",
        credentials={"access_token": "ory_at_abc", "refresh_token": SECRET},
        webhook_secret="whsec-0123456789abcdef0123456789abcdef",
    )


def test_plaintext_is_absent_from_the_raw_row(org_a):
    conn = make_connection(org_a)
    credentials, webhook_secret = raw_row(conn.pk)
    assert SECRET not in credentials and "ory_at_abc" not in credentials
    assert "whsec" not in webhook_secret
    conn.refresh_from_db()
    assert conn.credentials["refresh_token"] == SECRET
    assert conn.webhook_secret.startswith("whsec-")


def test_rotation_reencrypts_and_old_keys_still_decrypt(org_a, settings):
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    conn = make_connection(org_a)
    before = raw_row(conn.pk)
    new_key = Fernet.generate_key().decode()

    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key, old_key]):
        # Before rotation, the old key still decrypts rows it wrote.
        assert Connection.objects.get(pk=conn.pk).credentials["refresh_token"] == SECRET
        out = io.StringIO()
        call_command("rotate_encryption_keys", stdout=out)
        assert "connectors.Connection: 1 row(s)" in out.getvalue()
        after = raw_row(conn.pk)
        assert after != before

    # Only the new key is needed once rotation has run.
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key]):
        assert Connection.objects.get(pk=conn.pk).credentials["refresh_token"] == SECRET
    # And the old key alone can no longer read it.
    with override_settings(FIELD_ENCRYPTION_KEYS=[old_key]), pytest.raises(DecryptionError):
        Connection.objects.get(pk=conn.pk)


def test_secrets_are_not_admin_form_fields():
    from django.forms import modelform_factory

    form = modelform_factory(Connection, fields="__all__")()
    assert "credentials" not in form.fields and "webhook_secret" not in form.fields


def test_every_log_handler_redacts_secrets(settings):
    assert all("redact" in h.get("filters", []) for h in settings.LOGGING["handlers"].values())
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecretsFilter())
    logger = logging.getLogger("connectors.test-redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("token answer: {'access_token': 'ory_at_live', 'refresh_token': '%s'}", SECRET)
        logger.info("calling with Authorization: Bearer ory_at_live")
        logger.info("Authorization: atelier-4821:3564fsecret")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert SECRET not in text and "ory_at_live" not in text and "3564fsecret" not in text
    assert text.count("[REDACTED]") >= 3
    assert "token answer" in text  # the rest of the line survives
