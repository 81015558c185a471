"""Cumulative caps hold exactly under concurrency: 50 parallel refunds from two processes, each under the per-call
cap but together far over the budget, never commit more than the budget, on SQLite and on PostgreSQL.

Two budgets are exercised: a calendar-day budget per agent (a bucket row reserved with a conditional UPDATE) and a
rolling 30-day budget per customer (entries summed under a lock on the holder's anchor row).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from sqlmodel import col, func, select

from server.config import Settings
from server.ledger import LedgerEntry
from tests.policy.conftest import PolicyHarness
from tests.policy.support import add_orders
from tools.store.models import Refund

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 2
CALLS = 50

POLICY = """
    version = "concurrency"
    timezone = "Europe/Amsterdam"
    [budgets.agent_daily]
    per = "principal"
    window = "day"
    limit = { EUR = "500.00" }
    [budgets.customer_30d]
    per = "facts.customer_id"
    window = "rolling 30 days"
    limit = { EUR = "300.00" }
    [[rules]]
    id = "per-call"
    kind = "cap"
    tools = ["refund_create"]
    amount = "args.amount"
    limit = { EUR = "100.00" }
    [[rules]]
    id = "agent-daily"
    kind = "budget"
    tools = ["refund_create"]
    budget = "agent_daily"
    amount = "args.amount"
    [[rules]]
    id = "customer-30d"
    kind = "budget"
    tools = ["refund_create"]
    budget = "customer_30d"
    amount = "args.amount"
"""


def _amount(i: int) -> str:
    """Deterministic amounts between 10.00 and 99.99: each under the per-call cap."""
    return f"{10 + (i * 37) % 90}.{(i * 53) % 100:02d}"


async def _fire(spec: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    """Start the processes, let them all get ready, release them together, collect every result."""
    processes: list[tuple[Process, BufferedByteReceiveStream]] = []
    try:
        for n in range(PROCESSES):
            path = tmp_path / f"spec-{n}.json"
            path.write_text(json.dumps({**spec, "calls": spec["calls"][n::PROCESSES]}))
            process = await anyio.open_process([sys.executable, "-m", "tests.policy.fire_refunds", str(path)], cwd=ROOT)
            assert process.stdout is not None
            processes.append((process, BufferedByteReceiveStream(process.stdout)))
        with anyio.fail_after(60):
            for _process, out in processes:
                assert await out.receive_until(b"\n", 1_000_000) == b"ready"
            for process, _out in processes:
                assert process.stdin is not None
                await process.stdin.send(b"go\n")
            results: list[dict[str, Any]] = []
            for process, out in processes:
                results.extend(json.loads(await out.receive_until(b"\n", 10_000_000)))
                assert await process.wait() == 0
        return results
    finally:
        for process, _out in processes:
            if process.returncode is None:
                process.kill()
            await process.aclose()


@pytest.mark.parametrize(
    ("scenario", "cap"),
    [("one agent, fifty customers", Decimal("500.00")), ("fifty agents, one customer", Decimal("300.00"))],
)
async def test_parallel_refunds_from_two_processes_never_commit_more_than_the_budget(
    policy_harness: PolicyHarness, settings: Settings, tmp_path: Path, scenario: str, cap: Decimal
) -> None:
    harness = await policy_harness(POLICY)
    one_agent = scenario.startswith("one agent")
    now = datetime.now(UTC)
    async with harness.mandate.db.session() as session, session.begin():
        orders = await add_orders(
            session, CALLS, prefix="p", placed_at=now - timedelta(hours=1), customers=CALLS if one_agent else 1
        )
    calls = [
        {
            "agent": "agent:concurrent" if one_agent else f"agent:{i}",
            "args": {"order_id": order, "amount": _amount(i), "currency": "EUR", "reason": "parallel test"},
        }
        for i, order in enumerate(orders)
    ]
    assert sum(Decimal(_amount(i)) for i in range(CALLS)) > 4 * cap
    spec = {
        "database_url": settings.effective_database_url,
        "data_dir": str(settings.data_dir),
        "policy_path": str(tmp_path / "policy.toml"),
        "calls": calls,
    }

    results = await _fire(spec, tmp_path)

    assert len(results) == CALLS
    assert {r["code"] for r in results if not r["ok"]} == {"budget_exceeded"}, results
    succeeded = sum(Decimal(r["amount"]) for r in results if r["ok"])
    async with harness.mandate.db.session() as session:
        committed = (await session.exec(select(func.coalesce(func.sum(Refund.amount_minor), 0)))).one()
        spent = (
            await session.exec(
                select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                    col(LedgerEntry.budget) == ("agent_daily" if one_agent else "customer_30d")
                )
            )
        ).one()
    total = Decimal(committed) / 100
    assert total <= cap
    assert total == succeeded == Decimal(spent) / 100
    denied = [Decimal(r["amount"]) for r in results if not r["ok"]]
    assert denied and all(total + amount > cap for amount in denied), "a refund that fitted was refused"
