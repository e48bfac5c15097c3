"""Which QuickBooks field feeds which hub field, and how a connection overrides it.

The defaults are the integration page's mapping, quoted in issue 5 (the QuickBooks → Qonto flow):

* Bill: ``TotalAmt`` → total_amount, ``CurrencyRef`` → currency, ``TxnDate`` → issue_date,
  ``DueDate`` → due_date, ``DocNumber`` → invoice_number, ``TxnTaxDetail.TotalTax`` → tax_amount;
* Purchase: ``TotalAmt`` → amount, ``CurrencyRef`` → currency, ``TxnDate`` → emitted_at,
  ``PrivateNote`` → label, ``Id`` → transaction_id;
* Vendor: ``DisplayName`` → supplier_name, ``WebAddr`` → supplier_website,
  ``TaxIdentifier`` → supplier_tax_id.

Paths are dotted paths into the QuickBooks JSON (entity shapes: peer-apis.md §1.6). A reference
object (``CurrencyRef``, ``{"value", "name"}``) and the ``WebAddr`` object (``{"URI"}``) are read
through their ``value`` / ``URI`` member, so ``CurrencyRef`` and ``CurrencyRef.value`` are the same.

Overrides: a ``connectors.ValueMapping`` row of kind ``field`` on the connection, with
``source_value = "<Entity>.<QuickBooks path>"`` (e.g. ``Bill.PrivateNote``) and
``target_value = "<hub field>"`` (e.g. ``invoice_number``). Each override carries a ``version``;
the connection's mapping version is the highest of them (1 without any). Streams load the mapping
once per sync run, so an override applies to the records read after it was saved, and every
record keeps the version that produced it (``Document.mapping_version``; for counterparties and
purchases, which have no such column, under :data:`VERSION_KEY` in the stored payload). Records
read before are not rewritten until they are read again (a change at QuickBooks or a full resync).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Max
from django.utils.dateparse import parse_date

if TYPE_CHECKING:
    from connectors.models import Connection, ValueMapping

#: Key under which a record's mapping version is kept in the stored payload when its mirror
#: model has no ``mapping_version`` column. QuickBooks never sends keys starting with "_".
VERSION_KEY = "_mapping_version"

DEFAULTS: dict[str, dict[str, str]] = {
    "Bill": {
        "total_amount": "TotalAmt",
        "currency": "CurrencyRef",
        "issue_date": "TxnDate",
        "due_date": "DueDate",
        "invoice_number": "DocNumber",
        "tax_amount": "TxnTaxDetail.TotalTax",
    },
    "Purchase": {
        "amount": "TotalAmt",
        "currency": "CurrencyRef",
        "emitted_at": "TxnDate",
        "label": "PrivateNote",
        "transaction_id": "Id",
    },
    "Vendor": {
        "supplier_name": "DisplayName",
        "supplier_website": "WebAddr",
        "supplier_tax_id": "TaxIdentifier",
    },
}

#: The type of each hub field, which decides how a QuickBooks value is read.
KINDS: dict[str, str] = {
    "total_amount": "money",
    "tax_amount": "money",
    "amount": "money",
    "currency": "currency",
    "issue_date": "date",
    "due_date": "date",
    "emitted_at": "datetime",
    "invoice_number": "text",
    "label": "text",
    "transaction_id": "text",
    "supplier_name": "text",
    "supplier_website": "text",
    "supplier_tax_id": "text",
}


class MappingError(ValueError):
    """An override names an entity or field the hub does not map."""


@dataclass(frozen=True)
class FieldMapping:
    """The mapping in force for one connection: hub field → QuickBooks path, per entity."""

    version: int = 1
    paths: dict[str, dict[str, str]] = field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULTS.items()}
    )

    def path(self, entity: str, target: str) -> str:
        return self.paths[entity][target]

    def read(self, entity: str, record: Mapping[str, Any], target: str) -> Any:
        """The hub value of ``target`` for one QuickBooks record, typed (Decimal, date, str…)."""
        path = self.path(entity, target)
        return convert(KINDS[target], lookup(record, path), f"{entity}.{path}")


def lookup(record: Mapping[str, Any], path: str) -> Any:
    """Follow a dotted path; a ``{"value"}`` reference or ``{"URI"}`` web address yields its member."""
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    if isinstance(node, Mapping):
        for member in ("value", "URI", "Address", "FreeFormNumber"):
            if member in node:
                return node[member]
        return None
    return node


def convert(kind: str, value: Any, name: str) -> Any:
    """Read ``value`` as ``kind``; ValueError with words a support person can act on."""
    if value in (None, ""):
        return None
    if kind == "money":
        if isinstance(value, float):
            value = repr(value)  # the shortest exact spelling of the JSON number (§1.3: numbers)
        try:
            amount = Decimal(str(value).strip())
        except (InvalidOperation, ValueError):
            raise ValueError(f"{name} {value!r} is not a number") from None
        if not amount.is_finite():
            raise ValueError(f"{name} {value!r} is not a number")
        return amount.quantize(Decimal("0.01"))
    if kind == "currency":
        code = str(value).strip().upper()
        if len(code) != 3 or not code.isalpha():
            raise ValueError(f"{name} {value!r} is not an ISO 4217 currency code")
        return code
    if kind in ("date", "datetime"):
        # §1.3: TxnDate/DueDate are YYYY-MM-DD.
        day = value if isinstance(value, date) else parse_date(str(value)[:10])
        if day is None:
            raise ValueError(f"{name} {value!r} is not a date (YYYY-MM-DD)")
        if kind == "date":
            return day
        # A day without a time: noon UTC keeps the same calendar day from California to Paris.
        return datetime.combine(day, time(12), tzinfo=UTC)
    return str(value).strip()


def _split(source_value: str) -> tuple[str, str]:
    entity, _, path = source_value.partition(".")
    return entity, path


def mapping_for(connection: Connection) -> FieldMapping:
    """The mapping in force now for ``connection`` (defaults plus its field overrides)."""
    from connectors.models import ValueMapping

    paths = {entity: dict(fields) for entity, fields in DEFAULTS.items()}
    version = 1
    overrides = (
        ValueMapping.objects.filter(connection=connection, kind=ValueMapping.Kind.FIELD)
        .order_by("version", "updated_at", "pk")
        .values_list("source_value", "target_value", "version")
    )
    for source_value, target, row_version in overrides:
        entity, path = _split(source_value)
        if entity in paths and target in paths[entity] and path:
            # Later versions win when two overrides name the same hub field.
            paths[entity][target] = path
        version = max(version, row_version)
    return FieldMapping(version=version, paths=paths)


def set_override(connection: Connection, entity: str, path: str, target: str, note: str = "") -> ValueMapping:
    """Map ``<entity>.<path>`` to the hub field ``target`` from now on; returns the override.

    The new override gets the next mapping version of the connection, under a lock on the
    connection row so two people saving at once get two distinct versions.
    """
    from connectors.models import Connection, ValueMapping

    if entity not in DEFAULTS:
        raise MappingError(
            f"QuickBooks {entity!r} has no field mapping; mapped entities: {', '.join(DEFAULTS)}."
        )
    if target not in DEFAULTS[entity]:
        raise MappingError(
            f"{entity} has no hub field {target!r}; its fields are {', '.join(DEFAULTS[entity])}."
        )
    if not path or any(not part for part in path.split(".")):
        raise MappingError(
            f"{path!r} is not a QuickBooks field path (e.g. PrivateNote or TxnTaxDetail.TotalTax)."
        )
    with transaction.atomic():
        Connection.objects.select_for_update().filter(pk=connection.pk).values_list("pk").first()
        current = (
            ValueMapping.objects.filter(connection=connection, kind=ValueMapping.Kind.FIELD).aggregate(
                v=Max("version")
            )["v"]
            or 1
        )
        # One override per hub field: a new source for the same field replaces the old row.
        ValueMapping.objects.filter(
            connection=connection,
            kind=ValueMapping.Kind.FIELD,
            target_value=target,
            source_value__startswith=f"{entity}.",
        ).delete()
        override, _ = ValueMapping.objects.update_or_create(
            organization_id=connection.organization_id,
            connection=connection,
            kind=ValueMapping.Kind.FIELD,
            source_value=f"{entity}.{path}"[:200],
            defaults={"target_value": target, "version": current + 1, "note": note[:200]},
        )
    return override
