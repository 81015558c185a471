"""Recomputing the whole Merkle tree from the records, fast: aligned ranges of leaves scanned in parallel, the tree
built level by level, every stored tree head checked against it (RFC 9162 section 2.1; docs/audit.md, "Verifying").

:func:`scan_log` splits ``[0, size)`` into ranges of a power-of-two length and has each scanned by
:func:`server.audit.scan.scan_range`: in worker processes (one per core) for a large log, each with a read-only
connection of its own, or in this process through the engine for a small one. Each range reads one index range of
``leaf_index`` in a short statement of its own, so a long verify never holds a lock a writer needs. The database
builds each record's canonical JSON (SQLite's ``json_object``, PostgreSQL's ``to_json``, functions named in
``pg_catalog``); the hashing is Python's, and a record whose JSON does not hash to its leaf is recomputed exactly
(:mod:`server.audit.scan` says why that is sound). The ranges' subtrees join into the levels of the whole tree, and
the root of every tree head size is the fold of the perfect subtrees that tile it (O(log n) hashes each).
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


def _postgres_query() -> str:
    at = "pg_catalog.to_char(pg_catalog.timezone('UTC', at), 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    parts = []
    for position, name in enumerate(LEAF_FIELDS):
        key = ("{" if position == 0 else ",") + json.dumps(name) + ":"
        value = at if name == "at" else name
        parts.append(f"'{key}' || COALESCE(pg_catalog.to_json({value})::text, 'null')")
    body = " || ".join(parts) + " || '}'"
    return (
        "SELECT leaf_index, leaf_hash, hash IS NOT NULL AND leaf_hash IS NULL, "  # noqa: S608 - names are ours
        f"pg_catalog.convert_to({body}, 'UTF8') FROM audit_records "
        "WHERE leaf_index >= %s AND leaf_index < %s ORDER BY leaf_index"
    )


def _address(url: URL) -> str:
    """What a worker connects with: the SQLite file, or a libpq connection URI (password included, never logged)."""
    if url.get_backend_name() == "sqlite":
        return str(url.database or "")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


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


async def scan_log(
    db: Database,
    size: int,
    *,
    range_size: int = RANGE_SIZE,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScannedTree:
    """Scan leaves ``[0, size)`` (up to the first gap) and the subtrees inside each range; the caller settles the
    suspects, then calls :meth:`ScannedTree.complete`."""
    range_size = 1 << max(0, range_size.bit_length() - 1)  # a power of two: every range is aligned
    query = _sqlite_query() if db.is_sqlite else _postgres_query()
    ranges = [(start, min(start + range_size, size)) for start in range(0, size, range_size)]
    tree = ScannedTree(range_level=range_size.bit_length() - 1, levels=[bytearray()])
    count = _worker_count(db, size, workers)
    if count == 0:
        for start, end in ranges:
            going = _join(tree, await _scan_here(db, query, start, end))
            if progress is not None:
                progress(tree.size, size)
            if not going:
                break
    else:
        await _scan_in_processes(db, query, ranges, count, tree, size, progress)
    return tree


async def _scan_in_processes(
    db: Database,
    query: str,
    ranges: list[tuple[int, int]],
    count: int,
    tree: ScannedTree,
    size: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    dialect = "sqlite" if db.is_sqlite else "postgresql"
    address = _address(db.url)
    context = multiprocessing.get_context("spawn")  # never fork a process that runs an event loop and threads
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=count, mp_context=context)
    try:
        futures: list[concurrent.futures.Future[Any]] = [
            pool.submit(scan_range, dialect, address, query, start, end) for start, end in ranges
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
