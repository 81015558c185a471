"""Wiring the audit log into a serving process: the sequencer with its settings and signing key (docs/audit.md)."""

from __future__ import annotations

import logging

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.audit import checkpoint
from server.audit.sequencer import Sequencer
from server.config import Settings
from server.storage.database import Database

logger = logging.getLogger(__name__)


def signing_key(settings: Settings) -> Ed25519PrivateKey | None:
    """The tree-head signing key (created 0600 on first use); ``None``, logged, when it cannot be read: tree heads
    are then stored unsigned, and ``mandate audit checkpoint`` signs them where the key is."""
    path = settings.audit.signing_key or checkpoint.default_key_path(settings.data_dir)
    try:
        key, created = checkpoint.load_or_create_signing_key(path)
    except (OSError, checkpoint.CheckpointError) as exc:
        logger.error("audit tree heads will be unsigned: the signing key %s cannot be used (%s)", path, exc)
        return None
    if created:
        logger.info("created the audit signing key %s (mode 0600); its public key is beside it", path)
    return key


def audit_sequencer(settings: Settings, db: Database) -> Sequencer:
    return Sequencer(
        db,
        instance=settings.instance,
        key=signing_key(settings),
        interval=settings.audit.integration_interval_seconds,
        batch_size=settings.audit.batch_size,
    )
