"""Verifying the audit trail: recompute the hash chain and name the first bad record (DESIGN.md section 6).

Records are streamed in ``seq`` order in batches, each read in a short transaction of its own (so a long verify
never holds a lock writers need), as plain rows rather than ORM objects. Each record must sit at the next position,
link to the hash of the record before, and carry the hash of its own content. What breaks first is reported:

- ``altered``: a record's content no longer matches its hash (a flipped byte, a swapped or renumbered record);
- ``missing``: positions are absent (a deleted record, or a truncated tail that the head still remembers);
- ``inserted``: a record links past the one before it to an earlier record, so those in between were inserted;
- ``replaced``: a record is self-consistent but the next one was chained to a different record in its place;
- ``beyond_head``: records exist after the position the chain head names;
- ``head_mismatch``: the chain head names a hash the last record does not have;
- ``truncated`` / ``checkpoint_mismatch``: against a signed checkpoint, the chain is shorter than it was, or the
  record at the checkpointed position is not the one that was signed.

The chain is checked up to the head as it was when verification started; records appended meanwhile are left for
the next run.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from server.audit.chain import HASHED_FIELDS, HEAD, RECORDS, canonical_values
from server.audit.models import GENESIS_HASH
from server.storage.database import Database

Problem = Literal[
    "altered",
    "missing",
    "inserted",
    "replaced",
    "beyond_head",
    "head_mismatch",
    "truncated",
    "checkpoint_mismatch",
    "before_start",
]
ProgressCallback = Callable[[int, int], None]
"""Called with (records checked, records to check) after every batch."""

BATCH_SIZE = 5000
_RECENT = 4096  # how many recent hashes are remembered to tell an insertion from a deletion

_COLUMNS = [RECORDS.c[name] for name in HASHED_FIELDS] + [RECORDS.c.hash]
_N = len(HASHED_FIELDS)
_SEQ = HASHED_FIELDS.index("seq")
_ID = HASHED_FIELDS.index("id")
_PREV = HASHED_FIELDS.index("prev_hash")


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first place the chain is broken: the position, the record there (when there is one), and why."""

    seq: int
    record_id: str | None
    problem: Problem
    detail: str

    def describe(self) -> str:
        where = f"seq {self.seq}" + (f" ({self.record_id})" if self.record_id else "")
        return f"first bad record: {where}: {self.problem}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Anchor:
    """A trusted position: from a signed checkpoint."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    records: int
    last_seq: int
    last_hash: str
    head_seq: int
    seconds: float
    first_break: ChainBreak | None
    anchor: Anchor | None = None

    @property
    def ok(self) -> bool:
        return self.first_break is None

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("inf")


class _Walker:
    """The chain state as records stream past."""

    def __init__(self, anchor_seq: int | None = None) -> None:
        self.anchor_seq = anchor_seq
        self.at_anchor: tuple[str, str | None] | None = None
        """(hash, id) of the record at the anchor's position, once passed."""
        self.expected = 1
        self.prev_hash = GENESIS_HASH
        self.prev_id: str | None = None
        self.recent: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self.count = 0

    def step(self, row: Any) -> ChainBreak | None:
        seq, record_id, prev_hash, stored = int(row[_SEQ]), str(row[_ID]), str(row[_PREV]), str(row[_N])
        if seq != self.expected:
            gap = f"{self.expected}" if seq == self.expected + 1 else f"{self.expected} to {seq - 1}"
            detail = f"seq {gap} absent (deleted?); the next record is seq {seq} ({record_id})"
            return ChainBreak(self.expected, None, "missing", detail)
        if prev_hash != self.prev_hash:
            earlier = self.recent.get(prev_hash)
            if earlier is not None and earlier[0] < seq - 1:
                first_inserted = earlier[0] + 1
                inserted_id = next((rid for s, rid in self.recent.values() if s == first_inserted), None)
                span = f"seq {first_inserted}" if first_inserted == seq - 1 else f"seq {first_inserted} to {seq - 1}"
                detail = f"seq {seq} ({record_id}) links to seq {earlier[0]}, so {span} came in between"
                return ChainBreak(first_inserted, inserted_id, "inserted", detail)
        computed = hashlib.sha256(prev_hash.encode() + canonical_values(row[:_N])).hexdigest()
        if computed != stored:
            return ChainBreak(seq, record_id, "altered", "its content does not match its hash")
        if prev_hash != self.prev_hash:
            return ChainBreak(
                seq - 1,
                self.prev_id,
                "replaced",
                f"seq {seq} ({record_id}) was chained to a different record at seq {seq - 1}",
            )
        self.recent[stored] = (seq, record_id)
        if len(self.recent) > _RECENT:
            self.recent.popitem(last=False)
        self.prev_hash, self.prev_id = stored, record_id
        if seq == self.anchor_seq:
            self.at_anchor = (stored, record_id)
        self.expected += 1
        self.count += 1
        return None


async def _head(db: Database) -> tuple[int, str]:
    async with db.engine.connect() as connection:
        row = (await connection.execute(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1))).first()
    return (int(row[0]), str(row[1])) if row is not None else (0, GENESIS_HASH)


async def _first_below_start(db: Database) -> tuple[int, str] | None:
    """The record with the lowest position below 1, if any: the chain starts at seq 1, so it was written around it
    (readers that list by time would show it; the walk from seq 1 would never meet it)."""
    first = select(func.min(RECORDS.c.seq)).where(RECORDS.c.seq < 1).scalar_subquery()
    async with db.engine.connect() as connection:
        row = (await connection.execute(select(RECORDS.c.seq, RECORDS.c.id).where(RECORDS.c.seq == first))).first()
    return (int(row[0]), str(row[1])) if row is not None else None


async def _first_beyond(db: Database) -> tuple[int, str] | None:
    """The first record after the head's current position, if any (one statement, so one consistent view)."""
    head_seq = select(HEAD.c.seq).where(HEAD.c.id == 1).scalar_subquery()
    first = select(func.min(RECORDS.c.seq)).where(RECORDS.c.seq > head_seq).scalar_subquery()
    async with db.engine.connect() as connection:
        row = (await connection.execute(select(RECORDS.c.seq, RECORDS.c.id).where(RECORDS.c.seq == first))).first()
    return (int(row[0]), str(row[1])) if row is not None else None


async def _batch(db: Database, after: int, until: int) -> list[Any]:
    """The records with ``after < seq <= until``: a range of positions, so every batch is one short index range
    (a ``LIMIT`` over an open range lets a planner without statistics sort the whole rest of the table)."""
    query = select(*_COLUMNS).where(RECORDS.c.seq > after, RECORDS.c.seq <= until).order_by(RECORDS.c.seq)
    async with db.engine.connect() as connection:
        return list((await connection.execute(query)).all())


async def _walk(
    db: Database, walker: _Walker, upto: int, batch_size: int, progress: ProgressCallback | None
) -> ChainBreak | None:
    """Feed the walker every record up to ``upto``; the next batch is read while this one is hashed."""
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

    first_break: ChainBreak | None = None
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
                    progress(walker.count, upto)
    if failure is not None:
        raise failure
    return first_break


async def verify_chain(
    db: Database,
    *,
    anchor: Anchor | None = None,
    batch_size: int = BATCH_SIZE,
    progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Recompute the whole chain up to the current head; check it against ``anchor`` (a signed checkpoint) too."""
    started = time.perf_counter()
    head_seq, head_hash = await _head(db)
    walker = _Walker(anchor.seq if anchor is not None else None)
    first_break = await _walk(db, walker, head_seq, batch_size, progress)
    last_seq = walker.expected - 1
    if first_break is None and last_seq < head_seq:
        first_break = ChainBreak(
            last_seq + 1, None, "missing", f"the head names seq {head_seq} but the last record is seq {last_seq}"
        )
    if first_break is None and last_seq == head_seq and walker.prev_hash != head_hash:
        first_break = ChainBreak(head_seq, walker.prev_id, "head_mismatch", "the chain head names another hash")
    if first_break is None:
        beyond = await _first_beyond(db)
        if beyond is not None:
            first_break = ChainBreak(
                beyond[0], beyond[1], "beyond_head", "a record lies after the chain head (written around the chain?)"
            )
    if first_break is None and anchor is not None:
        first_break = _against_anchor(anchor, last_seq, walker.at_anchor)
    below = await _first_below_start(db)
    if below is not None:  # the lowest position of all: it is the first bad record, whatever else was found
        first_break = ChainBreak(
            below[0], below[1], "before_start", "a record lies before the chain's first position (written around it?)"
        )
    return VerifyReport(
        records=walker.count,
        last_seq=last_seq,
        last_hash=walker.prev_hash,
        head_seq=head_seq,
        seconds=time.perf_counter() - started,
        first_break=first_break,
        anchor=anchor,
    )


def _against_anchor(anchor: Anchor, last_seq: int, at_anchor: tuple[str, str | None] | None) -> ChainBreak | None:
    if anchor.seq > last_seq:
        return ChainBreak(
            last_seq + 1,
            None,
            "truncated",
            f"the checkpoint was signed at seq {anchor.seq} but the chain ends at seq {last_seq}: "
            f"seq {last_seq + 1} to {anchor.seq} are missing",
        )
    if anchor.seq > 0 and (at_anchor is None or at_anchor[0] != anchor.hash):
        return ChainBreak(
            anchor.seq,
            at_anchor[1] if at_anchor else None,
            "checkpoint_mismatch",
            "the record at the checkpointed position is not the one that was signed (the chain was rewritten "
            "up to here)",
        )
    return None
