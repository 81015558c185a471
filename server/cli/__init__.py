"""The ``mandate`` command line: run the server, seed the demo store, mint development tokens, print the scopes.

Every command reads the same settings (``MANDATE_CONFIG`` file, ``MANDATE_*`` variables, then flags). Errors are
one clear line on stderr and a non-zero exit; no secret is printed except the token ``token mint`` is asked for.
Each command group lives in a module of its own with a ``register(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from scopes.catalog import CatalogError
from server.cli import approvals, audit, effects, policy, reconcile, remediate, scopes, serve, suspensions, tokens
from server.cli.common import Command, CommandError, settings_from
from server.config import ConfigError, Settings
from server.display import install_escaping
from server.observability.logging import configure_logging

COMMAND_GROUPS = (serve, tokens, scopes, audit, approvals, policy, remediate, effects, suspensions, reconcile)


def _configure_logging(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)  # text or JSON lines, secrets redacted either way
    install_escaping()  # agent-supplied text in a log line is escaped, never a line of its own (server.display)
    # aiosqlite logs every statement with its parameters at DEBUG: personal data has no place in logs.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, logging.getLogger().level))
    # The Stripe SDK logs request parameters and whole response bodies (customers' names, emails) at DEBUG.
    logging.getLogger("stripe").setLevel(max(logging.INFO, logging.getLogger().level))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mandate", description="Mandate: scoped MCP tools for LLM agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
        _configure_logging(settings)
        handler: Command = args.handler
        return handler(args, settings)
    except (CommandError, ConfigError, CatalogError) as exc:
        print(f"mandate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
