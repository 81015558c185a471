"""The remediation plan: which effects a principal (or an approval) made, and how each would be undone.

Effects are found through lineage (:mod:`server.audit.lineage`): the successful call records of the target, then the
store rows that name those records (the effect finder the tool catalog's store provides, ``tools.audit.effects_of``).
For each effect, the tool that made it (the cause record's tool) plans its compensation
(:class:`server.toolkit.Compensation`). An external effect still in doubt (an intent ``started``, docs/effects.md)
is listed but never compensated: it must be resolved first. A planner that fails gives ``none`` with the reason: a
plan never proposes an action it could not check.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from server.audit.chain import RECORDS
from server.audit.lineage import Effect, approval_records
from server.audit.query import AuditFilter, AuditRow, fetch_rows, select_records
from server.catalog import ToolCatalog
from server.effects.models import STARTED, EffectIntent
from server.storage.database import Database
from server.toolkit import Compensation, StoreView

logger = logging.getLogger(__name__)

EffectFinder = Callable[[AsyncSession, Sequence[AuditRow]], Awaitable[list[Effect]]]
"""The store's side of lineage: the effects the given audit records caused."""


@dataclass(frozen=True, slots=True)
class Target:
    """Whose effects to undo: a principal (client id, subject and/or tenant) within a time range, or one approval."""

    client_id: str | None = None
    subject: str | None = None
    tenant: str | None = None
    approval_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        principal = (self.client_id, self.subject, self.tenant)
        if self.approval_id is None and all(value is None for value in principal):
            raise ValueError("name a client id, a subject, a tenant or an approval")
        if self.approval_id is not None and any(value is not None for value in principal):
            raise ValueError("name either an approval or a principal, not both")

    def describe(self) -> str:
        if self.approval_id is not None:
            return f"approval {self.approval_id}"
        parts = [
            f"{label} {value}"
            for label, value in (("client", self.client_id), ("subject", self.subject), ("tenant", self.tenant))
            if value is not None
        ]
        if self.since is not None:
            parts.append(f"since {self.since.isoformat(timespec='seconds')}")
        if self.until is not None:
            parts.append(f"until {self.until.isoformat(timespec='seconds')}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Item:
    """One effect, what caused it, and how it would be undone."""

    effect: Effect
    cause: AuditRow | None
    compensation: Compensation

    @property
    def tool(self) -> str | None:
        return str(self.cause["tool"]) if self.cause is not None and self.cause["tool"] else None

    def as_dict(self) -> dict[str, Any]:
        cause = self.cause
        return {
            "effect": {"kind": self.effect.kind, "id": self.effect.id, "summary": self.effect.summary},
            "audit_id": self.effect.audit_id,
            "tool": self.tool,
            "at": cause["at"].isoformat() if cause is not None and isinstance(cause["at"], datetime) else None,
            "by": {"subject": cause["subject"], "client_id": cause["client_id"], "tenant": cause["tenant"]}
            if cause is not None
            else None,
            "approval_id": cause["approval_id"] if cause is not None else None,
            "state": self.compensation.state,
            "action": self.compensation.action,
            "compensating_tool": self.compensation.tool,
            "arguments": dict(self.compensation.arguments),
            "note": self.compensation.note,
        }


async def _records(session: AsyncSession, target: Target) -> list[AuditRow]:
    if target.approval_id is not None:
        return await approval_records(session, target.approval_id)
    audit_filter = AuditFilter(
        client_id=target.client_id,
        subject=target.subject,
        tenant=target.tenant,
        since=target.since,
        until=target.until,
    )
    return await fetch_rows(session, select_records(audit_filter).order_by(RECORDS.c.seq))


async def _in_doubt(session: AsyncSession, records: Sequence[AuditRow]) -> list[Item]:
    """External effects the target started whose outcome is not known yet: listed, never compensated."""
    started = {str(row["id"]): row for row in records if row["outcome"] == "started"}
    if not started:
        return []
    query = select(EffectIntent).where(col(EffectIntent.audit_id).in_(list(started)), EffectIntent.status == STARTED)
    items: list[Item] = []
    for intent in (await session.exec(query)).all():
        effect = Effect(
            "external_intent",
            intent.id,
            intent.audit_id,
            f"{intent.tool} at {intent.provider_name}, in doubt (intent {intent.id})",
            {"tool": intent.tool, "provider": intent.provider_name},
        )
        compensation = Compensation.nothing(
            "in doubt: the provider may or may not have done it",
            "resolve it first (mandate effects reconcile), then remediate again",
        )
        items.append(Item(effect, started[intent.audit_id], compensation))
    return items


async def _compensation(catalog: ToolCatalog, effect: Effect, tool: str | None, view: StoreView) -> Compensation:
    entry = catalog.get(tool) if tool is not None else None
    planner = entry.spec.compensation if entry is not None else None
    if planner is None:
        return Compensation.nothing("-", f"{tool or 'the tool'} declares no compensation: undo it by hand")
    try:
        return await planner(effect, view)
    except Exception:  # fail closed: no action proposed that could not be checked
        logger.exception("planning the compensation of %s %s failed", effect.kind, effect.id)
        return Compensation.nothing("unknown (the state could not be read)", "planning failed; see the server log")


async def plan(
    db: Database,
    catalog: ToolCatalog,
    target: Target,
    find_effects: EffectFinder,
    now: datetime,
    providers: Mapping[str, Any] | None = None,
) -> list[Item]:
    """Every effect of ``target``, oldest first, with its state now and its compensation; reads only.

    ``providers``: the configured providers (the enforcer's), so an external effect's state is read where it lives.
    """
    async with db.session() as session:
        view = StoreView(session, now, dict(providers or {}))
        records = await _records(session, target)
        causes = {str(row["id"]): row for row in records}
        items: list[Item] = []
        for effect in await find_effects(session, records):
            cause = causes.get(effect.audit_id or "")
            tool = str(cause["tool"]) if cause is not None and cause["tool"] else None
            compensation = await _compensation(catalog, effect, tool, view)
            items.append(Item(effect, cause, compensation))
        items.extend(await _in_doubt(session, records))
        await session.rollback()
    return items
