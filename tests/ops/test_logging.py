"""See (logs): ``log_format = "json"`` writes one JSON object per line, with the trace id of the current span, and no
secret (a token, a webhook secret, a password in a URL) reaches a line in either format."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from server.config import load_settings
from server.observability.logging import JsonFormatter, SecretFilter, TextFormatter, configure_logging

TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJlLWJ5dGVz"


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(SecretFilter())
    logger = logging.getLogger("mandate.test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield stream
    logger.removeHandler(handler)


def test_json_lines_carry_level_logger_message_and_the_current_trace(lines: io.StringIO) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("call") as span:
        logging.getLogger("mandate.test.json").info("refund %s for %s", "rf_1", "cus_1001")
    entry = json.loads(lines.getvalue().strip())
    assert entry["level"] == "info" and entry["logger"] == "mandate.test.json"
    assert entry["message"] == "refund rf_1 for cus_1001"
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert entry["ts"].endswith("+00:00")


def test_no_secret_reaches_a_log_line(lines: io.StringIO) -> None:
    logger = logging.getLogger("mandate.test.json")
    logger.warning("token %s refused", TOKEN)
    logger.warning("Authorization: Bearer abcdefghijklmnop was sent")
    logger.warning("webhook secret whsec_c2VjcmV0LXNlY3JldA== loaded")
    logger.warning("connecting to postgresql://mandate:hunter2@db:5432/mandate")
    try:
        raise ValueError(f"bad token {TOKEN}")
    except ValueError:
        logger.exception("failed")
    text = lines.getvalue()
    for secret in (TOKEN, "abcdefghijklmnop", "c2VjcmV0LXNlY3JldA", "hunter2"):
        assert secret not in text
    assert text.count("[redacted]") >= 5
    assert all(json.loads(line) for line in text.splitlines())


def test_a_traceback_in_the_text_format_is_redacted_too() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter())
    logger = logging.getLogger("mandate.test.text")
    logger.addHandler(handler)
    logger.propagate = False
    key = "sk_live_51Habcdefghijklmnop"
    try:
        try:  # a database error quoting a statement's values, then the error met while handling it
            raise ValueError(f"duplicate key value violates unique constraint: Key (k)=({key}) exists; {TOKEN}")
        except ValueError as exc:
            raise RuntimeError("could not roll back") from exc
    except RuntimeError:
        logger.exception("a statement failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "a statement failed" in text and "Traceback" in text
    assert key not in text and TOKEN not in text
    assert text.count("[redacted]") >= 2


def test_the_log_format_is_a_setting_and_configures_the_root_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(environ={"MANDATE_LOG_FORMAT": "json"}).log_format == "json"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", "json")
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
