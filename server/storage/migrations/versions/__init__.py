"""The revisions, each a module with ``upgrade()``; the chain is linear (``down_revision`` names the one before)."""
