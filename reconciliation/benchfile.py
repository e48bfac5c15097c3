"""Run the reconciliation engine on a benchmark data set file and write its results file.

Pure (no Django): ``manage.py reconcile_file`` wraps :func:`run_file`. The file formats are
those of ``shared/bench/README.md``:

* input ``dataset.json``: ``{"transactions": [...], "documents": [...]}``;
* output ``results.json``: ``{"results": [{"transaction_id", "decision", "confidence",
  "candidates": [{"document_ids": [...], "confidence": int}, ...]}]}``, candidates best first.

Usage::

    python -m reconciliation.benchfile DATASET.json --output RESULTS.json [--baseline] [--workers N]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from pathlib import Path

from .engine import ENGINE_VERSION, Document, Result, Transaction, baseline_reconcile, reconcile


def load_dataset(path: str | Path) -> tuple[list[Transaction], list[Document]]:
    """Read a benchmark data set into engine records."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    dates: dict[str, date] = {}

    def day(value: str | None) -> date:
        # Thousands of records share a few hundred dates: parse each string once.
        value = (value or "")[:10]
        d = dates.get(value)
        if d is None:
            d = dates[value] = date.fromisoformat(value)
        return d

    transactions = [
        Transaction(
            id=t["id"],
            amount=Decimal(t["amount"]),
            currency=t.get("currency") or "EUR",
            side=t.get("side") or ("debit" if t["amount"].startswith("-") else "credit"),
            date=day(t.get("settled_at") or t.get("date")),
            counterparty=t.get("counterparty") or "",
            label=t.get("label") or "",
            reference=t.get("reference") or "",
            counterparty_tax_id=t.get("counterparty_tax_id") or "",
            iban=t.get("iban") or "",
        )
        for t in data.get("transactions", [])
    ]
    documents = [
        Document(
            id=d["id"],
            kind=d.get("kind") or "",
            number=d.get("number") or "",
            counterparty=d.get("counterparty") or "",
            counterparty_tax_id=d.get("counterparty_tax_id") or "",
            amount=Decimal(d["amount"]),
            currency=d.get("currency") or "EUR",
            issue_date=day(d.get("issue_date")),
            due_date=day(d.get("due_date") or d.get("issue_date")),
            iban=d.get("iban") or "",
        )
        for d in data.get("documents", [])
    ]
    return transactions, documents


def write_results(results: Sequence[Result], path: str | Path) -> None:
    """Write results in the benchmark format (plus the engine version, for the audit trail)."""
    payload = {
        "engine_version": ENGINE_VERSION,
        "results": [
            {
                "transaction_id": r.transaction_id,
                "decision": r.decision,
                "confidence": r.confidence,
                "candidates": [
                    {"document_ids": list(c.document_ids), "confidence": c.confidence}
                    for c in r.candidates
                ],
            }
            for r in results
        ],
    }
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, separators=(",", ":")), encoding="utf-8")


def default_workers() -> int:
    """Processes worth using now: every CPU when the machine is idle, one when it is busy.

    On an oversubscribed machine the extra process only adds copying; the one-minute load
    average tells which case this is.
    """
    cpus = min(4, os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return cpus if load < cpus - 0.5 else 1


def run_file(dataset_path: str | Path, output_path: str | Path, *, baseline: bool = False,
             workers: int | None = None) -> dict:
    """Load, match and write; returns the timings in seconds and the decision counts.

    ``workers`` defaults to the idle CPUs: this runner is a single-threaded command, so the
    engine may fork to work in parallel, which pays only when cores are free.
    """
    if workers is None:
        workers = default_workers()
    # Loading and writing build hundreds of thousands of acyclic objects: no cycle collection.
    collecting = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        transactions, documents = load_dataset(dataset_path)
        t1 = time.perf_counter()
        if baseline:
            results = baseline_reconcile(transactions, documents)
        else:
            results = reconcile(transactions, documents, workers=workers)
        t2 = time.perf_counter()
        write_results(results, output_path)
        t3 = time.perf_counter()
    finally:
        if collecting:
            gc.enable()
    decisions: dict[str, int] = {}
    for r in results:
        decisions[r.decision] = decisions.get(r.decision, 0) + 1
    return {
        "engine_version": "baseline" if baseline else ENGINE_VERSION,
        "transactions": len(transactions),
        "documents": len(documents),
        "decisions": decisions,
        "load_s": round(t1 - t0, 3),
        "match_s": round(t2 - t1, 3),
        "write_s": round(t3 - t2, 3),
        "total_s": round(t3 - t0, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Reconcile a benchmark data set file.")
    parser.add_argument("dataset", type=Path, help="dataset.json")
    parser.add_argument("--output", type=Path, required=True, help="results.json to write")
    parser.add_argument("--baseline", action="store_true", help="run the naive baseline instead")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes to use (default: the idle CPUs, see default_workers)")
    args = parser.parse_args(argv)
    timings = run_file(args.dataset, args.output, baseline=args.baseline, workers=args.workers)
    print(json.dumps(timings), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
