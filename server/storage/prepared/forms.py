"""A Core statement compiled once per dialect, with its column types' bind and result processors, and those
processors applied: the values a statement binds and the rows it returns.

Run through SQLAlchemy, a statement is compiled, or looked up in the compiled cache, and its parameters and results
pass through the execution context on every call, which costs more Python than the database's own work
(docs/performance.md). :class:`Prepared` compiles a Core statement once per dialect (and, for an ``INSERT`` given
its values at execution, once per set of columns) into a :class:`_Form` that keeps the column types' bind and
result processors, and the shortcuts that apply them in few steps: :func:`_values` gathers the values in the SQL's
order with one ``operator.itemgetter``, :func:`_processed` converts only the columns that have a result processor.

Values go through the same type processors SQLAlchemy would apply (timestamps stored as UTC text on SQLite and
handed back timezone-aware), so rows written with these statements and rows written through the ORM are the same
rows. Column defaults are *not* applied: an ``INSERT`` must be given every column it stores.

The forms are run by :mod:`server.storage.prepared.running` and queued by :mod:`server.storage.prepared.deferred`.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, cast

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from server.storage.merged_writes import Merge, merge_of
from server.storage.types import UTCDateTime, remembering_bind_processor

Processor = Callable[[Any], Any]
Row = tuple[Any, ...]


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
    """A Core statement compiled once per dialect and run with :func:`server.storage.prepared.running.run`."""

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


def _insert_keys(prepared: Prepared, params: Mapping[str, Any]) -> tuple[str, ...] | None:
    """An ``INSERT`` built without values is compiled for the columns it is given; other statements ignore it."""
    return tuple(params) if prepared.takes_columns else None


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
