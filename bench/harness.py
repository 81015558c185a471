"""The runner: repeated, warmed-up measurements, alternated between the two servers, summarised as percentiles.

Latency: each side runs ``warmup`` operations first, then ``rounds`` blocks of ``per_round`` sequential operations,
alternating A B A B ... so that whatever the machine does meanwhile (another process, frequency changes, a growing
database file) lands on both sides alike and cancels out in the ratio. Percentiles are taken over every sample of
a side; the per-round ratio of medians is kept too, to show how stable the ratio is.

Throughput: the same alternation, with ``concurrency`` clients sending back to back for a fixed time per block,
after a warm-up period whose completions are not counted.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Operation = Callable[[], Awaitable[Any]]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        raise ValueError("no samples")
    position = (len(sorted_values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


@dataclass
class Distribution:
    """Latency samples of one side, in microseconds."""

    samples_us: list[float]

    def __post_init__(self) -> None:
        self.samples_us.sort()

    @property
    def n(self) -> int:
        return len(self.samples_us)

    def p(self, q: float) -> float:
        return percentile(self.samples_us, q)

    def summary(self) -> dict[str, float]:
        return {
            "p50": self.p(50),
            "p90": self.p(90),
            "p99": self.p(99),
            "mean": statistics.fmean(self.samples_us),
            "n": float(self.n),
        }


@dataclass
class LatencyResult:
    sides: dict[str, Distribution]
    round_medians: dict[str, list[float]] = field(default_factory=dict)

    def round_ratios(self, numerator: str, denominator: str) -> list[float]:
        return [a / b for a, b in zip(self.round_medians[numerator], self.round_medians[denominator], strict=True)]


async def _timed(operation: Operation, count: int) -> list[float]:
    samples: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(count):
        started = clock()
        await operation()
        samples.append((clock() - started) / 1000)
    return samples


async def ab_latency(sides: Mapping[str, Operation], *, warmup: int, rounds: int, per_round: int) -> LatencyResult:
    """Sequential latency of each side's operation, in alternating blocks."""
    for operation in sides.values():
        await _timed(operation, warmup)
    pooled: dict[str, list[float]] = {name: [] for name in sides}
    medians: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, operation in sides.items():
            block = await _timed(operation, per_round)
            pooled[name].extend(block)
            medians[name].append(statistics.median(block))
    return LatencyResult({name: Distribution(samples) for name, samples in pooled.items()}, medians)


@dataclass
class ThroughputResult:
    per_round: dict[str, list[float]]
    """Completed operations per second of each side, per round."""

    def rate(self, name: str) -> float:
        return statistics.median(self.per_round[name])


async def _throughput_block(workers: Sequence[Operation], seconds: float, warmup_seconds: float) -> float:
    counting = False
    completed = 0
    stop = False

    async def loop(operation: Operation) -> None:
        nonlocal completed
        while not stop:
            await operation()
            if counting:
                completed += 1

    tasks = [asyncio.ensure_future(loop(worker)) for worker in workers]
    try:
        await asyncio.sleep(warmup_seconds)
        counting = True
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        # a block too short for every client to finish once would read as zero: extend it (bounded) until they have
        deadline = started + 20 * seconds
        while completed < len(workers) and time.perf_counter() < deadline:  # noqa: ASYNC110 - a bounded poll
            await asyncio.sleep(seconds / 10)
        counting = False
        elapsed = time.perf_counter() - started
        stop = True
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return completed / elapsed


async def ab_throughput(
    sides: Mapping[str, Sequence[Operation]], *, rounds: int, seconds: float, warmup_seconds: float
) -> ThroughputResult:
    """Operations per second with ``len(workers)`` concurrent clients per side, in alternating blocks."""
    per_round: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, workers in sides.items():
            per_round[name].append(await _throughput_block(workers, seconds, warmup_seconds))
    return ThroughputResult(per_round)


def rate(operation: Callable[[], Any], *, seconds: float, warmup: int = 50, batch: int = 50) -> float:
    """Synchronous operations per second: the median over five slices of ``seconds``, after a warm-up."""
    for _ in range(warmup):
        operation()
    slices: list[float] = []
    for _ in range(5):
        done = 0
        started = time.perf_counter()
        deadline = started + seconds / 5
        while True:
            for _ in range(batch):
                operation()
            done += batch
            now = time.perf_counter()
            if now >= deadline:
                break
        slices.append(done / (now - started))
    return statistics.median(slices)


async def async_rate(operation: Operation, *, seconds: float, warmup: int = 50, batch: int = 50) -> float:
    """The same as :func:`rate` for an async operation."""
    for _ in range(warmup):
        await operation()
    slices: list[float] = []
    for _ in range(5):
        done = 0
        started = time.perf_counter()
        deadline = started + seconds / 5
        while True:
            for _ in range(batch):
                await operation()
            done += batch
            now = time.perf_counter()
            if now >= deadline:
                break
        slices.append(done / (now - started))
    return statistics.median(slices)
