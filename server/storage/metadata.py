"""Every table Mandate declares, in one ``MetaData``: the server's own (approvals, audit, effects, guards,
idempotency, ledger, liveness, console sessions, webhooks) and the demo store's that the built-in tool catalog uses
(``tools.store.models``).

The migrations (:mod:`server.storage.migrations`) create exactly these; ``tests/storage/test_migrations.py`` compares
a migrated database with this metadata, so a model change without a revision fails the suite.
"""

from __future__ import annotations

import importlib

from sqlalchemy import MetaData
from sqlmodel import SQLModel

MODEL_MODULES = (
    "server.approvals.models",
    "server.audit.models",
    "server.console.sessions",
    "server.effects.models",
    "server.guards.store",
    "server.idempotency",
    "server.ledger",
    "server.liveness",
    "server.webhooks",
    "tools.store.models",
)
"""The modules whose SQLModel classes are Mandate's tables."""


def mandate_metadata() -> MetaData:
    """SQLModel's metadata with every module of :data:`MODEL_MODULES` imported (so each table is declared)."""
    for module in MODEL_MODULES:
        importlib.import_module(module)
    return SQLModel.metadata
