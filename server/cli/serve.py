"""``mandate serve``, ``mandate dev`` and ``mandate seed``: run the server and prepare its store."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import sys
from typing import Any

import anyio

from server.cli.common import CommandError, add_server_options
from server.cli.seeding import Seeded
from server.cli.seeding import seed as seed_store
from server.config import Settings
from server.display import install_escaping


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    print(anyio.run(seed_store, settings).describe())
    return 0


def freeze_startup_heap() -> None:
    """Move everything built at start-up out of the cyclic garbage collector's sight (``gc.freeze``).

    The catalog with its schemas, the policy, SQLAlchemy's and pydantic's machinery live as long as the process. Left
    in the collected generations, every full collection walks all of them again and stalls the request that
    triggered it (tens of milliseconds with a large catalog); frozen, a collection walks only what requests made.
    """
    gc.collect()
    gc.freeze()


async def _serve_http(settings: Settings) -> None:
    import uvicorn

    from server.app import build_http_app, open_mandate

    mandate = await open_mandate(settings)
    try:
        app = build_http_app(mandate)
        config = uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level="warning", lifespan="on", server_header=False
        )
        install_escaping(logging.getLogger("uvicorn"))  # uvicorn's handlers escape agent-supplied text too
        server = uvicorn.Server(config)
        freeze_startup_heap()
        print(f"mandate: serving MCP at {settings.audience} ({settings.describe()})", file=sys.stderr)
        await server.serve()
    finally:
        await mandate.aclose()


async def _serve_stdio(settings: Settings) -> None:
    from server.app import open_mandate
    from server.stdio import TOKEN_VARIABLE, serve_stdio

    mandate = await open_mandate(settings, local_dev_jwks=True)
    freeze_startup_heap()
    try:
        await serve_stdio(mandate, os.environ.get(TOKEN_VARIABLE))
    finally:
        await mandate.aclose()


def _require_issuer(settings: Settings) -> None:
    if not settings.issuers and not settings.dev_issuer:
        raise CommandError(
            "no trusted issuer is configured: set [[issuers]] in MANDATE_CONFIG (or MANDATE_ISSUER), "
            "or use --dev-issuer for local development"
        )


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    _require_issuer(settings)
    if args.transport == "stdio":
        anyio.run(_serve_stdio, settings)
    else:
        anyio.run(_serve_http, settings)
    return 0


def _uv_run() -> str:
    """How to type ``uv run`` here: uv from PATH, else the copy ``make`` installed into .tools/."""
    if shutil.which("uv") is None and os.path.exists(".tools/bin/uv"):
        return ".tools/bin/uv run"
    return "uv run"


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    settings = settings.model_copy(update={"dev_issuer": True})
    if getattr(args, "localstripe", False):
        from server.cli.dev_localstripe import run_with_localstripe

        return run_with_localstripe(args, settings, _serve_dev)
    return _serve_dev(settings, [])


def _serve_dev(settings: Settings, extra_lines: list[str]) -> int:
    seeded: Seeded = anyio.run(seed_store, settings)
    env_prefix = "" if "MANDATE_DATA_DIR" not in os.environ else f"MANDATE_DATA_DIR={settings.data_dir} "
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
                f"  {env_prefix}{_uv_run()} mandate token mint --agent refunds",
                "Connect with any MCP client over streamable HTTP, sending 'Authorization: Bearer <token>', e.g.:",
                f"  npx @modelcontextprotocol/inspector --cli {settings.audience} "
                '--header "Authorization: Bearer $TOKEN" --method tools/list',
                "",
            ]
        ),
        file=sys.stderr,
        flush=True,
    )
    anyio.run(_serve_http, settings)
    return 0


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the MCP server")
    add_server_options(serve)
    serve.add_argument("--transport", choices=["http", "stdio"], default="http")
    serve.add_argument(
        "--dev-issuer", action="store_true", help="trust the local development issuer (development only)"
    )
    serve.add_argument("--stateful", action="store_true", help="stateful streamable HTTP sessions (default stateless)")
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

    seed = sub.add_parser("seed", help="create the schema and seed the demo store (idempotent)")
    add_server_options(seed)
    seed.set_defaults(handler=cmd_seed)
