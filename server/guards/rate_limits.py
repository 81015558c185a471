"""Durable rate limits (policy data, :mod:`scopes.policy.guards`): at most N calls per fixed window, exact across
replicas because the count lives in one database row per (limit, holder, window) raised by a conditional upsert
(:func:`server.guards.store.count_up`), never read and then written.

All limits a call counts against are taken in one transaction; if any of them is full the transaction rolls back,
so a refused call uses up no one's allowance. A shadow limit that is full is reported (metric, log) but lets the
call through. Principal-wide limits (no ``tools``) are taken at the HTTP edge, where a full one answers HTTP 429
with ``Retry-After`` (RFC 6585 section 4, RFC 9110 section 10.2.3); per-tool limits are taken by the call path and
answered with a tool error carrying ``retry_after_seconds``. On stdio both come back as that tool error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from scopes.policy.guards import Guards, RateLimit
from server.auth.principal import Principal
from server.guards.store import count_up, window_of
from server.memo import PerObject
from server.observability.metrics import Metrics
from server.storage.database import Database

logger = logging.getLogger(__name__)


def _no_limits_yet(guards: Guards) -> dict[str | None, tuple[RateLimit, ...]]:
    return {}


def _limits_of(
    table: dict[str | None, tuple[RateLimit, ...]], guards: Guards, tool: str | None
) -> tuple[RateLimit, ...]:
    """``guards.limits_for(tool)``, kept in ``table`` (the tools are the catalog's: a bounded set)."""
    found = table.get(tool)
    if found is None:
        found = table[tool] = guards.limits_for(tool)
    return found


edge_checked: ContextVar[bool] = ContextVar("mandate_rate_edge_checked", default=False)
"""Set by the HTTP edge once it has taken the principal-wide limits for this request (so they count once)."""


@dataclass(frozen=True, slots=True)
class Limited:
    """A call refused by a full rate limit."""

    limit: RateLimit
    retry_after_seconds: int

    @property
    def message(self) -> str:
        window = int(self.limit.window.total_seconds())
        scope = "calls" if self.limit.principal_wide else "calls of this tool"
        return (
            f"Rate limit {self.limit.id!r} reached: at most {self.limit.calls} {scope} per {window} s for this "
            f"{self.limit.per}. Nothing was done; retry in {self.retry_after_seconds} s."
        )


class _Full(Exception):
    def __init__(self, limited: Limited) -> None:
        super().__init__(limited.limit.id)
        self.limited = limited


def holder_of(principal: Principal, per: str) -> str | None:
    if per == "principal":
        return principal.key
    if per == "client":
        return principal.client_id
    return principal.tenant  # a call without a tenant is not counted against tenant limits


class RateLimiter:
    def __init__(self, db: Database, metrics: Metrics, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.metrics = metrics
        self.clock = clock
        self._limits: PerObject[Guards, dict[str | None, tuple[RateLimit, ...]]] = PerObject(_no_limits_yet, 16)
        """Each policy's limits per tool (None: the principal-wide ones), looked up once per (policy, tool). A
        policy's guards are frozen; a reloaded policy brings guards of its own, with a table of their own."""

    def limits(self, guards: Guards, tool: str | None, *, principal_wide: bool = True) -> tuple[RateLimit, ...]:
        """The limits a call of ``tool`` (None: any call) counts against: the principal-wide ones (unless
        ``principal_wide`` is False) and the per-tool ones of ``tool``; what :meth:`take` takes."""
        table = self._limits(guards)
        wide = _limits_of(table, guards, None) if principal_wide else ()
        return wide + _limits_of(table, guards, tool) if tool else wide

    async def take(
        self, guards: Guards, principal: Principal, tool: str | None, *, principal_wide: bool = True
    ) -> Limited | None:
        """Count this call against the principal-wide limits (unless ``principal_wide`` is False: the HTTP edge took
        them) and the per-tool limits of ``tool``, all or none; the limit that is full, or None. Raises when the
        database cannot answer (callers refuse: fail closed)."""
        limits = self.limits(guards, tool, principal_wide=principal_wide)
        if not limits:
            return None
        now = self.clock()

        async def work(session: AsyncSession) -> None:
            for limit in limits:
                holder = holder_of(principal, limit.per)
                if holder is None:
                    continue
                start, left = window_of(now, limit.window)
                expires = now + timedelta(seconds=left) + limit.window
                got = await count_up(session, f"rate:{limit.id}", holder, start, expires, limit=limit.calls)
                if got is not None:
                    continue
                scope = "principal" if limit.principal_wide else "tool"
                self.metrics.rate_limited.labels(limit.id, scope, "shadow" if limit.shadow else "enforce").inc()
                if limit.shadow:
                    logger.info("shadow rate limit %s would refuse a call of %s", limit.id, principal.client_id)
                    continue
                raise _Full(Limited(limit, max(1, math.ceil(left))))

        try:
            await self.db.run_in_transaction(work)
        except _Full as full:
            return full.limited
        return None
