"""The ``mandate`` command line: run the server, seed the demo store, mint development tokens, print the scopes.

Every command reads the same settings (``MANDATE_CONFIG`` file, ``MANDATE_*`` variables, then flags). Errors are
one clear line on stderr and a non-zero exit; no secret is printed except the token ``token mint`` is asked for.
Each command group lives in a module of its own with a ``register(subparsers)`` function.

Start-up is fast because nothing heavy is imported before it is needed: ``mandate --help`` reads only the table
:data:`COMMANDS`, and a command imports its own module alone (which imports the SDK, SQLAlchemy and the rest only
inside the functions that need them). To add a command group, add one row per top-level command it registers to
:data:`COMMANDS`; ``tests/cli/test_startup.py`` checks that the table matches what the modules register.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from server.version import package_version

if TYPE_CHECKING:
    from server.config import Settings

COMMANDS: dict[str, tuple[str, str]] = {
    # top-level command: (the module whose register() adds it, its one-line help for `mandate --help`)
    "init": ("server.cli.init", "write a configuration, the scope catalog and a policy to edit into a directory"),
    "serve": ("server.cli.serve", "run the MCP server"),
    "dev": ("server.cli.serve", "seed the demo store and serve it with the local development issuer"),
    "seed": ("server.cli.serve", "seed the demo store (idempotent; on SQLite, migrates the schema first)"),
    "db": ("server.cli.database", "migrate the database schema; set up the server's restricted PostgreSQL role"),
    "token": ("server.cli.tokens", "development tokens"),
    "scopes": ("server.cli.scopes", "print the scope -> tool table"),
    "audit": ("server.cli.audit", "verify, checkpoint, read and trace the audit trail"),
    "approvals": ("server.cli.approvals", "list, inspect and decide actions waiting for approval"),
    "policy": ("server.cli.policy", "check and test the policy (caps, budgets, approvals)"),
    "explain": ("server.cli.policy", "print the decision a call would get, without executing anything"),
    "remediate": ("server.cli.remediate", "list (dry run) or undo what a principal or an approval did"),
    "effects": ("server.cli.effects", "effects at outside systems (refunds at the provider), and those in doubt"),
    "suspend": ("server.cli.suspensions", "stop an agent everywhere at once (a client, subject, tenant or token)"),
    "resume": ("server.cli.suspensions", "end a suspension (by what was suspended, or: resume id sus_...)"),
    "suspensions": ("server.cli.suspensions", "list the active suspensions"),
    "reconcile": ("server.cli.reconcile", "compare Mandate's records with the systems where effects happen"),
}

SERVING_COMMANDS = frozenset({"serve", "dev"})
"""Commands that run a server and log at the configured level (INFO by default); the others log warnings only."""


def _configure_logging(settings: Settings, *, serving: bool) -> None:
    level = settings.log_level.upper()
    if not serving and "log_level" not in settings.model_fields_set:
        level = "WARNING"  # a one-shot command prints its result, not the machinery's progress
    from server.display import install_escaping
    from server.observability.logging import configure_logging

    configure_logging(level, settings.log_format)  # text or JSON lines, secrets redacted either way

    install_escaping()  # agent-supplied text in a log line is escaped, never a line of its own (server.display)
    # aiosqlite logs every statement with its parameters at DEBUG: personal data has no place in logs.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, logging.getLogger().level))
    # The Stripe SDK logs request parameters and whole response bodies (customers' names, emails) at DEBUG.
    logging.getLogger("stripe").setLevel(max(logging.INFO, logging.getLogger().level))
    # The SDK logs each stateless request's end ("Terminating session: None") at INFO; httpx logs every request
    # (JWKS fetches, the issuer discovery probe and its expected 404s); Alembic logs its set-up and each revision
    # it runs at start on SQLite. They are shown only at the DEBUG level.
    root = logging.getLogger().level
    if root > logging.DEBUG:
        for name in ("mcp.server.streamable_http", "httpx", "httpx2", "alembic"):
            logging.getLogger(name).setLevel(max(logging.WARNING, root))


def foreign_packages() -> list[str]:
    """Mandate's sibling top-level packages (``scopes``, ``tools``) that resolve to someone else's package of the
    same name (docs/decisions.md, "Top-level package names"): then Mandate was installed into a shared environment
    where another distribution also claims the name. Found without importing them."""
    import importlib.util
    from pathlib import Path

    home = Path(__file__).resolve().parents[2]
    foreign: list[str] = []
    for name in ("scopes", "tools"):
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin).resolve().parents[1] if spec is not None and spec.origin else None
        if origin != home:
            foreign.append(f"{name} ({spec.origin if spec is not None else 'not found'})")
    return foreign


def _command_in(argv: Sequence[str]) -> str | None:
    """The top-level command named on the command line (the first word that is not an option), if any."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def build_parser(command: str | None = None, *, everything: bool = False) -> argparse.ArgumentParser:
    """The parser, with full definitions for ``command``'s module (or every module) and one-line stubs for the rest."""
    parser = argparse.ArgumentParser(prog="mandate", description="Mandate: scoped MCP tools for LLM agents.")
    parser.add_argument("--version", action="version", version=f"mandate {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = {module for module, _help in COMMANDS.values()} if everything else set()
    if command in COMMANDS:
        wanted.add(COMMANDS[command][0])
    registered: set[str] = set()
    for name, (module, help_text) in COMMANDS.items():
        if module in wanted and module not in registered:
            importlib.import_module(module).register(sub)
            registered.add(module)
        if name not in sub.choices:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_in(arguments))
    args = parser.parse_args(arguments)
    foreign = foreign_packages()
    if foreign:
        print(
            f"mandate: the package(s) {', '.join(foreign)} are not Mandate's: another distribution uses the same "
            "top-level name. Install Mandate in an environment of its own (uv tool install, pipx, a venv).",
            file=sys.stderr,
        )
        return 2

    from scopes.catalog import CatalogError
    from server.cli import startup
    from server.cli.common import Command, CommandError, settings_from
    from server.config import ConfigError

    settings: Settings | None = None
    try:
        settings = settings_from(args)
        _configure_logging(settings, serving=args.command in SERVING_COMMANDS)
        handler: Command = args.handler
        return handler(args, settings)
    except (CommandError, ConfigError, CatalogError, startup.StartupError) as exc:
        print(f"mandate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        explained = startup.explain(exc, settings)
        if explained is None:
            raise
        print(f"mandate: {explained}", file=sys.stderr)
        return 2
