"""``manage.py reconcile_file DATASET.json --output RESULTS.json [--baseline] [--workers N]``.

Runs the reconciliation engine on a benchmark data set (format: ``shared/bench/README.md``) and
writes the results file the scorer reads. A thin wrapper over ``reconciliation.benchfile``; it
prints the timings (load, match, write, total) and the decision counts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from reconciliation.benchfile import run_file


class Command(BaseCommand):
    help = "Reconcile a benchmark data set file and write its results file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dataset", type=Path, help="dataset.json")
        parser.add_argument("--output", type=Path, required=True, help="results.json to write")
        parser.add_argument("--baseline", action="store_true", help="run the naive baseline instead")
        parser.add_argument("--workers", type=int, default=None,
                            help="processes to match with (default: the idle CPUs)")

    def handle(self, *args: Any, **options: Any) -> None:
        dataset: Path = options["dataset"]
        if not dataset.is_file():
            raise CommandError(f"{dataset} does not exist.")
        if options["workers"] is not None and options["workers"] < 1:
            raise CommandError("--workers must be 1 or more.")
        stats = run_file(dataset, options["output"], baseline=options["baseline"], workers=options["workers"])
        self.stdout.write(
            f"{stats['engine_version']}: {stats['transactions']} transactions, {stats['documents']} documents; "
            f"load {stats['load_s']} s, match {stats['match_s']} s, write {stats['write_s']} s, "
            f"total {stats['total_s']} s"
        )
        self.stdout.write(json.dumps(stats))
