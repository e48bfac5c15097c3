#!/usr/bin/env python
"""QontoHub benchmarks: ``make bench`` (all sections) or ``python bench/run.py SECTION…``.

Sections:
  recon   the matcher on ../shared/bench data (3 seeds × 20,000 transactions), whole-process
          time of ``manage.py reconcile_file``, scored by ``recon_score.py``, beside the naive
          1:1 baseline run on the same data in the same run.
  qonto   Qonto sync throughput from the sandbox over loopback HTTP (bench/qonto_sync.py).
  qbo     10,000 QuickBooks bills through the whole flow into the Qonto sandbox
          (bench/quickbooks_flow.py).
  ops     the REST sync-status endpoint at 20 concurrent clients, webhook acknowledgement and
          processing, the review-queue changelist with 100,000 items (bench/api_webhooks.py).

Each section prints its figures and rewrites its block in bench/RESULTS.md, with the command,
the date and the machine, so the file always says how its numbers were produced.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_BENCH = (ROOT / ".." / "shared" / "bench").resolve()
RESULTS = ROOT / "bench" / "RESULTS.md"
VAR = ROOT / "var" / "bench"
PYTHON = sys.executable


def machine() -> str:
    # The load average says how busy the 2 cores were: timings on a shared machine vary with it.
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, load average {load}"


def write_block(section: str, command: str, body: str) -> None:
    """Replace (or append) the ``section`` block of bench/RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nProduced by `make bench` (`python bench/run.py`); each block says its own command.\n"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"<!-- {section}:start -->\n## {section}\n\n"
        f"Command: `{command}` — {stamp} — {machine()}\n\n{body.rstrip()}\n<!-- {section}:end -->\n"
    )
    pattern = re.compile(rf"<!-- {section}:start -->.*?<!-- {section}:end -->\n", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    RESULTS.write_text(text)


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, cwd=ROOT, **kwargs)  # type: ignore[call-overload]


def recon(seeds: tuple[int, ...] = (7, 11, 23), transactions: int = 20000) -> None:
    rows = []
    for seed in seeds:
        out = VAR / f"recon_{seed}"
        run([PYTHON, str(SHARED_BENCH / "recon_dataset.py"), "--transactions", str(transactions), "--seed", str(seed), "--out", str(out)])
        documents = len(json.loads((out / "dataset.json").read_text())["documents"])
        for label, extra in (("engine", []), ("engine, 1 process", ["--workers", "1"]),
                             ("baseline 1:1", ["--baseline"])):
            results = out / f"results-{len(rows)}.json"
            started = time.perf_counter()
            done = run([PYTHON, "manage.py", "reconcile_file", str(out / "dataset.json"), "--output", str(results), *extra])
            elapsed = time.perf_counter() - started
            inside = json.loads(done.stdout.strip().splitlines()[-1])
            scored = run([PYTHON, str(SHARED_BENCH / "recon_score.py"), "--truth", str(out / "truth.json"), "--results", str(results), "--json"])
            figures = json.loads(scored.stdout)
            rows.append((seed, documents, label, figures, elapsed, inside))
            print(f"seed {seed} {label}: {figures} in {elapsed:.2f} s", flush=True)
    lines = [
        f"{transactions:,} transactions per seed. Time is the whole process (`manage.py reconcile_file`: Django start-up, load, match, write). "
        "The engine forks a matcher per idle CPU by default; the \"1 process\" row is the same run with `--workers 1`, "
        "what a busy machine gets.",
        "",
        "| seed | documents | matcher | auto precision | auto coverage | recall@3 | no-doc refused | time | of which start-up / load / match / write |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    missed: list[str] = []
    for seed, documents, label, f, elapsed, inside in rows:
        startup = elapsed - inside["total_s"]
        lines.append(
            f"| {seed} | {documents:,} | {label} | {f['auto_precision']:.4f} | {f['auto_coverage']:.4f} | "
            f"{f['recall_at_3']:.4f} | {f['no_doc_refused']:.4f} | {elapsed:.2f} s | "
            f"{startup:.2f} / {inside['load_s']:.2f} / {inside['match_s']:.2f} / {inside['write_s']:.2f} s |"
        )
        if not label.startswith("engine"):
            continue
        for name, value, ok in (
            ("auto precision", f["auto_precision"], f["auto_precision"] >= 0.995),
            ("auto coverage", f["auto_coverage"], f["auto_coverage"] >= 0.97),
            ("recall@3", f["recall_at_3"], f["recall_at_3"] >= 0.995),
            ("no-doc refused", f["no_doc_refused"], f["no_doc_refused"] >= 0.98),
            ("time", elapsed, elapsed <= 4.0),
        ):
            if not ok:
                missed.append(f"seed {seed} {label} {name} {value:.4g}")
    verdict = "every target met on every seed" if not missed else "not met: " + ", ".join(missed)
    lines += [
        "",
        "Targets: auto precision ≥ 0.995, auto coverage ≥ 0.97, recall@3 ≥ 0.995, no-doc refused ≥ 0.98, ≤ 4 s.",
        f"Engine ({rows[0][5].get('engine_version', '?')}): **{verdict}**.",
    ]
    write_block("recon", "python bench/run.py recon", "\n".join(lines))


# Sections written as their own modules under bench/: each has ``main() -> markdown``.
MODULE_SECTIONS = {"qonto": "qonto_sync", "qbo": "quickbooks_flow", "ops": "api_webhooks"}


def _section_module(section: str) -> Callable[[], None]:
    def call() -> None:
        module = __import__(f"bench.{MODULE_SECTIONS[section]}", fromlist=["main"])
        write_block(section, f"python bench/run.py {section}", module.main())

    return call


SECTIONS: dict[str, Callable[[], None]] = {"recon": recon} | {
    name: _section_module(name) for name in MODULE_SECTIONS if (ROOT / "bench" / f"{MODULE_SECTIONS[name]}.py").exists()
}


def main(argv: list[str]) -> int:
    wanted = argv or list(SECTIONS)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qontohub.settings")
    VAR.mkdir(parents=True, exist_ok=True)
    for name in wanted:
        if name not in SECTIONS:
            print(f"unknown section {name!r}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
            return 2
        print(f"== {name}", flush=True)
        SECTIONS[name]()
    print(f"Figures written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
