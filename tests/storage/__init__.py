"""Tests of the schema: its migrations, the checks at start, and the restricted PostgreSQL role."""
