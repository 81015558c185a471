"""Circuit breakers (policy data, :mod:`scopes.policy.guards`): an agent that passes a threshold within a window is
suspended automatically, pending a human who resumes it (``mandate resume``).

After each call the breakers that count its kind of outcome are updated in one transaction: denials and approval
requests raise a window counter (:func:`server.guards.store.count_up`), and exactly the call whose count reaches
the threshold trips the breaker, whichever replica serves it; a budget-share breaker reads the budget's total after
an allowed call that spent from it and trips once per budget window. A trip writes, in the same transaction, the
suspension (unless the breaker is in shadow mode), an audit record (reason code ``breaker_tripped``) and a webhook
event ``breaker.tripped`` (Standard Webhooks, :mod:`server.webhooks`), and counts ``mandate_breaker_trips_total``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from scopes.money import Money
from scopes.policy.guards import Breaker, Guards
from scopes.policy.results import Decision
from server import ledger
from server.auth.principal import Principal
from server.guards.store import count_up, window_of
from server.guards.suspension import Target, suspend
from server.observability.metrics import Metrics
from server.storage.database import Database
from server.webhooks import Webhooks

logger = logging.getLogger(__name__)

TripRecorder = Callable[[AsyncSession, Principal, str, dict[str, Any]], Awaitable[str]]
"""Appends the audit record of a trip (principal, reason, summary) in the session; its audit id."""


@dataclass(frozen=True, slots=True)
class Trip:
    breaker: Breaker
    principal: Principal
    observed: str
    suspension_id: str | None


def target_of(breaker: Breaker, principal: Principal) -> Target:
    if breaker.per == "client":  # as the counter: a client id names one client across the deployment's issuers
        return Target("client", principal.client_id)
    return Target("principal", principal.key)


def _holder(breaker: Breaker, principal: Principal) -> str:
    return principal.client_id if breaker.per == "client" else principal.key


class CircuitBreakers:
    def __init__(
        self,
        db: Database,
        metrics: Metrics,
        webhooks: Webhooks,
        record: TripRecorder,
        clock: Callable[[], datetime],
    ) -> None:
        self.db = db
        self.metrics = metrics
        self.webhooks = webhooks
        self.record = record
        self.clock = clock

    async def observe(self, guards: Guards, principal: Principal, kind: str, decision: Decision | None) -> list[Trip]:
        """Count one call's outcome (``allow``, ``deny``, ``approval``, ``error``); the breakers it tripped."""
        relevant = [b for b in guards.breakers if _counts(b, kind, decision)]
        if not relevant:
            return []
        now = self.clock()

        async def work(session: AsyncSession) -> list[Trip]:
            trips: list[Trip] = []
            for breaker in relevant:
                observed = await self._passed(session, breaker, principal, decision, now)
                if observed is not None:
                    trips.append(await self._trip(session, breaker, principal, observed, now))
            return trips

        trips = await self.db.run_in_transaction(work)
        for trip in trips:
            mode = "shadow" if trip.breaker.shadow else "enforce"
            self.metrics.breaker_trips.labels(trip.breaker.id, mode).inc()
            logger.warning(
                "circuit breaker %s tripped (%s) for %s: %s", trip.breaker.id, mode, principal.client_id, trip.observed
            )
        return trips

    async def _passed(
        self, session: AsyncSession, breaker: Breaker, principal: Principal, decision: Decision | None, now: datetime
    ) -> str | None:
        holder = _holder(breaker, principal)
        if breaker.on in ("denials", "approval_requests"):
            assert breaker.window is not None
            start, left = window_of(now, breaker.window)
            expires = now + timedelta(seconds=left) + breaker.window
            count = await count_up(session, f"breaker:{breaker.id}", holder, start, expires)
            if count is not None and breaker.trips_at_count(count):
                what = "denials" if breaker.on == "denials" else "approval requests"
                return f"{count} {what} within {int(breaker.window.total_seconds())} s"
            return None
        assert decision is not None
        for spend in decision.spends:
            key = spend.ledger
            if key.budget != breaker.budget or spend.cap is None:
                continue
            total = (await ledger.totals(session, [key], at=now, lock=False)).get(key.budget, 0)
            spent = total.minor if isinstance(total, Money) else int(total)
            if not breaker.trips_at_share(spent, spend.cap):
                continue
            once = await count_up(
                session, f"breaker:{breaker.id}:{key.window}", holder, 0, now + timedelta(days=2), limit=1
            )
            if once is not None:
                share = spent / spend.cap
                return f"{share:.0%} of budget {key.budget} ({key.window}) spent"
        return None

    async def _trip(
        self, session: AsyncSession, breaker: Breaker, principal: Principal, observed: str, now: datetime
    ) -> Trip:
        target = target_of(breaker, principal)
        mode = "shadow" if breaker.shadow else "enforce"
        reason = f"circuit breaker {breaker.id}: {observed}"
        summary = {"breaker": breaker.id, "mode": mode, "observed": observed, "target": target.describe()}
        audit_id = await self.record(session, principal, reason, summary)
        suspension_id = None
        if not breaker.shadow:
            row, _ = await suspend(
                session,
                target,
                reason=f"{reason} (pending a human: mandate resume)",
                by=f"breaker:{breaker.id}",
                source=f"breaker:{breaker.id}",
                now=now,
                audit_id=audit_id,
            )
            suspension_id = row.id
        data = {
            "breaker": breaker.id,
            "mode": mode,
            "observed": observed,
            "principal": {
                "issuer": principal.issuer,
                "client_id": principal.client_id,
                "subject": principal.subject,
                "tenant": principal.tenant,
            },
            "suspended": target.describe() if suspension_id else None,
            "suspension_id": suspension_id,
            "audit_id": audit_id,
        }
        await self.webhooks.enqueue(session, "breaker.tripped", data, now)
        return Trip(breaker, principal, observed, suspension_id)


def _counts(breaker: Breaker, kind: str, decision: Decision | None) -> bool:
    if breaker.on == "denials":
        return kind == "deny"
    if breaker.on == "approval_requests":
        return kind == "approval"
    return kind == "allow" and decision is not None and any(s.ledger.budget == breaker.budget for s in decision.spends)
