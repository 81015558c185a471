"""The guardrails of one process: suspensions, rate limits, circuit breakers and refusal aggregation, as one object.

The rules (rate limits, breakers, the open-approvals limit) are policy data read from the policy in force at each
call (:mod:`scopes.policy.guards`); the state lives in the shared database (:mod:`server.guards.store`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime

import anyio
from sqlalchemy import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from scopes.policy.guards import Guards
from scopes.policy.results import Decision
from server.approvals.models import Approval
from server.auth.principal import Principal
from server.guards.breaker import CircuitBreakers, TripRecorder
from server.guards.rate_limits import Limited, RateLimiter
from server.guards.refusals import RefusalAggregator, Writer
from server.guards.store import Suspension, purge_counters
from server.guards.suspension import Suspensions
from server.observability.metrics import Metrics
from server.policy_runtime import PolicySource
from server.storage.database import Database
from server.webhooks import Webhooks

logger = logging.getLogger(__name__)

__all__ = ["Guardrails", "Limited", "Suspension"]


class Guardrails:
    def __init__(
        self,
        db: Database,
        policies: PolicySource,
        metrics: Metrics,
        webhooks: Webhooks,
        *,
        record_trip: TripRecorder,
        write_refusal: Writer,
        clock: Callable[[], datetime],
        suspension_ttl: float = 0.5,
        refusal_interval: float = 60.0,
    ) -> None:
        self.db = db
        self.policies = policies
        self.metrics = metrics
        self.clock = clock
        self.suspensions = Suspensions(db, ttl=suspension_ttl)
        self.rates = RateLimiter(db, metrics, clock)
        self.breakers = CircuitBreakers(db, metrics, webhooks, record_trip, clock)
        self.refusals = RefusalAggregator(write_refusal, interval=refusal_interval)

    @property
    def rules(self) -> Guards:
        return self.policies.current().guards

    async def suspended(self, principal: Principal) -> Suspension | None:
        """The suspension stopping ``principal`` (cached, at most ``ttl`` old); raises when unknown (fail closed)."""
        return await self.suspensions.check(principal)

    async def open_approvals_left(self, session: AsyncSession, principal: Principal) -> int | None:
        """How many more approval requests ``principal`` may open now; None when the policy sets no limit."""
        limit = self.rules.max_open_approvals
        if limit is None:
            return None
        table = Approval.__table__  # type: ignore[attr-defined]
        query = (
            select(func.count())
            .select_from(table)
            .where(table.c.requester_key == principal.key, table.c.status == "pending")
        )
        connection = await session.connection()
        return limit - int((await connection.execute(query)).scalar_one())

    async def within_open_approvals(self, session: AsyncSession, principal: Principal, decision: Decision) -> Decision:
        """``decision`` (an approval), or a deny when ``principal`` already has the most open requests allowed."""
        left = await self.open_approvals_left(session, principal)
        if left is None or left > 0:
            return decision
        limit = self.rules.max_open_approvals
        return replace(
            decision,
            effect="deny",
            reason_code="too_many_open_approvals",
            reason=f"{decision.reason} You already have {limit} requests waiting for approval, the most this policy "
            "allows; nothing was done. Wait for a decision on those first.",
            details={**decision.details, "max_open_approvals": str(limit)},
        )

    @contextlib.asynccontextmanager
    async def running(self, *, interval: float = 2.0) -> AsyncIterator[None]:
        """The background work of a serving process: follow suspensions, flush refusal counts, purge counters."""
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: self.suspensions.follow(poll_interval=self.suspensions.ttl))
            group.start_soon(self._upkeep, interval)
            try:
                yield
            finally:
                group.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await self.refusals.flush(everything=True)

    async def _upkeep(self, interval: float) -> None:
        while True:
            await anyio.sleep(interval)
            try:
                await self.refusals.flush()
                await self.db.run_in_transaction(lambda session: purge_counters(session, self.clock()))
            except Exception:
                logger.exception("guard upkeep failed; retrying")
