"""django-import-export resources of the connectors (mapping tables people keep in spreadsheets).

Imports are tenant-checked row by row: a row may only write to an organisation (and connection)
the importing person manages; anything else is rejected with a message naming the row's values.
"""

from __future__ import annotations

from typing import Any

from import_export import resources

from connectors.models import Connection, ValueMapping
from qontohub.tenancy import MANAGE_ROLES, role_in


class ValueMappingResource(resources.ModelResource):
    def __init__(self, user: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user = user

    class Meta:
        model = ValueMapping
        fields = ("id", "organization", "connection", "kind", "source_value", "target_value", "note")
        import_id_fields = ("organization", "connection", "kind", "source_value")

    def before_import_row(self, row: Any, **kwargs: Any) -> None:
        raw_org = str(row.get("organization") or "").strip()
        if not raw_org.isdigit():
            raise ValueError(f"organization must be the organisation's numeric id, got {raw_org!r}")
        org_id = int(raw_org)
        if self.user is None or not role_in(self.user, org_id, MANAGE_ROLES):
            raise ValueError(f"organization {org_id}: you do not manage this organisation")
        raw_conn = str(row.get("connection") or "").strip()
        if raw_conn and not Connection.objects.for_org(org_id).filter(pk=raw_conn).exists():
            raise ValueError(f"connection {raw_conn} does not belong to organisation {org_id}")
