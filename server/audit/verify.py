"""Verifying the audit log: recompute every leaf and the tree, and name the first thing that does not hold (RFC 9162
section 2.1; docs/audit.md, "Verifying").

Integrated records are read in ``leaf_index`` order in aligned ranges, each in a short statement of its own (so a
long verify never holds a lock writers need), by worker processes for a large log (:mod:`server.audit.levels`).
Each record must sit at the next leaf index and hash to the leaf it was committed with; records of the legacy linear
chain must also link to the one before, and come first (:mod:`server.audit.replay`). The tree is rebuilt level by
level from the leaves and its root compared with every stored tree head and with the latest; against a signed tree
head kept outside the database (``--checkpoint``) the log must have reached that size with that root, and a
consistency proof from the stored tree must verify too. What breaks first is reported:

- ``altered``: a record's content no longer matches its leaf hash (or its legacy chain link);
- ``missing``: leaf indices are absent (a deleted record, or a truncated tail that the tree head still counts);
- ``inserted``: a legacy chain record links past the one before it, or comes after the first Merkle leaf;
- ``tree_mismatch``: the leaves do not produce a stored tree head's root: records were reordered, replaced or
  inserted with their positions rewritten;
- ``beyond_head``: integrated records exist beyond the latest tree head (or below leaf 0);
- ``truncated`` / ``checkpoint_mismatch``: against a signed tree head, the log is shorter than it was, or it does
  not extend it (a forked history);
- ``not_integrated``: a record still has no position long after it was written (the sequencer is down, or the
  record was slipped past it); ``effect_unrecorded`` / ``effect_not_integrated``: an effect row (a refund, a
  cancellation, an account change) whose audit record is missing, or was never integrated in time.

The log is checked up to the latest tree head as it was when verification started; records integrated meanwhile
are left for the next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, ColumnElement, Table, and_, func, or_, select

from server.audit.chain import HEAD, RECORDS, canonical_time
from server.audit.checkpoint import Checkpoint, TreeHead
from server.audit.levels import RANGE_SIZE
from server.audit.merkle import ProofError, verify_consistency
from server.audit.replay import LogBreak, Problem, Replay, replay_log
from server.audit.tree import HEADS, StoredHead, consistency_proof, latest_head
from server.storage.database import Database

ProgressCallback = Callable[[int, int], None]
"""Called with (records checked, records to check) after every range of leaves."""

BATCH_SIZE = RANGE_SIZE

ChainBreak = LogBreak
__all__ = [
    "BATCH_SIZE",
    "ChainBreak",
    "Consistency",
    "EffectSource",
    "LogBreak",
    "Problem",
    "VerifyReport",
    "verify_log",
]


@dataclass(frozen=True, slots=True)
class EffectSource:
    """A table of effects whose rows name the audit record that caused them (given by the tool catalog)."""

    kind: str
    table: Table
    id_column: str
    audit_column: str
    only: ColumnElement[bool] | None = None
    """Which rows are effects (all when ``None``)."""


@dataclass(frozen=True, slots=True)
class Consistency:
    """The consistency proof from a signed tree head to the latest one, checked (RFC 9162 section 2.1.4.2)."""

    old_size: int
    new_size: int
    proof_length: int


@dataclass(frozen=True, slots=True)
class VerifyReport:
    records: int
    legacy_records: int
    tree_size: int
    root_hash: str
    heads_checked: int
    pending: int
    seconds: float
    first_break: LogBreak | None
    anchor: TreeHead | Checkpoint | None = None
    consistency: Consistency | None = None
    effects_checked: int = 0

    @property
    def ok(self) -> bool:
        return self.first_break is None

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("inf")


async def _head_roots(db: Database) -> dict[int, str]:
    async with db.engine.connect() as connection:
        return {int(row[0]): str(row[1]) for row in await connection.execute(select(HEADS.c.size, HEADS.c.root_hash))}


async def _latest(db: Database) -> StoredHead | None:
    async with db.engine.connect() as connection:
        return await latest_head(connection)


async def _first_outside(db: Database, size: int) -> tuple[int, str] | None:
    """The first integrated record outside ``[0, size)``: beyond the tree head, or below leaf 0 (written around the
    sequencer; readers that list by time would show it, the walk from leaf 0 would never meet it).

    A running sequencer may integrate more records, with their tree head, while the log is verified: a record past
    ``size`` is outside only if no tree head covers it either, read in this statement's one snapshot (the sequencer
    writes positions and their head in one transaction). Below leaf 0 and beyond the heads are two index probes
    (one condition with ``OR`` made PostgreSQL walk the whole index: 0.5-0.7 s at a million records)."""
    newest = select(func.coalesce(func.max(HEADS.c.size), 0)).scalar_subquery()
    index = RECORDS.c.leaf_index
    below = select(func.min(index)).where(index < 0).scalar_subquery()
    beyond = select(func.min(index)).where(index >= size, index >= newest).scalar_subquery()
    first = func.coalesce(below, beyond)
    async with db.engine.connect() as connection:
        query = select(RECORDS.c.leaf_index, RECORDS.c.id).where(RECORDS.c.leaf_index == first)
        row = (await connection.execute(query)).first()
    return (int(row[0]), str(row[1])) if row is not None else None


def _written(at: datetime | None) -> str:
    """When a record says it was written; a null time (which no writer leaves: an owner's edit) counts as stale."""
    return canonical_time(at) if at is not None else "at no time (its at is null, which no writer leaves)"


async def _pending(db: Database, before: datetime) -> tuple[int, tuple[str, datetime | None] | None]:
    """How many records are unintegrated, and the oldest one written before ``before`` (or with no time at all)."""
    async with db.engine.connect() as connection:
        count = (
            await connection.execute(select(func.count()).select_from(RECORDS).where(RECORDS.c.leaf_index.is_(None)))
        ).scalar_one()
        query = (
            select(RECORDS.c.id, RECORDS.c.at)
            .where(RECORDS.c.leaf_index.is_(None), or_(RECORDS.c.at < before, RECORDS.c.at.is_(None)))
            .order_by(RECORDS.c.seq)
            .limit(1)
        )
        stale = (await connection.execute(query)).first()
    return int(count), ((str(stale[0]), stale[1]) if stale is not None else None)


async def _check_effects(
    db: Database, sources: Sequence[EffectSource], before: datetime
) -> tuple[int, LogBreak | None]:
    """Every effect row must name an existing record, integrated unless written after ``before``."""
    checked = 0
    async with db.engine.connect() as connection:
        for source in sources:
            audit: Column[Any] = source.table.c[source.audit_column]
            ident: Column[Any] = source.table.c[source.id_column]
            only = [source.only] if source.only is not None else []
            counted = select(func.count()).select_from(source.table).where(*only)
            checked += int((await connection.execute(counted)).scalar_one())
            record = RECORDS.alias("cause")
            joined = source.table.outerjoin(record, record.c.id == audit)
            query = (
                select(ident, audit, record.c.id, record.c.at)
                .select_from(joined)
                .where(
                    *only,
                    or_(
                        audit.is_(None),
                        record.c.id.is_(None),
                        and_(record.c.leaf_index.is_(None), or_(record.c.at < before, record.c.at.is_(None))),
                    ),
                )
                .order_by(ident)
                .limit(1)
            )
            bad = (await connection.execute(query)).first()
            if bad is None:
                continue
            what = f"{source.kind} {bad[0]}"
            if bad[1] is None:
                return checked, LogBreak(None, None, "effect_unrecorded", f"{what} names no audit record")
            if bad[2] is None:
                detail = f"{what} names audit record {bad[1]}, which does not exist (deleted before integration?)"
                return checked, LogBreak(None, str(bad[1]), "effect_unrecorded", detail)
            detail = f"{what}: its audit record, written {_written(bad[3])}, was never integrated into the log"
            return checked, LogBreak(None, str(bad[1]), "effect_not_integrated", detail)
    return checked, None


async def _legacy_checks(db: Database, walker: Replay) -> LogBreak | None:
    """The legacy chain must end where its frozen head says, and no legacy record may be left outside the tree."""
    async with db.engine.connect() as connection:
        head = (await connection.execute(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1))).first()
        outside = (
            await connection.execute(
                select(RECORDS.c.id).where(RECORDS.c.hash.is_not(None), RECORDS.c.leaf_index.is_(None)).limit(1)
            )
        ).first()
    if outside is not None:
        return None  # not integrated yet (just upgraded): the next run checks it
    if head is not None and int(head[0]) > 0:
        head_seq, head_hash = int(head[0]), str(head[1])
        if walker.legacy_seq < head_seq:
            detail = f"the legacy chain head names seq {head_seq} but its last record is seq {walker.legacy_seq}"
            return LogBreak(None, None, "missing", detail)
        if walker.legacy_hash != head_hash:
            return LogBreak(None, None, "altered", "the legacy chain head names another hash than its last record")
    return None


async def verify_log(
    db: Database,
    *,
    anchor: TreeHead | Checkpoint | None = None,
    effects: Sequence[EffectSource] = (),
    deadline_seconds: float = 60.0,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Recompute the whole log up to the latest tree head; check it against ``anchor`` (a signed tree head, or a
    checkpoint of the legacy chain) and the effects' records too.

    ``batch_size`` leaves (rounded down to a power of two) are read per statement; ``workers`` processes scan them
    (``None``: one per core for a large log, none for a small one; 0: all in this process)."""
    started = time.perf_counter()
    latest = await _latest(db)
    size = latest.size if latest is not None else 0
    head_roots = await _head_roots(db)
    tree_anchor = anchor if isinstance(anchor, TreeHead) else None
    walker = await replay_log(
        db,
        size,
        head_roots,
        anchor_size=tree_anchor.size if tree_anchor is not None else None,
        legacy_anchor_seq=anchor.seq if isinstance(anchor, Checkpoint) else None,
        range_size=batch_size,
        workers=workers,
        progress=progress,
    )
    first_break = walker.first_break
    if first_break is None and walker.records < size:
        detail = f"the tree head counts {size} leaves but the last record is leaf {walker.records - 1}"
        first_break = LogBreak(walker.records, None, "missing", detail)
    if first_break is None:
        outside = await _first_outside(db, size)
        if outside is not None:
            where = "beyond the tree head" if outside[0] >= size else "below the tree's first leaf"
            first_break = LogBreak(outside[0], outside[1], "beyond_head", f"an integrated record {where}")
    if first_break is None:
        first_break = await _legacy_checks(db, walker)
    consistency = None
    if first_break is None and isinstance(anchor, Checkpoint):
        first_break = _against_legacy(anchor, walker)
    if first_break is None and tree_anchor is not None and latest is not None:
        first_break, consistency = await _against_tree_head(db, tree_anchor, walker, latest)
    elif first_break is None and tree_anchor is not None and tree_anchor.size > 0:
        first_break = LogBreak(
            None, None, "truncated", f"the signed tree head has {tree_anchor.size} leaves; the log none"
        )
    moment = now or datetime.now(UTC)
    before = moment - timedelta(seconds=deadline_seconds)
    effects_checked = 0
    if effects:  # an effect's record first: it says what the missing record was for
        effects_checked, effect_break = await _check_effects(db, effects, before)
        first_break = first_break or effect_break
    pending, stale = await _pending(db, before)
    if first_break is None and stale is not None:
        detail = f"written {_written(stale[1])}, still without a log position after {deadline_seconds:g} s"
        first_break = LogBreak(None, stale[0], "not_integrated", detail)
    return VerifyReport(
        records=walker.records,
        legacy_records=walker.legacy_seq,
        tree_size=size,
        root_hash=walker.root.hex(),
        heads_checked=walker.heads_checked,
        pending=pending,
        seconds=time.perf_counter() - started,
        first_break=first_break,
        anchor=anchor,
        consistency=consistency,
        effects_checked=effects_checked,
    )


verify_chain = verify_log


def _against_legacy(anchor: Checkpoint, walker: Replay) -> LogBreak | None:
    if anchor.seq > walker.legacy_seq:
        detail = f"the legacy checkpoint was signed at seq {anchor.seq}; the chain ends at seq {walker.legacy_seq}"
        return LogBreak(None, None, "truncated", detail)
    if anchor.seq > 0 and walker.legacy_at_anchor != anchor.hash:
        detail = f"the legacy record at seq {anchor.seq} is not the one the checkpoint signed: the chain was rewritten"
        return LogBreak(None, None, "checkpoint_mismatch", detail)
    return None


async def _against_tree_head(
    db: Database, anchor: TreeHead, walker: Replay, latest: StoredHead
) -> tuple[LogBreak | None, Consistency | None]:
    if anchor.size > latest.size:
        detail = f"the signed tree head has {anchor.size} leaves but the log only {latest.size}: leaves were removed"
        return LogBreak(latest.size, None, "truncated", detail), None
    if anchor.size > 0 and walker.anchor_root != anchor.root:
        detail = f"the log's first {anchor.size} leaves do not produce the signed root: its history was rewritten"
        return LogBreak(None, None, "checkpoint_mismatch", detail), None
    async with db.engine.connect() as connection:
        proof = await consistency_proof(connection, anchor.size, latest.size)
    try:
        verify_consistency(anchor.size, anchor.root, latest.size, latest.root, proof)
    except ProofError as exc:
        return LogBreak(None, None, "checkpoint_mismatch", f"the consistency proof fails: {exc}"), None
    return None, Consistency(anchor.size, latest.size, len(proof))
