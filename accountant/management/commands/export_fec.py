"""``manage.py export_fec ORGANIZATION YEAR --output DIR``: write and check a client's FEC.

ORGANIZATION is the organisation's id or Qonto slug; YEAR the year in which the fiscal year
closes. The file is named ``<SIREN>FEC<closing date>.txt``; the command validates its own output
with ``accountant.fec.validate_fec`` and exits with status 1 if anything is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from accountant.exports import ExportError, client_file_for, export_fec


class Command(BaseCommand):
    help = "Export an organisation's FEC for the fiscal year closing in YEAR, and validate it."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("organization", help="organisation id or Qonto slug")
        parser.add_argument("year", type=int, help="year in which the fiscal year closes")
        parser.add_argument("--output", default=".", help="directory to write the file into (default: .)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            client_file = client_file_for(str(options["organization"]))
            result = export_fec(client_file, options["year"], Path(options["output"]))
        except ExportError as exc:
            raise CommandError(str(exc)) from exc
        for violation in result.violations:
            self.stderr.write(str(violation))
        if result.violations:
            raise CommandError(f"{result.path}: {len(result.violations)} violation(s); the file is not compliant.")
        self.stdout.write(
            self.style.SUCCESS(f"{result.path}: {result.lines} lines, {result.entries} entries, balanced, valid.")
        )
