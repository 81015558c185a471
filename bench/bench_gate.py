"""The pure-Python share of one refund_create: the gate's work without its I/O, then the audit record, as CPU time.

    uv run python -m bench.bench_gate                       # this checkout
    cd /tmp/before && /path/to/this/.venv/bin/python -m bench.bench_gate   # another checkout, with this bench/

One call here is what ``server.callpath.decide.decide_in`` and ``build_record`` do for an allowed refund besides SQL:
the order's facts built (three amounts from minor units), the policy's view of the caller, the totals the policy
needs and its decision given them (``prepare`` where the checkout has it, else ``ledger_needs`` then ``decide``), the
outcome and the record's column values. Printed: CPU microseconds per call (``time.process_time``, so time the
machine gave other processes does not count), the best of several batches and their median. Run two checkouts in
alternation and compare their figures: on a loaded machine this resolves differences of a few microseconds that the
end-to-end ``bench.ab`` cannot.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import scopes.policy
from scopes.money import Money
from scopes.policy import Decision, DecisionRequest, decide, ledger_needs, load_policy
from server.auth.principal import Principal
from server.callpath.record import CallInfo, Invocation, build_record, decided_outcome
from server.policy_runtime import caller_of
from tools.orders import OrderFacts

NOW = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
RAW = {"order_id": "ord_1", "amount": "12.50", "currency": "EUR", "reason": "damaged"}


def one_call() -> Callable[[], None]:
    """A function doing one call's work, with the inputs (principal, arguments, totals) made once, as a server has."""
    policy = load_policy()
    principal = Principal(
        "agent:bench",
        "bench-agent",
        frozenset({"refunds:create", "orders:read"}),
        "https://issuer",
        ("mandate",),
        NOW + timedelta(hours=1),
    )
    args = {**RAW, "amount": Money.parse("12.50", "EUR")}
    usage = {"agent_refunds_daily": Money.parse("40.00", "EUR"), "customer_refunds_30d": Money.parse("10.00", "EUR")}
    prepare = getattr(scopes.policy, "prepare", None)  # absent in a checkout from before it

    def decision_for(request: DecisionRequest) -> Decision:
        if prepare is not None:
            decision: Decision = prepare(policy, request).decide(usage)
            return decision
        ledger_needs(policy, request)
        return decide(policy, DecisionRequest(request.tool, request.args, request.caller, NOW, request.facts, usage))

    def call() -> None:
        facts = OrderFacts(
            order_id="ord_1",
            customer_id="cus_1",
            tenant="acme",
            status="delivered",
            currency="EUR",
            placed_at=NOW - timedelta(days=3),
            total=Money.from_minor(90000, "EUR"),
            refunded=Money.from_minor(0, "EUR"),
            refundable_left=Money.from_minor(90000, "EUR"),
        )
        request = DecisionRequest("refund_create", args, caller_of(principal), NOW, facts.as_mapping())
        decision = decision_for(request)
        assert decision.effect == "allow", decision
        outcome = decided_outcome("allow", "ok", decision, {"refund_id": "re_1", "status": "succeeded"}, "cus_1")
        build_record("i-1", Invocation(principal, CallInfo("http"), "refund_create", RAW), outcome, "aud_1", NOW)

    return call


def measure(batches: int, calls: int) -> list[float]:
    """CPU microseconds per call of each batch after a warm-up batch."""
    call = one_call()
    figures: list[float] = []
    for index in range(batches + 1):
        gc.disable()
        try:
            started = time.process_time()
            for _ in range(calls):
                call()
            elapsed = time.process_time() - started
        finally:
            gc.enable()
        if index:
            figures.append(elapsed / calls * 1e6)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_gate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3000)
    options = parser.parse_args()
    figures = measure(options.batches, options.calls)
    print(
        f"gate+record ({scopes.policy.__file__}): {min(figures):.1f} us CPU per call best, "
        f"{statistics.median(figures):.1f} us median of {len(figures)} batches of {options.calls}"
    )


if __name__ == "__main__":
    main()
