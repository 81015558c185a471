"""Telling a database outage apart from other internal failures, so the caller gets a retryable answer.

A call that fails because the database cannot be reached (connection refused or lost, the pool timed out, the
server shutting down, SQLite busy) did nothing: the effect and its record commit together or not at all. The answer
is still a refusal (fail closed), but it says ``database_unavailable`` with ``retryable: true`` and a
``retry_after_seconds``, so an agent can retry with the same idempotency key instead of giving up or guessing. Any
other failure stays ``internal_error``. One case is neither: the connection broke after ``COMMIT`` was sent, so the
transaction may have committed; that answer is ``database_commit_in_doubt`` (``outcome: unknown``), and its record
says ``unknown``, never that nothing changed. No message carries a driver's text.
"""

from __future__ import annotations

import traceback

import psycopg
from sqlalchemy import exc as sa

from server.callpath.answers import Refusal
from server.storage.pg_unit import CommitInDoubt

RETRY_AFTER_SECONDS = 5

DATABASE_UNAVAILABLE = Refusal(
    status="failed",
    code="database_unavailable",
    message="The action could not be completed because the database is unavailable right now; nothing was changed. "
    f"Retry in {RETRY_AFTER_SECONDS} s (with the same idempotency key, if you used one).",
    details={"retryable": True, "retry_after_seconds": RETRY_AFTER_SECONDS},
)

COMMIT_IN_DOUBT = Refusal(
    status="failed",
    code="database_commit_in_doubt",
    message="The connection to the database was lost while this action was being committed, so it is not known "
    "whether it took effect. Retry with the same idempotency key to get its outcome; without one, check the audit "
    "log or the resource before asking again.",
    details={"retryable": True, "retry_after_seconds": RETRY_AFTER_SECONDS, "outcome": "unknown"},
)

_PG_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")
"""Connection exceptions (class 08), admin/crash shutdown, cannot connect now, too many connections."""


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen and len(seen) < 20:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _raised_by_the_database_layer(error: BaseException) -> bool:
    """An OSError is an outage only when it came out of the database layer, not out of a tool's own I/O."""
    frames = traceback.extract_tb(error.__traceback__)
    return any(("sqlalchemy" in f.filename or "psycopg" in f.filename or "aiosqlite" in f.filename) for f in frames)


def is_database_outage(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it) means the database could not be reached or is going away."""
    if error is None:
        return False
    for item in _chain(error):
        if isinstance(item, sa.DBAPIError) and item.connection_invalidated:
            return True
        if isinstance(item, sa.OperationalError | sa.InterfaceError | sa.TimeoutError):
            return True
        if isinstance(item, psycopg.OperationalError | psycopg.InterfaceError):
            return True  # the same errors, raised by psycopg itself (a statement sent straight to the driver)
        if isinstance(item, OSError) and _raised_by_the_database_layer(item):
            return True  # a socket error while connecting (the pool calls the driver's connect directly)
        sqlstate = getattr(item, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_PG_UNAVAILABLE_SQLSTATES):
            return True
    return False


def failure_refusal(error: BaseException | None, fallback: Refusal) -> Refusal:
    """``database_commit_in_doubt`` when the connection broke after COMMIT was sent, ``database_unavailable`` for
    another outage, else ``fallback`` (the internal error)."""
    if error is not None and any(isinstance(item, CommitInDoubt) for item in _chain(error)):
        return COMMIT_IN_DOUBT
    return DATABASE_UNAVAILABLE if is_database_outage(error) else fallback
