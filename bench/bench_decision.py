"""The decision function's throughput: policy decisions per second in one process, with no I/O.

    uv run python -m bench.bench_decision            # 30 runs of 20,000 decisions after a warm-up
    uv run python -m bench.bench_decision --quick    # 10 runs of 5,000

Each run decides a fixed mix of calls against the default policy (scopes/policy.toml): refunds that are allowed,
sent to approval, over the daily budget, over the customer budget, with a token limit, in yen; cancellations that are
allowed and refused; email changes. The ledger totals are given (as the Enforcer gives them after reading them), so
this is the pure cost of :func:`scopes.policy.decide`, of ``ledger_needs`` + ``decide``, and of ``prepare`` + its
``decide`` (the two in one pass over the rules: the policy's share of one tools/call since docs/performance.md,
"One pass over a call's rules"; a checkout from before it has no ``prepare`` and prints two lines). Printed:
decisions per second (median and worst run) and per-decision latency (median and p99).
Also the ``run(mode=...)`` hook of ``python -m bench`` (bench/hooks.py).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import scopes.policy
from scopes.money import Money
from scopes.policy import Caller, DecisionRequest, Policy, decide, ledger_needs, load_policy

NOW = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
PLANS = {"full": (30, 20_000), "quick": (10, 5_000), "smoke": (3, 300)}


def _caller(*scopes: str, details: tuple[dict[str, Any], ...] = ()) -> Caller:
    return Caller("agent:bench", "bench-agent", "https://issuer", frozenset(scopes), authorization_details=details)


def _order(currency: str = "EUR", status: str = "delivered", hours: int = 72, left: str = "900.00") -> dict[str, Any]:
    return {
        "order_id": "ord_1",
        "customer_id": "cus_1",
        "tenant": "acme",
        "status": status,
        "currency": currency,
        "placed_at": NOW - timedelta(hours=hours),
        "total": Money.parse(left, currency),
        "refunded": Money.parse("0", currency),
        "refundable_left": Money.parse(left, currency),
    }


def requests() -> list[DecisionRequest]:
    """The mix: one request per kind of outcome the default policy gives."""
    refunds = _caller("refunds:create")
    large = _caller("refunds:create", "refunds:create:large")
    token = _caller(
        "refunds:create", details=({"type": "refund", "max_amount": {"value": "50.00", "currency": "EUR"}},)
    )
    senior = _caller("orders:cancel", "accounts:write")

    def refund(
        amount: str, who: Caller, used: str = "0", customer: str = "0", currency: str = "EUR"
    ) -> DecisionRequest:
        args = {"order_id": "ord_1", "amount": Money.parse(amount, currency), "currency": currency, "reason": "bench"}
        usage = {
            "agent_refunds_daily": Money.parse(used, currency),
            "customer_refunds_30d": Money.parse(customer, currency),
        }
        facts = _order(currency, left="900000" if currency == "JPY" else "900.00")
        return DecisionRequest("refund_create", args, who, NOW, facts, usage)

    cancel = DecisionRequest(
        "order_cancel", {"order_id": "ord_1", "reason": "bench"}, senior, NOW, _order(status="pending", hours=4)
    )
    email = DecisionRequest("account_email_change", {"customer_id": "cus_1", "new_email": "a@example.org"}, senior, NOW)
    return [
        refund("12.50", refunds),
        refund("150.00", refunds),
        refund("40.01", refunds, used="460.00"),
        refund("50.01", refunds, customer="250.00"),
        refund("50.01", token),
        refund("900.00", large),
        refund("12000", refunds, currency="JPY"),
        replace(cancel, usage={"agent_cancellations_daily": 1}),
        replace(cancel, facts=_order(status="shipped"), usage={"agent_cancellations_daily": 0}),
        replace(email, facts={"customer_id": "cus_1", "tenant": "acme"}, usage={"agent_email_changes_daily": 5}),
    ]


def _measure(
    step: Callable[[DecisionRequest], object], mix: Sequence[DecisionRequest], batch: int
) -> tuple[float, list[int]]:
    """One run: ``batch`` calls of ``step`` over the mix; its throughput and each call's latency in ns."""
    latencies: list[int] = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        started = clock()
        for i in range(batch):
            request = mix[i % len(mix)]
            before = clock()
            step(request)
            latencies.append(clock() - before)
        elapsed = clock() - started
    finally:
        gc.enable()
    return batch / (elapsed / 1e9), latencies


def bench(policy: Policy, runs: int, batch: int) -> dict[str, dict[str, float]]:
    mix = requests()
    assert {decide(policy, r).effect for r in mix} == {"allow", "deny", "approval"}

    def decision_only(request: DecisionRequest) -> object:
        return decide(policy, request)

    def policy_share(request: DecisionRequest) -> object:
        ledger_needs(policy, request)
        return decide(policy, request)

    steps: list[tuple[str, Callable[[DecisionRequest], object]]] = [
        ("decide", decision_only),
        ("ledger_needs+decide", policy_share),
    ]
    prepare = getattr(scopes.policy, "prepare", None)  # absent in a checkout from before it (bench.ab's "before")
    if prepare is not None:

        def prepared(request: DecisionRequest) -> object:
            return prepare(policy, request).decide(request.usage)

        steps.append(("prepare+decide", prepared))
    figures: dict[str, dict[str, float]] = {}
    for name, step in steps:
        _measure(step, mix, batch)  # warm-up
        rates: list[float] = []
        samples: list[int] = []
        for _ in range(runs):
            rate, latencies = _measure(step, mix, batch)
            rates.append(rate)
            samples.extend(latencies)
        samples.sort()
        figures[name] = {
            "per_second_median": statistics.median(rates),
            "per_second_worst_run": min(rates),
            "latency_us_median": samples[len(samples) // 2] / 1000,
            "latency_us_p99": samples[int(len(samples) * 0.99)] / 1000,
        }
    return figures


def run(mode: str = "quick") -> dict[str, tuple[float, str, str]]:
    """The hook of ``python -m bench``: figures keyed ``decision.*``."""
    runs, batch = PLANS[mode]
    figures = bench(load_policy(), runs, batch)
    out: dict[str, tuple[float, str, str]] = {}
    for step, values in figures.items():
        key = {"decide": "decision", "ledger_needs+decide": "decision.with_ledger_needs"}.get(step, "decision.prepared")
        out[f"{key}.per_second"] = (round(values["per_second_median"]), "decisions/s", f"{step}: median over runs")
        out[f"{key}.p50_us"] = (round(values["latency_us_median"], 2), "µs", f"{step}: median latency")
        out[f"{key}.p99_us"] = (round(values["latency_us_p99"], 2), "µs", f"{step}: p99 latency")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 runs of 5,000 decisions")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--batch", type=int)
    options = parser.parse_args()
    runs, batch = PLANS["quick" if options.quick else "full"]
    runs, batch = options.runs or runs, options.batch or batch
    policy = load_policy()
    print(f"policy {policy.version}: {len(requests())} kinds of call, {runs} runs of {batch} decisions after a warm-up")
    for step, values in bench(policy, runs, batch).items():
        print(
            f"{step:<20} {values['per_second_median']:>10,.0f} decisions/s median "
            f"({values['per_second_worst_run']:,.0f} worst run); latency median "
            f"{values['latency_us_median']:.2f} µs, p99 {values['latency_us_p99']:.2f} µs"
        )


if __name__ == "__main__":
    main()
