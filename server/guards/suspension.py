"""Stopping an agent everywhere at once: suspensions of a client id, a subject, a tenant or one token (``jti``).

The state is the ``suspensions`` table in the shared database (:mod:`server.guards.store`). Each process keeps the
active suspensions in a small cache that is reloaded when older than ``ttl`` (0.5 s by default), so a suspension
takes effect on every replica within that time even with nothing else; on PostgreSQL a suspension or resumption
also sends ``NOTIFY mandate_suspensions`` in its transaction, and every replica's ``LISTEN`` drops its cache at once
(PostgreSQL documentation, "NOTIFY": delivered at commit, to every listening session).

A check that cannot be answered (the database is down) raises: callers refuse the call (fail closed). A suspended
caller sees no tools and each of its calls is refused with the code ``suspended``; an approval it asked for cannot
be approved (:mod:`server.approvals.desk`). Live MCP sessions whose caller changes state are sent
``notifications/tools/list_changed`` (MCP specification 2025-11-25, "Tools: List Changed Notification").
"""

from __future__ import annotations

import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
from sqlalchemy import event, text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from server.auth.principal import Principal
from server.guards.store import SUSPENSION_KINDS, Suspension
from server.storage.database import Database

logger = logging.getLogger(__name__)

CHANNEL = "mandate_suspensions"


class SuspensionError(ValueError):
    """A suspension or resumption was asked for with bad input (unknown kind, no reason); nothing changed."""


@dataclass(frozen=True, slots=True)
class Target:
    """Whom a suspension stops: ``kind`` is client, subject, tenant or token (a ``jti``); ``issuer`` narrows it."""

    kind: str
    value: str
    issuer: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SUSPENSION_KINDS:
            raise SuspensionError(f"unknown kind {self.kind!r}; one of {', '.join(SUSPENSION_KINDS)}")
        if not self.value.strip():
            raise SuspensionError(f"say which {self.kind} to suspend")

    def describe(self) -> str:
        return f"{self.kind} {self.value}" + (f" (issuer {self.issuer})" if self.issuer else "")


def identity_of(principal: Principal, kind: str) -> str | None:
    return {
        "client": principal.client_id,
        "subject": principal.subject,
        "tenant": principal.tenant,
        "token": principal.token_id,
        "principal": principal.key,
    }[kind]


def matches(row: Suspension, principal: Principal) -> bool:
    if row.issuer is not None and row.issuer != principal.issuer:
        return False
    return identity_of(principal, row.kind) == row.value


def first_match(rows: Sequence[Suspension], principal: Principal) -> Suspension | None:
    return next((row for row in rows if matches(row, principal)), None)


def _check_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise SuspensionError("a reason is required (it is recorded with the suspension and in the audit trail)")
    if len(reason) > 1000:
        raise SuspensionError("the reason is longer than 1000 characters")
    return reason


async def active(session: AsyncSession) -> list[Suspension]:
    rows = await session.exec(
        select(Suspension).where(col(Suspension.resumed_at).is_(None)).order_by(col(Suspension.suspended_at))
    )
    return list(rows.all())


async def suspension_of(session: AsyncSession, principal: Principal) -> Suspension | None:
    """The active suspension stopping ``principal``, read now in ``session`` (no cache)."""
    return first_match(await active(session), principal)


_CACHES: weakref.WeakSet[Suspensions] = weakref.WeakSet()
"""Every cache in this process: a change committed here drops them at once (other processes: NOTIFY or the ttl)."""


def _drop_caches(_session: Any) -> None:
    for cache in list(_CACHES):
        cache.invalidate()


async def _notify(session: AsyncSession, payload: str) -> None:
    event.listen(session.sync_session, "after_commit", _drop_caches, once=True)
    bind = session.bind
    if bind is not None and bind.dialect.name == "postgresql":
        connection = await session.connection()
        await connection.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload})


async def suspend(
    session: AsyncSession,
    target: Target,
    *,
    reason: str,
    by: str,
    now: datetime,
    source: str = "manual",
    audit_id: str | None = None,
) -> tuple[Suspension, bool]:
    """Suspend ``target`` in the caller's transaction; the existing active suspension (and False) if it already is."""
    reason = _check_reason(reason)
    for row in await active(session):
        if (row.kind, row.value, row.issuer) == (target.kind, target.value, target.issuer):
            return row, False
    row = Suspension(
        id=f"sus_{uuid.uuid4().hex}",
        kind=target.kind,
        value=target.value,
        issuer=target.issuer,
        reason=reason,
        source=source,
        suspended_by=by[:400],
        suspended_at=now,
        audit_id=audit_id,
    )
    session.add(row)
    await session.flush()
    await _notify(session, row.id)
    return row, True


async def resume(
    session: AsyncSession,
    target: Target | str,
    *,
    reason: str,
    by: str,
    now: datetime,
    audit_id: str | None = None,
) -> list[Suspension]:
    """End the active suspensions of exactly ``target`` (with ``issuer=None``: of every issuer), or the one with
    this id (``sus_...``); the rows ended."""
    reason = _check_reason(reason)
    ended: list[Suspension] = []
    for row in await active(session):
        if isinstance(target, str):
            if row.id != target:
                continue
        elif (row.kind, row.value) != (target.kind, target.value) or (
            target.issuer is not None and row.issuer != target.issuer
        ):
            continue
        row.resumed_at, row.resumed_by, row.resume_reason, row.resume_audit_id = now, by[:400], reason, audit_id
        session.add(row)
        ended.append(row)
    if ended:
        await session.flush()
        await _notify(session, " ".join(row.id for row in ended))
    return ended


Notify = Callable[[], Awaitable[None]]


class Suspensions:
    """Each process's view of the active suspensions: a short-lived cache, dropped early by NOTIFY.

    It also remembers live MCP sessions (weakly) and the caller of each, so that a change of suspension state can be
    told to those whose tool list it changes.
    """

    def __init__(self, db: Database, *, ttl: float = 0.5) -> None:
        self.db = db
        self.ttl = ttl
        self._rows: tuple[Suspension, ...] = ()
        self._loaded_at = float("-inf")
        self._generation = 0
        """Raised by every invalidation: a load that an invalidation overtook is not trusted as fresh."""
        self._lock = anyio.Lock()
        self._sessions: weakref.WeakKeyDictionary[Any, tuple[Principal, bool]] = weakref.WeakKeyDictionary()
        _CACHES.add(self)

    def invalidate(self) -> None:
        self._loaded_at = float("-inf")
        self._generation += 1

    async def rows(self) -> tuple[Suspension, ...]:
        """The active suspensions, at most ``ttl`` old; raises when they cannot be read (callers fail closed)."""
        if time.monotonic() - self._loaded_at < self.ttl:
            return self._rows
        async with self._lock:
            if time.monotonic() - self._loaded_at >= self.ttl:
                started, generation = time.monotonic(), self._generation
                async with self.db.session() as session:
                    self._rows = tuple(await active(session))
                if generation == self._generation:  # no NOTIFY arrived while reading: fresh as of ``started``
                    self._loaded_at = started
        return self._rows

    async def check(self, principal: Principal) -> Suspension | None:
        rows = await self.rows()
        return first_match(rows, principal) if rows else None  # none active (the usual case): nothing to match

    # --- live sessions ----------------------------------------------------------------------------------------

    def watch(self, session: Any, principal: Principal, suspended: bool) -> None:
        """Remember a live MCP session and whether its caller was suspended when it last asked."""
        try:
            self._sessions[session] = (principal, suspended)
        except TypeError:  # pragma: no cover - a session object that cannot be weakly referenced
            return

    async def watch_now(self, session: Any, principal: Principal) -> None:
        """:meth:`watch` with the caller's state now (a session whose state cannot be read is not watched)."""
        try:
            suspended = await self.check(principal) is not None
        except Exception:
            logger.debug("a session is not watched: its caller's suspension state is unknown", exc_info=True)
            return
        self.watch(session, principal, suspended)

    async def tell_sessions(self) -> int:
        """Send tools/list_changed to every live session whose caller's suspension state changed; how many."""
        rows = await self.rows()
        told = 0
        for session, (principal, was) in list(self._sessions.items()):
            now = first_match(rows, principal) is not None
            if now == was:
                continue
            self._sessions[session] = (principal, now)
            try:
                await session.send_tool_list_changed()
                told += 1
            except Exception:  # a closed session: forget it
                logger.debug("a tools/list_changed could not be sent; the session is gone", exc_info=True)
                self._sessions.pop(session, None)
        return told

    # --- background -------------------------------------------------------------------------------------------

    async def follow(self, *, poll_interval: float = 0.5) -> None:
        """Keep the cache fresh and tell live sessions: LISTEN on PostgreSQL, a short poll everywhere."""
        async with anyio.create_task_group() as group:
            if not self.db.is_sqlite:
                group.start_soon(self._listen)
            while True:
                try:
                    before = {row.id for row in self._rows}
                    self.invalidate()
                    if {row.id for row in await self.rows()} != before or self._sessions:
                        await self.tell_sessions()
                except Exception:
                    logger.warning("suspensions could not be read; calls are refused until they can", exc_info=True)
                await anyio.sleep(poll_interval)

    async def _listen(self) -> None:
        import psycopg

        conninfo = self.db.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    self.invalidate()
                    async for _ in connection.notifies():
                        self.invalidate()
                        await self.tell_sessions()
            except Exception:  # the fallback (the cache's ttl) keeps working meanwhile
                logger.warning("LISTEN %s failed; retrying in 1 s (the cache expires anyway)", CHANNEL, exc_info=True)
                await anyio.sleep(1.0)
