"""The sequencer's bench still runs (``python -m bench.bench_sequencer``), here with small batches in process.

Nothing here looks at a timing: the bench checks that every batch placed exactly the records appended before it
(it raises otherwise), and this checks that it reports a row for each size, the batch at rest first."""

from __future__ import annotations

import pytest

from bench.bench_sequencer import measure

pytestmark = pytest.mark.anyio


async def test_a_short_run_reports_each_batch_size_after_the_batch_at_rest() -> None:
    lines = await measure(None, repeats=1, sizes=(1, 5))
    rows = [line for line in lines if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["0", "1", "5"]
    assert all(row.count(" us") >= 2 for row in rows)
