"""A PostgreSQL unit of work whose connection breaks once its COMMIT has been sent is neither run again nor reported
as having changed nothing: the COMMIT may have landed (here it did), so it raises CommitInDoubt, and the call path
answers ``database_commit_in_doubt`` with ``outcome: unknown`` (server.storage.pg_unit, server.callpath.outage).

The connection goes through a small TCP proxy in front of the real server which, once armed, passes the client's
COMMIT on, lets the server answer it, and then cuts the client off without relaying the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url
from sqlmodel.ext.asyncio.session import AsyncSession

from server.callpath.answers import Refusal
from server.callpath.outage import failure_refusal
from server.ledger import LedgerEntry
from server.storage.database import Database
from server.storage.pg_unit import CommitInDoubt
from server.storage.prepared import Prepared, run

pytestmark = pytest.mark.anyio

ENTRIES = LedgerEntry.__table__  # type: ignore[attr-defined]
INSERT_ENTRY = Prepared(insert(ENTRIES))
COUNT = Prepared(select(func.count()).select_from(ENTRIES))
FALLBACK = Refusal(status="failed", code="internal_error", message="internal")


class CommitCutter:
    """Relays bytes both ways; armed, it forwards a chunk carrying COMMIT, swallows the answer and hangs up."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.armed = False
        self.cut = anyio.Event()
        self.port = 0

    async def _handle(self, client: SocketStream) -> None:
        async with client, await anyio.connect_tcp("127.0.0.1", self.upstream_port) as upstream:
            committed = anyio.Event()

            async def to_server() -> None:
                async for chunk in client:
                    await upstream.send(chunk)
                    if self.armed and b"COMMIT" in chunk:
                        committed.set()
                        return

            async def to_client() -> None:
                async for chunk in upstream:
                    if committed.is_set():  # the server's answer to the COMMIT: never relayed
                        self.cut.set()
                        return
                    await client.send(chunk)

            async with anyio.create_task_group() as group:
                group.start_soon(to_server)
                await to_client()
                group.cancel_scope.cancel()

    async def _serve(self, client: SocketStream) -> None:
        with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError):
            await self._handle(client)


@asynccontextmanager
async def cutting(port: int) -> AsyncIterator[CommitCutter]:
    cutter = CommitCutter(port)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    cutter.port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio's typed attribute
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, cutter._serve)
        try:
            yield cutter
        finally:
            group.cancel_scope.cancel()


def _entry(audit_id: str) -> dict[str, Any]:
    at = datetime.now(UTC)
    return {"budget": "daily", "holder": "agent", "unit": "EUR", "period": "p", "amount": 1, "at": at,
            "tool": "t", "audit_id": audit_id}  # fmt: skip


async def test_a_connection_lost_after_the_commit_was_sent_is_in_doubt_never_retried_nor_called_unchanged(
    db: Database,
) -> None:
    if db.is_sqlite:
        pytest.skip("a PostgreSQL unit of work over the network")
    url = make_url(db.url)
    assert url.port is not None or url.host is not None
    async with cutting(url.port or 5432) as cutter:
        through = Database(url.set(host="127.0.0.1", port=cutter.port).render_as_string(hide_password=False))
        try:
            await through.run_in_transaction(lambda session: run(session, COUNT))  # connected, set up, pooled
            attempts: list[int] = []

            async def work(session: AsyncSession) -> None:
                attempts.append(1)
                await run(session, INSERT_ENTRY, _entry("aud_in_doubt"))  # sent at once, with BEGIN
                cutter.armed = True  # what goes next is the unit's COMMIT

            with anyio.fail_after(60), pytest.raises(CommitInDoubt) as raised:
                await through.run_in_transaction(work)
            assert cutter.cut.is_set() and attempts == [1]  # run once: a retry could do it twice
        finally:
            await through.dispose()
    assert (await db.run_in_transaction(lambda session: run(session, COUNT))).scalar() == 1  # it did commit
    refusal = failure_refusal(raised.value, FALLBACK)
    assert refusal.code == "database_commit_in_doubt" and refusal.details["outcome"] == "unknown"
    assert "nothing was changed" not in refusal.message
