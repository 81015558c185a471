"""Two replicas on one PostgreSQL: a suspension takes effect on both within a second, a rate limit holds exactly
across both, and a circuit breaker counting on both trips once and stops the agent on both.

Each replica is a full Mandate behind uvicorn on its own port (its own process state and caches), sharing only the
database, as two ``mandate serve`` processes would.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from sqlalchemy import text

from server.config import GuardSettings
from tests.conftest import POSTGRES_URL
from tests.live import LiveServer, live_server
from tests.ops.support import steady_clock, write_policy

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not POSTGRES_URL, reason="replicas share PostgreSQL (MANDATE_TEST_DATABASE_URL)"),
]

AGENT = ("customers:read", "orders:read", "refunds:create")
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
TOO_BIG = {"order_id": "ord_5001", "amount": "9000.00", "currency": "EUR", "reason": "damaged"}


@asynccontextmanager
async def two_replicas(tmp_path: Path, database_url: str, **settings: Any) -> AsyncIterator[tuple[LiveServer, ...]]:
    async with (
        live_server(tmp_path / "a", database_url, **settings) as first,
        live_server(tmp_path / "b", database_url, **settings) as second,
    ):
        yield first, second


def _call(name: str, arguments: dict[str, Any]) -> bytes:
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
    return json.dumps(message).encode()


async def _post(http: httpx2.AsyncClient, live: LiveServer, token: str, name: str, args: dict[str, Any]) -> Any:
    headers = {**ACCEPT, "Authorization": f"Bearer {token}"}
    return await http.post(live.url, content=_call(name, args), headers=headers)


def _code(response: Any) -> str | None:
    result = response.json()["result"]
    return result["structuredContent"].get("code") if result["isError"] else None


async def test_a_suspension_takes_effect_on_both_replicas_within_a_second(tmp_path: Path, database_url: str) -> None:
    # The cache may be a whole second old: only NOTIFY makes the change visible sooner.
    async with two_replicas(tmp_path, database_url, guards=GuardSettings(suspension_cache_seconds=1.0)) as replicas:
        tokens = [r.harness.token("refunds", scopes=AGENT, client_id="rogue-agent") for r in replicas]
        principals = [await r.mandate.verifier.verify(t) for r, t in zip(replicas, tokens, strict=True)]
        async with httpx2.AsyncClient(timeout=30) as http:
            for replica, token in zip(replicas, tokens, strict=True):  # both warm, caches filled
                assert _code(await _post(http, replica, token, "order_get", {"order_id": "ord_5001"})) is None
            security = replicas[0].harness.token("security", scopes=("principals:suspend",), subject="human:sec")
            args = {"kind": "client", "value": "rogue-agent", "reason": "incident 99"}
            answer = await _post(http, replicas[0], security, "principal_suspend", args)
            committed = time.monotonic()  # the answer comes after the commit
            assert _code(answer) is None
            took: list[float] = []
            with anyio.fail_after(10):
                for replica, principal in zip(replicas, principals, strict=True):
                    assert replica.mandate.guards is not None
                    while await replica.mandate.guards.suspended(principal) is None:  # noqa: ASYNC110 - polling
                        await anyio.sleep(0.005)
                    took.append(time.monotonic() - committed)
            for replica, token in zip(replicas, tokens, strict=True):
                assert _code(await _post(http, replica, token, "order_get", {"order_id": "ord_5001"})) == "suspended"
    print(
        f"suspension visible on replica A after {took[0] * 1000:.0f} ms, B after {took[1] * 1000:.0f} ms",
        file=sys.stderr,
    )
    assert max(took) < 3.0  # the property is "within 1 s"; the margin is for a loaded 2-core machine


def _count_on_one_steady_clock(replicas: Sequence[LiveServer]) -> None:
    """Both replicas' guards on one clock that has just begun every window (tests.ops.support.steady_clock)."""
    clock = steady_clock()
    for replica in replicas:
        replica.mandate.guards.rates.clock = replica.mandate.guards.breakers.clock = clock


async def test_a_rate_limit_holds_exactly_across_both_replicas(tmp_path: Path, database_url: str) -> None:
    policy = write_policy(
        tmp_path / "p", '[[rate_limits]]\nid = "five"\nper = "client"\ncalls = 5\nwindow = "1 hour"\n'
    )
    async with two_replicas(tmp_path, database_url, policy_path=policy) as replicas:
        _count_on_one_steady_clock(replicas)
        tokens = [r.harness.token("refunds", scopes=AGENT, client_id="busy-agent") for r in replicas]
        statuses: list[int] = []
        async with httpx2.AsyncClient(timeout=60) as http:

            async def fire(replica: LiveServer, token: str) -> None:
                answer = await _post(http, replica, token, "order_get", {"order_id": "ord_5001"})
                statuses.append(answer.status_code)

            async with anyio.create_task_group() as group:
                for _ in range(8):
                    for replica, token in zip(replicas, tokens, strict=True):
                        group.start_soon(fire, replica, token)
        async with replicas[0].mandate.db.session() as session:
            connection = await session.connection()
            count = (
                await connection.execute(text("SELECT count FROM guard_counters WHERE name = 'rate:five'"))
            ).scalar()
    assert sorted(statuses) == [200] * 5 + [429] * 11
    assert count == 5


async def test_the_circuit_breaker_trips_once_across_both_replicas(tmp_path: Path, database_url: str) -> None:
    breaker = '[[breakers]]\nid = "denials"\nper = "client"\non = "denials"\nthreshold = 4\nwindow = "10 minutes"\n'
    policy = write_policy(tmp_path / "p", breaker + 'mode = "enforce"\n')
    async with two_replicas(tmp_path, database_url, policy_path=policy) as replicas:
        _count_on_one_steady_clock(replicas)
        tokens = [r.harness.token("refunds", scopes=AGENT, client_id="loop-agent") for r in replicas]
        async with httpx2.AsyncClient(timeout=60) as http:
            for _ in range(2):
                for replica, token in zip(replicas, tokens, strict=True):
                    answer = await _post(http, replica, token, "refund_create", TOO_BIG)
                    assert _code(answer) not in (None, "suspended")
            with anyio.fail_after(10):  # both replicas see the breaker's suspension (within the cache's age)
                for replica, token in zip(replicas, tokens, strict=True):
                    probe = {"order_id": "ord_5001"}
                    while _code(await _post(http, replica, token, "order_get", probe)) != "suspended":  # noqa: ASYNC110
                        await anyio.sleep(0.05)
        async with replicas[0].mandate.db.session() as session:
            connection = await session.connection()
            rows = (await connection.execute(text("SELECT source, kind, value FROM suspensions"))).all()
            trips = (
                await connection.execute(
                    text("SELECT count(*) FROM audit_records WHERE reason_code = 'breaker_tripped'")
                )
            ).scalar()
    assert [tuple(row) for row in rows] == [("breaker:denials", "client", "loop-agent")]
    assert trips == 1
