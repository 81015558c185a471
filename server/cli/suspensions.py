"""``mandate suspend``, ``mandate resume`` and ``mandate suspensions``: stop an agent everywhere, from a terminal.

For the incident responder who can reach the database (like ``mandate audit``): no token is needed, so an agent can
be stopped even while the identity provider is the problem. Who did it is ``--by`` (default ``$USER@host``); the
reason is required. Each suspension and resumption writes an audit record (transport ``cli``, tool
``principal_suspend`` / ``principal_resume``, the reason in its arguments) in the same transaction as the change, and
takes effect on every replica within a second (docs/operations.md, "Suspensions"). The MCP tools of the same names
do the same for holders of ``principals:suspend``.

Exit status: 0 done, 1 nothing to do (already suspended / nothing to resume), 2 bad input or database error.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import anyio

from server.cli.common import CommandError, add_server_options
from server.config import Settings

KINDS = ("client", "subject", "tenant", "token", "principal")


def _operator(args: argparse.Namespace) -> str:
    if args.by:
        return str(args.by)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


async def _change(settings: Settings, tool: str, arguments: Mapping[str, Any], operator: str) -> tuple[bool, Any]:
    from sqlalchemy.exc import DBAPIError
    from sqlmodel.ext.asyncio.session import AsyncSession

    from server.app import open_database
    from server.audit import chain
    from server.callpath.record import CallInfo, Invocation, Outcome, build_record
    from server.guards.suspension import SuspensionError, Target, resume, suspend

    try:
        db, _catalog = await open_database(settings)
    except (DBAPIError, OSError) as exc:
        raise CommandError(f"cannot open the database: {type(exc).__name__}") from None
    now = datetime.now(UTC)
    audit_id = f"aud_{uuid.uuid4().hex}"
    info = CallInfo(transport="cli", client_name=operator)

    async def work(session: AsyncSession) -> tuple[bool, Any]:
        target: Target | str
        if tool == "principal_suspend":
            target = Target(arguments["kind"], arguments["value"], arguments.get("issuer"))
            row, created = await suspend(
                session, target, reason=arguments["reason"], by=operator, now=now, audit_id=audit_id
            )
            rows, done = [row], created
        else:
            target = arguments.get("suspension_id") or Target(
                arguments["kind"], arguments["value"], arguments.get("issuer")
            )
            rows = await resume(session, target, reason=arguments["reason"], by=operator, now=now, audit_id=audit_id)
            done = bool(rows)
        summary = {"suspensions": [row.id for row in rows], "changed": done}
        outcome = Outcome("allow", "succeeded" if done else "unchanged", summary=summary)
        call = Invocation(None, info, tool, dict(arguments))
        await chain.append(session, build_record(settings.instance, call, outcome, audit_id, now))
        return done, [_view(row) for row in rows]

    try:
        return await db.run_in_transaction(work)
    except SuspensionError as exc:
        raise CommandError(str(exc)) from None
    except DBAPIError as exc:
        raise CommandError(f"the database refused the change: {type(exc.orig).__name__}") from None
    finally:
        await db.dispose()


def _view(row: Any) -> dict[str, Any]:
    return {
        "suspension_id": row.id,
        "kind": row.kind,
        "value": row.value,
        "issuer": row.issuer,
        "reason": row.reason,
        "source": row.source,
        "suspended_by": row.suspended_by,
        "suspended_at": row.suspended_at.isoformat(),
        "resumed_at": row.resumed_at.isoformat() if row.resumed_at else None,
        "resumed_by": row.resumed_by,
        "resume_reason": row.resume_reason,
    }


def _print(rows: list[dict[str, Any]], as_json: bool, verb: str) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        issuer = f" (issuer {row['issuer']})" if row["issuer"] else ""
        print(f"{verb} {row['kind']} {row['value']}{issuer}: {row['suspension_id']}, since {row['suspended_at']}")
        print(f"  reason: {row['reason']} (by {row['suspended_by']}, {row['source']})")
        if row["resumed_at"]:
            print(f"  resumed {row['resumed_at']} by {row['resumed_by']}: {row['resume_reason']}")


def cmd_suspend(args: argparse.Namespace, settings: Settings) -> int:
    arguments = {"kind": args.kind, "value": args.value, "reason": args.reason}
    if args.issuer:
        arguments["issuer"] = args.issuer
    created, rows = anyio.run(_change, settings, "principal_suspend", arguments, _operator(args))
    _print(rows, args.json, "suspended" if created else "already suspended:")
    return 0 if created else 1


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    arguments: dict[str, Any] = {"reason": args.reason}
    if args.kind == "id":
        arguments["suspension_id"] = args.value
    else:
        arguments.update(kind=args.kind, value=args.value)
        if args.issuer:
            arguments["issuer"] = args.issuer
    done, rows = anyio.run(_change, settings, "principal_resume", arguments, _operator(args))
    if not done:
        print("nothing to resume: no active suspension matches", flush=True)
        return 1
    _print(rows, args.json, "resumed")
    return 0


async def _list(settings: Settings) -> list[dict[str, Any]]:
    from server.app import open_database
    from server.guards.suspension import active

    db, _catalog = await open_database(settings)
    try:
        async with db.session() as session:
            return [_view(row) for row in await active(session)]
    finally:
        await db.dispose()


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = anyio.run(_list, settings)
    if not rows and not args.json:
        print("no active suspensions")
        return 0
    _print(rows, args.json, "suspended")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    add_server_options(parser)
    parser.add_argument("--json", action="store_true", help="print the suspensions as JSON")


def register(sub: Any) -> None:
    suspend = sub.add_parser("suspend", help="stop an agent everywhere at once (a client, subject, tenant or token)")
    suspend.add_argument("kind", choices=KINDS, help="what to suspend: client id, subject, tenant, token (jti)")
    suspend.add_argument("value", help="the client id, subject, tenant or jti")
    suspend.add_argument("--reason", required=True, help="why (required; recorded and shown to responders)")
    suspend.add_argument("--issuer", help="only tokens of this issuer (default: any issuer)")
    suspend.add_argument("--by", help="who is doing this (default $USER@host)")
    _common(suspend)
    suspend.set_defaults(handler=cmd_suspend)

    resume = sub.add_parser("resume", help="end a suspension (by what was suspended, or: resume id sus_...)")
    resume.add_argument("kind", choices=(*KINDS, "id"), help="what was suspended, or 'id' and a suspension id")
    resume.add_argument("value", help="the client id, subject, tenant, jti or suspension id")
    resume.add_argument("--reason", required=True, help="why it may act again (required; recorded)")
    resume.add_argument("--issuer", help="only the suspension bound to this issuer")
    resume.add_argument("--by", help="who is doing this (default $USER@host)")
    _common(resume)
    resume.set_defaults(handler=cmd_resume)

    listing = sub.add_parser("suspensions", help="list the active suspensions")
    _common(listing)
    listing.set_defaults(handler=cmd_list)
