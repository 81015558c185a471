"""A refund reads its order once: the facts loader locks it, and the tool is handed the same row, not a re-read.

The call path's hot statements run on the driver's connection (server.storage.prepared), below SQLAlchemy's
events, so the statements are counted where SQLite itself reports them (``sqlite3``'s trace callback, set on every
connection the engine opens). The code path is the same on PostgreSQL, which has no such callback.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from tests.conftest import Harness

pytestmark = pytest.mark.anyio


async def test_a_refund_reads_and_locks_its_order_once_and_still_sees_it_under_the_lock(harness: Harness) -> None:
    if not harness.mandate.db.is_sqlite:
        pytest.skip("statements are counted through SQLite's trace callback")
    statements: list[str] = []

    def trace(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection._conn.set_trace_callback(statements.append)

    engine = harness.mandate.db.engine.sync_engine
    await harness.mandate.db.dispose()  # every connection from here on is traced, the held writer's too
    event.listen(engine, "connect", trace)
    try:
        async with harness.client("refunds") as client:
            first = await client.call_tool(
                "refund_create", {"order_id": "ord_5001", "amount": "12.50", "currency": "EUR", "reason": "damaged"}
            )
            statements_of_first = list(statements)
            second = await client.call_tool(
                "refund_create", {"order_id": "ord_5001", "amount": "1.00", "currency": "EUR", "reason": "damaged"}
            )
    finally:
        event.remove(engine, "connect", trace)

    assert not first.is_error and not second.is_error, (first.content, second.content)
    order_reads = [s for s in statements_of_first if s.lstrip().upper().startswith("SELECT") and "FROM orders" in s]
    assert len(order_reads) == 1, order_reads
    assert second.structured_content is not None  # the second call read the row the first committed, not a memo
    assert second.structured_content["order_refunded_total"] == "13.50"
