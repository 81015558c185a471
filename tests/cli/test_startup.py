"""`mandate --help` and `mandate token mint` import only what they need, so they start in well under a second.

Timing belongs in bench/ (bench/startup.py); these tests assert the cause instead: which heavy modules load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import COMMANDS, build_parser

HEAVY = ("mcp", "sqlalchemy", "sqlmodel", "starlette", "uvicorn", "httpx2", "aiosqlite", "psycopg", "anyio")

_PROBE = """
import json, sys
from server.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})), file=sys.stderr)
"""


def _top_level_modules_loaded_by(*argv: str, data_dir: Path) -> set[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MANDATE_")}
    env["MANDATE_DATA_DIR"] = str(data_dir)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def test_mandate_help_imports_none_of_the_heavy_libraries(tmp_path: Path) -> None:
    loaded = _top_level_modules_loaded_by("--help", data_dir=tmp_path)
    assert "server" in loaded
    assert loaded.isdisjoint({*HEAVY, "pydantic", "joserfc"}), sorted(loaded & {*HEAVY, "pydantic", "joserfc"})


def test_token_mint_imports_neither_the_sdk_nor_the_database_nor_the_http_stack(tmp_path: Path) -> None:
    loaded = _top_level_modules_loaded_by("token", "mint", "--agent", "refunds", data_dir=tmp_path)
    assert "joserfc" in loaded  # it did mint
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_mandate_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    from server.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"mandate {version('mandate')}"


def _top_level_commands(parser: argparse.ArgumentParser) -> dict[str, str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {choice.dest: choice.help or "" for choice in sub._choices_actions}


def test_the_lazy_command_table_lists_every_command_the_modules_register_with_the_same_help() -> None:
    registered = _top_level_commands(build_parser(everything=True))
    table = {name: help_text for name, (_module, help_text) in COMMANDS.items()}
    missing = {name: text for name, text in registered.items() if name not in table}
    assert not missing, (
        "add a row to COMMANDS in server/cli/__init__.py for each new top-level command, e.g. "
        + ", ".join(f'"{name}": ("server.cli.<module>", {text!r})' for name, text in missing.items())
    )
    assert registered == table, "the help text in COMMANDS (server/cli/__init__.py) must match the command's own"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_builds_its_own_parser_alone(command: str) -> None:
    parser = build_parser(command)
    with pytest.raises(SystemExit) as done:
        parser.parse_args([command, "--help"])
    assert done.value.code == 0


def test_token_mint_help_says_its_port_names_the_server_the_token_is_for(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser("token").parse_args(["token", "mint", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "port of the server the token is for" in shown
    assert "port to bind" not in shown
