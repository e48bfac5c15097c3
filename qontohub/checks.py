"""Start-up checks that refuse a production start with a development default left in place.

They run with every management command (``runserver``, ``migrate``, ``qcluster``…) and with
``check --deploy``. Outside production (``QONTOHUB_ENV`` unset) they stay silent, so a newcomer's
``make run`` works with the safe development defaults.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def production_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    if not settings.PRODUCTION:
        return []
    errors = []
    if settings.DEBUG:
        errors.append(
            Error(
                "DEBUG is on in production: it shows stack traces and settings to visitors.",
                hint="Unset DEBUG or set DEBUG=false.",
                id="qontohub.E001",
            )
        )
    if not settings.SECRET_KEY or settings.SECRET_KEY == settings.DEVELOPMENT_SECRET_KEY:
        errors.append(
            Error(
                "SECRET_KEY is the development default: sessions and signed OAuth state could "
                "be forged.",
                hint="Set SECRET_KEY to a long random value kept out of the repository.",
                id="qontohub.E002",
            )
        )
    if not settings.FIELD_ENCRYPTION_KEYS:
        errors.append(
            Error(
                "FIELD_ENCRYPTION_KEYS is empty: connection credentials cannot be stored.",
                hint="Set FIELD_ENCRYPTION_KEYS to one or more comma-separated Fernet keys; "
                "keep them in your secret store, losing them loses every stored credential.",
                id="qontohub.E003",
            )
        )
    if settings.SANDBOX_ENABLED:
        errors.append(
            Error(
                "SANDBOX_ENABLED is on in production: fake provider APIs would be served.",
                hint="Unset SANDBOX_ENABLED or set SANDBOX_ENABLED=false.",
                id="qontohub.E004",
            )
        )
    if not settings.ALLOWED_HOSTS:
        errors.append(
            Error(
                "ALLOWED_HOSTS is empty in production: every request would be refused.",
                hint="Set ALLOWED_HOSTS to the hub's host names, comma separated.",
                id="qontohub.E005",
            )
        )
    return errors
