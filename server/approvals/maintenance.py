"""The background task every server process runs: expire approvals, send webhooks, purge old idempotency keys.

Each replica runs it; they coordinate only through the database (conditional UPDATEs in :mod:`server.webhooks` and
:mod:`server.approvals.store`), so running it in one process or in ten gives the same result. A failing round is
logged and the next one runs as usual: upkeep never stops the server, and an agent's call never waits for it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import anyio
import httpx2

from server import idempotency
from server.approvals.desk import ApprovalDesk
from server.storage.database import Database

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Round:
    """What one round of upkeep did."""

    expired: int
    delivered: int
    purged: int


class Maintenance:
    def __init__(
        self,
        db: Database,
        desk: ApprovalDesk,
        client: httpx2.AsyncClient,
        *,
        interval: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.db = db
        self.desk = desk
        self.client = client
        self.interval = interval
        self.clock = clock

    async def run_once(self) -> Round:
        now = self.clock()
        expired = await self.desk.expire_due(self.db, now)
        delivered = await self.desk.webhooks.send_due(self.db, self.client, self.clock())
        purged = await idempotency.purge(self.db, now)
        return Round(len(expired), delivered, purged)

    async def run_forever(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                logger.exception("a round of background upkeep failed; the next one runs as usual")
            await anyio.sleep(self.interval)


@asynccontextmanager
async def running(
    db: Database, desk: ApprovalDesk, *, interval: float, clock: Callable[[], datetime]
) -> AsyncIterator[Maintenance]:
    """Run upkeep in the background for as long as the context is open (a server's lifespan)."""
    async with (
        httpx2.AsyncClient(follow_redirects=False) as client,
        anyio.create_task_group() as group,
    ):
        maintenance = Maintenance(db, desk, client, interval=interval, clock=clock)
        group.start_soon(maintenance.run_forever)
        try:
            yield maintenance
        finally:
            group.cancel_scope.cancel()
