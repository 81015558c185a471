"""``mandate remediate``: find and undo what a misbehaving agent did (docs/remediation.md).

Start from a principal (``--client-id``, ``--sub``, ``--tenant``, with ``--since``/``--until``) or one approval
(``--approval``). Every effect is listed with its state now in the system of record and the compensating action its
tool declares. A dry run by default: nothing is changed or recorded. ``--execute --reason TEXT`` runs the
compensations as the person whose token is in ``MANDATE_TOKEN`` (or ``--token-file``), each as an ordinary tool
call: the scope ``remediation:execute``, the policy, approvals and the audit trail apply. Running it twice
compensates once.

Exit status: 0 done (or nothing to do), 1 a compensation was refused, 2 a usage, configuration, credential or
database error.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from server.cli.common import CommandError, add_server_options, read_access_token
from server.config import Settings
from server.display import escape_text as _escape

if TYPE_CHECKING:
    from server.remediation import Executed, Item, Target

_ACTION_WORDS = {"call": "undo", "flag": "flag", "done": "done", "none": "none"}


def _target(args: argparse.Namespace) -> Target:
    from server.audit.query import BadQuery, parse_time
    from server.remediation import Target

    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
        return Target(
            client_id=args.client_id,
            subject=args.sub,
            tenant=args.tenant,
            approval_id=args.approval,
            since=since,
            until=until,
        )
    except (BadQuery, ValueError) as exc:
        raise CommandError(str(exc)) from None


async def _run(args: argparse.Namespace, settings: Settings, target: Target) -> tuple[list[Item], list[Executed]]:
    from server.app import open_mandate
    from server.auth.errors import InvalidToken
    from server.callpath.record import CallInfo
    from server.remediation import execute, plan
    from tools.audit import effects_of

    token = read_access_token(args, "a person's") if args.execute else None
    mandate = await open_mandate(settings, local_dev_jwks=True)
    try:
        principal = None
        if token is not None:
            try:
                principal = await mandate.verifier.verify(token)
            except InvalidToken as exc:
                raise CommandError(f"the access token was refused: {exc.description}") from None
        now = datetime.now(UTC)
        items = await plan(mandate.db, mandate.catalog, target, effects_of, now, mandate.enforcer.providers)
        done: list[Executed] = []
        if principal is not None:
            info = CallInfo(transport="cli", request_id="remediate")
            done = await execute(mandate.enforcer, principal, items, reason=args.reason, info=info)
        return items, done
    finally:
        await mandate.aclose()


def _print_plan(target: Target, items: list[Item], executed: list[Executed], dry_run: bool) -> None:
    by_effect = {(e.item.effect.kind, e.item.effect.id): e for e in executed}
    print(f"Remediation of {_escape(target.describe())}: {len(items)} effect(s)")
    if dry_run:
        print("(dry run: nothing was changed; run again with --execute --reason TEXT to compensate)")
    for item in items:
        row = item.as_dict()
        by = row["by"] or {}
        print()
        print(f"  {item.effect.kind} {_escape(item.effect.id)}: {_escape(item.effect.summary)}")
        who = f"{_escape(str(by.get('subject')))} via {_escape(str(by.get('client_id')))}"
        print(f"    made     {row['at'] or '-'} by {who} ({row['tool'] or '-'}, audit {row['audit_id'] or '-'})")
        print(f"    now      {_escape(item.compensation.state)}")
        action = _ACTION_WORDS[item.compensation.action]
        what = f"{item.compensation.tool} " if item.compensation.tool else ""
        print(f"    action   {action}: {what}{_escape(item.compensation.note)}")
        result = by_effect.get((item.effect.kind, item.effect.id))
        if result is not None:
            outcome = "done" if result.succeeded else f"refused ({result.code}): {_escape(str(result.message))}"
            print(f"    result   {outcome} (audit {result.audit_id or '-'})")


def cmd_remediate(args: argparse.Namespace, settings: Settings) -> int:
    if args.execute and not args.reason:
        raise CommandError("--execute needs --reason TEXT: why, for the record")
    if args.execute and not settings.issuers and not settings.dev_issuer:
        raise CommandError(
            "no trusted issuer is configured to verify the person's token: set [[issuers]] in MANDATE_CONFIG, "
            "or use --dev-issuer (MANDATE_DEV_ISSUER=1) with development tokens"
        )
    target = _target(args)
    items, executed = anyio.run(_run, args, settings, target)
    if args.json:
        body: dict[str, Any] = {
            "target": target.describe(),
            "dry_run": not args.execute,
            "items": [item.as_dict() for item in items],
            "executed": [result.as_dict() for result in executed],
        }
        print(json.dumps(body, indent=2, sort_keys=True, default=str))
    else:
        _print_plan(target, items, executed, not args.execute)
    refused = [result for result in executed if not result.succeeded]
    if refused:
        print(f"mandate: {len(refused)} compensation(s) were refused; see above", file=sys.stderr)
    return 1 if refused else 0


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "remediate",
        help="list (dry run) or undo what a principal or an approval did",
        description="Every effect of a principal in a time range, or of one approval, with its state now and the "
        "compensating action its tool declares. A dry run unless --execute.",
    )
    add_server_options(parser)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--client-id", dest="client_id", help="what this OAuth client did")
    target.add_argument("--sub", help="what this subject did")
    target.add_argument("--tenant", help="what was done in this tenant")
    target.add_argument("--approval", help="what this approval ran (apr_...)")
    parser.add_argument("--since", help="at or after: 2025-01-31, 2025-01-31T09:00:00Z, or an age: 15m, 24h, 7d")
    parser.add_argument("--until", help="before: same forms as --since")
    parser.add_argument("--execute", action="store_true", help="run the compensations (a person's token)")
    parser.add_argument("--reason", help="why, for the record (required with --execute)")
    parser.add_argument(
        "--dev-issuer", action="store_true", help="trust the local development issuer's tokens (development only)"
    )
    parser.add_argument("--token-file", dest="token_file", help="read the access token from a file (MANDATE_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the plan (and what ran) as JSON")
    parser.set_defaults(handler=cmd_remediate)
