"""``mandate serve``, ``mandate dev`` and ``mandate seed``: run the server and prepare its store."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import socket
import sys
from typing import Any

from server.cli.common import CommandError, add_server_options
from server.cli.event_loop import http_implementation, run
from server.cli.startup import bind_socket
from server.config import Settings
from server.display import install_escaping

DEFAULT_PORT = 8000
INSPECTOR_VERSION = "2.12.0"
"""The MCP Inspector release the README and the hints name, the one tests/interop runs. It declares Node >= 22 but its
``--cli`` mode works on Node 20 (checked on 20.20); unpinned, npx on Node 20 picks 0.15.0, which cannot pass
arguments to a URL server."""


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    from server.cli.seeding import seed as seed_store

    print(run(seed_store, settings).describe())
    return 0


def freeze_startup_heap() -> None:
    """Move everything built at start-up out of the cyclic garbage collector's sight (``gc.freeze``).

    The catalog with its schemas, the policy, SQLAlchemy's and pydantic's machinery live as long as the process. Left
    in the collected generations, every full collection walks all of them again and stalls the request that
    triggered it (tens of milliseconds with a large catalog); frozen, a collection walks only what requests made.
    """
    gc.collect()
    gc.freeze()


def _bound(settings: Settings) -> tuple[Settings, socket.socket]:
    """Bind the listening socket first (a port in use is one clear line), and carry the real port (``--port 0``)."""
    sock = bind_socket(settings)
    port = sock.getsockname()[1]
    return (settings.model_copy(update={"port": port}) if port != settings.port else settings), sock


async def _serve_http(settings: Settings, sock: socket.socket) -> None:
    import uvicorn

    from server.app import build_http_app, open_mandate

    mandate = await open_mandate(settings)
    try:
        app = build_http_app(mandate)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            lifespan="on",
            server_header=False,
            http=http_implementation(),
        )
        install_escaping(logging.getLogger("uvicorn"))  # uvicorn's handlers escape agent-supplied text too
        server = uvicorn.Server(config)
        freeze_startup_heap()
        print(f"mandate: serving MCP at {settings.audience} ({settings.describe()})", file=sys.stderr)
        await server.serve(sockets=[sock])
    finally:
        await mandate.aclose()


async def _serve_stdio(settings: Settings, dev_agent: str | None) -> None:
    from pathlib import Path

    from server.app import open_mandate
    from server.mcp_server import CredentialSource
    from server.stdio import TOKEN_FILE_VARIABLE, TOKEN_VARIABLE, TokenFileCredentials, serve_stdio

    mandate = await open_mandate(settings, local_dev_jwks=True)
    freeze_startup_heap()
    try:
        credentials: CredentialSource | None = None
        if dev_agent is not None:
            credentials = _dev_agent_credentials(settings, dev_agent, mandate.verifier)
        elif os.environ.get(TOKEN_FILE_VARIABLE):
            credentials = TokenFileCredentials(Path(os.environ[TOKEN_FILE_VARIABLE]), mandate.verifier)
        await serve_stdio(mandate, os.environ.get(TOKEN_VARIABLE), credentials=credentials)
    finally:
        await mandate.aclose()


def _dev_agent_scopes(settings: Settings, name: str) -> tuple[list[str], str | None]:
    """The scopes and tenant of a development agent from the agents file; a clear error for an unknown one."""
    from scopes.catalog import DEFAULT_AGENTS, DEFAULT_CATALOG, load_agents, load_catalog

    if not settings.dev_issuer:
        raise CommandError(
            "--dev-agent needs the development issuer (--dev-issuer or MANDATE_DEV_ISSUER=1): development only"
        )
    catalog = load_catalog(settings.catalog_path or DEFAULT_CATALOG)
    book = load_agents(settings.agents_path or DEFAULT_AGENTS, catalog)
    agent = book.agents.get(name)
    if agent is None:
        raise CommandError(f"unknown agent {name!r}; known: {', '.join(sorted(book.agents))}")
    return list(agent.scopes), agent.tenant


def _dev_agent_credentials(settings: Settings, name: str, verifier: Any) -> Any:
    from server.auth.dev_agent import DevAgentCredentials
    from server.auth.dev_issuer import DevIssuer

    scopes, tenant = _dev_agent_scopes(settings, name)
    issuer = DevIssuer.load_or_create(settings.data_dir, settings.dev_issuer_url)
    print(f"mandate: DEVELOPMENT ONLY: minting short-lived tokens for agent {name!r} per session", file=sys.stderr)
    return DevAgentCredentials(issuer, verifier, agent=name, scopes=scopes, audience=settings.audience, tenant=tenant)


def _require_issuer(settings: Settings) -> None:
    if not settings.issuers and not settings.dev_issuer:
        raise CommandError(
            "no trusted issuer is configured: set [[issuers]] in MANDATE_CONFIG (or MANDATE_ISSUER), "
            "or use --dev-issuer for local development"
        )


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    _require_issuer(settings)
    if args.dev_agent is not None:
        if args.transport != "stdio":
            raise CommandError("--dev-agent is for --transport stdio; over HTTP each client sends its own token")
        _dev_agent_scopes(settings, args.dev_agent)  # an unknown agent or no dev issuer: refused before starting
    if args.transport == "stdio":
        run(_serve_stdio, settings, args.dev_agent)
        return 0
    settings, sock = _bound(settings)
    with sock:
        run(_serve_http, settings, sock)
    return 0


def _uv_run() -> str:
    """How to type ``uv run`` here: uv from PATH, else the copy ``make`` installed into .tools/."""
    if shutil.which("uv") is None and os.path.exists(".tools/bin/uv"):
        return ".tools/bin/uv run"
    return "uv run"


def _mint_hint(settings: Settings) -> str:
    """The ``token mint`` command that mints tokens this very server accepts: the data directory (its key) and, when
    they are not the defaults, the host and port (the issuer and audience derive from them)."""
    prefix = "" if "MANDATE_DATA_DIR" not in os.environ else f"MANDATE_DATA_DIR={settings.data_dir} "
    flags = ""
    if not (settings.resource_url or settings.public_url):
        if settings.host != Settings.model_fields["host"].default:
            flags += f" --host {settings.host}"
        if settings.port != DEFAULT_PORT:
            flags += f" --port {settings.port}"
    return f"{prefix}{_uv_run()} mandate token mint --agent refunds{flags}"


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.model_copy(update={"dev_issuer": True})
    settings, sock = _bound(settings)
    with sock:
        if getattr(args, "localstripe", False):
            from server.cli.dev_localstripe import run_with_localstripe

            # localstripe's callback serves on the socket bound above (the real port, a port in use refused first).
            return run_with_localstripe(args, settings, lambda dev_settings, lines: _dev(dev_settings, sock, lines))
        return _dev(settings, sock, [])


def _dev(settings: Settings, sock: socket.socket, extra_lines: list[str]) -> int:
    from server.cli.seeding import seed as seed_store

    seeded = run(seed_store, settings)
    store = "seeded demo data" if seeded.added else "existing data"
    if seeded.linked:
        store += f", {seeded.linked} order(s) newly linked to payments"
    print(
        "\n".join(
            [
                "Mandate development server (local dev issuer: DEVELOPMENT ONLY, never in production)",
                f"  store:    {store} in {settings.describe()}",
                f"  endpoint: {settings.audience}",
                *extra_lines,
                "",
                "Get a token for a development agent (support, refunds, senior, supervisor, compliance):",
                f"  {_mint_hint(settings)}",
                "Connect with any MCP client over streamable HTTP, sending 'Authorization: Bearer <token>', e.g.:",
                f"  npx -y --loglevel=error @modelcontextprotocol/inspector@{INSPECTOR_VERSION} "
                f"--cli {settings.audience} "
                '--header "Authorization: Bearer $TOKEN" --method tools/list',
                "",
            ]
        ),
        file=sys.stderr,
        flush=True,
    )
    run(_serve_http, settings, sock)
    return 0


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the MCP server")
    add_server_options(serve)
    serve.add_argument("--transport", choices=["http", "stdio"], default="http")
    serve.add_argument(
        "--dev-issuer", action="store_true", help="trust the local development issuer (development only)"
    )
    serve.add_argument("--stateful", action="store_true", help="stateful streamable HTTP sessions (default stateless)")
    serve.add_argument(
        "--dev-agent",
        dest="dev_agent",
        metavar="NAME",
        help="stdio, development only: act as this agent from scopes/agents.toml, minting its short-lived tokens "
        "(needs --dev-issuer)",
    )
    serve.set_defaults(handler=cmd_serve)

    dev = sub.add_parser("dev", help="seed the demo store and serve it with the local development issuer")
    add_server_options(dev)
    dev.add_argument(
        "--localstripe",
        action="store_true",
        help="also run localstripe (a fake Stripe server) and link the demo orders to payments there",
    )
    dev.add_argument(
        "--localstripe-port", type=int, default=8420, help="localstripe's port on 127.0.0.1 (default 8420; 0: any)"
    )
    dev.set_defaults(handler=cmd_dev)

    seed = sub.add_parser("seed", help="seed the demo store (idempotent; on SQLite, migrates the schema first)")
    add_server_options(seed)
    seed.set_defaults(handler=cmd_seed)
