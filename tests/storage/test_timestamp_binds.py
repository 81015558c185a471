"""The prepared statements' timestamp processor remembers its last value: a call's instant, bound again, is the same
text, and any other instant (or an equal one in another zone) is processed anew."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy.dialects import postgresql, sqlite

from server.storage.types import UTCDateTime, remembering_bind_processor


def test_a_timestamp_bound_again_or_anew_is_processed_as_the_type_processes_it() -> None:
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        plain = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        remembering = remembering_bind_processor(dialect)
        now = datetime(2026, 12, 3, 8, 0, 0, 123456, tzinfo=UTC)
        later = now + timedelta(microseconds=1)
        elsewhere = now.astimezone(timezone(timedelta(hours=2)))  # the same instant, written in another zone
        for value in (now, now, later, now, elsewhere, elsewhere, None, later):
            expected = plain(value) if plain is not None else UTCDateTime().process_bind_param(value, dialect)
            assert remembering(value) == expected
