"""Receipts: one audit record with the proof that it is in the log, checkable offline by anyone holding the log's
public key (RFC 9162 sections 2.1.3 and 4.10 in spirit; docs/audit.md, "Receipts").

A receipt (``mandate.audit.receipt/1``) carries the record's leaf content (the exact fields its leaf hash covers,
``at`` in RFC 3339), its leaf index, the inclusion proof and a signed tree head. :func:`check_receipt` recomputes
``SHA-256(0x00 || canonical record)``, walks the proof to the root (RFC 9162 section 2.1.3.2) and verifies the tree
head's Ed25519 signature: no database, no network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.audit.chain import RECORDS, canonical_json, leaf_body
from server.audit.checkpoint import CheckpointError, TreeHead, sign_tree_head, tree_head_from
from server.audit.merkle import ProofError, leaf_hash, verify_inclusion
from server.audit.tree import StoredHead, hex_path, inclusion_proof, latest_head

RECEIPT_FORMAT = "mandate.audit.receipt/1"
RECEIPT_META = "io.mandate/receipt"
"""``_meta`` key of a successful call's answer: ``{"audit_id": ...}``, redeemable for a receipt once integrated."""


def receipt_meta(audit_id: str) -> dict[str, Any]:
    """The ``_meta`` of a successful effect's answer: its receipt handle (redeemed with ``audit_receipt``)."""
    return {RECEIPT_META: {"audit_id": audit_id}}


def with_receipt(answer: types.CallToolResult, audit_id: str) -> types.CallToolResult:
    """A successful effect's answer, carrying its receipt handle in ``_meta`` (redeemed with ``audit_receipt``)."""
    meta = dict(answer.meta or {})
    meta.update(receipt_meta(audit_id))
    return answer.model_copy(update={"meta": meta})


class ReceiptError(ValueError):
    """No receipt can be made (no such record, not integrated yet, no signed tree head), or one does not verify."""


def signed_document(head: StoredHead, key: Ed25519PrivateKey | None) -> dict[str, Any]:
    """The head's signed form: as the sequencer stored it, or signed now with ``key``."""
    if head.signed:
        document: dict[str, Any] = json.loads(head.signed)
        return document
    if key is None:
        raise ReceiptError(f"the tree head at size {head.size} is unsigned; give the signing key (--key) to sign it")
    return sign_tree_head(key, size=head.size, root_hash=head.root_hash, instance=head.instance)


async def build_receipt(
    connection: AsyncConnection, record_id: str, *, key: Ed25519PrivateKey | None = None
) -> dict[str, Any]:
    """The receipt of record ``record_id`` (its ``aud_`` id) against the latest tree head."""
    row = (await connection.execute(select(RECORDS).where(RECORDS.c.id == record_id))).first()
    if row is None:
        raise ReceiptError(f"no audit record {record_id}")
    record: Mapping[str, Any] = dict(row._mapping)
    if record["leaf_index"] is None:
        raise ReceiptError(f"audit record {record_id} is not integrated into the log yet; try again in a second")
    head = await latest_head(connection)
    index = int(record["leaf_index"])
    if head is None or head.size <= index:
        raise ReceiptError(f"audit record {record_id} is not under a tree head yet; try again in a second")
    document = signed_document(head, key)
    path = await inclusion_proof(connection, index, head.size)
    return {
        "format": RECEIPT_FORMAT,
        "record": leaf_body(record),
        "leaf_index": index,
        "inclusion_proof": hex_path(path),
        "tree_head": document,
    }


@dataclass(frozen=True, slots=True)
class CheckedReceipt:
    record_id: str
    leaf_index: int
    tree_head: TreeHead


def check_receipt(document: object, public_key: Ed25519PublicKey) -> CheckedReceipt:
    """Verify a receipt offline; :class:`ReceiptError` says what does not hold."""
    if not isinstance(document, dict) or document.get("format") != RECEIPT_FORMAT:
        raise ReceiptError(f"not a {RECEIPT_FORMAT} receipt")
    record, index, proof = document.get("record"), document.get("leaf_index"), document.get("inclusion_proof")
    if not isinstance(record, dict) or not isinstance(index, int) or not isinstance(proof, list):
        raise ReceiptError("malformed receipt: it needs record, leaf_index and inclusion_proof")
    try:
        head = tree_head_from(document.get("tree_head"), public_key)
    except CheckpointError as exc:
        raise ReceiptError(f"the receipt's tree head: {exc}") from None
    try:
        path = [bytes.fromhex(str(node)) for node in proof]
        if any(len(node) != 32 for node in path):
            raise ValueError
    except ValueError:
        raise ReceiptError("malformed receipt: the inclusion proof is not a list of SHA-256 hashes") from None
    leaf = leaf_hash(canonical_json(record))
    try:
        verify_inclusion(index, head.size, leaf, path, head.root)
    except ProofError as exc:
        raise ReceiptError(f"the record is not in the signed tree: {exc}") from None
    return CheckedReceipt(str(record.get("id")), index, head)
