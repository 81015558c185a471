"""``mandate audit prove | verify-proof | consistency | integrate``: receipts and proofs of the Merkle log (RFC 9162
sections 2.1.3 and 2.1.4; docs/audit.md).

- ``prove RECORD_ID --out FILE`` writes a receipt: the record, its leaf index, its inclusion proof and a signed
  tree head;
- ``verify-proof FILE --key PUBLIC_KEY`` checks a receipt offline: no database, no network;
- ``consistency OLD [NEW]`` checks that the log's tree head (or the signed tree head NEW) extends the signed tree
  head OLD; a forked history fails. With a database it proves from the stored tree; with two files and
  ``--proof``, offline;
- ``integrate`` runs the sequencer once (the serving process does this continuously).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from server.audit import checkpoint as checkpoints
from server.audit.merkle import ProofError, verify_consistency
from server.audit.receipt import ReceiptError, build_receipt, check_receipt
from server.audit.sequencer import integrate_now
from server.audit.tree import TreeError, consistency_proof, hex_path, latest_head
from server.cli.common import CommandError
from server.config import Settings
from server.storage.database import Database

EXIT_BROKEN = 1


def _key_path(args: argparse.Namespace, settings: Settings) -> Path:
    return Path(args.key) if args.key else checkpoints.default_key_path(settings.data_dir)


def _open(settings: Settings) -> Database:
    db = Database(settings.effective_database_url)
    if db.is_sqlite and db.url.database and not Path(db.url.database).exists():
        raise CommandError(f"no database at {db.url.database}")
    return db


async def _prove(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    key = None
    path = _key_path(args, settings)
    if path.exists():  # only to sign a tree head the sequencer stored unsigned
        try:
            key, _ = checkpoints.load_or_create_signing_key(path)
        except checkpoints.CheckpointError as exc:
            raise CommandError(str(exc)) from None
    db = _open(settings)
    try:
        async with db.engine.connect() as connection:
            receipt = await build_receipt(connection, args.record_id, key=key)
    except (ReceiptError, TreeError) as exc:
        raise CommandError(str(exc)) from None
    finally:
        await db.dispose()
    return receipt


def cmd_prove(args: argparse.Namespace, settings: Settings) -> int:
    receipt = anyio.run(_prove, args, settings)
    text = json.dumps(receipt, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        head = receipt["tree_head"]
        print(
            f"receipt for {args.record_id}: leaf {receipt['leaf_index']} of {head['size']}, "
            f"{len(receipt['inclusion_proof'])} proof hashes, written to {args.out}"
        )
    else:
        sys.stdout.write(text)
    return 0


def cmd_verify_proof(args: argparse.Namespace, settings: Settings) -> int:
    try:
        public_key = checkpoints.load_verification_key(Path(args.key))
    except checkpoints.CheckpointError as exc:
        raise CommandError(str(exc)) from None
    try:
        document = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CommandError(f"{args.file}: no such receipt file") from None
    except ValueError:
        raise CommandError(f"{args.file}: not a receipt (invalid JSON)") from None
    try:
        checked = check_receipt(document, public_key)
    except ReceiptError as exc:
        print(f"RECEIPT DOES NOT VERIFY: {exc}")
        return EXIT_BROKEN
    head = checked.tree_head
    print(
        f"receipt verified: record {checked.record_id} is leaf {checked.leaf_index} of the log's tree of "
        f"{head.size} leaves (root {head.root_hash[:16]}), signed {head.timestamp} by key {head.key_id}"
    )
    return 0


async def _consistency(args: argparse.Namespace, settings: Settings, given: list[bytes] | None) -> int:
    try:
        public_key = checkpoints.load_verification_key(_key_path(args, settings))
        old = _tree_head(Path(args.old), public_key)
        new = _tree_head(Path(args.new), public_key) if args.new else None
    except checkpoints.CheckpointError as exc:
        raise CommandError(str(exc)) from None
    if new is not None and given is not None:
        proof, new_size, new_root = given, new.size, new.root
    else:
        db = _open(settings)
        try:
            async with db.engine.connect() as connection:
                head = await latest_head(connection)
                if new is None:
                    if head is None:
                        raise CommandError("the log has no tree head yet")
                    new_size, new_root = head.size, head.root
                else:
                    new_size, new_root = new.size, new.root
                if old.size > new_size:
                    print(f"NOT CONSISTENT: the old tree head has {old.size} leaves, the new one {new_size}")
                    return EXIT_BROKEN
                proof = await consistency_proof(connection, old.size, new_size)
        except TreeError as exc:
            raise CommandError(str(exc)) from None
        finally:
            await db.dispose()
    try:
        verify_consistency(old.size, old.root, new_size, new_root, proof)
    except ProofError as exc:
        print(f"NOT CONSISTENT: {exc}")
        return EXIT_BROKEN
    if args.json:
        print(json.dumps({"ok": True, "old_size": old.size, "new_size": new_size, "proof": hex_path(proof)}))
    else:
        print(
            f"consistent: the tree of {new_size} leaves extends the signed tree head of {old.size}: {len(proof)} hashes"
        )
    return 0


def _tree_head(path: Path, public_key: Any) -> checkpoints.TreeHead:
    signed = checkpoints.read_signed(path, public_key)
    if not isinstance(signed, checkpoints.TreeHead):
        raise checkpoints.CheckpointError(f"{path}: a legacy chain checkpoint; use `mandate audit verify --checkpoint`")
    return signed


def cmd_consistency(args: argparse.Namespace, settings: Settings) -> int:
    given = None
    if args.proof:
        try:
            given = [bytes.fromhex(str(h)) for h in json.loads(Path(args.proof).read_text(encoding="utf-8"))]
        except (OSError, ValueError, TypeError):
            raise CommandError(f"{args.proof}: not a JSON list of hex hashes") from None
    return anyio.run(_consistency, args, settings, given)


async def _integrate(args: argparse.Namespace, settings: Settings) -> int:
    from server.audit.service import signing_key

    db = _open(settings)
    try:
        done = await integrate_now(db, instance=settings.instance, key=signing_key(settings))
    finally:
        await db.dispose()
    if done is None:
        print("another process is the active sequencer; it integrates within its interval")
    elif not done:
        print("nothing to integrate")
    else:
        print(f"integrated {done[-1].new_size - done[0].old_size} records: tree size {done[-1].new_size}")
    return 0


def cmd_integrate(args: argparse.Namespace, settings: Settings) -> int:
    return anyio.run(_integrate, args, settings)


def register(
    audit_sub: Any,
    add_database_options: Callable[[argparse.ArgumentParser], None],
    add_key_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    prove = audit_sub.add_parser("prove", help="write a receipt: a record, its inclusion proof, a signed tree head")
    add_database_options(prove)
    add_key_option(prove)
    prove.add_argument("record_id", help="the record's id (aud_...)")
    prove.add_argument("--out", help="receipt file to write (default stdout)")
    prove.set_defaults(handler=cmd_prove)

    check = audit_sub.add_parser("verify-proof", help="check a receipt offline, with the log's public key only")
    check.add_argument("file", help="a receipt written by `mandate audit prove` or the audit_receipt tool")
    check.add_argument("--key", required=True, help="the log's public key (checkpoint-ed25519.pub.pem)")
    check.set_defaults(handler=cmd_verify_proof)

    consistency = audit_sub.add_parser("consistency", help="show that the log extends an earlier signed tree head")
    add_database_options(consistency)
    add_key_option(consistency)
    consistency.add_argument("old", help="the earlier signed tree head file")
    consistency.add_argument("new", nargs="?", help="a later signed tree head file (default: the log's latest)")
    consistency.add_argument("--proof", help="with NEW: a JSON list of proof hashes, to check with no database")
    consistency.add_argument("--json", action="store_true", help="print the result and the proof as JSON")
    consistency.set_defaults(handler=cmd_consistency)

    integrate = audit_sub.add_parser("integrate", help="run the sequencer once (the server does it continuously)")
    add_database_options(integrate)
    integrate.set_defaults(handler=cmd_integrate)
