"""The Merkle tree as stored: tree heads, perfect subtrees, and the proofs computed from them (RFC 9162 sections
2.1.3 and 2.1.4; docs/audit.md).

The sequencer stores every perfect subtree of level >= 1 once it is complete (``audit_tree_nodes``); level 0 is a
record's ``leaf_hash``. Any range a proof needs is tiled by at most ~log2(n) perfect subtrees
(:func:`server.audit.merkle.perfect_subtrees`), so a proof is one query for its O(log n) tiles and a few dozen
hashes: milliseconds at any size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel

from server.audit.chain import RECORDS, leaf_hash_of
from server.audit.merkle import (
    RangeHash,
    consistency_path,
    fold,
    inclusion_path,
    needed_ranges,
    perfect_subtrees,
)
from server.audit.models import AuditTreeHead, AuditTreeNode

NODES: Table = SQLModel.metadata.tables[AuditTreeNode.__tablename__]
HEADS: Table = SQLModel.metadata.tables[AuditTreeHead.__tablename__]


class TreeError(RuntimeError):
    """The stored tree cannot answer: a subtree or a leaf it needs is missing (the log was tampered with)."""


@dataclass(frozen=True, slots=True)
class StoredHead:
    size: int
    root_hash: str
    frontier: tuple[bytes, ...]
    created_at: datetime
    instance: str
    signed: str | None

    @property
    def root(self) -> bytes:
        return bytes.fromhex(self.root_hash)


def stored_head(row: Any) -> StoredHead:
    """A tree head from its row (any row with the columns of ``audit_tree_heads`` as attributes)."""
    frontier = tuple(bytes.fromhex(h) for h in str(row.frontier).split(",") if h)
    return StoredHead(int(row.size), str(row.root_hash), frontier, row.created_at, str(row.instance), row.signed)


async def latest_head(connection: AsyncConnection) -> StoredHead | None:
    row = (await connection.execute(select(HEADS).order_by(HEADS.c.size.desc()).limit(1))).first()
    return stored_head(row) if row is not None else None


async def head_of_size(connection: AsyncConnection, size: int) -> StoredHead | None:
    row = (await connection.execute(select(HEADS).where(HEADS.c.size == size))).first()
    return stored_head(row) if row is not None else None


async def heads(connection: AsyncConnection) -> list[StoredHead]:
    """Every stored tree head, smallest first."""
    return [stored_head(row) for row in await connection.execute(select(HEADS).order_by(HEADS.c.size))]


async def subtree_hashes(connection: AsyncConnection, tiles: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The stored hash of each perfect subtree ``(level, index)`` asked for (leaves from their records)."""
    found: dict[tuple[int, int], bytes] = {}
    leaves = sorted(index for level, index in tiles if level == 0)
    if leaves:
        legacy: list[int] = []
        query = select(RECORDS.c.leaf_index, RECORDS.c.leaf_hash).where(RECORDS.c.leaf_index.in_(leaves))
        for index, stored in await connection.execute(query):
            if stored:
                found[(0, int(index))] = bytes.fromhex(stored)
            else:
                legacy.append(int(index))
        if legacy:  # a legacy chain record's leaf is computed from its content
            for row in await connection.execute(select(RECORDS).where(RECORDS.c.leaf_index.in_(legacy))):
                values: Mapping[str, Any] = dict(row._mapping)
                found[(0, int(values["leaf_index"]))] = leaf_hash_of(values)
    inner = sorted(tile for tile in tiles if tile[0] > 0)
    for start in range(0, len(inner), 200):
        chunk = inner[start : start + 200]
        condition = or_(*(and_(NODES.c.level == level, NODES.c.idx == index) for level, index in chunk))
        for row in await connection.execute(select(NODES.c.level, NODES.c.idx, NODES.c.hash).where(condition)):
            found[(int(row.level), int(row.idx))] = bytes.fromhex(row.hash)
    return found


async def _oracle(connection: AsyncConnection, ranges: set[tuple[int, int]]) -> RangeHash:
    tiling = {r: perfect_subtrees(*r) for r in ranges}
    tiles = {tile for parts in tiling.values() for tile in parts}
    stored = await subtree_hashes(connection, tiles)
    missing = sorted(tiles - stored.keys())
    if missing:
        level, index = missing[0]
        what = f"leaf {index}" if level == 0 else f"the subtree at level {level}, index {index}"
        raise TreeError(f"the stored tree lacks {what}")

    def range_hash(start: int, end: int) -> bytes:
        return fold([stored[tile] for tile in tiling[(start, end)]])

    return range_hash


async def inclusion_proof(connection: AsyncConnection, index: int, size: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves (RFC 9162 section 2.1.3.1)."""
    ranges = needed_ranges([lambda oracle: inclusion_path(index, size, oracle)])
    return inclusion_path(index, size, await _oracle(connection, ranges))


async def consistency_proof(connection: AsyncConnection, old_size: int, new_size: int) -> list[bytes]:
    """That the tree of ``new_size`` leaves extends the one of ``old_size`` (RFC 9162 section 2.1.4.1)."""
    ranges = needed_ranges([lambda oracle: consistency_path(old_size, new_size, oracle)])
    return consistency_path(old_size, new_size, await _oracle(connection, ranges))


async def root_at(connection: AsyncConnection, size: int) -> bytes:
    """The root of the tree's first ``size`` leaves, from the stored subtrees."""
    range_hash = await _oracle(connection, {(0, size)} if size else set())
    return range_hash(0, size) if size else fold([])


def hex_path(path: Sequence[bytes]) -> list[str]:
    return [node.hex() for node in path]
