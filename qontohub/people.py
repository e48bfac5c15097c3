"""How people get in: allauth's adapter for a back office where accounts are invited, not signed up."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from django.conf import settings


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: Any) -> bool:
        # Accounts are created by an owner or operator in the admin; a public sign-up page
        # would let anyone create a login on a hub that holds bank data.
        return bool(getattr(settings, "ACCOUNT_ALLOW_SIGNUP", False))
