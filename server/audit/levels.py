"""Recomputing the whole Merkle tree from the records, fast: aligned ranges of leaves scanned in parallel, the tree
built level by level, every stored tree head checked against it (RFC 9162 section 2.1; docs/audit.md, "Verifying").

:func:`scan_log` splits ``[0, size)`` into ranges of a power-of-two length, each read in a short statement of its own
(one index range of ``leaf_index``), so a long verify never holds a lock a writer needs. The database builds each
record's canonical JSON from its columns (SQLite's ``json_object``; on PostgreSQL the keys as constants and each
text value escaped by ``replace``, functions named in ``pg_catalog``); a record whose JSON does not hash to its
leaf is recomputed exactly by the caller (:mod:`server.audit.scan` says why that is sound). Where the hashing happens
follows where the CPU is:

- SQLite runs in the reading process, so a large log is read by worker processes, one per core
  (:func:`server.audit.scan.scan_range`), each with a read-only connection of its own, and hashed there.
- PostgreSQL builds the JSON in its own server processes, and that is most of the cost. So the server hashes it too
  (``sha256``, PostgreSQL 11 and later), compares it with the stored leaf hash, and hands over one row per range:
  how many leaves, distinct positions, the first and last index, the first leaf of the Merkle log, the positions
  whose leaf did not match (the suspects, settled exactly by the caller), and the leaf hashes concatenated. A
  record the fast form does not match is hashed again, in the server, in the ``to_json`` form before it is called
  a suspect. The
  ranges run on several connections at once (the server's processes are the workers), and this process only builds
  the levels above the leaves. A range whose summary shows positions absent or repeated is read again row by row,
  hashed here, and settled as on SQLite. ``to_json`` per column looks up each column's type for every value, and
  that form costs the server about twice this one a record (BENCHMARKS.md); it is now used only when a content
  column does not have the model's type (:func:`_postgres_queries`): ``replace`` takes text, and a ``char(n)``
  column would reach it with its padding trimmed.

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
from sqlalchemy import Text
from sqlalchemy.engine import URL

from server.audit.chain import LEAF_FIELDS, RECORDS
from server.audit.merkle import EMPTY_ROOT, fold, perfect_subtrees
from server.audit.scan import ZERO, RangeScan, build_levels, scan_range, scan_rows
from server.storage.database import Database

PARALLEL_FROM = 200_000
"""Logs this large are scanned in worker processes; smaller ones in this process (a worker costs a start-up)."""
RANGE_SIZE = 1 << 14
POSTGRES_CONNECTIONS = 4
"""Ranges in flight at once on PostgreSQL for a large log: its server processes do the work, wherever that server
runs, and while this process joins one range's leaves the others keep the server busy (measured on 2 cores: 2
connections 9.4-9.6 s over 1,000,000 records, 4 connections 7.6-8.3 s; BENCHMARKS.md)."""


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
    # to another era would otherwise give the same text. Outside that range the JSON has null (or is null): a suspect.
    "CASE WHEN at >= '1000-01-01 00:00:00+00' AND at < '10000-01-01 00:00:00+00' "
    "THEN pg_catalog.to_char(pg_catalog.timezone('UTC', at), 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') END"
)


def _literal(text: str) -> str:
    """An SQL string literal in the ``E''`` form: what a backslash in it means depends on no server setting."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _postgres_typed_json() -> str:
    """The record's canonical JSON, as text, built from its columns in the canonical key order with ``to_json`` per
    column: faithful to whatever type a column has (the form used when the table's types are not the model's)."""
    parts = []
    for position, name in enumerate(LEAF_FIELDS):
        key = ("{" if position == 0 else ",") + json.dumps(name) + ":"
        value = _POSTGRES_AT if name == "at" else name
        parts.append(f"'{key}', COALESCE(pg_catalog.to_json({value})::text, 'null')")
    return "pg_catalog.concat(" + ", ".join(parts) + ", '}')"  # one allocation, not one per ||


_QUOTES_ESCAPED = frozenset(name for name in LEAF_FIELDS if isinstance(RECORDS.c[name].type, Text))
"""The columns whose quotes the server escapes: free text and JSON text, where quotes are common. A quote in any
other column leaves it unescaped, which no canonical form matches: that record is a suspect (rare, and sound)."""


def _json_string(column: str) -> str:
    """``column`` as the body of a JSON string: ``\\`` doubled always, ``"`` escaped in the text columns. Control
    characters are left as they are, as are quotes elsewhere: the text then matches no canonical form (which escapes
    both), and the record is a suspect, recomputed exactly."""
    escaped = f"pg_catalog.replace({column}, {_literal(chr(92))}, {_literal(chr(92) * 2)})"
    if column in _QUOTES_ESCAPED:
        escaped = f"pg_catalog.replace({escaped}, {_literal(chr(34))}, {_literal(chr(92) + chr(34))})"
    return escaped


def _joined(parts: list[str]) -> str:
    """``parts`` concatenated as a balanced tree of ``textcat``: each byte is copied about log2(len) times, not once
    per part after it as a chain of ``||`` would."""
    if len(parts) == 1:
        return parts[0]
    middle = len(parts) // 2
    return f"pg_catalog.textcat({_joined(parts[:middle])}, {_joined(parts[middle:])})"


def _postgres_json() -> str:
    """The record's canonical JSON, as text, for a table whose columns have the model's types (text, ``bigint``,
    ``timestamptz``): the keys and punctuation as constants, each text value escaped by ``replace``
    (:func:`_json_string`), a nullable one as ``"..."`` or ``null``. No per-column type lookup, which is what
    ``to_json`` costs.

    Whenever the text equals the canonical form the record was committed with, the record is unchanged. Each key
    comes with its ``,"key":`` (or ``{"key":``), which a canonical form holds only where that key is (a quote after
    a comma never occurs inside a JSON string, where every quote follows a backslash), so an equal text holds each
    value where the canonical form holds it. Backslashes are doubled, so a quote the server left unescaped follows
    an even run of backslashes, while in a canonical string every quote follows an odd one; and the canonical form
    escapes every control character. So a value holding an unescaped quote or a raw control character never equals
    its canonical counterpart, and what can equal it is the JSON escape of the column's text, which decodes to that
    text alone. A value that needs such an escape, or a ``NOT NULL`` column found null (the whole text is then
    null), only makes the record a suspect."""
    parts: list[str] = []
    pending = ""
    for position, name in enumerate(LEAF_FIELDS):
        key = pending + ("{" if position == 0 else ",") + json.dumps(name) + ":"
        if name == "at":
            parts += [_literal(key + '"'), _POSTGRES_AT]
            pending = '"'
        elif name == "latency_us":
            parts += [_literal(key), "CAST(latency_us AS pg_catalog.text)"]
            pending = ""
        elif not RECORDS.c[name].nullable:
            parts += [_literal(key + '"'), _json_string(name)]
            pending = '"'
        else:  # the key inside each branch: one piece fewer to join
            quoted = f"pg_catalog.textcat(pg_catalog.textcat({_literal(key + chr(34))}, {_json_string(name)}), E'\"')"
            parts.append(f"COALESCE({quoted}, {_literal(key + 'null')})")
            pending = ""
    parts.append(_literal(pending + "}"))
    return _joined(parts)


def _expected_type(name: str) -> set[str]:
    if name == "at":
        return {"timestamp with time zone"}
    if name == "latency_us":
        return {"bigint"}
    return {"text", "character varying"}


_COLUMN_TYPES_QUERY = (
    "SELECT a.attname, pg_catalog.format_type(a.atttypid, NULL) FROM pg_catalog.pg_attribute a "
    "WHERE a.attrelid = CAST('audit_records' AS pg_catalog.regclass) AND a.attnum > 0 AND NOT a.attisdropped"
)


def _postgres_query(data: str) -> str:
    """Row by row, as on SQLite: for a range whose summary did not hold."""
    return (
        "SELECT leaf_index, leaf_hash, hash IS NOT NULL AND leaf_hash IS NULL, "  # noqa: S608 - names are ours
        f"pg_catalog.convert_to({data}, 'UTF8') FROM audit_records "
        "WHERE leaf_index >= %s AND leaf_index < %s ORDER BY leaf_index"
    )


def _leaf(data: str) -> str:
    return f"pg_catalog.sha256(pg_catalog.byteacat(E'\\\\x00'::bytea, pg_catalog.convert_to({data}, 'UTF8')))"


def _postgres_summary_query(*forms: str) -> str:
    """One row per range, in one pass over it: leaves, distinct positions, first and last, the first leaf of the
    Merkle log, the positions whose leaf did not match (suspects), and the leaf hashes (32 zero bytes where none).

    ``forms``: forms of the record's JSON, tried in order; the next is built and hashed only for a record whose leaf
    hash the ones before did not match (so a value the fast form leaves unescaped costs the server one more form, not
    this process an exact recomputation; any form matching is sound on its own). A record's leaf is its stored leaf
    hash once a form hashes to it (the two are then equal: the stored one is decoded, not the hash carried through a
    subquery), else null, and a null leaf is a suspect; a legacy chain record has no leaf hash, so it always is one.
    The stored hash is decoded only after a form hashed to it, so it is valid hexadecimal by then."""
    tried = " ".join(
        f"WHEN pg_catalog.encode({_leaf(form)}, 'hex') = leaf_hash THEN pg_catalog.decode(leaf_hash, 'hex')"
        for form in forms
    )
    zero = "E'\\\\x" + "00" * 32 + "'::bytea"
    return (
        "SELECT pg_catalog.count(*), pg_catalog.count(DISTINCT leaf_index), "  # noqa: S608 - names are ours
        "pg_catalog.min(leaf_index), pg_catalog.max(leaf_index), "
        "pg_catalog.min(leaf_index) FILTER (WHERE NOT legacy), "
        "pg_catalog.array_agg(leaf_index) FILTER (WHERE leaf IS NULL), "
        f"pg_catalog.string_agg(COALESCE(leaf, {zero}), ''::bytea ORDER BY leaf_index) "
        "FROM (SELECT leaf_index, hash IS NOT NULL AND leaf_hash IS NULL AS legacy, "
        f"CASE WHEN leaf_hash IS NULL THEN NULL {tried} END AS leaf "
        "FROM audit_records WHERE leaf_index >= %s AND leaf_index < %s OFFSET 0) AS leaves"
        # OFFSET 0: each leaf computed once, not once per aggregate that reads it
    )


@dataclass(frozen=True, slots=True)
class _PostgresQueries:
    summary: str
    rows: str


_FAST = _PostgresQueries(
    _postgres_summary_query(_postgres_json(), _postgres_typed_json()), _postgres_query(_postgres_json())
)
_TYPED = _PostgresQueries(_postgres_summary_query(_postgres_typed_json()), _postgres_query(_postgres_typed_json()))


async def _postgres_queries(db: Database) -> _PostgresQueries:
    """The fast form when every content column has the model's type, else the form that follows each column's type
    (a column altered to, say, ``char(n)`` would reach ``replace`` with its padding trimmed)."""
    async with db.engine.connect() as connection:
        columns: list[Any] = list(await connection.exec_driver_sql(_COLUMN_TYPES_QUERY))
    found = {str(name): str(kind) for name, kind in columns}
    typed = all(found.get(name) in _expected_type(name) for name in LEAF_FIELDS)
    return _FAST if typed else _TYPED


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
    return min(os.cpu_count() or 1, 4) if db.is_sqlite else POSTGRES_CONNECTIONS


async def _scan_here(db: Database, query: str, start: int, end: int) -> RangeScan:
    async with db.engine.connect() as connection:
        rows = (await connection.exec_driver_sql(query, (start, end))).all()
    return scan_rows(start, end, rows)


async def _scan_summarised(db: Database, queries: _PostgresQueries, start: int, end: int) -> RangeScan:
    """PostgreSQL: the server hashes the range and sums it up, suspects named; read row by row only when positions
    are absent or repeated."""
    async with db.engine.connect() as connection:
        summary = (await connection.exec_driver_sql(queries.summary, (start, end))).one()
        count, distinct, first, last, first_merkle, suspects, leaves = tuple(summary)
        if count == distinct == end - start and (first, last) == (start, end - 1) and leaves is not None:
            hashes = bytearray(leaves)
            if len(hashes) == 32 * (end - start):
                suspected = sorted(int(index) for index in suspects or ())
                for index in suspected:  # their placeholder: 32 zero bytes, as scan_rows leaves it
                    hashes[(index - start) * 32 : (index - start + 1) * 32] = ZERO
                merkle = int(first_merkle) if first_merkle is not None else None
                return RangeScan(start, build_levels(bytes(hashes)), suspected, merkle, None)
        rows = (await connection.exec_driver_sql(queries.rows, (start, end))).all()
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
    queries = await _postgres_queries(db)
    parts: list[RangeScan | None] = [None] * len(ranges)
    finished = [anyio.Event() for _ in ranges]
    stopped = False

    async def scan(slot: int, start: int, end: int) -> None:
        try:
            async with limiter:
                if not stopped:
                    parts[slot] = await _scan_summarised(db, queries, start, end)
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
