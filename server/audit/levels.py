"""Recomputing the whole Merkle tree from the records, fast: aligned ranges of leaves scanned in parallel, the tree
built level by level, every stored tree head checked against it (RFC 9162 section 2.1; docs/audit.md, "Verifying").

:func:`scan_log` splits ``[0, size)`` into ranges of a power-of-two length, each read in a short statement of its own
(one index range of ``leaf_index``), so a long verify never holds a lock a writer needs. The database builds each
record's canonical JSON from its columns (SQLite's ``json_object``; PostgreSQL's ``to_json`` per column, functions
named in ``pg_catalog``); a record whose JSON does not hash to its leaf is recomputed exactly by the caller
(:mod:`server.audit.scan` says why that is sound). Where the hashing happens follows where the CPU is:

- SQLite runs in the reading process, so a large log is read by worker processes, one per core
  (:func:`server.audit.scan.scan_range`), each with a read-only connection of its own, and hashed there.
- PostgreSQL builds the JSON in its own server processes, and that is most of the cost (about 10 us a record, against
  about 4 us to hash it and carry it to Python). So the server hashes it too (``sha256``, PostgreSQL 11 and later),
  compares it with the stored leaf hash, and hands over one row per range: how many leaves, the first and last
  index, whether every one matched, and the leaf hashes concatenated. The ranges run on several connections at once
  (the server's processes are the workers), and this process only builds the levels above the leaves. A range
  whose summary shows anything else (a gap, a duplicate position, a legacy record, a mismatch) is read again row by
  row, hashed here, and settled as on SQLite.

The ranges' subtrees join into the levels of the whole tree, and the root of every tree head size is the fold of the
perfect subtrees that tile it (O(log n) hashes each).
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from sqlalchemy.engine import URL

from server.audit.chain import LEAF_FIELDS
from server.audit.merkle import EMPTY_ROOT, fold, perfect_subtrees
from server.audit.scan import RangeScan, build_levels, scan_range, scan_rows
from server.storage.database import Database

PARALLEL_FROM = 200_000
"""Logs this large are scanned in worker processes; smaller ones in this process (a worker costs a start-up)."""
RANGE_SIZE = 1 << 14


def _sqlite_query() -> str:
    at = (
        "CASE WHEN typeof(at) = 'text' AND length(at) = 26 AND substr(at, 11, 1) = ' ' "
        "THEN substr(at, 1, 10) || 'T' || substr(at, 12) || 'Z' END"
    )
    pairs = ", ".join(f"'{name}', {at if name == 'at' else name}" for name in LEAF_FIELDS)
    return (
        "SELECT leaf_index, leaf_hash, hash IS NOT NULL AND leaf_hash IS NULL, "  # noqa: S608 - names are ours
        f"CAST(json_object({pairs}) AS BLOB) FROM audit_records "
        "WHERE leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index"
    )


_POSTGRES_AT = (
    # RFC 3339 UTC with microseconds; only for years 1000 to 9999 AD: 'YYYY' writes 2025 BC as 2025, so a time moved
    # to another era would otherwise give the same text. Outside that range the JSON has null: a suspect.
    "CASE WHEN at >= '1000-01-01 00:00:00+00' AND at < '10000-01-01 00:00:00+00' "
    "THEN pg_catalog.to_char(pg_catalog.timezone('UTC', at), 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') END"
)


def _postgres_json() -> str:
    """The record's canonical JSON, as text, built from its columns in the canonical key order."""
    parts = []
    for position, name in enumerate(LEAF_FIELDS):
        key = ("{" if position == 0 else ",") + json.dumps(name) + ":"
        value = _POSTGRES_AT if name == "at" else name
        parts.append(f"'{key}', COALESCE(pg_catalog.to_json({value})::text, 'null')")
    return "pg_catalog.concat(" + ", ".join(parts) + ", '}')"  # one allocation, not one per ||


def _postgres_query() -> str:
    """Row by row, as on SQLite: for a range whose summary did not hold."""
    return (
        "SELECT leaf_index, leaf_hash, hash IS NOT NULL AND leaf_hash IS NULL, "  # noqa: S608 - names are ours
        f"pg_catalog.convert_to({_postgres_json()}, 'UTF8') FROM audit_records "
        "WHERE leaf_index >= %s AND leaf_index < %s ORDER BY leaf_index"
    )


def _postgres_summary_query() -> str:
    """One row per range: leaves, distinct positions, first and last, whether all matched, the leaf hashes."""
    data = f"pg_catalog.byteacat('\\x00'::bytea, pg_catalog.convert_to({_postgres_json()}, 'UTF8'))"
    matched = "COALESCE(NOT legacy AND pg_catalog.encode(leaf, 'hex') = leaf_hash, false)"
    return (
        "SELECT pg_catalog.count(*), pg_catalog.count(DISTINCT leaf_index), "  # noqa: S608 - names are ours
        "pg_catalog.min(leaf_index), pg_catalog.max(leaf_index), "
        f"COALESCE(pg_catalog.bool_and({matched}), false), "
        "pg_catalog.string_agg(leaf, ''::bytea ORDER BY leaf_index) "
        "FROM (SELECT leaf_index, leaf_hash, hash IS NOT NULL AND leaf_hash IS NULL AS legacy, "
        f"pg_catalog.sha256({data}) AS leaf FROM audit_records WHERE leaf_index >= %s AND leaf_index < %s "
        "OFFSET 0) AS leaves"  # OFFSET 0: the leaf hash computed once per row, not once per aggregate using it
    )


_POSTGRES_QUERY = _postgres_query()
_SUMMARY_QUERY = _postgres_summary_query()


def _sqlite_path(url: URL) -> str:
    """The SQLite file a worker opens."""
    return str(url.database or "")


@dataclass(slots=True)
class ScannedTree:
    """The leaves scanned, up to the first gap, and the levels of the tree above them."""

    range_level: int = 0
    """The level of a whole range's subtree: the levels above it are built by :meth:`complete`."""
    levels: list[bytearray] = field(default_factory=list[bytearray])
    suspects: list[int] = field(default_factory=list[int])
    first_merkle: int | None = None
    gap: tuple[int, int | None] | None = None

    @property
    def size(self) -> int:
        return len(self.levels[0]) // 32 if self.levels else 0

    def leaf(self, index: int) -> bytes:
        return bytes(self.levels[0][index * 32 : index * 32 + 32])

    def set_leaf(self, index: int, value: bytes) -> None:
        self.levels[0][index * 32 : index * 32 + 32] = value

    def truncate(self, size: int) -> None:
        """Keep the first ``size`` leaves and the subtrees inside them."""
        for level, hashes in enumerate(self.levels):
            del hashes[(size >> level) * 32 :]

    def rebuild(self, start: int, end: int) -> None:
        """Recompute the subtrees inside the aligned range ``[start, end)`` after leaves in it were replaced."""
        built = build_levels(bytes(self.levels[0][start * 32 : end * 32]))
        for level in range(1, len(built)):
            self.levels[level][(start >> level) * 32 : (end >> level) * 32] = built[level]

    def complete(self) -> None:
        """Build the levels above the ranges' own, up to the root."""
        del self.levels[self.range_level + 1 :]
        level = len(self.levels) - 1
        while len(self.levels[level]) >= 64:
            self.levels.append(bytearray(build_levels(bytes(self.levels[level]))[1]))
            level += 1

    def root(self, size: int) -> bytes:
        """``MTH(D[size])`` from the stored levels (RFC 9162 section 2.1.1)."""
        if size == 0:
            return EMPTY_ROOT
        tiles = perfect_subtrees(0, size)
        return fold([bytes(self.levels[level][index * 32 : index * 32 + 32]) for level, index in tiles])


def _join(tree: ScannedTree, part: RangeScan) -> bool:
    """Append one range's leaves and subtrees; False once a range had a gap (nothing after it counts)."""
    for level, hashes in enumerate(part.levels):
        if level == len(tree.levels):
            tree.levels.append(bytearray())
        tree.levels[level] += hashes
    tree.suspects.extend(part.suspects)
    if tree.first_merkle is None:
        tree.first_merkle = part.first_merkle
    if part.gap is not None:
        tree.gap = part.gap
        return False
    return True


def _worker_count(db: Database, size: int, workers: int | None) -> int:
    if workers is not None:
        return max(0, workers)
    if size < PARALLEL_FROM or (db.is_sqlite and (db.url.database or ":memory:") == ":memory:"):
        return 0
    return min(os.cpu_count() or 1, 4)


async def _scan_here(db: Database, query: str, start: int, end: int) -> RangeScan:
    async with db.engine.connect() as connection:
        rows = (await connection.exec_driver_sql(query, (start, end))).all()
    return scan_rows(start, end, rows)


async def _scan_summarised(db: Database, start: int, end: int) -> RangeScan:
    """PostgreSQL: the server hashes the range and sums it up; read row by row only when that shows a problem."""
    async with db.engine.connect() as connection:
        summary = (await connection.exec_driver_sql(_SUMMARY_QUERY, (start, end))).one()
        count, distinct, first, last, matched, leaves = tuple(summary)
        if matched and count == distinct == end - start and (first, last) == (start, end - 1) and leaves is not None:
            leaves = bytes(leaves)
            if len(leaves) == 32 * (end - start):
                return RangeScan(start, build_levels(leaves), [], start, None)
        rows = (await connection.exec_driver_sql(_POSTGRES_QUERY, (start, end))).all()
    return scan_rows(start, end, rows)


async def scan_log(
    db: Database,
    size: int,
    *,
    range_size: int = RANGE_SIZE,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScannedTree:
    """Scan leaves ``[0, size)`` (up to the first gap) and the subtrees inside each range; the caller settles the
    suspects, then calls :meth:`ScannedTree.complete`. ``workers``: processes on SQLite, connections scanning at
    once on PostgreSQL."""
    range_size = 1 << max(0, range_size.bit_length() - 1)  # a power of two: every range is aligned
    ranges = [(start, min(start + range_size, size)) for start in range(0, size, range_size)]
    tree = ScannedTree(range_level=range_size.bit_length() - 1, levels=[bytearray()])
    count = _worker_count(db, size, workers)
    if not db.is_sqlite:
        await _scan_on_connections(db, ranges, max(1, count), tree, size, progress)
    elif count == 0:
        query = _sqlite_query()
        for start, end in ranges:
            going = _join(tree, await _scan_here(db, query, start, end))
            if progress is not None:
                progress(tree.size, size)
            if not going:
                break
    else:
        await _scan_in_processes(db, ranges, count, tree, size, progress)
    return tree


async def _scan_on_connections(
    db: Database,
    ranges: list[tuple[int, int]],
    count: int,
    tree: ScannedTree,
    size: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Up to ``count`` ranges in flight at once, each on a connection of its own (the next starts as soon as one
    ends, so the server's processes never wait for the slowest of a group), joined in order. After a gap the ranges
    not started yet are skipped; the ones in flight finish (a statement is never abandoned half-way)."""
    limiter = anyio.CapacityLimiter(count)
    parts: list[RangeScan | None] = [None] * len(ranges)
    finished = [anyio.Event() for _ in ranges]
    stopped = False

    async def scan(slot: int, start: int, end: int) -> None:
        try:
            async with limiter:
                if not stopped:
                    parts[slot] = await _scan_summarised(db, start, end)
        finally:
            finished[slot].set()

    async with anyio.create_task_group() as group:
        for slot, (start, end) in enumerate(ranges):
            group.start_soon(scan, slot, start, end)
        for slot in range(len(ranges)):
            await finished[slot].wait()
            part, parts[slot] = parts[slot], None
            assert part is not None
            going = _join(tree, part)
            if progress is not None:
                progress(tree.size, size)
            if not going:
                stopped = True
                break


async def _scan_in_processes(
    db: Database,
    ranges: list[tuple[int, int]],
    count: int,
    tree: ScannedTree,
    size: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """SQLite: worker processes, each reading the file on a read-only connection of its own."""
    path, query = _sqlite_path(db.url), _sqlite_query()
    context = multiprocessing.get_context("spawn")  # never fork a process that runs an event loop and threads
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=count, mp_context=context)
    try:
        futures: list[concurrent.futures.Future[Any]] = [
            pool.submit(scan_range, path, query, start, end) for start, end in ranges
        ]
        for future in futures:
            part: RangeScan = await anyio.to_thread.run_sync(future.result)
            going = _join(tree, part)
            if progress is not None:
                progress(tree.size, size)
            if not going:
                break
    finally:
        with anyio.CancelScope(shield=True):  # the workers finish the range in hand and exit
            await anyio.to_thread.run_sync(lambda: pool.shutdown(wait=True, cancel_futures=True))
