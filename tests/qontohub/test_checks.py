"""Production start-up checks: each misconfiguration is refused with its own error."""

import pytest
from django.core.checks import run_checks
from django.test import override_settings

GOOD = {
    "PRODUCTION": True,
    "DEBUG": False,
    "SECRET_KEY": "a-long-random-production-secret-0123456789-abcdefghij",
    "FIELD_ENCRYPTION_KEYS": ["Fs7bLQyq1zO3i6a0uQ5Bhx0j0Z6WJm8h8g8s0JqXn2k="],
    "SANDBOX_ENABLED": False,
    "ALLOWED_HOSTS": ["hub.example.com"],
}


def ids(**overrides):
    with override_settings(**{**GOOD, **overrides}):
        return {message.id for message in run_checks() if message.id.startswith("qontohub.")}


def test_a_correct_production_configuration_passes():
    assert ids() == set()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"DEBUG": True}, "qontohub.E001"),
        ({"SECRET_KEY": "qontohub-development-only-secret-key-do-not-use-in-production"}, "qontohub.E002"),
        ({"FIELD_ENCRYPTION_KEYS": []}, "qontohub.E003"),
        ({"SANDBOX_ENABLED": True}, "qontohub.E004"),
        ({"ALLOWED_HOSTS": []}, "qontohub.E005"),
    ],
)
def test_each_misconfiguration_is_refused(overrides, expected):
    assert ids(**overrides) == {expected}


def test_development_defaults_are_accepted_outside_production():
    with override_settings(PRODUCTION=False, DEBUG=True, SANDBOX_ENABLED=True):
        assert not [m for m in run_checks() if m.id.startswith("qontohub.")]
