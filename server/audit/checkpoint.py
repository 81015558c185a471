"""Signed tree heads of the audit log (checkpoints), kept outside the database (RFC 9162 section 4.10 in spirit;
DESIGN.md section 6).

A signed tree head is a small JSON document naming the tree's size and root hash (RFC 9162 section 2.1.1) at a
time, signed with Ed25519 (RFC 8032) over the canonical JSON of every other field (``mandate.audit.tree_head/1``).
The sequencer signs one after every integration batch and stores it with the tree head; ``mandate audit
checkpoint`` writes one to a file; every receipt carries one. Whoever can rewrite the database cannot rewrite a
tree head already copied elsewhere, so a consistency proof from it catches a truncated or rewritten log.

Checkpoints of the linear chain that came before (``mandate.audit.checkpoint/1``: a ``seq`` and the ``hash``
there) are still read, and checked against the legacy part of the log.

The signing key is a PKCS #8 PEM file apart from the database, created on first use with mode 0600 (its directory
0700), with the public key written beside it (``<name>.pub.pem``) for auditors who should be able to verify but not
sign. Nothing here ever prints or logs the private key.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from server.audit.chain import canonical_time

FORMAT = "mandate.audit.checkpoint/1"
TREE_HEAD_FORMAT = "mandate.audit.tree_head/1"
KEY_ENVIRONMENT = "MANDATE_AUDIT_KEY"


class CheckpointError(ValueError):
    """A checkpoint or key file is missing, malformed, signed by another key, or its signature does not verify."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a checkpoint states: the chain had ``seq`` records, the last with ``hash``, at ``signed_at``."""

    seq: int
    hash: str
    record_id: str | None
    record_at: str | None
    first_hash: str | None
    signed_at: str
    instance: str
    key_id: str
    format: str = FORMAT


def default_key_path(data_dir: Path) -> Path:
    """``$MANDATE_AUDIT_KEY``, else ``<data_dir>/audit-keys/checkpoint-ed25519.pem``."""
    configured = os.environ.get(KEY_ENVIRONMENT)
    return Path(configured) if configured else data_dir / "audit-keys" / "checkpoint-ed25519.pem"


def public_key_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name.removesuffix(".pem") + ".pub.pem")


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_or_create_signing_key(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The private key in ``path``, generated (mode 0600) when the file does not exist; and whether it was."""
    try:
        return _read_private(path), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd, tmp_name = tempfile.mkstemp(prefix=".checkpoint-key-", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp_name, path)  # never replaces a key another process created meanwhile
        except FileExistsError:
            return _read_private(path), False
    finally:
        Path(tmp_name).unlink()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    public_key_path(path).write_bytes(public)
    return key, True


def _read_private(path: Path) -> Ed25519PrivateKey:
    data = path.read_bytes()
    if os.stat(path).st_mode & 0o077:
        raise CheckpointError(f"{path}: the checkpoint signing key is readable by others; chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise CheckpointError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{path}: not an Ed25519 key")
    return key


def load_verification_key(path: Path) -> Ed25519PublicKey:
    """The public key to verify checkpoints with: from a public key file, or the public half of a private one.

    Given a private key path that does not exist, its ``.pub.pem`` sibling is used when present.
    """
    candidate = path if path.exists() else public_key_path(path)
    try:
        data = candidate.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint key here (give --key)") from None
    try:
        if b"PRIVATE KEY" in data:
            private = _read_private(candidate)
            return private.public_key()
        public = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise CheckpointError(f"{candidate}: not a PEM key") from None
    if not isinstance(public, Ed25519PublicKey):
        raise CheckpointError(f"{candidate}: not an Ed25519 key")
    return public


def _signed_bytes(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_checkpoint(
    key: Ed25519PrivateKey,
    *,
    seq: int,
    hash: str,
    record_id: str | None,
    record_at: datetime | None,
    first_hash: str | None,
    instance: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The checkpoint document, with its signature."""
    checkpoint = Checkpoint(
        seq=seq,
        hash=hash,
        record_id=record_id,
        record_at=canonical_time(record_at) if record_at else None,
        first_hash=first_hash,
        signed_at=canonical_time(now or datetime.now(UTC)),
        instance=instance,
        key_id=key_id(key.public_key()),
    )
    fields = asdict(checkpoint)
    signature = key.sign(_signed_bytes(fields))
    return {**fields, "signature": base64.urlsafe_b64encode(signature).decode().rstrip("=")}


def write_checkpoint(path: Path, document: dict[str, Any]) -> Path:
    """Write the document atomically (never a half-written checkpoint), readable by all: it holds no secret."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".checkpoint-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, sort_keys=True)
            handle.write("\n")
        Path(tmp_name).chmod(0o644)
        Path(tmp_name).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp_name).unlink()
        raise
    return path


def read_checkpoint(path: Path, public_key: Ed25519PublicKey) -> Checkpoint:
    """The checkpoint in ``path`` once its signature verifies with ``public_key``; :class:`CheckpointError` else."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except ValueError:
        raise CheckpointError(f"{path}: not a checkpoint (invalid JSON)") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint")
    signature_text = document.pop("signature", None)
    try:
        checkpoint = Checkpoint(**document)
        signature = base64.urlsafe_b64decode(str(signature_text) + "=" * (-len(str(signature_text)) % 4))
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: malformed checkpoint") from None
    if checkpoint.key_id != key_id(public_key):
        raise CheckpointError(f"{path}: signed by key {checkpoint.key_id}, not by the key given ({key_id(public_key)})")
    try:
        public_key.verify(signature, _signed_bytes(asdict(checkpoint)))
    except InvalidSignature:
        raise CheckpointError(f"{path}: the signature does not verify: the checkpoint was altered") from None
    if not isinstance(checkpoint.seq, int) or not isinstance(checkpoint.hash, str):
        raise CheckpointError(f"{path}: malformed checkpoint")
    return checkpoint


@dataclass(frozen=True, slots=True)
class TreeHead:
    """What a signed tree head states: the log had ``size`` leaves with root ``root_hash`` at ``timestamp``."""

    size: int
    root_hash: str
    timestamp: str
    instance: str
    key_id: str
    format: str = TREE_HEAD_FORMAT

    @property
    def root(self) -> bytes:
        return bytes.fromhex(self.root_hash)


def sign_tree_head(
    key: Ed25519PrivateKey, *, size: int, root_hash: str, instance: str, now: datetime | None = None
) -> dict[str, Any]:
    """The signed tree head document."""
    head = TreeHead(
        size=size,
        root_hash=root_hash,
        timestamp=canonical_time(now or datetime.now(UTC)),
        instance=instance,
        key_id=key_id(key.public_key()),
    )
    fields = asdict(head)
    signature = key.sign(_signed_bytes(fields))
    return {**fields, "signature": base64.urlsafe_b64encode(signature).decode().rstrip("=")}


def tree_head_from(document: object, public_key: Ed25519PublicKey, *, where: str = "tree head") -> TreeHead:
    """The tree head in ``document`` once its signature verifies with ``public_key``; :class:`CheckpointError`
    else."""
    if not isinstance(document, dict) or document.get("format") != TREE_HEAD_FORMAT:
        raise CheckpointError(f"{where}: not a {TREE_HEAD_FORMAT} signed tree head")
    fields = dict(document)
    signature_text = fields.pop("signature", None)
    try:
        head = TreeHead(**fields)
        signature = base64.urlsafe_b64decode(str(signature_text) + "=" * (-len(str(signature_text)) % 4))
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: malformed signed tree head") from None
    if head.key_id != key_id(public_key):
        raise CheckpointError(f"{where}: signed by key {head.key_id}, not by the key given ({key_id(public_key)})")
    try:
        public_key.verify(signature, _signed_bytes(asdict(head)))
    except InvalidSignature:
        raise CheckpointError(f"{where}: the signature does not verify: the tree head was altered") from None
    if not isinstance(head.size, int) or head.size < 0 or not isinstance(head.root_hash, str):
        raise CheckpointError(f"{where}: malformed signed tree head")
    try:
        if len(bytes.fromhex(head.root_hash)) != 32:
            raise ValueError
    except ValueError:
        raise CheckpointError(f"{where}: malformed root hash") from None
    return head


def read_signed(path: Path, public_key: Ed25519PublicKey) -> TreeHead | Checkpoint:
    """A signed tree head file, or a legacy chain checkpoint file, once its signature verifies."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except ValueError:
        raise CheckpointError(f"{path}: not a checkpoint (invalid JSON)") from None
    if isinstance(document, dict) and document.get("format") == FORMAT:
        return read_checkpoint(path, public_key)
    return tree_head_from(document, public_key, where=str(path))
