"""Which connector class serves which provider: one line per provider, no discovery magic."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from connectors.base import Connector

PROVIDERS: dict[str, str] = {
    "qonto": "connectors.qonto.connector.QontoConnector",
    "pennylane": "connectors.pennylane.connector.PennylaneConnector",
    "quickbooks": "connectors.quickbooks.connector.QuickBooksConnector",
}


@cache
def connector_class(slug: str) -> type[Connector]:
    try:
        return import_string(PROVIDERS[slug])
    except KeyError as exc:
        raise KeyError(f"Unknown provider {slug!r}; known: {', '.join(sorted(PROVIDERS))}") from exc


def provider_choices() -> list[tuple[str, str]]:
    return [(slug, slug.replace("_", " ").title()) for slug in PROVIDERS]
