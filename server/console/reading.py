"""What the console's investigation pages read: one audit record with its lineage, the log's latest signed tree head
(RFC 9162 section 4.10) and the newest one kept outside the database, each agent's recent activity and today's budget
use, and the policy in force.

Everything here reads; nothing writes. Lineage follows :mod:`server.audit.lineage` (effect -> the record that
caused it -> its approval's records -> its trace id); the store's effects are found by the tool catalog's audit
module (``tools.audit``, imported where used, as ``mandate audit lineage`` does, since ``server`` does not depend on
``tools``). Tenancy: a person whose token names a tenant sees only that tenant's records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from server.audit import checkpoint as checkpoints
from server.audit.chain import RECORDS
from server.audit.lineage import Trail, trail_of
from server.audit.query import AuditRow, record_by_id
from server.audit.tree import HEADS
from server.audit.verify import VerifyReport, verify_chain
from server.auth.principal import Principal
from server.config import Settings
from server.ledger import BUCKETS
from server.storage.database import Database


@dataclass(frozen=True, slots=True)
class RecordView:
    row: AuditRow
    arguments: Any
    summary: Any
    trails: list[Trail]


def _parsed(text: object) -> Any:
    try:
        return json.loads(str(text))
    except ValueError:
        return text


async def record_view(session: AsyncSession, identifier: str, principal: Principal) -> RecordView | None:
    """One record (by id or seq) the person may see, with the lineage of the effects it caused."""
    row = await record_by_id(session, identifier)
    if row is None or (principal.tenant is not None and row["tenant"] != principal.tenant):
        return None
    from tools import audit as store  # the catalog's tool module knows the store's effects

    effects = await store.effects_of(session, [row]) if row["outcome"] == "succeeded" else []
    if not effects and row["approval_id"]:  # a decision record: the effects of the approved action
        executed = await _approved_execution(session, str(row["approval_id"]), str(row["id"]))
        effects = await store.effects_of(session, executed) if executed else []
    trails = [await trail_of(session, effect) for effect in effects]
    return RecordView(row, _parsed(row["arguments"]), _parsed(row["result_summary"]), trails)


async def _approved_execution(session: AsyncSession, approval_id: str, other_than: str) -> list[AuditRow]:
    from server.audit.query import fetch_rows

    query = (
        select(RECORDS)
        .where(RECORDS.c.approval_id == approval_id, RECORDS.c.id != other_than, RECORDS.c.outcome == "succeeded")
        .order_by(RECORDS.c.seq)
    )
    return await fetch_rows(session, query)


# --- the chain ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TreeHeadState:
    """The latest tree head the sequencer signed, its signature checked; and the newest signed file kept outside the
    database (``mandate audit checkpoint``), which verification checks the log against."""

    head: checkpoints.TreeHead | None
    problem: str | None
    anchor: checkpoints.TreeHead | checkpoints.Checkpoint | None = None
    anchor_path: Path | None = None
    anchor_problem: str | None = None


def _verification_key(settings: Settings) -> Ed25519PublicKey:
    return checkpoints.load_verification_key(
        settings.audit.signing_key or checkpoints.default_key_path(settings.data_dir)
    )


async def _latest_signed(db: Database, settings: Settings) -> tuple[checkpoints.TreeHead | None, str | None]:
    query = select(HEADS).where(HEADS.c.signed.is_not(None)).order_by(HEADS.c.size.desc()).limit(1)
    async with db.engine.connect() as connection:
        row = (await connection.execute(query)).first()
    if row is None:
        return None, "no tree head has been signed yet (the sequencer signs one within a second of the first call)"
    where = f"the tree head of size {row.size}"
    try:
        head = checkpoints.tree_head_from(json.loads(str(row.signed)), _verification_key(settings), where=where)
    except (checkpoints.CheckpointError, ValueError) as exc:
        return None, str(exc)
    if (head.size, head.root_hash) != (int(row.size), str(row.root_hash)):
        return None, f"{where}: its signed document states size {head.size} and another root than the log stores"
    return head, None


def _newest_file(settings: Settings) -> tuple[Path | None, checkpoints.TreeHead | checkpoints.Checkpoint | None, str]:
    folder = settings.data_dir / "audit-checkpoints"
    heads = sorted(folder.glob("tree-head-*.json")) if folder.is_dir() else []
    legacy = sorted(folder.glob("checkpoint-*.json")) if folder.is_dir() else []
    files = heads or legacy  # a tree head file is newer than any legacy chain checkpoint
    if not files:
        return None, None, "none written yet (mandate audit checkpoint)"
    try:
        return files[-1], checkpoints.read_signed(files[-1], _verification_key(settings)), ""
    except checkpoints.CheckpointError as exc:
        return files[-1], None, str(exc)


async def tree_heads(db: Database, settings: Settings) -> TreeHeadState:
    """The latest signed tree head in the log and the newest signed file, each with its signature checked."""
    head, problem = await _latest_signed(db, settings)
    path, anchor, anchor_problem = _newest_file(settings)
    return TreeHeadState(head, problem, anchor, path, anchor_problem or None)


async def verify(db: Database, state: TreeHeadState) -> VerifyReport:
    return await verify_chain(db, anchor=state.anchor)


async def head(session: AsyncSession) -> int:
    connection = await session.connection()
    value = (await connection.execute(select(func.max(RECORDS.c.seq)))).scalar()
    return int(value or 0)


# --- agents ---------------------------------------------------------------------------------------------------------


PEOPLE_TRANSPORTS = ("console", "api")
"""Calls people made through the console and the approvals API: not an agent's activity."""


@dataclass(slots=True)
class AgentActivity:
    client_id: str
    subjects: set[str] = field(default_factory=set[str])
    calls: int = 0
    denials: int = 0
    approvals: int = 0
    last_at: datetime | None = None
    recent: list[AuditRow] = field(default_factory=list[AuditRow])
    recent_denials: list[AuditRow] = field(default_factory=list[AuditRow])
    budgets: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])


async def agents(session: AsyncSession, principal: Principal, now: datetime, hours: int = 24) -> list[AgentActivity]:
    """Per client: tool calls in the last ``hours``, denials, waits for approval, and the budgets spent today (calls
    people made in the console or through the approvals API are left out)."""
    since = now - timedelta(hours=hours)
    c = RECORDS.c
    query = select(RECORDS).where(
        c.at >= since, c.kind == "call", c.client_id.is_not(None), c.transport.not_in(PEOPLE_TRANSPORTS)
    )
    if principal.tenant is not None:
        query = query.where(c.tenant == principal.tenant)
    connection = await session.connection()
    rows = [dict(r._mapping) for r in await connection.execute(query.order_by(c.seq.desc()).limit(5000))]
    by_client: dict[str, AgentActivity] = {}
    for row in rows:
        activity = by_client.setdefault(str(row["client_id"]), AgentActivity(str(row["client_id"])))
        activity.calls += 1
        if row["subject"]:
            activity.subjects.add(str(row["subject"]))
        if row["decision"] == "deny":
            activity.denials += 1
            if len(activity.recent_denials) < 5:
                activity.recent_denials.append(row)
        if row["decision"] == "approval":
            activity.approvals += 1
        if activity.last_at is None:
            activity.last_at = row["at"]
        if len(activity.recent) < 5:
            activity.recent.append(row)
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    buckets = await connection.execute(select(BUCKETS).where(BUCKETS.c.updated_at >= today, BUCKETS.c.spent > 0))
    for bucket in buckets:
        data = dict(bucket._mapping)
        holder = str(data["holder"])
        for activity in by_client.values():
            if f"|{activity.client_id}|" in f"|{holder}|" or holder == activity.client_id:
                activity.budgets.append(data)
    return sorted(by_client.values(), key=lambda a: a.last_at or since, reverse=True)


def amount_text(spent: int, unit: str) -> str:
    if unit == "count":
        return f"{spent} calls"
    from scopes.money import Money, MoneyError

    try:
        return str(Money.from_minor(spent, unit))
    except MoneyError:  # an unknown currency code is shown as stored
        return f"{spent} {unit} (minor units)"
