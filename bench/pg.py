"""A PostgreSQL schema of its own for each benchmark run (the test suite's approach: ``search_path``)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_url_from_env() -> str:
    return os.environ.get("POSTGRES_URL") or os.environ.get("MANDATE_TEST_DATABASE_URL") or DEFAULT_URL


def reachable(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(_plain(url), connect_timeout=2) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@contextlib.contextmanager
def scratch_schema(url: str) -> Iterator[str]:
    """A fresh schema; yields the URL whose connections use it, drops it afterwards."""
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_plain(url), autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(_plain(url), autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
