"""The two bare refund servers of the bench make the same refund: the same answers, errors and rows.

``bench.bare_refund`` (SQLAlchemy Core over aiosqlite) and ``bench.bare_refund_direct`` (a held ``sqlite3``
connection on the event loop's thread) are two baselines for one write; a difference between them other than how the
statements reach SQLite would make the second a different benchmark, not a stronger baseline.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from bench.bare_refund import bare_refund_server
from bench.bare_refund_direct import bare_refund_direct_server
from bench.refund_store import ORDER, REFUND_ARGUMENTS, REFUND_TOOL
from server.storage.database import sqlite_url_for

pytestmark = pytest.mark.anyio

Factory = Callable[[str], AbstractAsyncContextManager[MCPServer]]
CALLS: list[dict[str, Any]] = [
    REFUND_ARGUMENTS,
    {**REFUND_ARGUMENTS, "amount": "12.34", "reason": "a second refund"},
    {**REFUND_ARGUMENTS, "currency": "USD"},
    {**REFUND_ARGUMENTS, "amount": "999999999999999"},
    {**REFUND_ARGUMENTS, "order_id": "ord_missing"},
    {**REFUND_ARGUMENTS, "amount": "0.00"},
    {**REFUND_ARGUMENTS, "amount": "-1"},
]


async def _outcomes(factory: Factory, data_dir: Path) -> tuple[list[Any], list[tuple[Any, ...]], list[Any]]:
    outcomes: list[Any] = []
    async with factory(sqlite_url_for(data_dir)) as server:
        outcomes.append([tool.model_dump() for tool in await server.list_tools()])  # the same tool, schemas and all
        for arguments in CALLS:
            try:
                result = await server.call_tool(REFUND_TOOL, arguments)
            except ToolError as exc:
                outcomes.append(("error", str(exc)))
                continue
            answer = dict(result.structured_content or {})
            assert str(answer.pop("refund_id")).startswith("ref_")
            outcomes.append(("ok", result.is_error, answer))
    connection = sqlite3.connect(data_dir / "mandate.db")
    try:
        refunds = connection.execute(
            "SELECT order_id, customer_id, amount_minor, currency, reason, created_by, audit_id, provider_refund_id,"
            " created_at FROM refunds ORDER BY created_at"
        ).fetchall()
        order = connection.execute("SELECT * FROM orders WHERE id = ?", (ORDER,)).fetchone()
    finally:
        connection.close()
    return outcomes, refunds, list(order)


async def test_the_direct_baseline_answers_and_writes_as_the_core_one(tmp_path: Path) -> None:
    (tmp_path / "core").mkdir()
    (tmp_path / "direct").mkdir()
    core_outcomes, core_refunds, core_order = await _outcomes(bare_refund_server, tmp_path / "core")
    direct_outcomes, direct_refunds, direct_order = await _outcomes(bare_refund_direct_server, tmp_path / "direct")
    assert direct_outcomes == core_outcomes
    assert [kind for kind, *_ in core_outcomes[1:]] == ["ok", "ok", "error", "error", "error", "error", "error"]
    assert [row[:-1] for row in direct_refunds] == [row[:-1] for row in core_refunds]
    assert len(direct_refunds) == 2
    for row in (*core_refunds, *direct_refunds):  # the same stored form of an instant: UTC, microseconds
        stored = datetime.fromisoformat(row[-1]).replace(tzinfo=UTC)
        assert abs((datetime.now(UTC) - stored).total_seconds()) < 60
        assert len(row[-1]) == len("2026-12-03 12:43:03.367089")
    placed_at = 7
    assert direct_order[:placed_at] == core_order[:placed_at]
    assert direct_order[placed_at + 1 :] == core_order[placed_at + 1 :]


async def test_the_direct_baseline_checkpoints_off_the_loop_and_its_wal_starts_over(tmp_path: Path) -> None:
    from server.storage.sqlite import Checkpoints

    async def refunds(count: int) -> None:
        for _ in range(count):
            await server.call_tool(REFUND_TOOL, REFUND_ARGUMENTS)
            await anyio.sleep(0.0005)  # a served call awaits its socket; called in process, the loop must be let run

    wal = tmp_path / "mandate.db-wal"
    async with bare_refund_direct_server(sqlite_url_for(tmp_path)) as server:
        await refunds(3 * Checkpoints.EVERY + 1)
        grown = wal.stat().st_size
        await refunds(3 * Checkpoints.EVERY)
        # the checkpoints keep up: the WAL starts over (it would have doubled, 601 refunds' frames -> 1,201)
        assert wal.stat().st_size < 1.25 * grown
    connection = sqlite3.connect(tmp_path / "mandate.db")
    try:
        assert connection.execute("SELECT count(*) FROM refunds").fetchone() == (6 * Checkpoints.EVERY + 1,)
    finally:
        connection.close()
