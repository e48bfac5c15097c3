"""``manage.py reconcile_file`` on a small generated benchmark data set, scored by the shared
scorer: the command writes the results format, prints its timings, and the engine's answers are
sensible (the full targets are measured by ``make bench`` on 20,000 transactions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

BENCH = Path(os.environ.get("QONTOHUB_SHARED_BENCH", Path(settings.BASE_DIR).parent / "shared" / "bench"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (BENCH / "recon_dataset.py").exists():
        pytest.skip(f"benchmark generator not found in {BENCH}")
    out = tmp_path_factory.mktemp("recon")
    subprocess.run(
        [sys.executable, str(BENCH / "recon_dataset.py"), "--transactions", "300", "--seed", "11", "--out", str(out)],
        check=True, capture_output=True, timeout=120,
    )
    return out


def score(dataset: Path, results: Path) -> dict:
    done = subprocess.run(
        [sys.executable, str(BENCH / "recon_score.py"), "--truth", str(dataset / "truth.json"), "--results", str(results), "--json"],
        check=True, capture_output=True, text=True, timeout=120,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_engine_results_are_written_timed_and_sensible(dataset: Path, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    out = StringIO()
    call_command("reconcile_file", str(dataset / "dataset.json"), "--output", str(results), stdout=out)
    printed = out.getvalue()
    assert "match" in printed and "total" in printed and " s" in printed
    payload = json.loads(results.read_text())
    assert payload["engine_version"] and len(payload["results"]) == 300
    assert all(len(r["candidates"]) <= 5 for r in payload["results"])

    figures = score(dataset, results)
    assert figures["auto_precision"] >= 0.95, figures
    assert figures["recall_at_3"] >= 0.90, figures
    assert figures["auto_coverage"] >= 0.50, figures
    assert figures["no_doc_refused"] >= 0.80, figures


def test_baseline_runs_and_is_no_better(dataset: Path, tmp_path: Path) -> None:
    engine_results, baseline_results = tmp_path / "engine.json", tmp_path / "baseline.json"
    call_command("reconcile_file", str(dataset / "dataset.json"), "--output", str(engine_results), stdout=StringIO())
    call_command("reconcile_file", str(dataset / "dataset.json"), "--output", str(baseline_results), "--baseline", stdout=StringIO())
    engine, baseline = score(dataset, engine_results), score(dataset, baseline_results)
    assert engine["recall_at_3"] >= baseline["recall_at_3"]


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="does not exist"):
        call_command("reconcile_file", str(tmp_path / "nope.json"), "--output", str(tmp_path / "r.json"))


def test_workers_below_one_is_a_clear_error(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="--workers must be 1 or more"):
        call_command("reconcile_file", str(dataset / "dataset.json"), "--output", str(tmp_path / "r.json"),
                     "--workers", "0")
