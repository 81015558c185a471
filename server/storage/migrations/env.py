"""Alembic's environment for Mandate: migrations run on the connection :mod:`server.storage.migrate` passes in
``config.attributes["connection"]``, inside the transaction the caller holds (Alembic cookbook, "Sharing a Connection
across one or more programmatic migration commands"). There is no ``alembic.ini`` and no URL here.

``target_metadata`` is every table Mandate declares, so ``python -m server.storage.revision`` can autogenerate a
draft of the next revision from the models (docs/database.md, "Changing the schema").
"""

from __future__ import annotations

from alembic import context

from server.storage.metadata import mandate_metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=mandate_metadata(),
    render_as_batch=True,  # SQLite alters a table by copying it; Alembic's batch mode does that for a revision
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
