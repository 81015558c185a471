"""A PostgreSQL transaction's queued writes (:func:`server.storage.prepared.deferred.defer`) sent in as few
statements as they allow, in one round trip: what may share a statement, the merged statement built once per shape,
and each write's row count checked after it (PostgreSQL documentation, "WITH Queries": data-modifying statements
in ``WITH``; psycopg's pipeline mode for the groups that cannot merge).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncRawCursor
from psycopg.pq import TransactionStatus
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import CTE, TableClause
from sqlalchemy.sql.util import find_tables
from sqlalchemy.sql.visitors import iterate

from server.storage.pg_batch import Statement, exchange, positional


@dataclass(frozen=True, slots=True)
class Merge:
    """The tables a write names (reads or writes) and the one it writes: whether it may share a statement."""

    tables: frozenset[str]
    target: str


def merge_of(statement: ClauseElement) -> Merge | None:
    """An ``INSERT``, ``UPDATE`` or ``DELETE`` built only of Core elements; anything else (a ``text`` fragment,
    whose tables cannot be seen, a ``RETURNING``, a ``WITH``) goes to the server as a statement of its own."""
    if not getattr(statement, "is_dml", False) or bool(getattr(statement, "_returning", None)):
        return None
    if getattr(statement, "_independent_ctes", ()) or any(
        isinstance(element, TextClause | CTE) for element in iterate(statement)
    ):
        return None
    target = getattr(statement, "table", None)
    if not isinstance(target, TableClause):
        return None
    tables = frozenset(table.fullname for table in find_tables(statement, include_crud=True))
    return Merge(tables | {target.fullname}, target.fullname)


Mismatch = Callable[[int], Exception]
"""Makes the error for a write that changed another number of rows than expected, given the number it changed."""


@dataclass(frozen=True, slots=True)
class Write:
    sql: str
    values: Any
    many: bool
    expect: int | None
    mismatch: Mismatch | None
    merge: Merge | None
    """What it reads and writes, when it may share a statement with the writes around it (:func:`groups`)."""
    disjoint: str | None = None
    """Writes with the same tag change distinct rows of their table (the ledger's buckets, by their unique key)."""
    distinct: bool = False
    """The rows of a ``many`` write never meet the same key (its ``ON CONFLICT`` may take them in one ``INSERT``)."""


BEGIN = b"BEGIN"
COMMIT = b"COMMIT"


def needs_begin(connection: Any) -> bool:
    """Whether ``BEGIN`` must go ahead of the next statement: the connection of a direct unit of work
    (:mod:`server.storage.pg_unit`) is in autocommit mode, so that its ``BEGIN`` and ``COMMIT`` go in the same
    pipeline as its statements (psycopg sends its own ``BEGIN`` in a round trip of its own), and it has not begun."""
    return bool(connection.autocommit) and connection.pgconn.transaction_status == TransactionStatus.IDLE


def check(write: Write, rowcount: int) -> None:
    if write.expect is not None and rowcount != write.expect:
        raise _mismatch(write, rowcount)


def _mismatch(write: Write, rowcount: int) -> Exception:
    if write.mismatch is not None:
        return write.mismatch(rowcount)
    return RuntimeError(f"a write changed {rowcount} rows, not {write.expect}")


# --- the queued writes in as few statements as they allow ---------------------------------------------------------
#
# psycopg costs some 60 us of Python per command, several times what the server spends on one of these writes. So
# the queued writes go, where nothing can tell the difference, as ONE statement of data-modifying CTEs:
#
#     WITH w0 AS (UPDATE ... RETURNING 1), w1 AS (INSERT ... VALUES (...), (...)), ...
#     SELECT (SELECT count(*) FROM w0), ...
#
# The server runs a statement's CTEs against one snapshot and in no set order, and does not let one see another's
# changes; a row changed by two of them has one change lost. A write therefore joins a group only if no table it
# names (reads or writes) is written by a write already in it; in the queue's order it would have seen that write,
# in one statement it would not. (The other way round is the same either way: an earlier write never saw a later
# one.) Writes tagged ``disjoint`` alike may share their table, because they change distinct rows. Row-level
# triggers and constraints still fire per row, and a failing CTE fails the whole statement, so the transaction
# fails exactly as before. Each checked write returns its row count, checked here after the round trip as before.

_PLACEHOLDER = re.compile(r"%(?:%|\(([^)]*)\)s)")


def _names(sql: str) -> frozenset[str] | None:
    """The ``%(name)s`` placeholders of ``sql``; ``None`` when it holds a ``%`` or ``$`` of another kind."""
    names = frozenset(match.group(1) for match in _PLACEHOLDER.finditer(sql) if match.group(1) is not None)
    if "%" in _PLACEHOLDER.sub("", sql) or "$" in sql:
        return None
    return names


def _values_clause(sql: str) -> tuple[int, int] | None:
    """Where the one ``VALUES (...)`` row of a compiled ``INSERT`` starts and ends, or ``None``."""
    start = sql.find(") VALUES (")
    if not sql.startswith("INSERT INTO ") or start < 0:
        return None
    start += len(") VALUES ")
    depth = 0
    for index in range(start, len(sql)):
        if sql[index] == "(":
            depth += 1
        elif sql[index] == ")":
            depth -= 1
            if depth == 0:
                return start, index + 1
    return None


@dataclass(frozen=True, slots=True)
class _Part:
    """How one write goes into a merged statement: its SQL (for a ``many``, around the one row it repeats), the
    names of its parameters, and what follows it so that it returns its rows when its row count is checked."""

    head: str
    row: str
    tail: str
    names: frozenset[str]
    returning: str


_PARTS: dict[tuple[str, bool, bool, bool], _Part | None] = {}


def _part(write: Write) -> _Part | None:
    """``None``: the write goes as a statement of its own."""
    key = (write.sql, write.many, write.distinct, write.expect is not None)
    if key in _PARTS:
        return _PARTS[key]
    part: _Part | None = None
    names = _names(write.sql)
    # an INSERT compiled for PostgreSQL may return its key already (SQLAlchemy's implicit RETURNING)
    returning = " RETURNING 1" if write.expect is not None and " RETURNING " not in write.sql else ""
    if names is None:
        pass
    elif not write.many:
        part = _Part(write.sql, "", "", names, returning)
    elif write.distinct or " ON CONFLICT " not in write.sql:
        clause = _values_clause(write.sql)
        if clause is not None:
            start, end = clause
            head, row, tail = write.sql[:start], write.sql[start:end], write.sql[end:]
            if not _names(head + tail):  # placeholders only in the row it repeats
                part = _Part(head, row, tail, names, returning)
    if len(_PARTS) < 4096:
        _PARTS[key] = part
    return part


def _fits(write: Write, part: _Part | None) -> bool:
    if part is None or write.merge is None:
        return False
    if write.many:
        return all(part.names <= row.keys() for row in write.values)
    return bool(part.names <= write.values.keys())


def groups(writes: Sequence[Write]) -> list[list[Write]]:
    """The queue cut into runs that may each go as one statement (a write that may not is a run of its own)."""
    found: list[list[Write]] = []
    written: dict[str, str | None] = {}  # table -> the disjoint tag its writers in the current group share
    current: list[Write] | None = None
    for write in writes:
        merge = write.merge
        if merge is None or not _fits(write, _part(write)):
            found.append([write])
            current = None
            continue
        if current is not None:
            clash = merge.tables & written.keys()
            if clash and not (
                clash == {merge.target} and write.disjoint is not None and written[merge.target] == write.disjoint
            ):
                current = None
        if current is None:
            current = []
            found.append(current)
            written = {}
        current.append(write)
        written.setdefault(merge.target, write.disjoint)
    return found


_Source = tuple[int, int, str]
"""Where a merged statement's parameter comes from: the write's place in the group, its row (-1: not a
``many``), and the parameter's name."""
_MERGED: dict[tuple[bool, tuple[tuple[str, int, bool, int | None], ...]], tuple[str, tuple[_Source, ...]]] = {}


def _merged(group: Sequence[Write], *, checked: bool = False) -> tuple[str, list[Any]]:
    """The one statement of ``group``'s writes and its parameters; ``checked``: the server checks each write's row
    count, failing the statement (and so the transaction) on a wrong one (:func:`mismatch_of` reads the error).

    Its placeholders are PostgreSQL's own (``$1``), run on a raw cursor: psycopg parses a ``%(name)s`` query for its
    placeholders on every execution once it is longer than 4,096 characters or has more than 50 parameters (it
    caches only smaller ones), and a refund's merged writes are both."""
    key = (
        checked,
        tuple((write.sql, len(write.values) if write.many else -1, write.distinct, write.expect) for write in group),
    )
    found = _MERGED.get(key)
    if found is None:
        found = _merge_sql(group, checked=checked)
        if len(_MERGED) < 1024:
            _MERGED[key] = found
    sql, sources = found
    return sql, [
        group[index].values[name] if row < 0 else group[index].values[row][name] for index, row, name in sources
    ]


def _merge_sql(group: Sequence[Write], *, checked: bool) -> tuple[str, tuple[_Source, ...]]:
    numbers: dict[_Source, int] = {}

    def numbered(text: str, index: int, row: int) -> str:
        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None:
                return "%"  # psycopg's escaped percent; a raw query takes it as it is
            return f"${numbers.setdefault((index, row, name), len(numbers) + 1)}"

        return _PLACEHOLDER.sub(number, text)

    ctes: list[str] = []
    counts: list[str] = []
    for index, write in enumerate(group):
        part = _part(write)
        assert part is not None  # groups() made the group of writes that have one
        if write.many:
            rows = ", ".join(numbered(part.row, index, row) for row in range(len(write.values)))
            body = part.head + rows + part.tail
        else:
            body = numbered(part.head, index, -1)
        ctes.append(f"w{index} AS ({body}{part.returning})")
        if write.expect is None:
            continue
        if checked:  # a wrong count cannot be a bigint: the cast fails the statement, naming the write and count
            counts.append(
                f"(SELECT CASE WHEN count(*) = {int(write.expect)} THEN count(*) "  # noqa: S608 - no values
                f"ELSE CAST('{_EXPECT_TAG}{index}:' || count(*) AS bigint) END FROM w{index})"
            )
        else:
            counts.append(f"(SELECT count(*) FROM w{index})")  # noqa: S608 - compiled statements, no values
    sql = f"WITH {', '.join(ctes)} SELECT {', '.join(counts) or '1'}"
    return sql, tuple(numbers)


_EXPECT_TAG = f"mandate.expect.{secrets.token_hex(6)}:"
"""Names a failed row-count check; the per-process token keeps a value a caller sent (which a failed cast would quote
too) from ever being taken for one."""
_EXPECT_FAILED = re.compile('"' + re.escape(_EXPECT_TAG) + r'(\d+):(\d+)"$')


def mismatch_of(group: Sequence[Write], error: BaseException) -> Exception | None:
    """The error a checked merged statement's failure stands for (the write's own mismatch), or ``None``."""
    if getattr(error, "sqlstate", None) != "22P02":  # invalid_text_representation: the failed cast
        return None
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None)
    found = _EXPECT_FAILED.search(primary if isinstance(primary, str) else str(error).split("\n", 1)[0])
    if found is None or int(found.group(1)) >= len(group):
        return None
    write, count = group[int(found.group(1))], int(found.group(2))
    return _mismatch(write, count) if write.expect is not None and count != write.expect else None


def _checkable(batches: list[list[Write]]) -> bool:
    """Whether the server can check every row count: one group, sent as one statement of CTEs."""
    return len(batches) == 1 and all(_fits(write, _part(write)) for write in batches[0])


async def send(connection: Any, writes: list[Write], *, commit: bool = False) -> None:
    """Send a transaction's queued writes to PostgreSQL in as few statements as they allow, in one round trip, and
    check the row count of each write that expects one; ``commit``: then commit (a unit of work's own connection),
    in the same round trip when the server can check the counts itself (one group) or there are none to check."""
    batches = groups(writes)
    if connection.autocommit:  # a unit of work's own connection (server.storage.pg_unit)
        await _send_direct(connection, batches, commit=commit)
        return
    if commit:
        await send(connection, writes)
        await connection.commit()
        return
    if len(batches) == 1:
        await _send_group(connection, batches[0])
        return
    sent: list[tuple[list[Write], Any]] = []
    async with connection.pipeline():
        for group in batches:
            sent.append((group, await _start_group(connection, group)))
    for group, cursor in sent:
        await _finish_group(group, cursor)


async def _send_group(connection: Any, group: list[Write]) -> None:
    await _finish_group(group, await _start_group(connection, group))


async def _send_direct(connection: Any, batches: list[list[Write]], *, commit: bool) -> None:
    """The writes through :func:`server.storage.pg_batch.exchange`, with the unit's ``BEGIN`` if it has not begun.

    With ``commit`` and one group, the server checks the row counts and ``COMMIT`` goes behind the statement: a
    wrong count fails it, so the ``COMMIT`` is not run (the transaction is left aborted) and the write's own error
    is raised. Otherwise the counts are checked here, and ``COMMIT`` follows only once they are right."""
    checked_there = commit and _checkable(batches)
    unchecked = all(write.expect is None for group in batches for write in group)
    statements: list[Statement] = [(BEGIN, None)] if needs_begin(connection) else []
    skip = len(statements)
    plan: list[tuple[list[Write], bool, int]] = []  # each group: merged or not, how many statements
    for group in batches:
        if checked_there or _is_merged(group):
            sql, params = _merged(group, checked=checked_there)
            statements.append((sql.encode(), params))
            plan.append((group, True, 1))
            continue
        write = group[0]
        text, names = positional(write.sql)
        rows = write.values if write.many else [write.values]
        statements.extend((text, [row[name] for name in names]) for row in rows)
        plan.append((group, False, len(rows)))
    folded = commit and (checked_there or unchecked)
    if folded:
        statements.append((COMMIT, None))  # behind the writes: not run if one fails
    try:
        outcomes = await exchange(connection, statements)
    except Exception as exc:
        mismatch = mismatch_of(batches[0], exc) if checked_there else None
        if mismatch is not None:
            raise mismatch from None
        raise
    if not checked_there:
        at = skip
        for group, merged, count in plan:
            results = outcomes[at : at + count]
            at += count
            if merged:
                expecting = [write for write in group if write.expect is not None]
                counts = results[0][0][0] if expecting else ()
                for write, found in zip(expecting, counts, strict=True):
                    check(write, int(found))
            else:
                check(group[0], sum(rowcount for _, rowcount in results))
    if commit and not folded:
        await exchange(connection, [(COMMIT, None)])


def _is_merged(group: list[Write]) -> bool:
    """Whether ``group`` goes as a merged statement (several writes, or one ``many`` as one multi-row ``INSERT``)."""
    return len(group) > 1 or (group[0].many and _fits(group[0], _part(group[0])))


async def _start_group(connection: Any, group: list[Write]) -> Any:
    if _is_merged(group):
        sql, params = _merged(group)
        raw = AsyncRawCursor(connection)
        await raw.execute(sql, params)
        return raw
    cursor = connection.cursor()
    if group[0].many:
        await cursor.executemany(group[0].sql, group[0].values)
    else:
        await cursor.execute(group[0].sql, group[0].values)
    return cursor


async def _finish_group(group: list[Write], cursor: Any) -> None:
    try:
        if _is_merged(group):
            checked = [write for write in group if write.expect is not None]
            counts = await cursor.fetchone() if checked else None
            for write, count in zip(checked, counts or (), strict=True):
                check(write, int(count))
        else:
            check(group[0], cursor.rowcount)
    finally:
        await cursor.close()
