"""DRF authentication for REST clients with hashed, revocable API tokens.

Clients send ``Authorization: Token <key>`` (or ``Bearer <key>``). Keys are created in the admin
and shown once; only their SHA-256 is stored, so a database leak does not leak live tokens.
"""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions

from qontohub.models import ApiToken


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keywords = ("token", "bearer")

    def authenticate(self, request: Any) -> tuple[Any, ApiToken] | None:
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if not header or header[0].lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: send 'Authorization: Token <key>'."
            )
        token = ApiToken.authenticate(header[1])
        if token is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API token.")
        return token.user, token

    def authenticate_header(self, request: Any) -> str:
        return "Token"
