"""Instance heartbeats: each serving process says, every few seconds, that it is alive (a row per instance).

An idempotency key claimed by a process that then crashed would otherwise block its retries until the claim's
lease runs out. A claim names its owner instance (:mod:`server.idempotency`); when a retry meets a claim whose
owner's heartbeat is older than ``idempotency.owner_silence_seconds``, the owner is taken to be dead and the retry
takes the claim over at once. An owner with no heartbeat row at all (a process that serves without the background
task: a CLI, a test) is judged by the lease alone, so a missing row never frees a live claim. Safe because a claim
is completed only inside the effect's own transaction: a claim that was not completed has no effect that committed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import anyio
from sqlalchemy import Column, Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from server.storage.database import Database
from server.storage.types import UTCDateTime

logger = logging.getLogger(__name__)


class InstanceHeartbeat(SQLModel, table=True):
    __tablename__ = "instance_heartbeats"

    instance: str = Field(primary_key=True, max_length=100)
    last_seen: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


TABLE: Table = SQLModel.metadata.tables[InstanceHeartbeat.__tablename__]


async def beat(session: AsyncSession, instance: str, now: datetime) -> None:
    """Record that ``instance`` is alive at ``now`` (an upsert)."""
    connection = await session.connection()
    insert = sqlite_insert(TABLE) if connection.dialect.name == "sqlite" else pg_insert(TABLE)
    statement = insert.values(instance=instance, last_seen=now).on_conflict_do_update(
        index_elements=["instance"], set_={"last_seen": now}
    )
    await connection.execute(statement)


async def forget(session: AsyncSession, instance: str) -> None:
    """A clean shutdown: the instance holds no claims any more."""
    connection = await session.connection()
    await connection.execute(TABLE.delete().where(TABLE.c.instance == instance))


async def is_silent(connection: AsyncConnection, instance: str | None, now: datetime, silence: timedelta) -> bool:
    """Whether ``instance`` has a heartbeat row and it is older than ``silence`` (its process stopped beating)."""
    if instance is None:
        return False
    last = (await connection.execute(select(TABLE.c.last_seen).where(TABLE.c.instance == instance))).scalar()
    return last is not None and last < now - silence


@asynccontextmanager
async def beating(
    db: Database, instance: str, *, interval: float, clock: Callable[[], datetime]
) -> AsyncIterator[None]:
    """Beat every ``interval`` seconds for as long as the context is open; remove the row on a clean exit."""

    async def loop() -> None:
        while True:
            now = clock()

            async def work(session: AsyncSession, now: datetime = now) -> None:
                await beat(session, instance, now)

            try:
                await db.run_in_transaction(work)
            except Exception:  # noqa: BLE001 - a missed beat is logged; the next one runs as usual
                logger.warning("the heartbeat of %s could not be written; the next one runs as usual", instance)
            await anyio.sleep(interval)

    async with anyio.create_task_group() as group:
        group.start_soon(loop)
        try:
            yield
        finally:
            group.cancel_scope.cancel()
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await db.run_in_transaction(lambda session: forget(session, instance))
