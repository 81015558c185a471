"""``mandate effects list|reconcile``: effects at outside systems, and resolving those left in doubt (docs/effects.md).

``list`` shows intents newest first (``--in-doubt``: every one not yet resolved, with whether its lease has passed
and why its outcome is still unknown). ``reconcile`` runs one round of the reconciler now, as the upkeep of every
server does: each intent past its lease is looked up at its provider and completed, failed and released, or left in
doubt when the provider cannot say. Both are operator commands on the database (no agent token); every resolution
is an audit record.

Exit status: 0 done (``reconcile``: nothing left in doubt among the intents it took up), 1 some intent is still in
doubt (``reconcile``), 2 a usage, configuration or database error.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import anyio

from server.cli.common import CommandError, add_server_options
from server.config import Settings

EXIT_IN_DOUBT = 1


def _row(intent: Any, now: Any) -> dict[str, Any]:
    in_doubt = intent.status == "started"
    return {
        "intent_id": intent.id,
        "status": ("in_doubt" if intent.lease_until <= now else "in_flight") if in_doubt else intent.status,
        "tool": intent.tool,
        "provider": intent.provider_name,
        "object_id": intent.provider_object_id,
        "amount_minor": intent.amount_minor,
        "currency": intent.currency,
        "customer_id": intent.customer_id,
        "approval_id": intent.approval_id,
        "audit_id": intent.audit_id,
        "outcome_audit_id": intent.outcome_audit_id,
        "created_at": intent.created_at.isoformat(),
        "lease_until": intent.lease_until.isoformat(),
        "attempts": intent.attempts,
        "error": intent.error_code,
        "last_error": intent.last_error,
    }


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    from server.app import open_database
    from server.callpath.core import utcnow
    from server.effects.intents import listing

    db, _ = await _open(settings, open_database)
    try:
        now = utcnow()
        rows = [
            _row(i, now)
            for i in await listing(db, in_doubt=args.in_doubt, now=now, status=args.status, limit=args.limit)
        ]
    finally:
        await db.dispose()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no intents in doubt" if args.in_doubt else "no intents")
        return 0
    for row in rows:
        what = f"{row['object_id']}" if row["object_id"] else (row["error"] or "-")
        line = f"{row['intent_id']}  {row['status']:<10} {row['tool']:<16} {row['provider']:<8} {what}"
        line += f"  {row['created_at']}"
        if row["status"] in ("in_doubt", "in_flight"):
            line += f"  lease until {row['lease_until']}, {row['attempts']} lookups"
            if row["last_error"]:
                line += f"; last: {row['last_error']}"
        print(line)
    return 0


async def _open(settings: Settings, opener: Any) -> Any:
    from sqlalchemy.exc import DBAPIError

    from server.storage.database import normalise_url

    try:
        return await opener(settings)
    except DBAPIError as exc:
        safe = normalise_url(settings.effective_database_url).render_as_string(hide_password=True)
        raise CommandError(f"cannot open the database {safe}: {type(exc.orig).__name__}") from None


async def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from server.app import open_mandate
    from server.effects.reconciler import reconcile_due

    mandate = await _open(settings, lambda s: open_mandate(s, local_dev_jwks=True))
    try:
        resolutions = await reconcile_due(mandate.enforcer, limit=args.limit)
    finally:
        await mandate.aclose()
    if args.json:
        rows = [
            {"intent_id": r.intent_id, "tool": r.tool, "status": r.status, "detail": r.detail, "object_id": r.object_id}
            for r in resolutions
        ]
        print(json.dumps(rows))
    elif not resolutions:
        print("nothing to reconcile: no intent is past its lease")
    else:
        for r in resolutions:
            tail = f" {r.object_id}" if r.object_id else ""
            why = f" ({r.detail})" if r.detail else ""
            print(f"{r.intent_id}  {r.status:<10} {r.tool}{tail}{why}")
    return EXIT_IN_DOUBT if any(r.status == "in_doubt" for r in resolutions) else 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    return anyio.run(_list, args, settings)


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    return anyio.run(_reconcile, args, settings)


def register(sub: Any) -> None:
    effects = sub.add_parser("effects", help="effects at outside systems (refunds at the provider), and those in doubt")
    commands = effects.add_subparsers(dest="effects_command", required=True)

    listing = commands.add_parser("list", help="intents newest first")
    add_server_options(listing)
    listing.add_argument("--in-doubt", dest="in_doubt", action="store_true", help="only those not yet resolved")
    listing.add_argument("--status", choices=["started", "completed", "failed", "conflict"])
    listing.add_argument("--limit", type=int, default=200)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)

    reconcile = commands.add_parser("reconcile", help="resolve the intents past their lease now, asking the provider")
    add_server_options(reconcile)
    reconcile.add_argument("--limit", type=int, default=None, help="at most this many intents in this round")
    reconcile.add_argument("--json", action="store_true")
    reconcile.set_defaults(handler=cmd_reconcile)
