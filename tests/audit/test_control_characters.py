"""Control characters an agent sends are stored exactly and shown escaped wherever a person reads them: ``mandate
audit tail``, ``show``, ``export``, ``lineage`` and the server's log lines (server.display)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from server.display import EscapingFormatter, escape_text, install_escaping, json_text
from server.storage.database import Database
from tests.audit.conftest import Cli
from tests.audit.support import append_records, rows

pytestmark = pytest.mark.anyio

FORGED_LINE = "\r\n#99 2025-01-31T09:00:00Z allow/succeeded refund_create admin"  # tool fits 100
# No NUL here: these records are written directly, and PostgreSQL stores no NUL in text (the call path maps it to
# "\\u0000" before it records; tests/audit/test_unwritable_input.py covers that).
HOSTILE_TOOL = "order_get" + FORGED_LINE + "\x1b[2J\x1b]0;owned\x07\u202egnp.exe\u2066x\u2069\x85"
UNSAFE = ["\r", "\n", "\x1b", "\x07", "\u202e", "\u2066", "\u2069", "\x85", "\x00"]


def _clean(text: str) -> None:
    for line in text.split("\n"):  # the output's own line breaks are the only ones
        for char in UNSAFE:
            assert char not in line, f"{char!r} reached the reader"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\r\nb", "a\\r\\nb"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("\u202eevil\u202c", "\\u202eevil\\u202c"),
        ("\u2066\u2069\u200f\u061c", "\\u2066\\u2069\\u200f\\u061c"),
        ("c1 \x9b and del \x7f", "c1 \\x9b and del \\x7f"),
        ("a literal \\n stays distinguishable", "a literal \\\\n stays distinguishable"),
        ("caf\u00e9 \u65e5\u672c", "caf\u00e9 \u65e5\u672c"),
    ],
)
def test_the_shared_escaping_function_shows_every_control_and_bidi_character(raw: str, shown: str) -> None:
    assert escape_text(raw) == shown


def test_json_for_people_escapes_what_json_leaves_raw_and_parses_back_to_the_same_value() -> None:
    value = {"t": "\u202e\x85\u2028\n"}
    text = json_text(value)
    _clean(text)
    assert "\u2028" not in text
    assert json.loads(text) == value


async def test_a_tool_name_with_cr_lf_cannot_forge_a_line_in_audit_tail(db: Database, cli: Cli) -> None:
    await append_records(db, 1, tool=HOSTILE_TOOL, client_id="agent\u202e-x", customer_id="cus\r\n1")
    assert (await rows(db))[0]["tool"] == HOSTILE_TOOL  # stored exactly
    result = await cli("audit", "tail", "-n", "10")
    assert result.code == 0, result.err
    assert len(result.out.rstrip("\n").split("\n")) == 1
    _clean(result.out)
    assert "order_get\\r\\n#99" in result.out


async def test_audit_show_and_export_escape_agent_text_but_export_keeps_the_exact_value(db: Database, cli: Cli) -> None:
    (record,) = await append_records(db, 1, tool=HOSTILE_TOOL, arguments='{"reason":"ok\\u001b[2J\\u202e"}')
    shown = await cli("audit", "show", record.id)
    assert shown.code == 0, shown.err
    _clean(shown.out)
    assert "HASH DOES NOT MATCH" not in shown.out
    exported = await cli("audit", "export")
    _clean(exported.out)
    (line,) = exported.out.rstrip("\n").split("\n")
    assert json.loads(line)["tool"] == HOSTILE_TOOL
    assert json.loads(line)["arguments"] == {"reason": "ok\x1b[2J\u202e"}
    as_json = await cli("audit", "show", record.id, "--json")
    _clean(as_json.out)
    assert json.loads(as_json.out)["tool"] == HOSTILE_TOOL


async def test_lineage_of_a_principal_escapes_its_records(db: Database, cli: Cli) -> None:
    await append_records(db, 1, tool=HOSTILE_TOOL, client_id="evil-agent")
    text = await cli("audit", "lineage", "--client-id", "evil-agent")
    assert text.code == 0, text.err
    _clean(text.out)
    assert "order_get\\r\\n" in text.out
    as_json = await cli("audit", "lineage", "--client-id", "evil-agent", "--json")
    _clean(as_json.out)
    assert json.loads(as_json.out)["records"][0]["tool"] == HOSTILE_TOOL


def test_a_log_line_carrying_agent_text_stays_one_line_with_its_controls_escaped() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("tests.display")
    logger.addHandler(handler)
    logger.propagate = False
    install_escaping(logger)
    assert isinstance(handler.formatter, EscapingFormatter)
    try:
        logger.warning("a %s call could not be handled", HOSTILE_TOOL)
        try:
            raise ValueError(f"no tool {HOSTILE_TOOL}")
        except ValueError:
            logger.exception("refused %s", "x\ny")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    for char in UNSAFE[2:]:
        assert char not in out
    lines = out.splitlines()
    assert lines[0].startswith("WARNING tests.display: a order_get\\r\\n#99")
    assert lines[1] == "ERROR tests.display: refused x\\ny"
    assert lines[-1].startswith("ValueError: no tool order_get\\r\\n#99")
    assert not any(line.startswith("#99") for line in lines)
