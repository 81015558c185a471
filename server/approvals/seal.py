"""The approval seal: a keyed MAC (HMAC-SHA256, RFC 2104) over exactly what a human approves, checked before the
approved action runs.

The digest stored beside the arguments protects against accidents, not against someone who can write to the
database: they could rewrite both columns (or the requester's scopes, or the waived rules) and have a different
action run as "approved". The seal binds the stored action (the tool, the canonical arguments, who asked with what
scopes, claims and tenant, until when, and which rules approval waives) to a key the database does not hold. A row
changed after it was sealed no longer verifies, and the run is refused and recorded (``approval_tampered``).

The key (32 random bytes): ``MANDATE_APPROVAL_KEY`` (base64url or hex), else ``<data_dir>/approval-key`` (created
with mode 0600 on first use; every replica must read the same key). It is never logged or stored in the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from server.approvals.models import Approval

KEY_ENVIRONMENT = "MANDATE_APPROVAL_KEY"
KEY_FILE = "approval-key"
SEAL_VERSION = "v1"

SEALED_FIELDS: tuple[str, ...] = (
    "id",
    "tool",
    "arguments",
    "arguments_digest",
    "idempotency_key",
    "customer_id",
    "expires_at",
    "requester_key",
    "requester_subject",
    "requester_client_id",
    "requester_issuer",
    "requester_scopes",
    "requester_tenant",
    "requester_actor",
    "requester_token_id",
    "requester_claims",
    "waived_rules",
    "request_audit_id",
)
"""Everything the run of an approved action depends on; status and decision fields change legitimately."""


class SealKeyError(ValueError):
    """The approval key is missing or malformed."""


def _decode_key(text: str) -> bytes:
    text = text.strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        try:
            key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise SealKeyError(f"{KEY_ENVIRONMENT} is neither hex nor base64url") from None
    if len(key) < 32:
        raise SealKeyError(f"the approval key must be at least 32 bytes (it has {len(key)})")
    return key


class ApprovalSeal:
    """Seals and verifies approvals with one secret key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise SealKeyError("the approval key must be at least 32 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "ApprovalSeal(<key hidden>)"

    @classmethod
    def load(cls, data_dir: Path, environ: Mapping[str, str] | None = None) -> ApprovalSeal:
        env = os.environ if environ is None else environ
        if env.get(KEY_ENVIRONMENT):
            return cls(_decode_key(env[KEY_ENVIRONMENT]))
        path = data_dir / KEY_FILE
        try:
            return cls(_decode_key(path.read_text()))
        except FileNotFoundError:
            pass
        data_dir.mkdir(parents=True, exist_ok=True)
        text = secrets.token_bytes(32).hex()
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return cls(_decode_key(path.read_text()))
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text + "\n")
        return cls(bytes.fromhex(text))

    def seal(self, approval: Approval) -> str:
        message = json.dumps(
            {name: _value(getattr(approval, name)) for name in SEALED_FIELDS},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        mac = hmac.new(self._key, SEAL_VERSION.encode() + b"\x00" + message, hashlib.sha256).hexdigest()
        return f"{SEAL_VERSION}:{mac}"

    def verify(self, approval: Approval) -> bool:
        stored = approval.seal or ""
        return hmac.compare_digest(stored.encode(), self.seal(approval).encode())


def _value(value: object) -> object:
    from datetime import UTC, datetime

    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="microseconds")
    return value
