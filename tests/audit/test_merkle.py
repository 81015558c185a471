"""The Merkle tree algorithms against RFC 9162 section 2.1: the Certificate Transparency reference vectors, and
property tests of inclusion and consistency proofs for every tree size and index up to 70."""

from __future__ import annotations

import itertools

import pytest

from server.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ProofError,
    consistency_path,
    inclusion_path,
    leaf_hash,
    list_oracle,
    node_hash,
    perfect_subtrees,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# The eight inputs of the Certificate Transparency reference tests (RFC 6962 / RFC 9162 trees).
INPUTS = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
LEAVES = [leaf_hash(data) for data in INPUTS]


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def test_hashes_are_domain_separated_leaves_from_nodes() -> None:
    assert leaf_hash(b"ab") != node_hash(b"a", b"b")
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


@pytest.mark.parametrize("size", range(1, 9))
def test_tree_heads_match_the_certificate_transparency_reference_roots(size: int) -> None:
    assert root_of(LEAVES[:size]).hex() == ROOTS[size - 1]
    compact = CompactRange()
    for leaf in LEAVES[:size]:
        compact.append(leaf)
    assert compact.root().hex() == ROOTS[size - 1]


def test_inclusion_and_consistency_proofs_match_the_reference_vectors() -> None:
    oracle = list_oracle(LEAVES)
    assert [p.hex() for p in inclusion_path(0, 8, oracle)] == [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]
    assert [p.hex() for p in consistency_path(6, 8, oracle)] == [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]
    assert [p.hex() for p in consistency_path(2, 5, oracle)] == [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ]
    assert consistency_path(1, 8, oracle) == inclusion_path(0, 8, oracle)


N = 70
MANY = [leaf_hash(i.to_bytes(4, "big")) for i in range(N)]


def test_every_inclusion_proof_verifies_and_any_other_leaf_index_or_root_fails() -> None:
    oracle = list_oracle(MANY)
    for size in range(1, N + 1):
        root = root_of(MANY[:size])
        for index in range(size):
            path = inclusion_path(index, size, oracle)
            verify_inclusion(index, size, MANY[index], path, root)
            with pytest.raises(ProofError):
                verify_inclusion(index, size, MANY[(index + 1) % N], path, root)
            if size > 1:
                with pytest.raises(ProofError):
                    verify_inclusion((index + 1) % size, size, MANY[index], path, root)
                with pytest.raises(ProofError):
                    verify_inclusion(index, size, MANY[index], path[:-1], root)
            with pytest.raises(ProofError):
                verify_inclusion(index, size, MANY[index], [*path, EMPTY_ROOT], root)
            with pytest.raises(ProofError):
                verify_inclusion(index, size, MANY[index], path, EMPTY_ROOT)


def test_every_consistency_proof_verifies_and_a_forked_history_fails() -> None:
    oracle = list_oracle(MANY)
    forked = [*MANY[:N]]
    roots = [root_of(MANY[:n]) for n in range(N + 1)]
    for old, new in itertools.combinations_with_replacement(range(N + 1), 2):
        proof = consistency_path(old, new, oracle)
        verify_consistency(old, roots[old], new, roots[new], proof)
        if 0 < old < new:
            # the same sizes, but the old tree had another leaf: a fork
            forked[old - 1] = leaf_hash(b"forked")
            with pytest.raises(ProofError):
                verify_consistency(old, root_of(forked[:old]), new, roots[new], proof)
            forked[old - 1] = MANY[old - 1]
            with pytest.raises(ProofError):
                verify_consistency(old, roots[old], new, roots[new - 1] if new > old + 1 else EMPTY_ROOT, proof)
            if proof:
                with pytest.raises(ProofError):
                    verify_consistency(old, roots[old], new, roots[new], proof[:-1])
    with pytest.raises(ProofError, match="forked"):
        verify_consistency(5, roots[5], 5, roots[6], [])


def test_the_compact_range_reports_each_completed_subtree_and_tiles_any_aligned_range() -> None:
    compact = CompactRange()
    stored: dict[tuple[int, int], bytes] = {(0, i): leaf for i, leaf in enumerate(MANY)}
    for leaf in MANY:
        for level, index, node in compact.append(leaf):
            stored[(level, index)] = node
    for level, index in stored:
        width = 1 << level
        assert stored[(level, index)] == root_of(MANY[index * width : (index + 1) * width])
    assert compact.tiles() == perfect_subtrees(0, N)
    assert compact.root() == root_of(MANY)
    for start, end in [(0, 70), (64, 70), (32, 45), (8, 9), (6, 8)]:
        tiles = perfect_subtrees(start, end)
        assert sum(1 << level for level, _ in tiles) == end - start
