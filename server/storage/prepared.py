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

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, cast

from psycopg.errors import InFailedSqlTransaction
from psycopg.pq import TransactionStatus
from sqlalchemy import event
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import await_only
from sqlmodel.ext.asyncio.session import AsyncSession

from server.storage.merged_writes import BEGIN, COMMIT, Merge, Mismatch, Write, check, merge_of, needs_begin, send
from server.storage.pg_batch import Statement, exchange, positional
from server.storage.types import UTCDateTime, remembering_bind_processor

Processor = Callable[[Any], Any]
_IDLE = TransactionStatus.IDLE
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
    ordered: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None
    """Positional forms: the parameters in order, in one call (``operator.itemgetter``); ``None``: :func:`_values`
    works through the general steps (named parameters, or a form :func:`_compile` found no shortcut for)."""
    steps: tuple[tuple[Processor, tuple[int, ...]], ...]
    """With ``ordered``: each bind processor and the positions its parameter takes."""
    result_steps: tuple[tuple[int, Processor], ...]
    """The result processors and the column each one converts (the columns without one are taken as they are)."""


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
        self._merge: Merge | bool | None = False

    @property
    def merge(self) -> Merge | None:
        """What a queued write of this statement reads and writes, or ``None`` when it must go alone."""
        if self._merge is False:
            self._merge = merge_of(self.statement)
        return cast("Merge | None", self._merge)

    def form(self, dialect: Dialect, keys: tuple[str, ...] | None = None) -> _Form:
        """The statement for ``dialect``; ``keys``: the columns an ``INSERT`` without values is given."""
        cache_key = (dialect.name, keys)
        found = self._forms.get(cache_key)
        if found is None:
            found = self._forms[cache_key] = _compile(self.statement, dialect, keys)
        return found

    def _form_for(self, dialect: Dialect, params: Mapping[str, Any]) -> _Form:
        """:meth:`form` for a call given ``params`` (their keys are the columns of an ``INSERT`` without values)."""
        keys = tuple(params) if self.takes_columns else None
        found = self._forms.get((dialect.name, keys))
        return self.form(dialect, keys) if found is None else found


def _compile(statement: ClauseElement, dialect: Dialect, keys: tuple[str, ...] | None) -> _Form:
    compiled = cast(SQLCompiler, statement.compile(dialect=dialect, column_keys=list(keys) if keys else None))
    binds: list[tuple[str, Processor]] = []
    fixed: dict[str, Any] = {}
    required: set[str] = set()
    for name, parameter in compiled.binds.items():
        if isinstance(parameter.type, UTCDateTime):
            processor: Processor | None = remembering_bind_processor(dialect)  # a call binds one instant often
        else:
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
        result = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if result is not None and dialect.name == "sqlite" and isinstance(column.type, UTCDateTime):
            result = _sqlite_utc_result(result)
        results.append(result)
        labels.append(str(getattr(column, "key", None) or ""))
    row: Callable[[Any], Row] = tuple
    named = all(label.isidentifier() and not label.startswith("_") for label in labels)
    if labels and named and len(set(labels)) == len(labels):
        row = namedtuple("Row", labels)._make  # type: ignore[attr-defined]
    names = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup is not None else None
    ordered, steps = _ordering(names, binds, required)
    result_steps = tuple((index, step) for index, step in enumerate(results) if step is not None)
    return _Form(
        compiled.string,
        names,
        tuple(binds),
        fixed,
        frozenset(required),
        tuple(results),
        row,
        ordered,
        steps,
        result_steps,
    )


def _sqlite_utc_result(general: Processor) -> Processor:
    """:class:`UTCDateTime`'s result processor on SQLite, ``general``, with a shortcut for the text it stores.

    ``general`` parses the stored text (``2026-12-04 10:00:00.123456``, always 26 characters) and then sets its time
    zone with ``datetime.replace``, which alone costs about 0.5 us; parsing the text with ``+00:00`` after it gives
    the same aware UTC datetime in one step. Anything else (an offset already there, another length, not text at
    all) goes to ``general``, which answers or fails as it always did."""
    parse = datetime.fromisoformat

    def process(value: Any) -> Any:
        if value.__class__ is str and len(value) == 26:
            try:
                aware = parse(value + "+00:00")
            except ValueError:
                return general(value)
            if aware.tzinfo is UTC:
                return aware
        return general(value)

    return process


def _ordering(
    names: tuple[str, ...] | None, binds: Sequence[tuple[str, Processor]], required: set[str]
) -> tuple[Callable[[Mapping[str, Any]], tuple[Any, ...]] | None, tuple[tuple[Processor, tuple[int, ...]], ...]]:
    """The shortcut :func:`_values` takes for a positional form, when it gives exactly what the general steps give.

    It does when every required parameter and every parameter with a processor is one the SQL takes: then a
    parameter missing from the call is a required one (the others are the form's own, always there), and each
    processor converts a value the SQL is given (once per position: the processors are pure functions of the value).
    """
    if names is None or not required <= set(names) or any(name not in names for name, _ in binds):
        return None, ()
    ordered: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    if not names:
        ordered = _nothing
    elif len(names) == 1:
        only = names[0]
        ordered = lambda params: (params[only],)  # noqa: E731 - itemgetter of one name gives the value, not a tuple
    else:
        ordered = itemgetter(*names)
    steps = tuple(
        (processor, tuple(index for index, each in enumerate(names) if each == name)) for name, processor in binds
    )
    return ordered, steps


def _nothing(_params: Mapping[str, Any]) -> tuple[Any, ...]:
    return ()


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


_DIRECT = object()
"""The ``Session.info`` owner of a driver bound for the session's whole life (:func:`bind_direct`)."""


def _held_driver(sync: Session) -> _Driver | None:
    """The connection an earlier statement of the session's current transaction found, or ``None``."""
    held = sync.info.get(_DRIVER)
    if held is not None and (held[0] is _DIRECT or held[0] is sync.get_transaction()):
        return cast(_Driver, held[1])
    return None


async def _driver(session: AsyncSession) -> _Driver:
    held = _held_driver(session.sync_session)
    if held is not None:
        return held  # this transaction's connection, found by an earlier statement
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


def bind_direct(session: AsyncSession, dialect: Dialect, connection: Any) -> None:
    """Hand the session's statements the psycopg connection of :func:`server.storage.pg_unit.run_unit`.

    The session is bound to that connection and lives for one transaction, so its statements and its queued
    writes belong to it whether or not the ORM has begun a transaction of its own on it (which it does inside the
    one psycopg began)."""
    session.info[_DRIVER] = (_DIRECT, _Driver(dialect, connection, False))


def _owner(sync: Session) -> object:
    """What a queued write belongs to: the session's direct connection, or else its current transaction."""
    held = sync.info.get(_DRIVER)
    if held is not None and held[0] is _DIRECT:
        return _DIRECT
    return sync.get_transaction()


def _values(form: _Form, params: Mapping[str, Any]) -> Any:
    """The values to bind: the form's own and the call's, through the bind processors, in the SQL's order (a tuple)
    for SQLite's ``?``, by name (a mapping) for psycopg."""
    ordered = form.ordered
    if ordered is not None:
        if form.fixed:
            params = {**form.fixed, **params}
        try:
            values = ordered(params)
        except KeyError:
            return _values_in_steps(form, params)  # raises, naming the missing parameters
        if not form.steps:
            return values
        converted = list(values)
        for processor, positions in form.steps:
            value = processor(converted[positions[0]])
            for position in positions:
                converted[position] = value
        return tuple(converted)
    return _values_in_steps(form, params)


def _values_in_steps(form: _Form, params: Mapping[str, Any]) -> Any:
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
    if not rows:
        return []
    steps, make = form.result_steps, form.row
    if not steps:
        return [make(row) for row in rows]
    width = len(form.results)
    made = []
    for row in rows:
        if len(row) != width:
            return _processed_column_by_column(form, rows)  # raises, as zip(strict=True) does
        values = list(row)
        for index, step in steps:
            values[index] = step(values[index])
        made.append(make(values))
    return made


def _processed_column_by_column(form: _Form, rows: Sequence[Row]) -> list[Row]:
    processors, make = form.results, form.row
    return [
        make([value if step is None else step(value) for step, value in zip(processors, row, strict=True)])
        for row in rows
    ]


async def run(session: AsyncSession, prepared: Prepared, params: Mapping[str, Any] | None = None) -> Result:
    """Execute ``prepared`` with ``params`` in the session's transaction (after the writes :func:`defer` queued)."""
    sync = session.sync_session
    if _pending(sync):
        await session.flush()
    driver = _held_driver(sync) or await _driver(session)
    given = params or {}
    if driver.sqlite:  # nothing is queued on SQLite (defer runs at once)
        form = prepared._form_for(driver.dialect, given)
        cursor: sqlite3.Cursor = driver.connection.execute(form.sql, _values(form, given))
        rows = cursor.fetchall() if cursor.description else []
        return Result(_processed(form, rows), cursor.rowcount)
    if _queued(session, driver):
        await flush_deferred(session)
    form = prepared.form(driver.dialect, _insert_keys(prepared, given))
    values = _values(form, given)
    connection = driver.connection
    if connection.autocommit:  # a unit of work's own connection: its BEGIN, if not sent, goes with the statement
        begin: list[Statement] = [(BEGIN, None)] if needs_begin(connection) else []
        rows, rowcount = (await exchange(connection, [*begin, _positional(form, values)]))[-1]
        return Result(_processed(form, rows), rowcount)
    async_cursor = await connection.execute(form.sql, values)
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
    if connection.autocommit:  # a unit of work's own connection (server.storage.pg_unit)
        begin: list[Statement] = [(BEGIN, None)] if needs_begin(connection) else []
        outcomes = await exchange(connection, [*begin, *(_positional(form, values) for form, values in forms)])
        return [
            Result(_processed(form, rows), rowcount)
            for (form, _), (rows, rowcount) in zip(forms, outcomes[len(begin) :], strict=True)
        ]
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
    sync = session.sync_session
    if _pending(sync):
        await session.flush()
    driver = _held_driver(sync) or await _driver(session)
    if _queued(session, driver):
        await flush_deferred(session)
    form = prepared._form_for(driver.dialect, rows[0])
    values = [_values(form, row) for row in rows]
    if driver.sqlite:
        driver.connection.executemany(form.sql, values)
        return
    if needs_begin(driver.connection):
        await driver.connection.execute(BEGIN)
    async with driver.connection.cursor() as cursor:
        await cursor.executemany(form.sql, values)


# --- writes whose results the call does not wait for --------------------------------------------------------------

_DEFERRED = "mandate.prepared.deferred"
"""``Session.info`` key: the transaction's queued writes (:func:`defer`)."""


def _queue(session: AsyncSession) -> list[Write]:
    transaction = _owner(session.sync_session)
    held = session.info.get(_DEFERRED)
    if held is None or held[0] is not transaction:
        held = (transaction, [])
        session.info[_DEFERRED] = held
    queue: list[Write] = held[1]
    return queue


def _queued(session: AsyncSession, driver: _Driver) -> bool:
    if driver.sqlite:
        return False
    held = session.info.get(_DEFERRED)
    return held is not None and bool(held[1]) and held[0] is _owner(session.sync_session)


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
    sync = session.sync_session
    if _pending(sync):
        await session.flush()
    driver = _held_driver(sync) or await _driver(session)
    form = prepared._form_for(driver.dialect, params)
    values = _values(form, params)
    if driver.sqlite:
        rowcount = driver.connection.execute(form.sql, values).rowcount
        if expect is not None and rowcount != expect:
            check(Write(form.sql, values, False, expect, mismatch, None), rowcount)
        return
    _queue(session).append(Write(form.sql, values, False, expect, mismatch, prepared.merge, disjoint))


async def defer_many(
    session: AsyncSession, prepared: Prepared, rows: Sequence[Mapping[str, Any]], *, distinct: bool = False
) -> None:
    """Queue ``prepared`` once per mapping in ``rows`` (as :func:`run_many`, but sent with the queued writes).

    ``distinct``: no two rows meet the same key, so an ``INSERT ... ON CONFLICT DO UPDATE`` may take them all in
    one statement (which would refuse to update one row twice)."""
    if not rows:
        return
    sync = session.sync_session
    if _pending(sync):
        await session.flush()
    driver = _held_driver(sync) or await _driver(session)
    form = prepared._form_for(driver.dialect, rows[0])
    values = [_values(form, row) for row in rows]
    if driver.sqlite:
        driver.connection.executemany(form.sql, values)
        return
    _queue(session).append(Write(form.sql, values, True, None, None, prepared.merge, distinct=distinct))


async def flush_deferred(session: AsyncSession) -> None:
    """Send the transaction's queued writes, in one round trip, and check what each changed."""
    await _send_queued(session.sync_session)


async def commit_deferred(session: AsyncSession) -> None:
    """Send the queued writes of a :func:`bind_direct` session with its ``COMMIT``, in one round trip.

    Each write's row count is checked by the server (a wrong one aborts the transaction, so the ``COMMIT`` does
    not commit) and raised as the error :func:`defer` was given. For the ORM's part, use the session's commit."""
    driver = session.info[_DRIVER][1]
    connection = driver.connection
    writes = _take_queued(session.sync_session)
    if writes:
        await send(connection, writes, commit=True)
    elif connection.pgconn.transaction_status != _IDLE:
        done = await connection.execute(COMMIT)
        if done.statusmessage != "COMMIT":  # PostgreSQL answers COMMIT in an aborted transaction with ROLLBACK
            raise InFailedSqlTransaction("the transaction had failed; its COMMIT rolled it back")


class Savepoint:
    """A ``SAVEPOINT`` in a session's transaction that this module's statements respect (:func:`begin_savepoint`)."""

    def __init__(self, session: AsyncSession, nested: Any) -> None:
        self._session = session
        self._nested = nested

    @property
    def is_active(self) -> bool:
        return bool(self._nested.is_active)

    async def commit(self) -> None:
        """Keep what was done since the savepoint (its queued writes are sent first, inside it)."""
        await flush_deferred(self._session)
        await self._nested.commit()

    async def rollback(self) -> None:
        """Undo what was done since the savepoint: the writes still queued are dropped, never sent, and the server
        rolls back to the savepoint whatever did reach it."""
        _take_queued(self._session.sync_session)
        await self._nested.rollback()


async def begin_savepoint(session: AsyncSession) -> Savepoint:
    """Begin a savepoint whose rollback also undoes this module's statements and queued writes.

    The ORM's own ``begin_nested`` is not enough here: SQLAlchemy sends ``SAVEPOINT`` only with the next statement
    it runs itself, which statements sent straight to the driver are not, and a write queued by :func:`defer`
    reaches the server only later, after the savepoint's rollback. So the writes queued before it are sent first,
    and ``SAVEPOINT`` at once; its rollback drops the writes queued since."""
    await flush_deferred(session)
    nested = await session.begin_nested()
    await session.connection()  # SQLAlchemy sends the SAVEPOINT as the nested transaction takes its connection
    return Savepoint(session, nested)


def _take_queued(sync: Session) -> list[Write]:
    held = sync.info.get(_DEFERRED)
    if held is None or not held[1] or held[0] is not _owner(sync):
        return []
    sync.info.pop(_DEFERRED, None)
    return cast(list[Write], held[1])


async def _send_queued(sync: Session) -> None:
    writes = _take_queued(sync)
    if writes:
        driver = sync.info[_DRIVER][1]  # found by the statement that queued the first write, in this transaction
        await send(driver.connection, writes)


@event.listens_for(Session, "before_commit")
def _queued_writes_before_any_commit(sync: Session) -> None:
    """Whatever commits a transaction (not only ``Database.run_in_transaction``) sends its queued writes first, so
    a queued write is never lost; an ``AsyncSession`` commits inside a greenlet, where ``await_only`` may wait."""
    held = sync.info.get(_DEFERRED)
    if held is not None and held[1] and held[0] is _owner(sync):
        await_only(_send_queued(sync))


def _positional(form: _Form, values: Mapping[str, Any]) -> Statement:
    """The statement for :func:`server.storage.pg_batch.exchange`: ``$1`` placeholders and the values in order."""
    sql, names = positional(form.sql)
    return sql, [values[name] for name in names]


def _insert_keys(prepared: Prepared, params: Mapping[str, Any]) -> tuple[str, ...] | None:
    """An ``INSERT`` built without values is compiled for the columns it is given; other statements ignore it."""
    return tuple(params) if prepared.takes_columns else None


def _has_pending(session: AsyncSession) -> bool:
    """Whether the ORM holds changes not yet flushed (which a statement here must see, so they are flushed first)."""
    return _pending(session.sync_session)


def _pending(sync: Session) -> bool:
    """:func:`_has_pending` of the session's ``sync_session``."""
    try:  # SQLAlchemy's own bookkeeping: a set test, where the public properties build sets (4-5 us a call)
        return bool(sync._new or sync._deleted or sync.identity_map._modified)
    except AttributeError:  # pragma: no cover - another SQLAlchemy: the public, slower view
        return bool(sync.new or sync.deleted or sync.dirty)
