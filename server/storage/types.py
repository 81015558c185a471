"""Column types: timestamps that are timezone-aware UTC on the way in and on the way out, on every engine.

SQLite has no time zone type, so SQLAlchemy hands back naive datetimes from it; this type stores UTC and always
returns an aware UTC datetime, and refuses a naive one on the way in rather than guess its zone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: Mandate stores timezone-aware UTC only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_REMEMBERING: dict[str, Callable[[Any], Any]] = {}


def remembering_bind_processor(dialect: Dialect) -> Callable[[Any], Any]:
    """The bind processor of :class:`UTCDateTime` on ``dialect``, remembering the last value it processed (one per
    dialect, shared by every prepared statement: :mod:`server.storage.prepared`).

    A call's statements bind the same instant several times (its clock is read once: the ledger's entries and
    buckets, the effect's rows, the audit record), and on SQLite each turns it into text, about 2 us. Datetimes are
    immutable and the last one is held, so a value seen again by identity is the same value, processed the same.
    """
    found = _REMEMBERING.get(dialect.name)
    if found is not None:
        return found
    inner = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    last: list[tuple[Any, Any]] = [(None, None)]  # (value, processed), replaced as one tuple

    def process(value: Any) -> Any:
        seen, processed = last[0]
        if value is seen and value is not None:
            return processed
        processed = inner(value) if inner is not None else value
        last[0] = (value, processed)
        return processed

    _REMEMBERING[dialect.name] = process
    return process
