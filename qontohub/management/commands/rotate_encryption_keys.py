"""Re-encrypt every encrypted field with the first key of FIELD_ENCRYPTION_KEYS.

Roll a key: put the new key first in FIELD_ENCRYPTION_KEYS (keep the old ones after it), run
this command, then remove the old keys. Rows are rewritten in batches inside transactions; the
command is safe to re-run after an interruption.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import connection, transaction

from qontohub.crypto import ENCRYPTED_FIELD_TYPES, rotate_token

BATCH = 500


class Command(BaseCommand):
    help = "Re-encrypt every encrypted field with the first key in FIELD_ENCRYPTION_KEYS."

    def handle(self, *args: Any, **options: Any) -> None:
        total = 0
        for model in apps.get_models():
            fields = [f for f in model._meta.concrete_fields if isinstance(f, ENCRYPTED_FIELD_TYPES)]
            if not fields:
                continue
            rotated = self._rotate_model(model, fields)
            total += rotated
            self.stdout.write(f"{model._meta.label}: {rotated} row(s) re-encrypted")
        self.stdout.write(self.style.SUCCESS(f"Done: {total} row(s) re-encrypted with the first key."))

    def _rotate_model(self, model: Any, fields: list[Any]) -> int:
        # Raw column values (the Fernet tokens) are read and written directly so that no
        # plaintext passes through model instances, signals or caches.
        table = connection.ops.quote_name(model._meta.db_table)
        pk_col = connection.ops.quote_name(model._meta.pk.column)
        cols = [connection.ops.quote_name(f.column) for f in fields]
        done = 0
        last_pk: Any = None
        while True:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    where = f"WHERE {pk_col} > %s" if last_pk is not None else ""
                    params = [last_pk] if last_pk is not None else []
                    cursor.execute(
                        f"SELECT {pk_col}, {', '.join(cols)} FROM {table} {where} "
                        f"ORDER BY {pk_col} LIMIT {BATCH}",
                        params,
                    )
                    rows = cursor.fetchall()
                    if not rows:
                        return done
                    for row in rows:
                        pk, values = row[0], row[1:]
                        new_values = [rotate_token(v) if v else v for v in values]
                        assignments = ", ".join(f"{c} = %s" for c in cols)
                        cursor.execute(
                            f"UPDATE {table} SET {assignments} WHERE {pk_col} = %s",
                            [*new_values, pk],
                        )
                        done += 1
                    last_pk = rows[-1][0]
