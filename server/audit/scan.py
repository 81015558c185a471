"""Scanning one aligned range of leaves for ``mandate audit verify``: recompute each record's leaf hash and the
perfect subtrees of the range (RFC 9162 section 2.1.1; docs/audit.md, "Verifying").

Standard library only, so a worker process starts in milliseconds. The query (:mod:`server.audit.levels`) has the
database hand over each integrated record as ``(leaf_index, leaf_hash, is_legacy, canonical JSON as UTF-8)``; the JSON
is built by the database from the record's columns in the canonical key order. Python then only hashes: a leaf is
``SHA-256(0x00 || text)``, and it must equal the leaf hash the record was committed with.

Why that is sound: the text is a JSON encoding of the record's current content (distinct contents give distinct
texts), or holds something no canonical form holds (on PostgreSQL a raw control character, which the canonical form
always escapes; a null where a value must be), and JSON decodes to one value only. If its hash equals the committed
leaf hash, the text *is* the canonical form the writer hashed, so the content is unchanged. A record whose text does
not match is not declared altered here: it is a *suspect*, and the caller recomputes it exactly, from its columns,
with the writer's own canonical form (:func:`server.audit.chain.leaf_hash_of`). The fast path can therefore only
ever be slower, never wrong: a legitimate record that the database happens to encode differently (an escape, a
time stored in another format) is settled by the exact check, and an edited one fails it. Legacy chain records and
records without a leaf hash are always suspects.

The range starts at a multiple of its size, a power of two, so every subtree computed inside it is a perfect
subtree of the whole tree, and the caller only joins ranges.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

ZERO = bytes(32)


@dataclass(slots=True)
class RangeScan:
    """What one range of leaves ``[start, start + len(levels[0]) // 32)`` held, up to its first gap."""

    start: int
    levels: list[bytes]
    """``levels[k]``: the hashes of the perfect subtrees of level ``k`` inside the range, 32 bytes each."""
    suspects: list[int] = field(default_factory=list[int])
    """Leaf indices to recompute exactly (their placeholder in ``levels[0]`` is 32 zero bytes)."""
    first_merkle: int | None = None
    """The first leaf index holding a record of the Merkle log (not of the legacy chain)."""
    gap: tuple[int, int | None] | None = None
    """``(first absent leaf index, next present one in the range or None)`` when leaves are missing."""

    @property
    def size(self) -> int:
        return len(self.levels[0]) // 32


_LEAF = hashlib.sha256(b"\x00")
_NODE = hashlib.sha256(b"\x01")


def build_levels(leaves: bytes) -> list[bytes]:
    """Every level of perfect subtrees above ``leaves`` (concatenated 32-byte hashes), bottom first."""
    node = _NODE
    levels = [leaves]
    level = leaves
    while len(level) >= 64:
        view = memoryview(level)
        hashes: list[bytes] = []
        append = hashes.append
        for i in range(0, len(level) - 63, 64):
            h = node.copy()  # the prefix already hashed: no 65-byte buffer built per node
            h.update(view[i : i + 64])
            append(h.digest())
        level = b"".join(hashes)
        levels.append(level)
    return levels


def scan_rows(start: int, end: int, rows: Iterable[Sequence[Any]]) -> RangeScan:
    """Hash the rows of leaves ``[start, end)``, given in leaf order as ``(leaf_index, leaf_hash, legacy, json)``
    (``json`` as UTF-8 bytes). The rows are hashed as they arrive, while each is still in the cache."""
    leaf = _LEAF
    hashes: list[bytes] = []
    append = hashes.append
    suspects: list[int] = []
    first_merkle: int | None = None
    gap: tuple[int, int | None] | None = None
    expected = start
    for index, stored, legacy, text in rows:
        if index != expected:
            gap = (expected, int(index))
            break
        if legacy:
            suspects.append(index)
            append(ZERO)
        else:
            if first_merkle is None:
                first_merkle = index
            digest = ZERO
            if text is not None:
                h = leaf.copy()  # the prefix already hashed: no copy of a kilobyte record per leaf
                h.update(text)
                digest = h.digest()
            if stored is None or digest.hex() != stored:
                suspects.append(index)
                append(ZERO)
            else:
                append(digest)
        expected += 1
    if gap is None and expected < end:
        gap = (expected, None)
    return RangeScan(start, build_levels(b"".join(hashes)), suspects, first_merkle, gap)


_CONNECTIONS: dict[str, sqlite3.Connection] = {}


def _connection(path: str) -> sqlite3.Connection:
    """This worker's read-only connection to the log file, opened once."""
    connection = _CONNECTIONS.get(path)
    if connection is None:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        connection.execute("PRAGMA mmap_size = 17179869184")  # read pages in place, not through read(2)
        _CONNECTIONS[path] = connection
    return connection


def scan_range(path: str, query: str, start: int, end: int) -> RangeScan:
    """Read and hash leaves ``[start, end)`` of the SQLite log at ``path`` in this process (a worker's entry
    point)."""
    return scan_rows(start, end, _connection(path).execute(query, (start, end)))
