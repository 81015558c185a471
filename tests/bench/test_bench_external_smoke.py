"""The external-effects bench still runs: one short iteration (``python -m bench.bench_external --smoke``).

Nothing here looks at a timing. It checks that the run finishes (the bench itself fails on any refusal, in-doubt
answer or missing refund), that every figure is produced under its key, and that the run's own check of every call
passed: a completed intent and one localstripe refund per Mandate call.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("localstripe", reason="localstripe (a dev dependency) is not installed")

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "external.http.stateless.p50",
    "external.http.stateless.p99",
    "external.http.stateless.reference.local.p50",
    "external.throughput.c1",
    "external.throughput.c8",
    "external.throughput.c32",
    "external.http.stateless.provider.p50",
}


def test_a_smoke_run_measures_the_external_path_and_checks_every_call(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.bench_external", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,  # generous: the run shares a loaded 2-core machine with the rest of the suite
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "external" / "smoke.json").read_text())
    keys = {row["key"] for row in results["comparisons"]} | {row["key"] for row in results["components"]}
    assert keys >= KEYS, sorted(KEYS - keys)
    for row in results["comparisons"]:
        assert row["bare"] > 0 and row["mandate"] > 0, row
    [checked] = [note for note in results["notes"] if note.startswith("External effects")]
    assert "intents completed, none in doubt" in checked, checked
