"""Verifying the audit log: recompute every leaf and the tree, and name the first thing that does not hold (RFC 9162
section 2.1; docs/audit.md, "Verifying").

Integrated records are streamed in ``leaf_index`` order in batches, each read in a short transaction of its own (so
a long verify never holds a lock writers need), as plain rows. Each record must sit at the next leaf index and hash
to the leaf it was committed with; records of the legacy linear chain must also link to the one before, and come
first. The tree is rebuilt from the leaves (a compact range) and its root compared with every stored tree head on
the way and with the latest; against a signed tree head kept outside the database (``--checkpoint``) the log must
have reached that size with that root, and a consistency proof from the stored tree must verify too. What breaks
first is reported:

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

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import anyio
from sqlalchemy import Column, ColumnElement, Table, and_, func, or_, select
from sqlalchemy.exc import SQLAlchemyError

from server.audit.chain import HEAD, LEAF_FIELDS, LEGACY_FIELDS, RECORDS, canonical_json, canonical_time
from server.audit.checkpoint import Checkpoint, TreeHead
from server.audit.merkle import CompactRange, ProofError, leaf_hash, verify_consistency
from server.audit.models import GENESIS_HASH
from server.audit.tree import HEADS, StoredHead, consistency_proof, latest_head
from server.storage.database import Database

Problem = Literal[
    "altered",
    "missing",
    "inserted",
    "tree_mismatch",
    "beyond_head",
    "truncated",
    "checkpoint_mismatch",
    "not_integrated",
    "effect_unrecorded",
    "effect_not_integrated",
]
ProgressCallback = Callable[[int, int], None]
"""Called with (records checked, records to check) after every batch."""

BATCH_SIZE = 5000

_FIELDS = sorted({*LEAF_FIELDS, *LEGACY_FIELDS, "hash", "leaf_hash", "leaf_index"})
_COLUMNS = [RECORDS.c[name] for name in _FIELDS]
_AT = _FIELDS.index("at")
_ID = _FIELDS.index("id")
_LEAF_INDEX = _FIELDS.index("leaf_index")
_LEAF_HASH = _FIELDS.index("leaf_hash")
_HASH = _FIELDS.index("hash")
_SEQ = _FIELDS.index("seq")
_PREV = _FIELDS.index("prev_hash")
_LEAF_POS = [_FIELDS.index(name) for name in LEAF_FIELDS]
_LEGACY_POS = [_FIELDS.index(name) for name in LEGACY_FIELDS]
_LEGACY_LEAF_POS = [_FIELDS.index(name) for name in sorted((*LEGACY_FIELDS, "hash"))]
_LEGACY_LEAF_NAMES = sorted((*LEGACY_FIELDS, "hash"))


@dataclass(frozen=True, slots=True)
class LogBreak:
    """The first thing found wrong: where (a leaf index, or a record), which record, and why."""

    leaf_index: int | None
    record_id: str | None
    problem: Problem
    detail: str

    def describe(self) -> str:
        where = f"leaf {self.leaf_index}" if self.leaf_index is not None else "record"
        where += f" ({self.record_id})" if self.record_id else ""
        return f"first problem: {where}: {self.problem}: {self.detail}"


ChainBreak = LogBreak


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


@dataclass(slots=True)
class _Walker:
    """The tree and the legacy chain as records stream past in leaf order."""

    head_roots: dict[int, str]
    anchor_size: int | None
    tree: CompactRange = field(default_factory=CompactRange)
    legacy_seq: int = 0
    legacy_hash: str = GENESIS_HASH
    legacy_done: bool = False
    last_good_head: int = 0
    heads_checked: int = 0
    anchor_root: bytes | None = None
    recent_legacy: dict[str, int] = field(default_factory=dict[str, int])
    legacy_anchor_seq: int | None = None
    legacy_at_anchor: str | None = None

    def step(self, row: Sequence[Any]) -> LogBreak | None:
        index, record_id = int(row[_LEAF_INDEX]), str(row[_ID])
        expected = self.tree.size
        if index != expected:
            gap = f"{expected}" if index == expected + 1 else f"{expected} to {index - 1}"
            return LogBreak(expected, None, "missing", f"leaf {gap} absent (deleted?); the next is leaf {index}")
        values = list(row)
        values[_AT] = canonical_time(values[_AT])
        if row[_HASH] is not None and row[_LEAF_HASH] is None:
            problem = self._legacy(values, index, record_id)
            if problem is not None:
                return problem
            leaf = leaf_hash(
                canonical_json(dict(zip(_LEGACY_LEAF_NAMES, [values[i] for i in _LEGACY_LEAF_POS], strict=True)))
            )
        else:
            self.legacy_done = True
            leaf = leaf_hash(canonical_json(dict(zip(LEAF_FIELDS, [values[i] for i in _LEAF_POS], strict=True))))
            if row[_LEAF_HASH] is None or leaf.hex() != row[_LEAF_HASH]:
                return LogBreak(index, record_id, "altered", "its content does not match its leaf hash")
        self.tree.append(leaf)
        size = self.tree.size
        if size == self.anchor_size:
            self.anchor_root = self.tree.root()
        stored = self.head_roots.get(size)
        if stored is not None:
            self.heads_checked += 1
            if self.tree.root().hex() != stored:
                detail = (
                    f"leaves {self.last_good_head} to {size - 1} do not produce the tree head of size {size}: "
                    "records were reordered, replaced or renumbered in that range"
                )
                return LogBreak(self.last_good_head, None, "tree_mismatch", detail)
            self.last_good_head = size
        return None

    def _legacy(self, values: list[Any], index: int, record_id: str) -> LogBreak | None:
        if self.legacy_done:
            return LogBreak(index, record_id, "inserted", "a legacy chain record after the Merkle log began")
        seq, prev = int(values[_SEQ]), str(values[_PREV])
        body = dict(zip(LEGACY_FIELDS, [values[i] for i in _LEGACY_POS], strict=True))
        computed = hashlib.sha256(prev.encode() + canonical_json(body)).hexdigest()
        if computed != values[_HASH]:
            return LogBreak(index, record_id, "altered", "its content does not match its legacy chain hash")
        if prev != self.legacy_hash:
            earlier = self.recent_legacy.get(prev)
            if earlier is not None:
                detail = f"legacy seq {seq} links to seq {earlier}, so the records in between were inserted"
                return LogBreak(index, record_id, "inserted", detail)
            return LogBreak(index, record_id, "altered", f"legacy seq {seq} does not link to the record before it")
        if seq != self.legacy_seq + 1:
            return LogBreak(index, record_id, "missing", f"legacy seq {self.legacy_seq + 1} absent before seq {seq}")
        self.legacy_seq, self.legacy_hash = seq, str(values[_HASH])
        if seq == self.legacy_anchor_seq:
            self.legacy_at_anchor = self.legacy_hash
        self.recent_legacy[self.legacy_hash] = seq
        if len(self.recent_legacy) > 4096:
            self.recent_legacy.pop(next(iter(self.recent_legacy)))
        return None


async def _batch(db: Database, after: int, until: int) -> list[Any]:
    """The records with ``after <= leaf_index < until``: one short index range per batch."""
    query = (
        select(*_COLUMNS)
        .where(RECORDS.c.leaf_index >= after, RECORDS.c.leaf_index < until)
        .order_by(RECORDS.c.leaf_index)
    )
    async with db.engine.connect() as connection:
        return list((await connection.execute(query)).all())


async def _walk(
    db: Database, walker: _Walker, upto: int, batch_size: int, progress: ProgressCallback | None
) -> LogBreak | None:
    """Feed the walker every record below leaf ``upto``; the next batch is read while this one is hashed."""
    send, receive = anyio.create_memory_object_stream[list[Any] | SQLAlchemyError](1)

    async def read() -> None:
        # Never cancelled mid-query (a cancelled driver call can strand its connection): when the walker stops
        # early it closes its end, and the next send ends this loop.
        async with send:
            after = 0
            while after < upto:
                until = min(after + batch_size, upto)
                try:
                    rows: list[Any] | SQLAlchemyError = await _batch(db, after, until)
                except SQLAlchemyError as exc:  # handed over, to be raised as itself rather than in a group
                    rows = exc
                try:
                    await send.send(rows)
                except anyio.BrokenResourceError:
                    return
                if isinstance(rows, SQLAlchemyError):
                    return
                after = until

    first_break: LogBreak | None = None
    failure: SQLAlchemyError | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(read)
        async with receive:
            async for rows in receive:
                if isinstance(rows, SQLAlchemyError):
                    failure = rows
                    break
                for row in rows:
                    first_break = walker.step(row)
                    if first_break is not None:
                        break
                if first_break is not None:
                    break
                if progress is not None:
                    progress(walker.tree.size, upto)
    if failure is not None:
        raise failure
    return first_break


async def _head_roots(db: Database) -> dict[int, str]:
    async with db.engine.connect() as connection:
        return {int(row[0]): str(row[1]) for row in await connection.execute(select(HEADS.c.size, HEADS.c.root_hash))}


async def _latest(db: Database) -> StoredHead | None:
    async with db.engine.connect() as connection:
        return await latest_head(connection)


async def _first_outside(db: Database, size: int) -> tuple[int, str] | None:
    """The first integrated record outside ``[0, size)``: beyond the tree head, or below leaf 0 (written around the
    sequencer; readers that list by time would show it, the walk from leaf 0 would never meet it)."""
    outside = or_(RECORDS.c.leaf_index >= size, RECORDS.c.leaf_index < 0)
    first = select(func.min(RECORDS.c.leaf_index)).where(outside).scalar_subquery()
    async with db.engine.connect() as connection:
        query = select(RECORDS.c.leaf_index, RECORDS.c.id).where(RECORDS.c.leaf_index == first)
        row = (await connection.execute(query)).first()
    return (int(row[0]), str(row[1])) if row is not None else None


async def _pending(db: Database, before: datetime) -> tuple[int, tuple[str, datetime] | None]:
    """How many records are unintegrated, and the oldest one written before ``before``."""
    async with db.engine.connect() as connection:
        count = (
            await connection.execute(select(func.count()).select_from(RECORDS).where(RECORDS.c.leaf_index.is_(None)))
        ).scalar_one()
        query = (
            select(RECORDS.c.id, RECORDS.c.at)
            .where(RECORDS.c.leaf_index.is_(None), RECORDS.c.at < before)
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
                        and_(record.c.leaf_index.is_(None), record.c.at < before),
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
            detail = f"{what}: its audit record, written {canonical_time(bad[3])}, was never integrated into the log"
            return checked, LogBreak(None, str(bad[1]), "effect_not_integrated", detail)
    return checked, None


async def _legacy_checks(db: Database, walker: _Walker) -> LogBreak | None:
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
    progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Recompute the whole log up to the latest tree head; check it against ``anchor`` (a signed tree head, or a
    checkpoint of the legacy chain) and the effects' records too."""
    started = time.perf_counter()
    latest = await _latest(db)
    size = latest.size if latest is not None else 0
    head_roots = await _head_roots(db)
    tree_anchor = anchor if isinstance(anchor, TreeHead) else None
    walker = _Walker(head_roots, tree_anchor.size if tree_anchor is not None else None)
    if isinstance(anchor, Checkpoint):
        walker.legacy_anchor_seq = anchor.seq
    first_break = await _walk(db, walker, size, batch_size, progress)
    if first_break is None and walker.tree.size < size:
        detail = f"the tree head counts {size} leaves but the last record is leaf {walker.tree.size - 1}"
        first_break = LogBreak(walker.tree.size, None, "missing", detail)
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
        detail = f"written {canonical_time(stale[1])}, still without a log position after {deadline_seconds:g} s"
        first_break = LogBreak(None, stale[0], "not_integrated", detail)
    return VerifyReport(
        records=walker.tree.size,
        legacy_records=walker.legacy_seq,
        tree_size=size,
        root_hash=walker.tree.root().hex(),
        heads_checked=walker.heads_checked,
        pending=pending,
        seconds=time.perf_counter() - started,
        first_break=first_break,
        anchor=anchor,
        consistency=consistency,
        effects_checked=effects_checked,
    )


verify_chain = verify_log


def _against_legacy(anchor: Checkpoint, walker: _Walker) -> LogBreak | None:
    if anchor.seq > walker.legacy_seq:
        detail = f"the legacy checkpoint was signed at seq {anchor.seq}; the chain ends at seq {walker.legacy_seq}"
        return LogBreak(None, None, "truncated", detail)
    if anchor.seq > 0 and walker.legacy_at_anchor != anchor.hash:
        detail = f"the legacy record at seq {anchor.seq} is not the one the checkpoint signed: the chain was rewritten"
        return LogBreak(None, None, "checkpoint_mismatch", detail)
    return None


async def _against_tree_head(
    db: Database, anchor: TreeHead, walker: _Walker, latest: StoredHead
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
