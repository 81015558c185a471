"""``mandate audit checkpoint`` integrates what is pending, then signs the tree head with an Ed25519 key kept in a
file of its own (created 0600 on first use) and writes it outside the database; an altered tree head or a foreign
key is refused."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from server.audit.checkpoint import CheckpointError, TreeHead, load_or_create_signing_key, read_signed
from server.config import Settings
from server.storage.database import Database
from tests.audit.conftest import Cli
from tests.audit.support import append_records, drop_audit_triggers, execute, integrate, rows

pytestmark = pytest.mark.anyio


async def test_the_first_checkpoint_creates_a_private_key_and_signs_the_head(
    db: Database, cli: Cli, tmp_path: Path
) -> None:
    await append_records(db, 5)
    key_path = tmp_path / "keys" / "audit.pem"
    out = tmp_path / "elsewhere" / "cp.json"
    result = await cli("audit", "checkpoint", "--key", str(key_path), "--out", str(out))
    assert result.code == 0, result.err
    assert "created the checkpoint signing key" in result.err
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    assert key_path.with_name("audit.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    key, created = load_or_create_signing_key(key_path)
    assert not created
    head = read_signed(out, key.public_key())
    assert isinstance(head, TreeHead)
    assert head.size == 5 and all(row["leaf_index"] is not None for row in await rows(db))
    assert head.instance == "cli-test"

    again = await cli("audit", "verify", "--checkpoint", str(out), "--key", str(key_path.with_name("audit.pub.pem")))
    assert again.code == 0, again.out
    assert "extends the signed tree head of size 5" in again.out


async def test_the_default_key_and_checkpoint_live_in_the_data_directory_outside_the_database(
    db: Database, cli: Cli, settings: Settings
) -> None:
    await append_records(db, 2)
    assert (await cli("audit", "checkpoint")).code == 0
    assert (settings.data_dir / "audit-keys" / "checkpoint-ed25519.pem").exists()
    assert (settings.data_dir / "audit-checkpoints" / "tree-head-000000000002.json").exists()


async def test_an_altered_checkpoint_or_another_key_is_refused(db: Database, cli: Cli, tmp_path: Path) -> None:
    await append_records(db, 3)
    out = tmp_path / "cp.json"
    assert (await cli("audit", "checkpoint", "--out", str(out))).code == 0
    document = json.loads(out.read_text())
    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps({**document, "size": 2}))
    result = await cli("audit", "verify", "--checkpoint", str(altered))
    assert result.code == 2
    assert "signature does not verify" in result.err
    other_key = tmp_path / "other.pem"
    load_or_create_signing_key(other_key)
    result = await cli("audit", "verify", "--checkpoint", str(out), "--key", str(other_key))
    assert result.code == 2
    assert "signed by key" in result.err
    with pytest.raises(CheckpointError):
        read_signed(tmp_path / "missing.json", load_or_create_signing_key(other_key)[0].public_key())


async def test_a_broken_log_is_not_signed(db: Database, cli: Cli, tmp_path: Path) -> None:
    await append_records(db, 3)
    await integrate(db)
    await drop_audit_triggers(db)
    await execute(db, "UPDATE audit_records SET tool = 'refund_create' WHERE leaf_index = 1")
    result = await cli("audit", "checkpoint", "--out", str(tmp_path / "cp.json"))
    assert result.code == 1
    assert "not signing" in result.err and "leaf 1" in result.err
    assert not (tmp_path / "cp.json").exists()


async def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    load_or_create_signing_key(path)
    path.chmod(0o644)
    with pytest.raises(CheckpointError, match="readable by others"):
        load_or_create_signing_key(path)
