"""Idempotency keys: the same key and arguments give the first result again instead of a second effect.

Every tool with a side effect takes an optional ``idempotency_key`` (:mod:`server.catalog`). The semantics follow the
IETF draft "The Idempotency-Key HTTP Header Field" (draft-ietf-httpapi-idempotency-key-header, sections 2.6-2.7) and
the practice it describes: a key is scoped to its principal (one agent can never read another's stored result) and
to the tool; reusing a key with different arguments is an error (422 there, ``idempotency_key_reused`` here); a
duplicate that arrives while the first request is still running gets a retryable "in progress" (409 there,
``idempotency_in_progress`` here); a request that failed validation stores nothing.

One row per (principal key, tool, key), identified by a digest of the three. The life of a row:

1. :func:`claim` runs in a short transaction of its own, before the decision and the effect:
   ``INSERT ... ON CONFLICT DO NOTHING`` makes exactly one concurrent caller the owner (``in_progress`` with a
   random ``claim_token`` and a lease); everyone else reads the row and gets a :class:`Replay`, a :class:`Mismatch`
   or an :class:`InProgress`.
2. :func:`complete` runs inside the effect's own transaction: a conditional ``UPDATE ... WHERE claim_token = mine
   AND status = 'in_progress'`` stores the answer. If the claim was lost (its lease ran out and a retry took it
   over), it raises :class:`ClaimLost`, which rolls the effect back: the effect and its stored result commit
   together or not at all.
3. :func:`release` deletes an owned claim when nothing happened (a deny, an internal error), so a retry runs anew.

A claim names its owner instance; when that instance's heartbeat has stopped (:mod:`server.liveness`), a retry
takes the claim over at once instead of waiting for the lease.
A claim whose lease ran out without being completed belongs to a process that died (or rolled back): its effect
did not commit, because completing the row is part of the effect's transaction, so a retry may take it over. Rows
are kept for ``idempotency.ttl_seconds`` (default 24 h); an expired row counts as absent and :func:`purge` deletes it.
Nothing lives in process memory, so any replica sharing the database answers the same.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import mcp_types as types
from sqlalchemy import Column, Table, Text, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from server import liveness
from server.storage.database import Database
from server.storage.types import UTCDateTime

IN_PROGRESS = "in_progress"
_CLAIM_ATTEMPTS = 3
COMPLETED = "completed"


class IdempotencyRecord(SQLModel, table=True):
    """A claimed or completed idempotency key of one principal for one tool."""

    __tablename__ = "idempotency_keys"

    id: str = Field(primary_key=True, max_length=64, description="SHA-256 of (principal key, tool, key)")
    principal_key: str = Field(sa_column=Column(Text, nullable=False))
    tool: str = Field(max_length=100)
    key: str = Field(max_length=200)
    arguments_digest: str = Field(max_length=64)
    status: str = Field(max_length=20)
    claim_token: str = Field(max_length=64)
    lease_until: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    owner: str | None = Field(default=None, max_length=100, description="the instance that holds the claim")
    result: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    """The answer as MCP ``CallToolResult`` JSON, once completed."""
    audit_id: str | None = Field(default=None, max_length=40)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))


TABLE: Table = SQLModel.metadata.tables[IdempotencyRecord.__tablename__]


def record_id(principal_key: str, tool: str, key: str) -> str:
    """The row's id: unambiguous over the three parts (JSON-encoded, so no separator can be forged)."""
    return hashlib.sha256(json.dumps([principal_key, tool, key]).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Claimed:
    """This request owns the key: run it, then :func:`complete` (effect) or :func:`release` (no effect)."""

    id: str
    token: str
    key: str


@dataclass(frozen=True, slots=True)
class Replay:
    """The key was used with the same arguments and finished: answer with the stored result, do nothing."""

    result: types.CallToolResult
    audit_id: str | None


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The key was used with different arguments: an error, and nothing runs."""


@dataclass(frozen=True, slots=True)
class InProgress:
    """A request with the same key is running now: retry after a moment."""

    retry_after_seconds: int


ClaimOutcome = Claimed | Replay | Mismatch | InProgress


class ClaimLost(RuntimeError):
    """The claim was taken over before the effect committed; the effect's transaction must roll back."""


def _insert(db: Database) -> Any:
    return sqlite_insert(TABLE) if db.is_sqlite else pg_insert(TABLE)


async def claim(
    db: Database,
    *,
    principal_key: str,
    tool: str,
    key: str,
    arguments_digest: str,
    now: datetime,
    ttl: timedelta,
    lease: timedelta,
    owner: str | None = None,
    owner_silence: timedelta = timedelta(seconds=10),
) -> ClaimOutcome:
    """Claim ``key`` for this principal and tool, in a transaction of its own (see the module docstring)."""
    row_id = record_id(principal_key, tool, key)
    token = secrets.token_hex(16)
    fresh = {
        "arguments_digest": arguments_digest,
        "status": IN_PROGRESS,
        "claim_token": token,
        "lease_until": now + lease,
        "owner": owner,
        "result": None,
        "audit_id": None,
        "created_at": now,
        "expires_at": now + ttl,
    }

    async def work(session: AsyncSession) -> ClaimOutcome:
        connection = await session.connection()
        values = {"id": row_id, "principal_key": principal_key, "tool": tool, "key": key, **fresh}
        statement = _insert(db).values(values).on_conflict_do_nothing(index_elements=["id"]).returning(TABLE.c.id)
        query = select(TABLE).where(TABLE.c.id == row_id).with_for_update()
        for _ in range(_CLAIM_ATTEMPTS):
            if (await connection.execute(statement)).first() is not None:
                return Claimed(row_id, token, key)
            # PostgreSQL, READ COMMITTED: the row the INSERT met may be deleted (released, purged) before this read.
            row = (await connection.execute(query)).mappings().first()
            if row is not None:
                break
        else:
            return InProgress(1)
        abandoned = row["status"] == IN_PROGRESS and (
            row["lease_until"] <= now or await liveness.is_silent(connection, row["owner"], now, owner_silence)
        )
        if row["expires_at"] <= now or (abandoned and row["arguments_digest"] == arguments_digest):
            taken = await connection.execute(
                update(TABLE).where(TABLE.c.id == row_id, TABLE.c.claim_token == row["claim_token"]).values(fresh)
            )
            if taken.rowcount == 1:
                return Claimed(row_id, token, key)
            return InProgress(1)
        if row["arguments_digest"] != arguments_digest:
            return Mismatch()
        if row["status"] == IN_PROGRESS:
            return InProgress(max(1, min(5, int((row["lease_until"] - now).total_seconds()))))
        result = types.CallToolResult.model_validate_json(row["result"])
        return Replay(result, row["audit_id"])

    return await db.run_in_transaction(work)


def stored_form(result: types.CallToolResult) -> str:
    return result.model_dump_json(by_alias=True, exclude_none=True)


async def complete(session: AsyncSession, claimed: Claimed, result: types.CallToolResult, audit_id: str) -> None:
    """Store the answer in the caller's (the effect's) transaction; raise :class:`ClaimLost` if the claim is gone."""
    connection = await session.connection()
    statement = (
        update(TABLE)
        .where(TABLE.c.id == claimed.id, TABLE.c.claim_token == claimed.token, TABLE.c.status == IN_PROGRESS)
        .values(status=COMPLETED, result=stored_form(result), audit_id=audit_id)
    )
    if (await connection.execute(statement)).rowcount != 1:
        raise ClaimLost(f"idempotency key {claimed.key!r} was taken over before this request finished")


async def release(db: Database, claimed: Claimed) -> None:
    """Give up an owned claim (nothing happened), so a retry with the same key runs anew."""

    async def work(session: AsyncSession) -> None:
        connection = await session.connection()
        await connection.execute(
            delete(TABLE).where(
                TABLE.c.id == claimed.id, TABLE.c.claim_token == claimed.token, TABLE.c.status == IN_PROGRESS
            )
        )

    await db.run_in_transaction(work)


async def purge(db: Database, now: datetime) -> int:
    """Delete every row past its retention; return how many."""

    async def work(session: AsyncSession) -> int:
        connection = await session.connection()
        result = await connection.execute(delete(TABLE).where(TABLE.c.expires_at <= now))
        return int(result.rowcount)

    return await db.run_in_transaction(work)
