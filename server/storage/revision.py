"""For developers: draft the next migration from the models, ``python -m server.storage.revision "what changed"``
(docs/database.md, "Changing the schema").

Migrates a scratch SQLite file to the newest revision, lets Alembic's autogenerate compare it with the models, and
writes ``server/storage/migrations/versions/NNNN_<slug>.py`` with the next number. Read and finish the draft:
autogenerate sees tables, columns, indexes and constraints, not triggers, functions, grants or data; a change to
``audit_records``' columns also needs the trigger ``audit_records_set_position_once`` re-created on both engines
(it names every column), and a new table an entry in :data:`server.storage.privileges.WRITER_PRIVILEGES`.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from sqlalchemy import create_engine

from server.storage import migrate


def draft(message: str) -> Path:
    from alembic import command

    head = migrate.head_revision()
    number = f"{int(head) + 1:04d}"
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40] or "change"
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{Path(scratch) / 'scratch.db'}")
        try:
            with engine.begin() as connection:
                migrate.upgrade_connection(connection)
                config = migrate.migration_config(connection)
                config.set_main_option("file_template", f"{number}_{slug}")
                script = command.revision(config, message, autogenerate=True, rev_id=number)
        finally:
            engine.dispose()
    assert script is not None
    assert not isinstance(script, list)
    return Path(script.path)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].strip():
        print('usage: python -m server.storage.revision "what changed"', file=sys.stderr)
        return 2
    print(f"wrote {draft(argv[0])}: read it and finish it (docs/database.md, 'Changing the schema')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
