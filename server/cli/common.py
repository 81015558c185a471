"""What every ``mandate`` subcommand shares: settings from file, environment and flags, and its error type."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.config import Settings, load_settings

Command = Callable[[argparse.Namespace, Settings], int]

TOKEN_VARIABLE = "MANDATE_TOKEN"  # noqa: S105 - the name of the variable, not a token


class CommandError(Exception):
    """A command cannot do what it was asked; the message says why."""


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for key in ("host", "port", "data_dir", "database_url"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    if getattr(args, "dev_issuer", False):
        overrides["dev_issuer"] = True
    if getattr(args, "stateful", False):
        overrides["stateless"] = False
    return load_settings(overrides)


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (default 8000)")
    parser.add_argument("--data-dir", dest="data_dir", help="data directory (default ./data)")
    parser.add_argument("--database-url", dest="database_url", help="SQLAlchemy URL, e.g. postgresql://host/db")


def read_access_token(args: argparse.Namespace, whose: str = "an approver's") -> str:
    """The person's access token: ``--token-file``, else ``MANDATE_TOKEN``; never a flag value (shell history)."""
    if getattr(args, "token_file", None):
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise CommandError(f"cannot read the token file: {exc.strerror}") from None
    else:
        token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise CommandError(f"{whose} access token is needed: set {TOKEN_VARIABLE} or use --token-file")
    return token
