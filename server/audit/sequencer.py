"""The sequencer: integrates committed audit records into the Merkle tree, in batches, outside the calls'
transactions (the integrate-later design of Trillian and Tessera; RFC 9162 section 2.1; docs/audit.md).

Each batch is one short transaction: read the latest tree head and its compact range, take every record still
without a position (``leaf_index IS NULL``) in ``seq`` order, give them the next leaf indices, store the perfect
subtrees they complete and a new tree head, signed with the log's Ed25519 key when the sequencer has it. A record is
never skipped: a transaction that took a lower ``seq`` but committed after higher ones is simply still unplaced at
the next batch, and becomes a later leaf. Positions are by commit visibility, not by ``seq``.

Exactly one sequencer works at a time. On PostgreSQL each serving replica runs :class:`Sequencer`; it holds a
session-level advisory lock (``pg_try_advisory_lock``, keyed by the log's schema) on a connection of its own while
active. When that process dies its connection closes, the lock is released, and the next replica to try takes over
within one interval. On
SQLite the sequencer runs in the serving process; SQLite's single writer serialises it with the calls anyway (and
two processes on one file would only take turns). Even two sequencers at once could not fork the tree: leaf indices
are unique and the tree head's size is a primary key, so the second one's batch rolls back.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from server.audit.chain import RECORDS, leaf_hash_of
from server.audit.checkpoint import sign_tree_head
from server.audit.merkle import CompactRange
from server.audit.tree import HEADS, NODES, StoredHead, stored_head
from server.storage.database import Database
from server.storage.prepared import Prepared, run, run_all, run_many

logger = logging.getLogger(__name__)

ADVISORY_LOCK_KEY = 4242015
"""``pg_try_advisory_lock`` key of the active sequencer (the schema lock is 4242001)."""
BATCH_LOCK_KEY = 4242016
"""``pg_advisory_xact_lock`` key every integration batch takes: batches never overlap, whoever runs them (the
active sequencer, ``mandate audit integrate``). Calls never take it."""

_THIS_LOG = "hashtext(coalesce(current_schema(), ''))"
"""The second half of both locks' keys: the log's schema. Advisory locks are per database, and one database may
hold several Mandate logs, one per schema (``search_path``); each log has a sequencer of its own (PostgreSQL
documentation, "Advisory Locks": the two-``int4`` key space never overlaps the ``bigint`` one)."""
_TRY_LEAD = text(f"SELECT pg_try_advisory_lock(:key, {_THIS_LOG})").bindparams(key=ADVISORY_LOCK_KEY)
_STEP_DOWN = text(f"SELECT pg_advisory_unlock(:key, {_THIS_LOG})").bindparams(key=ADVISORY_LOCK_KEY)
_BATCH_LOCK = Prepared(text(f"SELECT pg_advisory_xact_lock(:key, {_THIS_LOG})").bindparams(key=BATCH_LOCK_KEY))


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Integrated:
    """One batch: the tree grew from ``old_size`` to ``new_size`` leaves."""

    old_size: int
    new_size: int
    root_hash: str


# A batch's statements are prepared (server/storage/prepared/): on SQLite they run on the held writer connection,
# on the event loop's thread, not one hop each to aiosqlite's thread; on PostgreSQL the batch lock and the two reads
# go in one round trip. Twice a second for the life of every serving process, most batches at rest find nothing.
_PENDING = Prepared(
    select(RECORDS.c.seq, RECORDS.c.leaf_hash)
    .where(RECORDS.c.leaf_index.is_(None))
    .order_by(RECORDS.c.seq)
    .limit(bindparam("batch_size"))
)
_LATEST_HEAD = Prepared(select(HEADS).order_by(HEADS.c.size.desc()).limit(1))
_PLACE = Prepared(
    update(RECORDS)
    .where(RECORDS.c.seq == bindparam("b_seq"), RECORDS.c.leaf_index.is_(None))
    .values(leaf_index=bindparam("b_leaf"))
)
_ADD_NODES = Prepared(insert(NODES))
_ADD_HEAD = Prepared(insert(HEADS))
# PostgreSQL: the whole batch's writes in one statement (one round trip, however large the batch): the positions,
# the perfect subtrees completed, and the tree head, which is only written when every record read was placed.
_WRITE_BATCH_POSTGRES = text(
    "WITH placed AS ("
    " UPDATE audit_records AS r SET leaf_index = u.leaf"
    " FROM unnest(CAST(:seqs AS bigint[]), CAST(:leaves AS bigint[])) AS u(seq, leaf)"
    " WHERE r.seq = u.seq AND r.leaf_index IS NULL RETURNING 1), "
    "nodes AS ("
    " INSERT INTO audit_tree_nodes (level, idx, hash)"
    " SELECT * FROM unnest(CAST(:levels AS integer[]), CAST(:indices AS bigint[]), CAST(:hashes AS text[]))) "
    "INSERT INTO audit_tree_heads (size, root_hash, frontier, created_at, instance, signed) "
    "SELECT CAST(:size AS bigint), CAST(:root_hash AS text), CAST(:frontier AS text), "
    "CAST(:created_at AS timestamptz), CAST(:instance AS text), CAST(:signed AS text) "
    "WHERE (SELECT count(*) FROM placed) = CAST(:expected AS bigint) "
    "RETURNING size"
)


class PlacementError(RuntimeError):
    """A batch placed fewer records than it read: someone else placed them meanwhile; the batch rolls back."""


async def _place(
    session: AsyncSession,
    placements: list[tuple[int, int]],
    nodes: list[tuple[int, int, str]],
    head: dict[str, Any],
) -> None:
    """Give each record ``(seq, leaf_index)`` its position, store the perfect subtrees completed and the new tree
    head."""
    connection: AsyncConnection = await session.connection()
    if connection.dialect.name == "postgresql":
        seqs, leaves = [seq for seq, _ in placements], [leaf for _, leaf in placements]
        levels, indices, hashes = ([node[k] for node in nodes] for k in range(3))
        written = await connection.execute(
            _WRITE_BATCH_POSTGRES,
            {
                "seqs": seqs,
                "leaves": leaves,
                "levels": levels,
                "indices": indices,
                "hashes": hashes,
                "expected": len(placements),
                **head,
            },
        )
        if written.first() is None:
            raise PlacementError(f"placed fewer than the {len(placements)} records read")
        return
    await run_many(session, _PLACE, [{"b_seq": seq, "b_leaf": leaf} for seq, leaf in placements])
    await run_many(session, _ADD_NODES, [{"level": lv, "idx": ix, "hash": h} for lv, ix, h in nodes])
    await run(session, _ADD_HEAD, head)


async def _pending_and_head(session: AsyncSession, batch_size: int) -> tuple[list[Any], StoredHead | None]:
    """The records still without a position (``seq`` order, at most ``batch_size``) and the latest tree head; on
    PostgreSQL after taking the batch lock, all in one round trip."""
    reads = [(_PENDING, {"batch_size": batch_size}), (_LATEST_HEAD, None)]
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        _locked, pending, latest = await run_all(session, [(_BATCH_LOCK, None), *reads])
    else:
        pending, latest = await run_all(session, reads)
    row = latest.first()
    return pending.rows, stored_head(row) if row is not None else None


async def integrate_batch(
    db: Database,
    *,
    instance: str,
    key: Ed25519PrivateKey | None = None,
    batch_size: int = 10_000,
    clock: Callable[[], datetime] = utcnow,
) -> Integrated | None:
    """Integrate up to ``batch_size`` unplaced records; ``None`` when there were none."""

    async def work(session: AsyncSession) -> Integrated | None:
        pending, head = await _pending_and_head(session, batch_size)
        if not pending:
            return None
        legacy = [int(row.seq) for row in pending if row.leaf_hash is None]
        legacy_leaves: dict[int, bytes] = {}
        if legacy:  # records of the linear chain: their leaf is computed from their content
            connection: AsyncConnection = await session.connection()
            for row in await connection.execute(select(RECORDS).where(RECORDS.c.seq.in_(legacy))):
                legacy_leaves[int(row.seq)] = leaf_hash_of(dict(row._mapping))
        tree = CompactRange(head.size, list(head.frontier)) if head is not None else CompactRange()
        old_size = tree.size
        placements: list[tuple[int, int]] = []
        nodes: list[tuple[int, int, str]] = []
        for row in pending:
            seq = int(row.seq)
            leaf = legacy_leaves[seq] if row.leaf_hash is None else bytes.fromhex(row.leaf_hash)
            placements.append((seq, tree.size))
            nodes.extend((lv, ix, h.hex()) for lv, ix, h in tree.append(leaf))
        root = tree.root().hex()
        now = clock()
        signed = (
            json.dumps(sign_tree_head(key, size=tree.size, root_hash=root, instance=instance, now=now), sort_keys=True)
            if key is not None
            else None
        )
        new_head = {
            "size": tree.size,
            "root_hash": root,
            "frontier": ",".join(h.hex() for h in tree.hashes),
            "created_at": now,
            "instance": instance[:100],
            "signed": signed,
        }
        await _place(session, placements, nodes, new_head)
        return Integrated(old_size, tree.size, root)

    return await db.run_in_transaction(work)


async def integrate_all(db: Database, *, instance: str, key: Ed25519PrivateKey | None = None) -> list[Integrated]:
    """Integrate every record committed so far (for the CLI and tests)."""
    done: list[Integrated] = []
    while (batch := await integrate_batch(db, instance=instance, key=key)) is not None:
        done.append(batch)
    return done


class Sequencer:
    """The background loop of a serving process: become the active sequencer (or wait to), then integrate every
    ``interval`` seconds (at once again after a full batch)."""

    def __init__(
        self,
        db: Database,
        *,
        instance: str,
        key: Ed25519PrivateKey | None,
        interval: float = 0.5,
        batch_size: int = 10_000,
    ) -> None:
        self.db = db
        self.instance = instance
        self.key = key
        self.interval = interval
        self.batch_size = batch_size
        self.active = False
        self.activated = anyio.Event()
        """Set the first time this process becomes the active sequencer."""
        self.batches = 0

    async def _batch(self) -> Integrated | None:
        return await integrate_batch(self.db, instance=self.instance, key=self.key, batch_size=self.batch_size)

    async def _integrate_while_active(self) -> None:
        while True:
            # A batch starts every interval, whatever the last one took (not an interval after it ended): a record
            # waits at most one interval plus one batch.
            started = anyio.current_time()
            try:
                # A batch is short and is never abandoned half-way (a driver call cancelled mid-flight can strand its
                # connection): cancellation waits for it and lands on the sleep.
                with anyio.CancelScope(shield=True):
                    batch = await self._batch()
            except Exception:
                logger.exception("audit integration failed; retrying")
                batch = None
            if batch is not None:
                self.batches += 1
                if batch.new_size - batch.old_size >= self.batch_size:
                    # a backlog: the next batch at once, but after a turn of the event loop. On SQLite a batch
                    # runs on the loop's thread from start to end, so a drain of many full batches would
                    # otherwise serve no request until it ended.
                    await anyio.lowlevel.checkpoint()
                    continue
            await anyio.sleep(max(0.0, self.interval - (anyio.current_time() - started)))

    async def run(self) -> None:
        if self.db.is_sqlite:
            self.active = True
            self.activated.set()
            await self._integrate_while_active()
            return
        while True:
            try:
                async with self._leadership() as leading:
                    if leading:
                        self.active = True
                        self.activated.set()
                        logger.info("this process is the active audit sequencer")
                        async with anyio.create_task_group() as group:
                            group.start_soon(self._integrate_while_active)
                            await self._watch(leading)
                            group.cancel_scope.cancel()
            except Exception:
                logger.warning("audit sequencer lost its database connection; trying again", exc_info=True)
            self.active = False
            await anyio.sleep(self.interval)

    @contextlib.asynccontextmanager
    async def _leadership(self) -> AsyncIterator[AsyncConnection | None]:
        """A connection holding the sequencer's advisory lock, or ``None`` when another process holds it."""
        async with self.db.engine.connect() as connection:
            got = await connection.execute(_TRY_LEAD)
            leading = bool(got.scalar_one())
            await connection.commit()
            try:
                yield connection if leading else None
            finally:
                if leading:
                    with contextlib.suppress(Exception), anyio.CancelScope(shield=True):
                        await connection.execute(_STEP_DOWN)
                        await connection.commit()

    async def _watch(self, connection: AsyncConnection) -> None:
        """Hold the lock while the connection lives; return (to step down) when it breaks."""
        while True:
            await anyio.sleep(max(self.interval, 1.0))
            await connection.execute(text("SELECT 1"))
            await connection.commit()


@contextlib.asynccontextmanager
async def sequencing(sequencer: Sequencer) -> AsyncIterator[Sequencer]:
    """Run ``sequencer`` in the background for the lifetime of the block."""
    async with anyio.create_task_group() as group:
        group.start_soon(sequencer.run)
        try:
            yield sequencer
        finally:
            group.cancel_scope.cancel()


async def integrate_now(
    db: Database, *, instance: str, key: Ed25519PrivateKey | None = None
) -> list[Integrated] | None:
    """Integrate everything pending, once, from a command: unless another process is the active sequencer (it will
    integrate within its interval), in which case ``None``."""
    if db.is_sqlite:
        return await integrate_all(db, instance=instance, key=key)
    async with db.engine.connect() as connection:
        got = await connection.execute(_TRY_LEAD)
        leading = bool(got.scalar_one())
        await connection.commit()
        if not leading:
            return None
        try:
            return await integrate_all(db, instance=instance, key=key)
        finally:
            await connection.execute(_STEP_DOWN)
            await connection.commit()
