"""Log lines as JSON (``log_format = "json"``): one object per line with ``ts`` (RFC 3339 UTC), ``level``,
``logger``, ``message``, the trace and span ids of the current span when there is one, and ``exc`` for a traceback.

Secrets never reach a line: Mandate does not log tokens, keys or passwords in the first place, and as a second line
of defence every line (text or JSON) goes through :class:`SecretFilter`, which replaces anything shaped like a JWT,
a bearer credential, a webhook secret (``whsec_``), a Stripe key (``sk_live_``, ``rk_test_``) or a password in a URL
with ``[redacted]``; a traceback is redacted too, since a database error's text can quote a statement's values.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

_SECRET_PATTERNS = (
    re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),  # a JWS/JWT compact serialization
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"whsec_[A-Za-z0-9+/=]{8,}"),
    re.compile(r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{8,}"),  # a Stripe secret or restricted key
    re.compile(r"(?i)(://[^:/@\s]+:)[^@\s]+(@)"),  # user:password@host
    re.compile(r"(?i)((?:password|secret|api_key|token)=)[^&\s]+"),
)


def redact_secrets(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        if pattern.groups == 2:
            text = pattern.sub(r"\1[redacted]\2", text)
        elif pattern.groups == 1:
            text = pattern.sub(r"\1[redacted]", text)
        else:
            text = pattern.sub("[redacted]", text)
    return text


class SecretFilter(logging.Filter):
    """Redact secret-shaped text from a record's message and arguments before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_secrets(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class TextFormatter(logging.Formatter):
    """The text format, redacted whole: the filter sees only the message, not a traceback formatted after it."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_secrets(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact_secrets(record.getMessage()),
        }
        from opentelemetry import trace  # imported when the first JSON line is written: the CLI starts fast

        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            entry["exc"] = redact_secrets(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, log_format: str) -> None:
    """Root logging to stderr as text or JSON lines, with secrets redacted either way."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
