"""Replaying the log for ``mandate audit verify``: every leaf recomputed, the legacy chain re-linked, the tree rebuilt
and compared with every stored tree head, and the first thing that does not hold named (RFC 9162 section 2.1;
docs/audit.md, "Verifying").

The leaves come from :func:`server.audit.levels.scan_log`. The records it could not settle from the database's
canonical JSON (legacy chain records, records without a leaf hash, and any whose JSON did not hash to their leaf)
are read here as typed rows and recomputed exactly, with the writer's canonical form, in leaf order. What is
reported, in the order a walk from leaf 0 would meet it: a tree head whose leaves are all present but produce
another root comes before a problem with a later leaf.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.exc import DataError

from server.audit.chain import LEAF_FIELDS, LEGACY_FIELDS, RECORDS, canonical_json, canonical_time
from server.audit.levels import ScannedTree, scan_log
from server.audit.merkle import leaf_hash
from server.audit.models import GENESIS_HASH
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
_LEGACY_LEAF_NAMES = sorted((*LEGACY_FIELDS, "hash"))
_LEGACY_LEAF_POS = [_FIELDS.index(name) for name in _LEGACY_LEAF_NAMES]
_SUSPECTS_PER_QUERY = 500
_REQUIRED = [(name, _FIELDS.index(name)) for name in _FIELDS if not RECORDS.c[name].nullable]
"""The columns no writer leaves null (``NOT NULL`` in the schema; an owner can drop the constraint and empty one):
a null there is an alteration, named, not a value to encode."""


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


@dataclass(slots=True)
class Replay:
    """The log as replayed: how far it held, the tree over that prefix, and the legacy chain's end."""

    tree: ScannedTree = field(default_factory=ScannedTree)
    records: int = 0
    first_break: LogBreak | None = None
    heads_checked: int = 0
    anchor_root: bytes | None = None
    legacy_seq: int = 0
    legacy_hash: str = GENESIS_HASH
    legacy_at_anchor: str | None = None
    legacy_anchor_seq: int | None = None
    recent_legacy: dict[str, int] = field(default_factory=dict[str, int])

    @property
    def root(self) -> bytes:
        return self.tree.root(self.records)

    def legacy(self, values: list[Any], index: int, record_id: str | None) -> LogBreak | None:
        """Check one legacy chain record against the one before it (in leaf order)."""
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

    def exact(self, row: Sequence[Any], first_merkle: int | None) -> tuple[bytes | None, LogBreak | None]:
        """The leaf of one record recomputed from its typed columns, or what is wrong with it."""
        index = int(row[_LEAF_INDEX])
        record_id = str(row[_ID]) if row[_ID] is not None else None
        emptied = [name for name, position in _REQUIRED if row[position] is None]
        if emptied:
            verb = "is" if len(emptied) == 1 else "are"
            detail = f"its {', '.join(emptied)} {verb} null, which no writer leaves (seq {row[_SEQ]})"
            return None, LogBreak(index, record_id, "altered", detail)
        values = list(row)
        values[_AT] = canonical_time(values[_AT])
        if row[_HASH] is not None and row[_LEAF_HASH] is None:
            if first_merkle is not None and first_merkle < index:
                return None, LogBreak(index, record_id, "inserted", "a legacy chain record after the Merkle log began")
            problem = self.legacy(values, index, record_id)
            if problem is not None:
                return None, problem
            body = dict(zip(_LEGACY_LEAF_NAMES, [values[i] for i in _LEGACY_LEAF_POS], strict=True))
            return leaf_hash(canonical_json(body)), None
        leaf = leaf_hash(canonical_json(dict(zip(LEAF_FIELDS, [values[i] for i in _LEAF_POS], strict=True))))
        if row[_LEAF_HASH] is None or leaf.hex() != row[_LEAF_HASH]:
            return None, LogBreak(index, record_id, "altered", "its content does not match its leaf hash")
        return leaf, None


async def _rows(db: Database, indices: list[int]) -> list[Any]:
    query = select(*_COLUMNS).where(RECORDS.c.leaf_index.in_(indices)).order_by(RECORDS.c.leaf_index)
    async with db.engine.connect() as connection:
        return list((await connection.execute(query)).all())


_UNREADABLE = (DataError, ValueError, OverflowError)
"""What reading a record as typed values raises when a column holds what no writer wrote: a time before year 1 on
PostgreSQL (which Python's ``datetime`` cannot hold, and which the JSON's ``YYYY`` would have written as its AD
twin), text that is no time at all on SQLite. A lost connection is none of these: it still stops the command."""


async def _readable_rows(db: Database, indices: list[int]) -> tuple[list[Any], int | None]:
    """The records at ``indices`` as typed rows, in leaf order, up to the first that cannot be read (returned too)."""
    try:
        return await _rows(db, indices), None
    except _UNREADABLE:
        pass
    readable: list[Any] = []
    for index in indices:
        try:
            readable.extend(await _rows(db, [index]))
        except _UNREADABLE:
            return readable, index
    return readable, None


async def _record_id(db: Database, index: int) -> str | None:
    async with db.engine.connect() as connection:
        found = (await connection.execute(select(RECORDS.c.id).where(RECORDS.c.leaf_index == index))).first()
    return str(found[0]) if found is not None else None


async def _next_present(db: Database, after: int, size: int) -> int | None:
    query = select(func.min(RECORDS.c.leaf_index)).where(RECORDS.c.leaf_index > after, RECORDS.c.leaf_index < size)
    async with db.engine.connect() as connection:
        found = (await connection.execute(query)).scalar_one()
    return int(found) if found is not None else None


async def _settle_suspects(db: Database, replay: Replay, limit: int) -> LogBreak | None:
    """Recompute every suspect below leaf ``limit`` exactly, in order; the first that fails is the problem."""
    tree = replay.tree
    suspects = [index for index in tree.suspects if index < limit]
    touched: set[int] = set()
    for start in range(0, len(suspects), _SUSPECTS_PER_QUERY):
        found, unreadable = await _readable_rows(db, suspects[start : start + _SUSPECTS_PER_QUERY])
        for row in found:
            leaf, problem = replay.exact(row, tree.first_merkle)
            if problem is not None:
                _rebuild(tree, touched)
                return problem
            index = int(row[_LEAF_INDEX])
            tree.set_leaf(index, leaf or b"")
            touched.add(index >> tree.range_level)
        if unreadable is not None:
            _rebuild(tree, touched)
            detail = "a column holds a value no writer writes (a time outside the years 1 to 9999?)"
            return LogBreak(unreadable, await _record_id(db, unreadable), "altered", detail)
    _rebuild(tree, touched)
    return None


def _rebuild(tree: ScannedTree, ranges: set[int]) -> None:
    width = 1 << tree.range_level
    for number in sorted(ranges):
        tree.rebuild(number * width, min((number + 1) * width, tree.size))


async def replay_log(
    db: Database,
    size: int,
    head_roots: dict[int, str],
    *,
    anchor_size: int | None,
    legacy_anchor_seq: int | None,
    range_size: int,
    workers: int | None,
    progress: Callable[[int, int], None] | None,
) -> Replay:
    """Replay leaves ``[0, size)``: the first problem, the tree over the prefix that held, every tree head in it."""
    replay = Replay(legacy_anchor_seq=legacy_anchor_seq)
    replay.tree = tree = await scan_log(db, size, range_size=range_size, workers=workers, progress=progress)
    limit = tree.size
    leaf_break: LogBreak | None = None
    if tree.gap is not None:
        expected, following = tree.gap
        if following is None:
            following = await _next_present(db, expected, size)
        if following is not None:
            gap = f"{expected}" if following == expected + 1 else f"{expected} to {following - 1}"
            detail = f"leaf {gap} absent (deleted?); the next is leaf {following}"
            leaf_break = LogBreak(expected, None, "missing", detail)
    suspect_break = await _settle_suspects(db, replay, limit)
    if suspect_break is not None and suspect_break.leaf_index is not None:
        leaf_break, limit = suspect_break, suspect_break.leaf_index
    tree.truncate(limit)
    tree.complete()
    replay.records = limit
    last_good = 0
    for head_size in sorted(head_roots):
        if head_size > limit or head_size <= 0:
            continue
        replay.heads_checked += 1
        if tree.root(head_size).hex() != head_roots[head_size]:
            detail = (
                f"leaves {last_good} to {head_size - 1} do not produce the tree head of size {head_size}: "
                "records were reordered, replaced or renumbered in that range"
            )
            replay.records = head_size
            replay.first_break = LogBreak(last_good, None, "tree_mismatch", detail)
            break
        last_good = head_size
    if replay.first_break is None:
        replay.first_break = leaf_break
    if anchor_size is not None and anchor_size <= replay.records:
        replay.anchor_root = tree.root(anchor_size)
    return replay
