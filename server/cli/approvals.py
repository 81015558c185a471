"""``mandate approvals list|show|approve|reject``: deciding approvals from a terminal.

The command line is one more client of the same enforcement path: the approver's access token (``MANDATE_TOKEN``,
or ``--token-file``) is verified exactly as over HTTP, and each command is a call of the ``approvals_list``,
``approval_get`` or ``approval_decide`` tool, with the same checks (scope, approver claim, separation of duties)
and the same audit record (transport ``cli``). Identity comes from the verified token, never from a flag.

With ``--url URL`` (or ``MANDATE_URL``) the command needs no database credentials: it calls the server's approvals
API (:mod:`server.console.api`) with the token as a bearer credential, and the server applies the same checks and
writes the same audit record (transport ``api``).

Exit status: 0 done, 1 refused (the message says why), 2 a usage, configuration, credential or database error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import anyio

from server.cli.common import TOKEN_VARIABLE, CommandError, add_server_options, read_access_token
from server.config import Settings

URL_VARIABLE = "MANDATE_URL"


async def _call(settings: Settings, token: str, tool: str, arguments: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    from sqlalchemy.exc import DBAPIError

    from server.app import open_mandate
    from server.auth.errors import InvalidToken
    from server.callpath.record import CallInfo
    from server.storage.database import normalise_url

    try:
        mandate = await open_mandate(settings, local_dev_jwks=True)
    except DBAPIError as exc:
        safe = normalise_url(settings.effective_database_url).render_as_string(hide_password=True)
        raise CommandError(f"cannot open the database {safe}: {type(exc.orig).__name__}") from None
    try:
        try:
            principal = await mandate.verifier.verify(token)
        except InvalidToken as exc:
            raise CommandError(f"the access token was refused: {exc.description}") from None
        result = await mandate.enforcer.call_tool(principal, tool, arguments, CallInfo(transport="cli"))
    finally:
        await mandate.aclose()
    return bool(result.is_error), dict(result.structured_content or {})


async def _call_api(base_url: str, token: str, tool: str, arguments: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """The same call through the server's approvals API (``--url``): no database, the token as a bearer credential."""
    import httpx2

    base = base_url.rstrip("/").removesuffix("/mcp")
    approval = str(arguments.get("approval_id", ""))
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json", "User-Agent": "mandate-cli"}
    try:
        async with httpx2.AsyncClient(timeout=30, follow_redirects=False, headers=headers) as http:
            if tool == "approvals_list":
                response = await http.get(f"{base}/api/approvals", params=arguments)
            elif tool == "approval_get":
                response = await http.get(f"{base}/api/approvals/{approval}")
            else:
                body = {k: v for k, v in arguments.items() if k != "approval_id"}
                response = await http.post(f"{base}/api/approvals/{approval}/decision", json=body)
    except httpx2.HTTPError as exc:
        raise CommandError(f"cannot reach the server at {base}: {type(exc).__name__}") from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise CommandError(f"{base} answered HTTP {response.status_code} without a JSON object (is it Mandate?)")
    if response.status_code == 401:
        raise CommandError(f"the access token was refused: {answer.get('error_description') or 'invalid token'}")
    return response.status_code >= 400, answer


def _print_table(items: list[dict[str, Any]]) -> None:
    header = ("APPROVAL", "STATUS", "TOOL", "REQUESTER", "CUSTOMER", "EXPIRES", "REASON")
    rows = [
        (
            item["approval_id"],
            item["status"],
            item["tool"],
            item["requester"]["subject"],
            item.get("customer_id") or "-",
            item["expires_at"][:19],
            item.get("reason") or "-",
        )
        for item in items
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  ".join(f"{cell!s:<{widths[i]}}" for i, cell in enumerate(row[:-1])) + f"  {row[-1]}")
    if not rows:
        print("(no approvals)")


def _print_detail(body: dict[str, Any]) -> None:
    requester = body["requester"]
    lines = [
        f"approval:   {body['approval_id']}  ({body['status']})",
        f"tool:       {body['tool']}",
        f"arguments:  {json.dumps(body['full_arguments'], sort_keys=True)}",
        f"digest:     {body['arguments_digest']}",
        f"requester:  {requester['subject']} via {requester['client_id']}"
        + (f" (tenant {requester['tenant']})" if requester.get("tenant") else ""),
        f"why:        {body.get('reason') or '-'} [rule {body.get('rule') or '-'}]",
        f"created:    {body['created_at']}",
        f"expires:    {body['expires_at']}",
    ]
    decided = body.get("decided")
    if decided:
        comment = f": {decided['comment']}" if decided.get("comment") else ""
        lines.append(f"decided:    by {decided['by_subject']} at {decided['at']}{comment}")
    outcome = body.get("outcome")
    if outcome:
        what = "succeeded" if outcome["succeeded"] else f"failed ({outcome.get('code')}): {outcome.get('message')}"
        lines.append(f"outcome:    {what}")
        if outcome.get("result"):
            lines.append(f"result:     {json.dumps(outcome['result'], sort_keys=True)}")
    print("\n".join(lines))


def _run(args: argparse.Namespace, settings: Settings, tool: str, arguments: dict[str, Any]) -> int:
    url = args.url or os.environ.get(URL_VARIABLE, "").strip()
    if url:
        if not url.startswith(("http://", "https://")):
            raise CommandError(f"--url must be the server's http:// or https:// address, not {url!r}")
        refused, body = anyio.run(_call_api, url, read_access_token(args), tool, arguments)
        return _show(args, tool, refused, body)
    if not settings.issuers and not settings.dev_issuer:
        raise CommandError(
            "no trusted issuer is configured to verify the approver's token: set [[issuers]] in MANDATE_CONFIG, "
            "or use --dev-issuer (MANDATE_DEV_ISSUER=1) with development tokens"
        )
    refused, body = anyio.run(_call, settings, read_access_token(args), tool, arguments)
    return _show(args, tool, refused, body)


def _show(args: argparse.Namespace, tool: str, refused: bool, body: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(body, indent=2, sort_keys=True))
    elif refused:
        print(f"mandate: refused ({body.get('code')}): {body.get('message')}", file=sys.stderr)
    elif tool == "approvals_list":
        _print_table(body["items"])
    else:
        _print_detail(body)
    return 1 if refused else 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    return _run(args, settings, "approvals_list", {"status": args.status, "limit": args.limit})


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    return _run(args, settings, "approval_get", {"approval_id": args.approval_id})


def _decide(args: argparse.Namespace, settings: Settings, decision: str) -> int:
    arguments: dict[str, Any] = {"approval_id": args.approval_id, "decision": decision}
    if args.comment:
        arguments["comment"] = args.comment
    return _run(args, settings, "approval_decide", arguments)


def cmd_approve(args: argparse.Namespace, settings: Settings) -> int:
    return _decide(args, settings, "approve")


def cmd_reject(args: argparse.Namespace, settings: Settings) -> int:
    return _decide(args, settings, "reject")


def _common(parser: argparse.ArgumentParser) -> None:
    add_server_options(parser)
    parser.add_argument(
        "--dev-issuer", action="store_true", help="trust the local development issuer's tokens (development only)"
    )
    parser.add_argument("--token-file", dest="token_file", help=f"read the access token from a file ({TOKEN_VARIABLE})")
    parser.add_argument("--json", action="store_true", help="print the structured answer as JSON")
    parser.add_argument(
        "--url",
        help=f"decide through this server's API (e.g. http://127.0.0.1:8000) instead of the database ({URL_VARIABLE})",
    )


def register(sub: Any) -> None:
    approvals = sub.add_parser("approvals", help="list, inspect and decide actions waiting for approval")
    commands = approvals.add_subparsers(dest="approvals_command", required=True)

    listing = commands.add_parser("list", help="approvals, newest first (default: pending ones)")
    _common(listing)
    listing.add_argument(
        "--status", default="pending", choices=["pending", "executed", "failed", "rejected", "expired", "any"]
    )
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=cmd_list)

    show = commands.add_parser("show", help="the full request, why it needs approval, and how it ended")
    _common(show)
    show.add_argument("approval_id")
    show.set_defaults(handler=cmd_show)

    for name, handler, verb in (("approve", cmd_approve, "approve (and run once)"), ("reject", cmd_reject, "reject")):
        decide = commands.add_parser(name, help=f"{verb} a pending approval")
        _common(decide)
        decide.add_argument("approval_id")
        decide.add_argument("--comment", help="why, for the record")
        decide.set_defaults(handler=handler)
