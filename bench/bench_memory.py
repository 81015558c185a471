"""Mandate against the bare server over the SDK's in-memory transport: the SDK ``Client`` in this process.

Here the client is the SDK's own (there is no wire to speak raw), so both sides include its cost: pydantic models
and the output-schema validation it runs on every structured result. The token is verified on every request, as on
stdio (``EnvironmentCredentials``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from mcp.client import Client

from bench.bare import build_bare
from bench.catalog_tools import TRIVIAL_ARGUMENTS, TRIVIAL_TOOL
from bench.harness import Operation, ab_latency
from bench.mandate_site import bench_settings, mint_token, open_bench_mandate
from bench.plan import Plan
from bench.results import Comparison, Results
from server.app import build_server
from server.stdio import EnvironmentCredentials


@contextlib.asynccontextmanager
async def memory_clients(workdir: Path, tools: int = 50) -> AsyncIterator[tuple[Client, Client]]:
    """(bare client, Mandate client), both connected in process."""
    settings = bench_settings(workdir / "memory", tools=tools)
    mandate = await open_bench_mandate(settings)
    try:
        server = build_server(mandate, EnvironmentCredentials(mint_token(settings), mandate.verifier))
        async with Client(build_bare(tools), mode="legacy") as bare, Client(server, mode="legacy") as enforced:
            yield bare, enforced
    finally:
        await mandate.aclose()


def call_op(client: Client) -> Operation:
    async def op() -> None:
        result = await client.call_tool(TRIVIAL_TOOL, TRIVIAL_ARGUMENTS)
        if result.is_error:
            raise AssertionError(f"the call did not succeed: {result}")

    return op


async def run_memory(results: Results, plan: Plan, workdir: Path) -> None:
    async with memory_clients(workdir) as (bare, enforced):
        measured = await ab_latency(
            {"bare": call_op(bare), "mandate": call_op(enforced)},
            warmup=plan.memory_warmup,
            rounds=plan.memory_rounds,
            per_round=plan.memory_per_round,
        )
    a, b = measured.sides["bare"], measured.sides["mandate"]
    note = f"{a.n} + {b.n} samples, {plan.memory_rounds} rounds; the SDK client's own cost is on both sides"
    label = "tools/call over the in-memory transport (SDK client)"
    results.comparisons.append(
        Comparison(
            "call.memory.p50", f"{label}, p50", "us", a.p(50), b.p(50), measured.round_ratios("mandate", "bare"), note
        )
    )
    results.comparisons.append(Comparison("call.memory.p99", f"{label}, p99", "us", a.p(99), b.p(99), [], note))


async def profile_memory(workdir: Path, calls: int, path: Path) -> None:
    """pyinstrument over ``calls`` in-memory tools/calls through Mandate (client and server share the thread)."""
    from pyinstrument import Profiler

    async with memory_clients(workdir / "profile") as (_bare, enforced):
        op = call_op(enforced)
        for _ in range(50):
            await op()
        profiler = Profiler(interval=0.0005, async_mode="enabled")
        profiler.start()
        for _ in range(calls):
            await op()
        profiler.stop()
    path.write_text(profiler.output_text(unicode=False, color=False, show_all=False))  # noqa: ASYNC240 - after timing
