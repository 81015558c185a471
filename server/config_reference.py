"""The configuration reference (docs/configuration.md), generated from the settings models in ``server.config``.

Every field of :class:`server.config.Settings` and of the models it nests becomes one row: its TOML key, its
``MANDATE_*`` variable, its default, its bounds and its meaning (the docstring under the field). The tests
(``tests/test_config_reference.py``) fail when a setting has no docstring or the file is out of date, so the
reference cannot fall behind the code. Regenerate it with::

    uv run python -m server.config_reference --write      # or: make docs
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from server.config import Settings, environment_variables

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

PROCESS_VARIABLES: dict[str, str] = {
    "MANDATE_CONFIG": "The TOML file to read settings from (every key below). Unset: settings come from the "
    "environment and flags only.",
    "MANDATE_TOKEN": "The caller's access token for `mandate serve --transport stdio` and for `mandate approvals` "
    "(the approver's token). Never logged.",
    "MANDATE_TOKEN_FILE": "stdio only: a file holding the access token, read again on every request, so whatever "
    "refreshes tokens can replace it while the server runs.",
    "MANDATE_AUDIT_KEY": "The Ed25519 key file the sequencer and `mandate audit checkpoint` sign tree heads with "
    "(or `--key`; `audit.signing_key` in the file). Keep it apart from the database.",
    "MANDATE_APPROVAL_KEY": "The approval seal's key (32 random bytes, base64url or hex; HMAC-SHA256). Unset: "
    "`DATA_DIR/approval-key`, created 0600 on first use. Every replica needs the same key; never in the database.",
    "MANDATE_URL": "`mandate approvals --url`: the running server's base URL, so the command decides through its "
    "HTTP API instead of opening the database itself.",
    "MANDATE_FAULT_POINT": "TEST-ONLY, never in production: the crash tests' fault point at which the server kills "
    "itself (server/effects/faults.py, docs/effects.md).",
}
"""Variables read by particular commands rather than being settings."""

_INTRO = """\
# Configuration reference

<!-- Generated from server/config.py by `uv run python -m server.config_reference --write` (`make docs`).
     Do not edit by hand: change the field's docstring in server/config.py and regenerate. -->

Settings come from three places, each overriding the one before:

1. the TOML file named by `MANDATE_CONFIG` (keys as in the first column; a dotted key is a table, e.g.
   `approvals.ttl_seconds` is `ttl_seconds` under `[approvals]`; `issuers[]` rows are `[[issuers]]` tables);
2. `MANDATE_*` environment variables (lists are comma-separated; booleans accept `1`, `true`, `yes`, `on`);
3. command-line flags (`--host`, `--port`, `--data-dir`, `--database-url`, `--dev-issuer`, `--stateful`).

An invalid value stops the start with one line naming the file or variable and the field. `mandate init DIR` writes
a commented file to start from. How to configure common authorization servers: docs/authorization-servers.md.
"""


@dataclass(frozen=True)
class Row:
    key: str
    variable: str
    default: str
    bounds: str
    meaning: str


def _models_in(annotation: Any) -> tuple[type[BaseModel], bool] | None:
    """The settings model a field holds (and whether it is a list of them), if it holds one."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if origin in (list, tuple):
        (item, *_rest) = typing.get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item, True
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _models_in(arg)
            if found is not None:
                return found
    return None


def _default(info: FieldInfo) -> str:
    shown = (info.json_schema_extra or {}).get("default_shown") if isinstance(info.json_schema_extra, dict) else None
    if shown is not None:
        return str(shown)
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.is_required():
        return "required"
    else:
        value = info.default
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "(table)"
    if isinstance(value, Path):
        return f"`{value}`"
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else f'`"{value}"`'


def _bounds(info: FieldInfo) -> str:
    parts: list[str] = []
    for constraint in info.metadata:
        for name, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >=")):
            value = getattr(constraint, name, None)
            if value is not None:
                parts.append(f"{symbol} {value}")
    return ", ".join(parts)


def _meaning(info: FieldInfo) -> str:
    return " ".join((info.description or "").split()).replace("``", "`").replace("|", "\\|")


def rows(model: type[BaseModel] = Settings, prefix: str = "", env_prefix: str = "") -> Iterator[Row]:
    variables = {path: variable for variable, path in environment_variables().items()}
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _models_in(info.annotation)
        if nested is not None:
            inner, is_list = nested
            yield from rows(inner, f"{key}[]." if is_list else f"{key}.", f"{env_prefix}{name}.")
            continue
        variable = variables.get(f"{env_prefix}{name}")
        yield Row(key, f"`{variable}`" if variable else "-", _default(info), _bounds(info), _meaning(info))


def render() -> str:
    lines = [_INTRO, "## Settings", "", "| key | variable | default | bounds | meaning |"]
    lines.append("| --- | --- | --- | --- | --- |")
    for row in rows():
        lines.append(f"| `{row.key}` | {row.variable} | {row.default} | {row.bounds} | {row.meaning} |")
    lines += ["", "## Variables read by particular commands", "", "| variable | meaning |", "| --- | --- |"]
    lines += [f"| `{variable}` | {meaning} |" for variable, meaning in PROCESS_VARIABLES.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.config_reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {DOC_PATH} instead of printing it")
    args = parser.parse_args(argv)
    if args.write:
        DOC_PATH.write_text(render())
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
