"""``mandate token mint``: development tokens from the local issuer (development only)."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from scopes.catalog import DEFAULT_AGENTS, DEFAULT_CATALOG, load_agents, load_catalog
from server.cli.common import CommandError
from server.config import DEFAULT_APPROVER_CLAIM, Settings


def cmd_token_mint(args: argparse.Namespace, settings: Settings) -> int:
    from server.auth.dev_issuer import DevIssuer

    catalog = load_catalog(settings.catalog_path or DEFAULT_CATALOG)
    scopes: list[str] = []
    tenant = args.tenant
    approver = bool(args.approver)
    if args.agent:
        book = load_agents(settings.agents_path or DEFAULT_AGENTS, catalog)
        agent = book.agents.get(args.agent)
        if agent is None:
            raise CommandError(f"unknown agent {args.agent!r}; known: {', '.join(sorted(book.agents))}")
        scopes = list(agent.scopes)
        tenant = tenant or agent.tenant
        approver = approver or agent.human
    for group in args.scope or []:
        scopes.extend(group.split())
    if not scopes:
        raise CommandError("give --agent NAME or --scope 'a b'")
    unknown = [scope for scope in scopes if scope not in catalog.scopes]
    if unknown:
        raise CommandError(f"unknown scope(s): {', '.join(unknown)}")
    subject = args.sub or (f"agent:{args.agent}" if args.agent else "dev-user")
    client_id = args.client_id or (f"{args.agent}-agent" if args.agent else "dev-client")
    issuer = DevIssuer.load_or_create(settings.data_dir, settings.dev_issuer_url)
    token = issuer.mint(
        subject=subject,
        client_id=client_id,
        scopes=dict.fromkeys(scopes),
        audience=args.audience or settings.audience,
        ttl=timedelta(minutes=args.ttl_minutes),
        tenant=tenant,
        extra_claims={settings.approvals.approver_claim or DEFAULT_APPROVER_CLAIM: True} if approver else None,
    )
    print(token)
    return 0


def register(sub: Any) -> None:
    token = sub.add_parser("token", help="development tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    mint = token_sub.add_parser("mint", help="print a JWT from the local development issuer")
    # Not add_server_options: nothing is bound here. The token names the server it is for (issuer and audience).
    mint.add_argument("--host", help="host of the server the token is for (default 127.0.0.1)")
    mint.add_argument(
        "--port", type=int, help="port of the server the token is for (default 8000; `mandate dev` prints it)"
    )
    mint.add_argument("--data-dir", dest="data_dir", help="where the dev issuer's key is (default ./data)")
    mint.add_argument("--agent", help="a development agent from scopes/agents.toml")
    mint.add_argument("--scope", action="append", help="scopes (space-separated; repeatable)")
    mint.add_argument("--sub", help="subject (default agent:NAME)")
    mint.add_argument("--client-id", dest="client_id", help="client id (default NAME-agent)")
    mint.add_argument("--tenant", help="tenant claim")
    mint.add_argument(
        "--approver", action="store_true", help="mark the token as a human approver's (the approver claim)"
    )
    mint.add_argument("--audience", help="audience (default this server's resource URL)")
    mint.add_argument("--ttl-minutes", dest="ttl_minutes", type=int, default=60)
    mint.set_defaults(handler=cmd_token_mint)
