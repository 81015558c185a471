"""How much each run measures: ``full`` (the published figures, a few minutes), ``quick`` (under 30 s), ``smoke``
(one short iteration of everything, for the test that checks the suite still runs)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    name: str
    call_warmup: int
    call_rounds: int
    call_per_round: int
    list_warmup: int
    list50_rounds: int
    list50_per_round: int
    list1000_rounds: int
    list1000_per_round: int
    throughput_rounds: int
    throughput_seconds: float
    throughput_warmup: float
    memory_warmup: int
    memory_rounds: int
    memory_per_round: int
    component_seconds: float
    profile_calls: int
    rss_calls: int = 0
    """Refunds driven through one replica between its two memory readings (``bench.bench_memory.run_rss``)."""
    in_process_servers: bool = False
    """Smoke only: serve from this process (no start-up of server processes, no CPU pinning)."""


FULL = Plan(
    name="full",
    call_warmup=200,
    call_rounds=10,
    call_per_round=200,
    list_warmup=3,
    list50_rounds=10,
    list50_per_round=100,
    list1000_rounds=5,
    list1000_per_round=10,
    throughput_rounds=3,
    throughput_seconds=2.0,
    throughput_warmup=0.5,
    memory_warmup=200,
    memory_rounds=10,
    memory_per_round=200,
    component_seconds=2.0,
    profile_calls=1000,
    rss_calls=20_000,
)
QUICK = Plan(
    name="quick",
    call_warmup=30,
    call_rounds=4,
    call_per_round=50,
    list_warmup=2,
    list50_rounds=3,
    list50_per_round=15,
    list1000_rounds=6,
    list1000_per_round=4,
    throughput_rounds=1,
    throughput_seconds=0.5,
    throughput_warmup=0.2,
    memory_warmup=30,
    memory_rounds=4,
    memory_per_round=50,
    component_seconds=0.3,
    profile_calls=0,
    rss_calls=2_000,
)
SMOKE = Plan(
    name="smoke",
    call_warmup=2,
    call_rounds=2,
    call_per_round=5,
    list_warmup=0,
    list50_rounds=2,
    list50_per_round=2,
    list1000_rounds=1,
    list1000_per_round=1,
    throughput_rounds=1,
    throughput_seconds=0.05,
    throughput_warmup=0.01,
    memory_warmup=2,
    memory_rounds=2,
    memory_per_round=5,
    component_seconds=0.05,
    profile_calls=0,
    rss_calls=20,
    in_process_servers=True,
)
PLANS = {plan.name: plan for plan in (FULL, QUICK, SMOKE)}
