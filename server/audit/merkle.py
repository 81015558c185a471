"""Merkle tree hashes, inclusion and consistency proofs, and their verification (RFC 9162 section 2.1).

Pure functions, no database: the server, the CLI and an auditor's offline check share them.

- Hashes are domain-separated (section 2.1.1): a leaf is ``SHA-256(0x00 || data)``, an interior node
  ``SHA-256(0x01 || left || right)``; the empty tree's hash is ``SHA-256()``.
- ``MTH(D[n])`` splits at ``k``, the largest power of two below ``n``: the left subtree is always perfect. So the tree
  hash of any range ``[start, end)`` whose start is a multiple of a power of two covering it is the fold, from the
  right, of the perfect subtrees that tile it (:func:`perfect_subtrees`). The log stores only perfect subtrees (they
  never change once complete), and every hash a proof needs is computed from them.
- :func:`inclusion_path` and :func:`consistency_path` follow the recursive definitions of sections 2.1.3.1 and
  2.1.4.1 over a *range hash oracle* (any ``(start, end) -> hash``), so the same code serves a list of leaves in
  tests and the stored subtrees in the log.
- :func:`verify_inclusion` and :func:`verify_consistency` are the algorithms of sections 2.1.3.2 and 2.1.4.2, step
  for step.
- :class:`CompactRange` is the right edge of a growing tree (the "frontier"): appending a leaf merges equal-sized
  perfect subtrees and reports each new one, so the sequencer can store them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

RangeHash = Callable[[int, int], bytes]
"""The tree hash ``MTH(D[start:end])`` of a range of leaves."""


class ProofError(ValueError):
    """A proof does not verify, or its parameters are impossible (an index beyond the tree, sizes out of order)."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n > 1``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """``MTH(D[n])`` of leaf hashes, by the definition (section 2.1.1). For tests and small trees."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root_of(leaves[:k]), root_of(leaves[k:]))


def perfect_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """The perfect subtrees ``(level, index)`` tiling ``[start, end)``, left to right (subtree ``(level, index)``
    covers leaves ``index * 2**level`` up to ``(index + 1) * 2**level``). ``start`` must be aligned: every range a
    proof asks for is."""
    tiles: list[tuple[int, int]] = []
    while start < end:
        size = start & -start if start else 1 << ((end - start).bit_length() - 1)
        while size > end - start:
            size >>= 1
        level = size.bit_length() - 1
        tiles.append((level, start >> level))
        start += size
    return tiles


def fold(hashes: Sequence[bytes]) -> bytes:
    """The tree hash of perfect subtrees of decreasing size, left to right: folded from the right."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def list_oracle(leaves: Sequence[bytes]) -> RangeHash:
    """A range hash oracle over leaf hashes held in memory."""
    return lambda start, end: root_of(leaves[start:end])


def inclusion_path(index: int, size: int, range_hash: RangeHash) -> list[bytes]:
    """``PATH(m, D[n])`` (section 2.1.3.1): the audit path of leaf ``index`` in the tree of ``size`` leaves."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
    return _path(index, 0, size, range_hash)


def _path(m: int, start: int, n: int, range_hash: RangeHash) -> list[bytes]:
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(m, start, k, range_hash), range_hash(start + k, start + n)]
    return [*_path(m - k, start + k, n - k, range_hash), range_hash(start, start + k)]


def consistency_path(old_size: int, new_size: int, range_hash: RangeHash) -> list[bytes]:
    """``PROOF(m, D[n])`` (section 2.1.4.1): that the tree of ``new_size`` leaves extends the one of ``old_size``."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"no consistency proof from {old_size} to {new_size} leaves")
    if old_size in (0, new_size):
        return []
    return _subproof(old_size, 0, new_size, True, range_hash)


def _subproof(m: int, start: int, n: int, complete: bool, range_hash: RangeHash) -> list[bytes]:
    if m == n:
        return [] if complete else [range_hash(start, start + n)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, start, k, complete, range_hash), range_hash(start + k, start + n)]
    return [*_subproof(m - k, start + k, n - k, False, range_hash), range_hash(start, start + k)]


def needed_ranges(paths: Iterable[Callable[[RangeHash], object]]) -> set[tuple[int, int]]:
    """The ranges the given proof computations ask the oracle for (each is run once with a recording oracle)."""
    asked: set[tuple[int, int]] = set()

    def record(start: int, end: int) -> bytes:
        asked.add((start, end))
        return EMPTY_ROOT

    for compute in paths:
        compute(record)
    return asked


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 section 2.1.3.2; raises :class:`ProofError` unless ``leaf`` is at ``index`` in the tree ``root``."""
    if index >= size or index < 0:
        raise ProofError(f"leaf index {index} is not below the tree size {size}")
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while True:
                    fn >>= 1
                    sn >>= 1
                    if fn & 1 or fn == 0:
                        break
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is too short for the tree size")
    if r != root:
        raise ProofError("the inclusion proof does not lead to the tree head's root hash")


def verify_consistency(old_size: int, old_root: bytes, new_size: int, new_root: bytes, path: Sequence[bytes]) -> None:
    """RFC 9162 section 2.1.4.2; raises :class:`ProofError` unless the tree ``new_root`` of ``new_size`` leaves
    extends the tree ``old_root`` of ``old_size`` leaves."""
    if old_size > new_size or old_size < 0:
        raise ProofError(f"the old tree ({old_size} leaves) is larger than the new one ({new_size})")
    if old_size == new_size:
        if path:
            raise ProofError("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError("two tree heads of the same size with different roots: the log forked")
        return
    if old_size == 0:
        if path:
            raise ProofError("a consistency proof from the empty tree must be empty")
        return
    if not path:
        raise ProofError("the consistency proof is empty")
    proof = list(path)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is the first node of the path
        proof.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while True:
                    fn >>= 1
                    sn >>= 1
                    if fn & 1 or fn == 0:
                        break
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is too short for the tree sizes")
    if fr != old_root:
        raise ProofError("the consistency proof does not lead to the old tree head's root: the log forked")
    if sr != new_root:
        raise ProofError("the consistency proof does not lead to the new tree head's root")


@dataclass(slots=True)
class CompactRange:
    """The perfect subtrees covering leaves ``[0, size)``, largest first: enough to append and to compute the root."""

    size: int = 0
    hashes: list[bytes] = field(default_factory=list[bytes])

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf; return every perfect subtree ``(level, index, hash)`` of level >= 1 it completed."""
        completed: list[tuple[int, int, bytes]] = []
        node, level, index = leaf, 0, self.size
        self.hashes.append(leaf)
        while index & 1:
            right = self.hashes.pop()
            left = self.hashes.pop()
            node = node_hash(left, right)
            level += 1
            index >>= 1
            self.hashes.append(node)
            completed.append((level, index, node))
        self.size += 1
        return completed

    def root(self) -> bytes:
        return fold(self.hashes)

    def tiles(self) -> list[tuple[int, int]]:
        """``(level, index)`` of each hash held, left to right."""
        return perfect_subtrees(0, self.size)
