"""The benchmark suite still runs: one short iteration of every figure (``python -m bench --smoke``).

Benchmarks are not tests: nothing here looks at a timing. It checks that the run finishes, that every figure the
published table has is produced under its key, that every tools/call it made succeeded (the harness raises on any
refusal or error answer), and that the ledger's cap held.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.results import COMPARISON_KEYS, EXPECTED_KEYS

ROOT = Path(__file__).resolve().parents[2]


def test_a_smoke_run_produces_every_figure(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--no-postgres", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,  # generous: the run shares a loaded 2-core machine with the rest of the suite
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "smoke.json").read_text())
    keys = {row["key"] for row in results["comparisons"]} | {row["key"] for row in results["components"]}
    assert set(EXPECTED_KEYS) <= keys, sorted(set(EXPECTED_KEYS) - keys)
    for row in results["comparisons"]:
        if row["key"] in COMPARISON_KEYS:
            assert row["bare"] > 0 and row["mandate"] > 0, row
    notes = {row["key"]: row["note"] for row in results["components"]}
    assert notes.get("ledger.cap_held.sqlite", "").startswith("yes"), notes
    assert "| figure | bare MCPServer | Mandate |" in run.stdout
