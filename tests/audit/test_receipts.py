"""Receipts: a successful effect's answer carries a receipt handle; the agent redeems it with ``audit_receipt`` once
the sequencer has integrated the record; ``mandate audit prove`` writes one and ``mandate audit verify-proof``
checks it offline with the public key only; ``mandate audit consistency`` shows a later tree head extends an
earlier one, and a forked history fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from server.audit.checkpoint import load_or_create_signing_key
from server.audit.receipt import RECEIPT_META, ReceiptError, check_receipt
from server.audit.service import signing_key
from server.config import Settings
from server.storage.database import Database
from tests.audit.conftest import Cli
from tests.audit.support import append_and_integrate, append_records, drop_audit_triggers, execute, integrate
from tests.conftest import Harness

pytestmark = pytest.mark.anyio

REFUND = {"order_id": "ord_5001", "amount": "5.00", "currency": "EUR", "reason": "damaged in transit"}


def _structured(result: Any) -> dict[str, Any]:
    data: dict[str, Any] = result.structured_content
    return data


async def test_an_agent_redeems_its_effects_receipt_handle_once_the_sequencer_integrated_it(
    harness: Harness, settings: Settings
) -> None:
    scopes = ("customers:read", "orders:read", "refunds:create", "audit:read")
    async with harness.mandate.upkeep(), harness.client("refunds", scopes=scopes) as client:
        refund = await client.call_tool("refund_create", REFUND)
        assert not refund.is_error
        handle = (refund.meta or {})[RECEIPT_META]
        audit_id = handle["audit_id"]
        listing = await client.call_tool("orders_list", {"customer_id": "cus_1001"})
        assert RECEIPT_META not in (listing.meta or {})  # a read changes nothing: no receipt
        with anyio.fail_after(30):  # the sequencer integrates within its interval (0.5 s by default)
            while True:
                answer = await client.call_tool("audit_receipt", {"audit_id": audit_id})
                if not answer.is_error:
                    break
                assert _structured(answer)["code"] == "not_yet_integrated" if answer.structured_content else True
                await anyio.sleep(0.2)
    receipt = _structured(answer)
    public_key = load_or_create_signing_key(settings.data_dir / "audit-keys" / "checkpoint-ed25519.pem")[0].public_key()
    checked = check_receipt(receipt, public_key)
    assert checked.record_id == audit_id
    assert receipt["record"]["tool"] == "refund_create" and receipt["record"]["outcome"] == "succeeded"


async def test_redeeming_a_receipt_needs_audit_read_and_stays_in_the_tenant(harness: Harness) -> None:
    async with harness.client("refunds") as client:
        refund = await client.call_tool("refund_create", REFUND)
        audit_id = (refund.meta or {})[RECEIPT_META]["audit_id"]
        refused = await client.call_tool("audit_receipt", {"audit_id": audit_id})
    assert refused.is_error  # the refunds agent holds no audit:read
    await integrate(harness.mandate.db, key=signing_key(harness.mandate.settings))
    async with harness.client("support", scopes=("audit:read",), tenant="other-tenant") as client:
        hidden = await client.call_tool("audit_receipt", {"audit_id": audit_id})
    assert hidden.is_error
    assert "No audit record with this id is visible to you" in json.dumps(hidden.model_dump(mode="json"))
    async with harness.client("support", scopes=("audit:read",)) as client:
        answer = await client.call_tool("audit_receipt", {"audit_id": audit_id})
    assert not answer.is_error, answer


async def test_prove_writes_a_receipt_that_verify_proof_checks_offline(
    db: Database, cli: Cli, settings: Settings, tmp_path: Path
) -> None:
    key_path = settings.data_dir / "audit-keys" / "checkpoint-ed25519.pem"
    key, _ = load_or_create_signing_key(key_path)
    records = await append_records(db, 9)
    await integrate(db, key=key)
    out = tmp_path / "receipt.json"
    result = await cli("audit", "prove", records[4].id, "--out", str(out))
    assert result.code == 0, result.err
    assert f"receipt for {records[4].id}: leaf 4 of 9" in result.out
    await db.dispose()  # the check needs no database
    public = key_path.with_name("checkpoint-ed25519.pub.pem")
    checked = await cli("audit", "verify-proof", str(out), "--key", str(public))
    assert checked.code == 0, checked.out
    assert f"record {records[4].id} is leaf 4 of the log's tree of 9 leaves" in checked.out

    receipt = json.loads(out.read_text())
    for name, change in {
        "edited record": lambda r: r["record"].update(decision="deny"),
        "other index": lambda r: r.update(leaf_index=5),
        "short proof": lambda r: r["inclusion_proof"].pop(),
        "other root": lambda r: r["tree_head"].update(root_hash="00" * 32),
    }.items():
        forged = json.loads(json.dumps(receipt))
        change(forged)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(forged))
        failed = await cli("audit", "verify-proof", str(path), "--key", str(public))
        assert failed.code == 1, name
        assert "RECEIPT DOES NOT VERIFY" in failed.out
    other = tmp_path / "other.pem"
    load_or_create_signing_key(other)
    wrong = await cli("audit", "verify-proof", str(out), "--key", str(other))
    assert wrong.code == 1 and "signed by key" in wrong.out
    with pytest.raises(ReceiptError, match=r"not a mandate\.audit\.receipt/1"):
        check_receipt({"format": "x"}, key.public_key())


async def test_a_record_not_yet_integrated_has_no_receipt_yet(db: Database, cli: Cli) -> None:
    (record,) = await append_records(db, 1)
    result = await cli("audit", "prove", record.id)
    assert result.code == 2
    assert "not integrated into the log yet" in result.err
    missing = await cli("audit", "prove", "aud_" + "0" * 32)
    assert missing.code == 2 and "no audit record" in missing.err


async def test_consistency_shows_a_later_head_extends_an_earlier_one_and_a_fork_fails(
    db: Database, cli: Cli, settings: Settings, tmp_path: Path
) -> None:
    await append_and_integrate(db, 5)
    first = tmp_path / "old.json"
    assert (await cli("audit", "checkpoint", "--out", str(first))).code == 0
    await append_and_integrate(db, 8)
    later = await cli("audit", "consistency", str(first))
    assert later.code == 0, later.out
    assert "the tree of 13 leaves extends the signed tree head of 5" in later.out
    second = tmp_path / "new.json"
    assert (await cli("audit", "checkpoint", "--out", str(second))).code == 0
    proof = await cli("audit", "consistency", str(first), str(second), "--json")
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(json.dumps(json.loads(proof.out)["proof"]))
    offline = await cli("audit", "consistency", str(first), str(second), "--proof", str(proof_file))
    assert offline.code == 0, offline.out

    # fork: rewrite the first five records and rebuild the tree; the old signed head no longer fits
    await drop_audit_triggers(db)
    await execute(
        db,
        "DELETE FROM audit_tree_heads",
        "DELETE FROM audit_tree_nodes",
        "DELETE FROM audit_records WHERE seq <= 5",
        "UPDATE audit_records SET leaf_index = NULL",
    )
    await append_records(db, 5, start=500)
    await integrate(db)
    forked = await cli("audit", "consistency", str(first))
    assert forked.code == 1
    assert "NOT CONSISTENT" in forked.out
    verify = await cli("audit", "verify", "--checkpoint", str(first))
    assert verify.code == 1 and "checkpoint_mismatch" in verify.out
