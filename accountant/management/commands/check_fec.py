"""``manage.py check_fec PATH``: validate a FEC file (ours or a previous software's).

Wraps ``accountant.fec.main``: one violation per line, exit status 1 if there is any, 2 if the
file cannot be read.
"""

from __future__ import annotations

import io
import sys
from typing import Any

from django.core.management.base import BaseCommand

from accountant.fec import main


class Command(BaseCommand):
    help = "Check a FEC flat file; exit status 1 on any violation."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("path")
        parser.add_argument("--allow-pipe", action="store_true", help="accept '|' as separator")

    def handle(self, *args: Any, **options: Any) -> None:
        argv = ["check", options["path"]] + (["--allow-pipe"] if options["allow_pipe"] else [])
        report = io.StringIO()
        status = main(argv, stdout=report)
        self.stdout.write(report.getvalue(), ending="")
        if status:
            # A non-zero exit is the contract (scripts and CI test it), so exit rather than raise
            # CommandError, which would add its own message and always use status 1.
            sys.exit(status)
