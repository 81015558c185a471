"""Mandate's versioned schema migrations (Alembic): ``env.py`` (how Alembic is run on a connection Mandate gives it)
and ``versions/`` (one revision per schema change, oldest first). Run through :mod:`server.storage.migrate`, never
through an ``alembic.ini``: ``mandate db upgrade`` (docs/database.md).
"""
