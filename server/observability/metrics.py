"""Prometheus metrics of one Mandate process, in a registry of its own (never the global one), so several apps in
one process (tests, replicas) never clash (Prometheus exposition format 0.0.4, through ``prometheus_client``).

Counters and histograms are updated on the call path. Gauges that need the database (pending approvals, active
suspensions, the audit log's length, in-doubt external effects) are read when ``/metrics`` is scraped, by a few
cheap aggregate queries whose answer is cached for ``cache_seconds``, so a scrape every second costs at most one set
of queries per cache period. The time of the last checkpoint is the modification time of the newest signed
checkpoint file in ``DATA_DIR/audit-checkpoints`` (where ``mandate audit checkpoint`` writes them).

In-doubt external effects: intents of :mod:`server.effects` still ``started`` past their lease (the provider may or
may not have acted; the reconciler is asking it), counted by :func:`in_doubt_effects`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from sqlmodel.ext.asyncio.session import AsyncSession

from server.storage.database import Database

logger = logging.getLogger(__name__)

InDoubtQuery = Callable[[AsyncSession], Awaitable[int]]
"""Counts external effects in doubt (their outcome at the provider unknown): :func:`in_doubt_effects`."""


async def in_doubt_effects(session: AsyncSession) -> int:
    """Intents still ``started`` past their lease: the provider may or may not have acted (docs/effects.md)."""
    from datetime import UTC, datetime

    from server.effects.models import STARTED, EffectIntent

    table = EffectIntent.__table__  # type: ignore[attr-defined]
    query = (
        select(func.count())
        .select_from(table)
        .where(table.c.status == STARTED, table.c.lease_until < datetime.now(UTC))
    )
    connection = await session.connection()
    return int((await connection.execute(query)).scalar_one())


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Snapshot:
    pending_approvals: int = 0
    suspensions: dict[str, int] = field(default_factory=dict[str, int])
    audit_records: int = 0
    last_checkpoint: float | None = None
    in_doubt: int | None = None
    ok: bool = True


class _DatabaseGauges(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snap = self.metrics.snapshot
        up = GaugeMetricFamily("mandate_database_up", "1 when the last scrape's database queries succeeded")
        up.add_metric([], 1.0 if snap.ok else 0.0)
        yield up
        pending = GaugeMetricFamily("mandate_pending_approvals", "Approval requests waiting for a human decision")
        pending.add_metric([], snap.pending_approvals)
        yield pending
        suspended = GaugeMetricFamily(
            "mandate_suspended_principals",
            "Active suspensions, by kind",
            labels=["kind"],
        )
        for kind in ("client", "subject", "tenant", "token", "principal"):
            suspended.add_metric([kind], snap.suspensions.get(kind, 0))
        yield suspended
        length = GaugeMetricFamily("mandate_audit_log_length", "Records in the audit log (the chain head's position)")
        length.add_metric([], snap.audit_records)
        yield length
        if snap.last_checkpoint is not None:
            checkpoint = GaugeMetricFamily(
                "mandate_audit_last_checkpoint_timestamp_seconds", "When the newest signed checkpoint was written"
            )
            checkpoint.add_metric([], snap.last_checkpoint)
            yield checkpoint
        if snap.in_doubt is not None:
            doubt = GaugeMetricFamily("mandate_effects_in_doubt", "External effects whose outcome is not known yet")
            doubt.add_metric([], snap.in_doubt)
            yield doubt


class Metrics:
    """The metrics of one process."""

    def __init__(
        self,
        db: Database | None = None,
        *,
        data_dir: Path | None = None,
        cache_seconds: float = 2.0,
        in_doubt: InDoubtQuery | None = in_doubt_effects,
    ) -> None:
        self.db = db
        self.in_doubt = in_doubt
        self.data_dir = data_dir
        self.cache_seconds = cache_seconds
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter(
            "mandate_tool_calls",
            "tools/call answered, by tool, decision (allow, deny, approval, error) and reason code",
            ["tool", "decision", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mandate_tool_call_duration_seconds",
            "Time to answer a tools/call, by tool and decision",
            ["tool", "decision"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._call_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        """The labelled children of ``calls`` and ``latency`` per (tool, decision, reason): as many as the series."""
        self.listings = Counter("mandate_tool_listings", "tools/list answered", ["outcome"], registry=self.registry)
        self.rate_limited = Counter(
            "mandate_rate_limited_calls",
            "Calls refused (or, in shadow mode, that would be) by a rate limit",
            ["limit", "scope", "mode"],
            registry=self.registry,
        )
        self.suspended_calls = Counter(
            "mandate_suspended_calls",
            "Calls and listings refused: caller suspended",
            registry=self.registry,
        )
        self.breaker_trips = Counter(
            "mandate_breaker_trips",
            "Circuit breakers tripped, by breaker and mode",
            ["breaker", "mode"],
            registry=self.registry,
        )
        self.auth_refusals = Counter(
            "mandate_auth_refusals", "Requests refused for their token, by error", ["error"], registry=self.registry
        )
        self.snapshot = Snapshot()
        self._taken_at = float("-inf")
        self._lock = anyio.Lock()
        self.registry.register(_DatabaseGauges(self))

    def observe_call(self, tool: str, decision: str, reason: str, seconds: float) -> None:
        key = (tool, decision, reason)
        children = self._call_children.get(key)
        if children is None:  # ``labels`` takes a lock and builds its key on every call: about 2 us a call
            children = self._call_children[key] = (self.calls.labels(*key), self.latency.labels(tool, decision))
        children[0].inc()
        children[1].observe(seconds)

    async def refresh(self) -> None:
        """Re-read the database gauges if the cached ones are older than ``cache_seconds``."""
        if self.db is None or time.monotonic() - self._taken_at < self.cache_seconds:
            return
        async with self._lock:
            if time.monotonic() - self._taken_at < self.cache_seconds:
                return
            try:
                self.snapshot = await self._read(self.db)
            except Exception:
                logger.warning("the database gauges could not be read for /metrics", exc_info=True)
                self.snapshot.ok = False
            self._taken_at = time.monotonic()

    async def _read(self, db: Database) -> Snapshot:
        from server.approvals.models import Approval
        from server.guards.store import Suspension

        snap = Snapshot(last_checkpoint=self._last_checkpoint())
        async with db.session() as session:
            connection = await session.connection()
            approvals = Approval.__table__  # type: ignore[attr-defined]
            pending = select(func.count()).select_from(approvals).where(approvals.c.status == "pending")
            snap.pending_approvals = int((await connection.execute(pending)).scalar_one())
            suspensions = Suspension.__table__  # type: ignore[attr-defined]
            by_kind = (
                select(suspensions.c.kind, func.count())
                .where(suspensions.c.resumed_at.is_(None))
                .group_by(suspensions.c.kind)
            )
            snap.suspensions = {kind: int(n) for kind, n in (await connection.execute(by_kind)).all()}
            # the insertion key's high-water mark: O(1) on its index (the legacy audit_head is frozen since the
            # Merkle log; the tree's size lags the records by up to one sequencer interval)
            head = (await connection.execute(text("SELECT MAX(seq) FROM audit_records"))).scalar()
            snap.audit_records = int(head or 0)
            if self.in_doubt is not None:
                snap.in_doubt = await self.in_doubt(session)
        return snap

    def _last_checkpoint(self) -> float | None:
        if self.data_dir is None:
            return None
        folder = self.data_dir / "audit-checkpoints"
        try:
            files = [*folder.glob("tree-head-*.json"), *folder.glob("checkpoint-*.json")]
            times = [p.stat().st_mtime for p in files]
        except OSError:
            return None
        return max(times) if times else None

    async def exposition(self) -> bytes:
        await self.refresh()
        return generate_latest(self.registry)
