"""Statements built once and run on the transaction's own driver connection: the call path's hot statements.

A tools/call commits one transaction of a handful of statements (the order's facts, the ledger totals and
reservation, the effect, the audit record). Run through SQLAlchemy, each statement costs more Python than the
database's own work: the expression is compiled or looked up in the cache, parameters and results pass through the
execution context, and on SQLite every statement is a round trip to aiosqlite's worker thread
(docs/performance.md). :class:`Prepared` compiles a Core statement once per dialect (and, for an ``INSERT`` given
its values at execution, once per set of columns), keeps the column types' bind and result processors, and
:func:`run` executes it directly on the DBAPI connection under the session's transaction:

- on PostgreSQL, psycopg's ``AsyncConnection``; psycopg prepares a statement on the server once it has run a few
  times (its ``prepare_threshold``), so the hot statements are server-side prepared statements;
- on SQLite, the ``sqlite3`` connection under aiosqlite, called on the event loop's thread. That is safe because
  every Mandate write transaction has already taken SQLite's write lock (``BEGIN IMMEDIATE``, which waits on
  aiosqlite's thread, never on the loop): in WAL mode no statement of a transaction that holds the write lock waits
  for another connection, so none of these calls can sleep in SQLite's busy handler. The connection is opened with
  ``check_same_thread=False`` (:class:`server.storage.database.Database`), and aiosqlite's thread is idle
  whenever this code runs, because the session awaits each of its own statements before the next.

Values go through the same type processors SQLAlchemy would apply (timestamps stored as UTC text on SQLite and
handed back timezone-aware), so rows written here and rows written through the ORM are the same rows. Column
defaults are *not* applied: an ``INSERT`` must be given every column it stores. Statements here bypass the ORM's
unit of work, so :func:`run` flushes the session first when it holds pending changes, and callers must not mix
these statements with ORM objects of the same rows in one transaction.
"""

from __future__ import annotations

import re
import sqlite3
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from psycopg import AsyncRawCursor
from sqlalchemy import event
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import CTE, TableClause
from sqlalchemy.sql.util import find_tables
from sqlalchemy.sql.visitors import iterate
from sqlalchemy.util import await_only
from sqlmodel.ext.asyncio.session import AsyncSession

Processor = Callable[[Any], Any]
Row = tuple[Any, ...]

_DRIVER = "mandate.prepared.driver"
"""``Session.info`` key: the transaction's DBAPI connection, found once per transaction."""


@dataclass(frozen=True, slots=True)
class _Form:
    """One statement compiled for one dialect: its SQL, the order of its parameters, and its processors."""

    sql: str
    names: tuple[str, ...] | None
    """Parameter names in positional order (SQLite's ``?``); ``None`` for named parameters (psycopg)."""
    binds: tuple[tuple[str, Processor], ...]
    fixed: Mapping[str, Any]
    """The values the statement carries itself (``literal(...)``, a ``coalesce(..., 0)``)."""
    required: frozenset[str]
    results: tuple[Processor | None, ...]
    row: Callable[[Any], Row]
    """Makes a row from the driver's tuple: a named tuple (``row.status``) when the columns have names."""


class Prepared:
    """A Core statement compiled once per dialect and run with :func:`run`."""

    __slots__ = ("_forms", "_merge", "statement", "takes_columns")

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._forms: dict[tuple[str, tuple[str, ...] | None], _Form] = {}
        self.takes_columns: bool = bool(getattr(statement, "is_insert", False)) and not getattr(
            statement, "_values", None
        )
        """An ``INSERT`` built without values: compiled for the columns it is given."""
        self._merge: _Merge | bool | None = False

    @property
    def merge(self) -> _Merge | None:
        """What a queued write of this statement reads and writes, or ``None`` when it must go alone."""
        if self._merge is False:
            self._merge = _merge_of(self.statement)
        return cast("_Merge | None", self._merge)

    def form(self, dialect: Dialect, keys: tuple[str, ...] | None = None) -> _Form:
        """The statement for ``dialect``; ``keys``: the columns an ``INSERT`` without values is given."""
        cache_key = (dialect.name, keys)
        found = self._forms.get(cache_key)
        if found is None:
            found = self._forms[cache_key] = _compile(self.statement, dialect, keys)
        return found


def _compile(statement: ClauseElement, dialect: Dialect, keys: tuple[str, ...] | None) -> _Form:
    compiled = cast(SQLCompiler, statement.compile(dialect=dialect, column_keys=list(keys) if keys else None))
    binds: list[tuple[str, Processor]] = []
    fixed: dict[str, Any] = {}
    required: set[str] = set()
    for name, parameter in compiled.binds.items():
        processor = parameter.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            binds.append((name, processor))
        if parameter.required:
            required.add(name)
        else:
            fixed[name] = parameter.effective_value
    results: list[Processor | None] = []
    labels: list[str] = []
    for column in getattr(statement, "exported_columns", ()):
        results.append(column.type.dialect_impl(dialect).result_processor(dialect, None))
        labels.append(str(getattr(column, "key", None) or ""))
    row: Callable[[Any], Row] = tuple
    named = all(label.isidentifier() and not label.startswith("_") for label in labels)
    if labels and named and len(set(labels)) == len(labels):
        row = namedtuple("Row", labels)._make  # type: ignore[attr-defined]
    names = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup is not None else None
    return _Form(compiled.string, names, tuple(binds), fixed, frozenset(required), tuple(results), row)


@dataclass(frozen=True, slots=True)
class _Merge:
    """The tables a write names (reads or writes) and the one it writes: whether it may share a statement."""

    tables: frozenset[str]
    target: str


def _merge_of(statement: ClauseElement) -> _Merge | None:
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
    return _Merge(tables | {target.fullname}, target.fullname)


@dataclass(frozen=True, slots=True)
class Result:
    """What a statement returned: its rows (after the result processors) and how many rows it changed."""

    rows: list[Row]
    rowcount: int

    def scalar(self) -> Any:
        """The first column of the first row, or ``None`` when there is no row."""
        return self.rows[0][0] if self.rows else None

    def first(self) -> Row | None:
        return self.rows[0] if self.rows else None


@dataclass(frozen=True, slots=True)
class _Driver:
    dialect: Dialect
    connection: Any
    sqlite: bool


async def _driver(session: AsyncSession) -> _Driver:
    held = session.info.get(_DRIVER)
    if held is not None and held[0] is session.sync_session.get_transaction():
        return cast(_Driver, held[1])  # this transaction's connection, found by an earlier statement
    connection = await session.connection()  # begins the session's transaction if it has not begun
    raw = await connection.get_raw_connection()
    dialect = connection.dialect
    if dialect.name == "sqlite":
        driver = _Driver(dialect, raw.driver_connection._conn, True)  # type: ignore[union-attr]
    else:
        driver = _Driver(dialect, raw.driver_connection, False)
    session.info[_DRIVER] = (session.sync_session.get_transaction(), driver)
    return driver


def bind_driver(session: AsyncSession, dialect: Dialect, connection: sqlite3.Connection) -> None:
    """Hand the session's statements a ``sqlite3`` connection whose transaction the caller has already begun.

    For :class:`server.storage.sqlite_writer.HeldWriter`: the session is bound to that connection, so once the ORM
    begins a transaction of its own on it, :func:`_driver` finds the same connection again through the session.
    """
    session.info[_DRIVER] = (session.sync_session.get_transaction(), _Driver(dialect, connection, True))


def _values(form: _Form, params: Mapping[str, Any]) -> Any:
    if not form.required <= params.keys():
        missing = ", ".join(sorted(form.required - params.keys()))
        raise ValueError(f"a prepared statement was run without the parameters {missing}")
    if form.fixed:
        params = {**form.fixed, **params}
    if form.binds:
        processed = dict(params)
        for name, processor in form.binds:
            if name in processed:
                processed[name] = processor(processed[name])
        params = processed
    if form.names is None:
        return params
    return tuple(params[name] for name in form.names)


def _processed(form: _Form, rows: Sequence[Row]) -> list[Row]:
    processors, make = form.results, form.row
    if not rows:
        return []
    if not any(processors):
        return [make(row) for row in rows]
    return [
        make([value if step is None else step(value) for step, value in zip(processors, row, strict=True)])
        for row in rows
    ]


async def run(session: AsyncSession, prepared: Prepared, params: Mapping[str, Any] | None = None) -> Result:
    """Execute ``prepared`` with ``params`` in the session's transaction (after the writes :func:`defer` queued)."""
    if _has_pending(session):
        await session.flush()
    driver = await _driver(session)
    if _queued(session, driver):
        await flush_deferred(session)
    given = params or {}
    form = prepared.form(driver.dialect, _insert_keys(prepared, given))
    values = _values(form, given)
    if driver.sqlite:
        cursor: sqlite3.Cursor = driver.connection.execute(form.sql, values)
        rows = cursor.fetchall() if cursor.description else []
        return Result(_processed(form, rows), cursor.rowcount)
    async_cursor = await driver.connection.execute(form.sql, values)
    fetched = await async_cursor.fetchall() if async_cursor.description else []
    return Result(_processed(form, fetched), async_cursor.rowcount)


async def run_all(
    session: AsyncSession, statements: Sequence[tuple[Prepared, Mapping[str, Any] | None]]
) -> list[Result]:
    """Execute ``statements`` in order, in the session's transaction, and return each one's result.

    On PostgreSQL they go to the server together, in one round trip (psycopg's pipeline mode), after the writes
    :func:`defer` queued; the server still runs them one after the other, and at READ COMMITTED each takes its own
    snapshot when it starts, so a statement sees everything committed before the one ahead of it finished (a
    ``SELECT`` after a ``SELECT ... FOR UPDATE`` sees what was committed while the lock was awaited). If one fails,
    the ones after it do not run and the error is raised. On SQLite they run one by one.
    """
    if not statements:
        return []
    if _has_pending(session):
        await session.flush()
    driver = await _driver(session)
    if _queued(session, driver):
        await flush_deferred(session)
    if driver.sqlite:
        return [await run(session, prepared, params) for prepared, params in statements]
    forms: list[tuple[_Form, Any]] = []
    for prepared, params in statements:
        given = params or {}
        form = prepared.form(driver.dialect, _insert_keys(prepared, given))
        forms.append((form, _values(form, given)))
    connection = driver.connection
    cursors = []
    async with connection.pipeline():
        for form, values in forms:
            cursor = connection.cursor()
            await cursor.execute(form.sql, values)
            cursors.append(cursor)
    results = []
    for (form, _), cursor in zip(forms, cursors, strict=True):
        fetched = await cursor.fetchall() if cursor.description else []
        results.append(Result(_processed(form, fetched), cursor.rowcount))
        await cursor.close()
    return results


async def run_many(session: AsyncSession, prepared: Prepared, rows: Sequence[Mapping[str, Any]]) -> None:
    """Execute ``prepared`` once per mapping in ``rows`` (every mapping with the same keys), in one call."""
    if not rows:
        return
    if _has_pending(session):
        await session.flush()
    driver = await _driver(session)
    if _queued(session, driver):
        await flush_deferred(session)
    form = prepared.form(driver.dialect, _insert_keys(prepared, rows[0]))
    values = [_values(form, row) for row in rows]
    if driver.sqlite:
        driver.connection.executemany(form.sql, values)
        return
    async with driver.connection.cursor() as cursor:
        await cursor.executemany(form.sql, values)


# --- writes whose results the call does not wait for --------------------------------------------------------------

_DEFERRED = "mandate.prepared.deferred"
"""``Session.info`` key: the transaction's queued writes (:func:`defer`)."""

Mismatch = Callable[[int], Exception]
"""Makes the error for a write that changed another number of rows than expected, given the number it changed."""


@dataclass(frozen=True, slots=True)
class _Write:
    sql: str
    values: Any
    many: bool
    expect: int | None
    mismatch: Mismatch | None
    merge: _Merge | None
    """What it reads and writes, when it may share a statement with the writes around it (:func:`_groups`)."""
    disjoint: str | None = None
    """Writes with the same tag change distinct rows of their table (the ledger's buckets, by their unique key)."""
    distinct: bool = False
    """The rows of a ``many`` write never meet the same key (its ``ON CONFLICT`` may take them in one ``INSERT``)."""


def _queue(session: AsyncSession) -> list[_Write]:
    transaction = session.sync_session.get_transaction()
    held = session.info.get(_DEFERRED)
    if held is None or held[0] is not transaction:
        held = (transaction, [])
        session.info[_DEFERRED] = held
    queue: list[_Write] = held[1]
    return queue


def _queued(session: AsyncSession, driver: _Driver) -> bool:
    if driver.sqlite:
        return False
    held = session.info.get(_DEFERRED)
    return held is not None and bool(held[1]) and held[0] is session.sync_session.get_transaction()


def _check(write: _Write, rowcount: int) -> None:
    if write.expect is not None and rowcount != write.expect:
        if write.mismatch is not None:
            raise write.mismatch(rowcount)
        raise RuntimeError(f"a write changed {rowcount} rows, not {write.expect}")


async def defer(
    session: AsyncSession,
    prepared: Prepared,
    params: Mapping[str, Any],
    *,
    expect: int | None = None,
    mismatch: Mismatch | None = None,
    disjoint: str | None = None,
) -> None:
    """Queue a write that must change ``expect`` rows (any number when ``None``); ``mismatch`` makes the error.

    On PostgreSQL the queued writes of a transaction go to the server together, in one round trip, before its next
    statement here or its commit (:meth:`server.storage.database.Database.run_in_transaction`), most of them in
    one statement (:func:`_send_queued`); a write that fails or changes another number of rows fails the
    transaction there. On SQLite, where a statement costs no round trip, it runs at once. The writes must not touch
    rows that the ORM reads or writes later in the same transaction: an ORM statement can reach the database before
    them. ``disjoint``: a tag promising that the queued writes with this tag change distinct rows of one table.
    """
    if _has_pending(session):
        await session.flush()
    driver = await _driver(session)
    form = prepared.form(driver.dialect, _insert_keys(prepared, params))
    values = _values(form, params)
    if driver.sqlite:
        rowcount = driver.connection.execute(form.sql, values).rowcount
        if expect is not None and rowcount != expect:
            _check(_Write(form.sql, values, False, expect, mismatch, None), rowcount)
        return
    _queue(session).append(_Write(form.sql, values, False, expect, mismatch, prepared.merge, disjoint))


async def defer_many(
    session: AsyncSession, prepared: Prepared, rows: Sequence[Mapping[str, Any]], *, distinct: bool = False
) -> None:
    """Queue ``prepared`` once per mapping in ``rows`` (as :func:`run_many`, but sent with the queued writes).

    ``distinct``: no two rows meet the same key, so an ``INSERT ... ON CONFLICT DO UPDATE`` may take them all in
    one statement (which would refuse to update one row twice)."""
    if not rows:
        return
    if _has_pending(session):
        await session.flush()
    driver = await _driver(session)
    form = prepared.form(driver.dialect, _insert_keys(prepared, rows[0]))
    values = [_values(form, row) for row in rows]
    if driver.sqlite:
        driver.connection.executemany(form.sql, values)
        return
    _queue(session).append(_Write(form.sql, values, True, None, None, prepared.merge, distinct=distinct))


async def flush_deferred(session: AsyncSession) -> None:
    """Send the transaction's queued writes, in one round trip, and check what each changed."""
    await _send_queued(session.sync_session)


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


def _part(write: _Write) -> _Part | None:
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


def _fits(write: _Write, part: _Part | None) -> bool:
    if part is None or write.merge is None:
        return False
    if write.many:
        return all(part.names <= row.keys() for row in write.values)
    return bool(part.names <= write.values.keys())


def _groups(writes: Sequence[_Write]) -> list[list[_Write]]:
    """The queue cut into runs that may each go as one statement (a write that may not is a run of its own)."""
    groups: list[list[_Write]] = []
    written: dict[str, str | None] = {}  # table -> the disjoint tag its writers in the current group share
    current: list[_Write] | None = None
    for write in writes:
        merge = write.merge
        if merge is None or not _fits(write, _part(write)):
            groups.append([write])
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
            groups.append(current)
            written = {}
        current.append(write)
        written.setdefault(merge.target, write.disjoint)
    return groups


_Source = tuple[int, int, str]
"""Where a merged statement's parameter comes from: the write's place in the group, its row (-1: not a
``many``), and the parameter's name."""
_MERGED: dict[tuple[tuple[str, int, bool, bool], ...], tuple[str, tuple[_Source, ...]]] = {}


def _merged(group: Sequence[_Write]) -> tuple[str, list[Any]]:
    """The one statement of ``group``'s writes and its parameters.

    Its placeholders are PostgreSQL's own (``$1``), run on a raw cursor: psycopg parses a ``%(name)s`` query for its
    placeholders on every execution once it is longer than 4,096 characters or has more than 50 parameters (it
    caches only smaller ones), and a refund's merged writes are both."""
    key = tuple(
        (write.sql, len(write.values) if write.many else -1, write.distinct, write.expect is not None)
        for write in group
    )
    found = _MERGED.get(key)
    if found is None:
        found = _merge_sql(group)
        if len(_MERGED) < 1024:
            _MERGED[key] = found
    sql, sources = found
    return sql, [
        group[index].values[name] if row < 0 else group[index].values[row][name] for index, row, name in sources
    ]


def _merge_sql(group: Sequence[_Write]) -> tuple[str, tuple[_Source, ...]]:
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
        assert part is not None  # _groups made the group of writes that have one
        if write.many:
            rows = ", ".join(numbered(part.row, index, row) for row in range(len(write.values)))
            body = part.head + rows + part.tail
        else:
            body = numbered(part.head, index, -1)
        ctes.append(f"w{index} AS ({body}{part.returning})")
        if write.expect is not None:
            counts.append(f"(SELECT count(*) FROM w{index})")  # noqa: S608 - compiled statements, no values
    sql = f"WITH {', '.join(ctes)} SELECT {', '.join(counts) or '1'}"
    return sql, tuple(numbers)


async def _send_queued(sync: Session) -> None:
    held = sync.info.get(_DEFERRED)
    if held is None or not held[1] or held[0] is not sync.get_transaction():
        return
    writes: list[_Write] = held[1]
    sync.info.pop(_DEFERRED, None)
    driver = sync.info[_DRIVER][1]  # found by the statement that queued the first write, in this transaction
    connection = driver.connection
    groups = _groups(writes)
    if len(groups) == 1:
        await _send_group(connection, groups[0])
        return
    sent: list[tuple[list[_Write], Any]] = []
    async with connection.pipeline():
        for group in groups:
            sent.append((group, await _start_group(connection, group)))
    for group, cursor in sent:
        await _finish_group(group, cursor)


async def _send_group(connection: Any, group: list[_Write]) -> None:
    await _finish_group(group, await _start_group(connection, group))


def _is_merged(group: list[_Write]) -> bool:
    """Whether ``group`` goes as a merged statement (several writes, or one ``many`` as one multi-row ``INSERT``)."""
    return len(group) > 1 or (group[0].many and _fits(group[0], _part(group[0])))


async def _start_group(connection: Any, group: list[_Write]) -> Any:
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


async def _finish_group(group: list[_Write], cursor: Any) -> None:
    try:
        if _is_merged(group):
            checked = [write for write in group if write.expect is not None]
            counts = await cursor.fetchone() if checked else None
            for write, count in zip(checked, counts or (), strict=True):
                _check(write, int(count))
        else:
            _check(group[0], cursor.rowcount)
    finally:
        await cursor.close()


@event.listens_for(Session, "before_commit")
def _queued_writes_before_any_commit(sync: Session) -> None:
    """Whatever commits a transaction (not only ``Database.run_in_transaction``) sends its queued writes first, so
    a queued write is never lost; an ``AsyncSession`` commits inside a greenlet, where ``await_only`` may wait."""
    held = sync.info.get(_DEFERRED)
    if held is not None and held[1] and held[0] is sync.get_transaction():
        await_only(_send_queued(sync))


def _insert_keys(prepared: Prepared, params: Mapping[str, Any]) -> tuple[str, ...] | None:
    """An ``INSERT`` built without values is compiled for the columns it is given; other statements ignore it."""
    return tuple(params) if prepared.takes_columns else None


def _has_pending(session: AsyncSession) -> bool:
    """Whether the ORM holds changes not yet flushed (which a statement here must see, so they are flushed first)."""
    sync = session.sync_session
    try:  # SQLAlchemy's own bookkeeping: a set test, where the public properties build sets (4-5 us a call)
        return bool(sync._new or sync._deleted or sync.identity_map._modified)
    except AttributeError:  # pragma: no cover - another SQLAlchemy: the public, slower view
        return bool(sync.new or sync.deleted or sync.dirty)
