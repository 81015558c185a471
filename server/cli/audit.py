"""``mandate audit``: verify, checkpoint, tail, show, export and trace the audit trail (DESIGN.md section 6).

- ``verify [--checkpoint FILE]`` recomputes the Merkle log (and the legacy chain before it), checks that every
  effect names an integrated record, and names the first problem (exit 1); against a signed tree head it checks
  that the log extends it (a consistency proof);
- ``checkpoint`` integrates what is pending, verifies, then signs the tree head with the Ed25519 key file
  (``--key``; created 0600 on first use) and writes it to a file outside the database;
- ``prove``, ``verify-proof``, ``consistency`` and ``integrate``: :mod:`server.cli.audit_proofs`;
- ``tail [--follow]``, ``show ID`` and ``export --format jsonl`` read records, filtered by principal, tool,
  decision, outcome, customer and time;
- ``lineage`` goes from a refund, an order or an account change to the record that caused it, its principal, its
  approval and its trace, or lists everything a client or subject did in a time range.

Reads never hold a lock writers need: each batch is its own short transaction.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import anyio
from sqlalchemy.exc import DBAPIError

from server.audit import checkpoint as checkpoints
from server.audit.lineage import Effect, Trail, activity_of, trail_of
from server.audit.merkle import EMPTY_ROOT
from server.audit.progress import ProgressBar
from server.audit.query import AuditFilter, AuditRow, BadQuery, page_newest_first, parse_time, record_by_id, rows_after
from server.audit.render import detail_lines, export_line, summary_line
from server.audit.sequencer import integrate_now
from server.audit.tree import latest_head
from server.audit.verify import EffectSource, VerifyReport, verify_log
from server.cli import audit_proofs
from server.cli.common import CommandError
from server.config import Settings
from server.display import escape_text, json_text
from server.storage.database import Database

EXIT_BROKEN = 1
EXPORT_BATCH = 2000


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Database]:
    db = Database(settings.effective_database_url)
    if db.is_sqlite and db.url.database and not await anyio.Path(db.url.database).exists():
        raise CommandError(f"no database at {db.url.database}")
    try:
        yield db
    except DBAPIError as exc:
        raise CommandError(f"cannot read the audit trail in {db.safe_url}: {type(exc.orig).__name__}") from None
    finally:
        await db.dispose()


def _filter(args: argparse.Namespace) -> AuditFilter:
    try:
        return AuditFilter(
            principal=args.principal,
            tool=args.tool,
            decision=args.decision,
            outcome=args.outcome,
            kind=args.kind,
            customer_id=args.customer,
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until) if args.until else None,
        )
    except BadQuery as exc:
        raise CommandError(str(exc)) from None


def _key_path(args: argparse.Namespace, settings: Settings) -> Path:
    return Path(args.key) if args.key else checkpoints.default_key_path(settings.data_dir)


# --- verify and checkpoint ------------------------------------------------------------------------------------


def _report_text(report: VerifyReport) -> str:
    if report.first_break is not None:
        return f"AUDIT LOG BROKEN: {report.first_break.describe()}"
    legacy = f" ({report.legacy_records:,} from the legacy chain)" if report.legacy_records else ""
    lines = [
        f"audit log intact: {report.records:,} records{legacy}, tree size {report.tree_size:,}, root "
        f"{report.root_hash[:16]}; {report.heads_checked:,} tree heads matched; {report.pending:,} awaiting "
        f"integration; checked in {report.seconds:.2f} s ({report.rate:,.0f} records/s)"
    ]
    if report.effects_checked:
        lines.append(f"{report.effects_checked:,} effects each name an integrated audit record")
    anchor = report.anchor
    if isinstance(anchor, checkpoints.TreeHead) and report.consistency is not None:
        c = report.consistency
        lines.append(
            f"extends the signed tree head of size {anchor.size:,} ({anchor.timestamp}, key {anchor.key_id}): "
            f"consistency proof {c.old_size:,} -> {c.new_size:,} of {c.proof_length} hashes verified"
        )
    elif isinstance(anchor, checkpoints.Checkpoint):
        lines.append(f"the legacy chain reaches the checkpoint at seq {anchor.seq} signed {anchor.signed_at}")
    return "\n".join(lines)


def _effect_sources() -> list[EffectSource]:
    """The store's effect rows, and the external effects' intents (the decision's record, and once resolved the
    outcome's)."""
    from server.effects.models import EffectIntent
    from tools import audit as store

    intents = EffectIntent.__table__  # type: ignore[attr-defined]
    return [
        *store.effect_sources(),
        EffectSource("external intent", intents, "id", "audit_id"),
        EffectSource(
            "external outcome", intents, "id", "outcome_audit_id", only=intents.c.outcome_audit_id.is_not(None)
        ),
    ]


async def _verify(args: argparse.Namespace, settings: Settings) -> int:
    anchor: checkpoints.TreeHead | checkpoints.Checkpoint | None = None
    if args.checkpoint:
        try:
            public_key = checkpoints.load_verification_key(_key_path(args, settings))
            anchor = checkpoints.read_signed(Path(args.checkpoint), public_key)
        except checkpoints.CheckpointError as exc:
            raise CommandError(str(exc)) from None
    bar = ProgressBar(sys.stderr, label="verifying", enabled=args.progress or sys.stderr.isatty())
    async with _database(settings) as db:
        try:
            report = await verify_log(
                db,
                anchor=anchor,
                effects=_effect_sources(),
                deadline_seconds=settings.audit.integration_deadline_seconds,
                batch_size=args.batch_size,
                workers=args.workers,
                progress=bar,
            )
        finally:
            bar.close()
    if args.json:
        brk = report.first_break
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "records": report.records,
                    "legacy_records": report.legacy_records,
                    "tree_size": report.tree_size,
                    "root_hash": report.root_hash,
                    "heads_checked": report.heads_checked,
                    "pending": report.pending,
                    "effects_checked": report.effects_checked,
                    "seconds": round(report.seconds, 3),
                    "consistency": None
                    if report.consistency is None
                    else {
                        "old_size": report.consistency.old_size,
                        "new_size": report.consistency.new_size,
                        "proof_length": report.consistency.proof_length,
                    },
                    "first_break": None
                    if brk is None
                    else {
                        "leaf_index": brk.leaf_index,
                        "record_id": brk.record_id,
                        "problem": brk.problem,
                        "detail": brk.detail,
                    },
                }
            )
        )
    else:
        print(_report_text(report))
    return 0 if report.ok else EXIT_BROKEN


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    return anyio.run(_verify, args, settings)


async def _checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    try:
        key, created = checkpoints.load_or_create_signing_key(_key_path(args, settings))
    except checkpoints.CheckpointError as exc:
        raise CommandError(str(exc)) from None
    if created:
        print(f"created the checkpoint signing key {_key_path(args, settings)} (mode 0600)", file=sys.stderr)
    async with _database(settings) as db:
        await integrate_now(db, instance=settings.instance, key=key)
        report = await verify_log(db, deadline_seconds=settings.audit.integration_deadline_seconds)
        if not report.ok and not args.no_verify:
            print(f"not signing: {_report_text(report)}", file=sys.stderr)
            return EXIT_BROKEN
        async with db.engine.connect() as connection:
            head = await latest_head(connection)
    size, root = (head.size, head.root_hash) if head is not None else (0, EMPTY_ROOT.hex())
    document = checkpoints.sign_tree_head(key, size=size, root_hash=root, instance=settings.instance)
    default = settings.data_dir / "audit-checkpoints" / f"tree-head-{size:012d}.json"
    path = checkpoints.write_checkpoint(Path(args.out) if args.out else default, document)
    print(f"signed tree head of size {size} (root {root[:16]}) written to {path}")
    return 0


def cmd_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    return anyio.run(_checkpoint, args, settings)


# --- tail, show, export -----------------------------------------------------------------------------------------


async def _tail(args: argparse.Namespace, settings: Settings) -> int:
    audit_filter = _filter(args)
    async with _database(settings) as db:
        async with db.session() as session:
            rows, _ = await page_newest_first(session, audit_filter, limit=args.lines)
        last_seq = int(rows[0]["seq"]) if rows else 0
        if not rows and args.follow:
            async with db.session() as session:
                newest, _ = await page_newest_first(session, AuditFilter(), limit=1)
            last_seq = int(newest[0]["seq"]) if newest else 0
        for row in reversed(rows):
            print(summary_line(row), flush=True)
        polls = 0
        while args.follow and (args.max_polls is None or polls < args.max_polls):
            await anyio.sleep(args.interval)
            polls += 1
            async with db.session() as session:
                fresh = await rows_after(session, audit_filter, last_seq, limit=1000)
            for row in fresh:
                print(summary_line(row), flush=True)
                last_seq = int(row["seq"])
    return 0


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    return anyio.run(_tail, args, settings)


async def _show(args: argparse.Namespace, settings: Settings) -> int:
    async with _database(settings) as db, db.session() as session:
        row = await record_by_id(session, args.id)
    if row is None:
        raise CommandError(f"no audit record {args.id}")
    print(export_line(row) if args.json else "\n".join(detail_lines(row)))
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    return anyio.run(_show, args, settings)


async def _export_to(out: TextIO, args: argparse.Namespace, settings: Settings) -> int:
    audit_filter = _filter(args)
    count, after = 0, 0
    async with _database(settings) as db:
        while True:
            async with db.session() as session:
                rows = await rows_after(session, audit_filter, after, limit=EXPORT_BATCH)
            for row in rows:
                out.write(export_line(row) + "\n")
            count += len(rows)
            if len(rows) < EXPORT_BATCH:
                break
            after = int(rows[-1]["seq"])
    return count


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    if not args.out:
        anyio.run(_export_to, sys.stdout, args, settings)
        return 0
    with Path(args.out).open("w", encoding="utf-8") as handle:
        count = anyio.run(_export_to, handle, args, settings)
    print(f"exported {count} records to {args.out}", file=sys.stderr)
    return 0


# --- lineage ----------------------------------------------------------------------------------------------------


def _trail_text(trail: Trail) -> list[str]:
    lines = [escape_text(trail.effect.summary)]
    cause = trail.cause
    if cause is None:
        lines.append("  caused by  NO AUDIT RECORD FOUND (changed outside Mandate?)")
        return lines
    lines.append(f"  caused by  {summary_line(cause)}")
    lines.append(
        f"  principal  sub {escape_text(cause['subject'])}, client {escape_text(cause['client_id'])}, "
        f"token {escape_text(cause['token_id'] or '-')}, tenant {escape_text(cause['tenant'] or '-')}, "
        f"actor {escape_text(cause['actor'] or '-')}, scopes {escape_text(cause['scopes'] or '-')}"
    )
    if cause["approval_id"]:
        lines.append(f"  approval   {escape_text(cause['approval_id'])}")
        lines.extend(f"             {summary_line(row)}" for row in trail.approval)
    else:
        lines.append("  approval   none")
    lines.append(f"  trace      {escape_text(cause['trace_id'] or '-')}")
    return lines


async def _lineage(args: argparse.Namespace, settings: Settings) -> int:
    from tools import audit as store

    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    async with _database(settings) as db, db.session() as session:
        if args.client_id or args.sub:
            records = await activity_of(session, client_id=args.client_id, subject=args.sub, since=since, until=until)
            effects = await store.effects_of(session, records)
            trails = [await trail_of(session, effect) for effect in effects]
            return _print_activity(args, records, trails)
        found: list[Effect] | None
        if args.refund:
            refund = await store.refund_effect(session, args.refund)
            found = [refund] if refund else None
        elif args.account_change:
            change = await store.account_change_effect(session, args.account_change)
            found = [change] if change else None
        else:
            found = await store.order_effects(session, args.order)
        if found is None:
            kind = "refund" if args.refund else "account change" if args.account_change else "order"
            raise CommandError(f"no such {kind}")
        trails = [await trail_of(session, effect) for effect in found]
    if args.json:
        print(json_text([trail.as_dict() for trail in trails], indent=2))
    elif not trails:
        print(f"order {escape_text(args.order)}: no effects (not cancelled, not refunded)")
    for trail in [] if args.json else trails:
        print("\n".join(_trail_text(trail)))
    return 0


def _print_activity(args: argparse.Namespace, records: Sequence[AuditRow], trails: Sequence[Trail]) -> int:
    who = f"client {escape_text(args.client_id)}" if args.client_id else f"subject {escape_text(args.sub)}"
    if args.json:
        print(
            json_text(
                {
                    "records": [json.loads(export_line(row)) for row in records],
                    "effects": [trail.as_dict() for trail in trails],
                },
                indent=2,
            )
        )
        return 0
    print(f"{len(records)} records by {who}; {len(trails)} effects")
    if trails:
        print("effects (to remediate):")
        for trail in trails:
            cause = f"#{trail.cause['seq']} {escape_text(trail.cause['id'])}" if trail.cause else "no record"
            print(f"  {escape_text(trail.effect.summary)}  <- {cause}")
    print("records:")
    for row in records:
        print(f"  {summary_line(row)}")
    return 0


def cmd_lineage(args: argparse.Namespace, settings: Settings) -> int:
    return anyio.run(_lineage, args, settings)


# --- the parser ---------------------------------------------------------------------------------------------------


def _add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", dest="data_dir", help="data directory (default ./data)")
    parser.add_argument("--database-url", dest="database_url", help="SQLAlchemy URL, e.g. postgresql://host/db")


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--principal", help="a sub or a client_id")
    parser.add_argument("--tool", help="tool name")
    parser.add_argument("--decision", choices=["allow", "deny", "approval", "error"])
    parser.add_argument(
        "--outcome", help="succeeded, failed, refused, invalid_arguments, pending_approval, replayed, listed"
    )
    parser.add_argument("--kind", choices=["call", "list", "auth", "approval"])
    parser.add_argument("--customer", help="customer id")
    parser.add_argument("--since", help="at or after: 2025-01-31, 2025-01-31T09:00:00Z, or an age: 15m, 24h, 7d")
    parser.add_argument("--until", help="before: same forms as --since")


def _add_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key",
        help=f"Ed25519 checkpoint key file (default ${checkpoints.KEY_ENVIRONMENT}, else "
        "DATA_DIR/audit-keys/checkpoint-ed25519.pem); keep it apart from the database",
    )


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="verify, checkpoint, read and trace the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)

    verify = audit_sub.add_parser("verify", help="recompute the Merkle log and name the first problem")
    _add_database_options(verify)
    _add_key_option(verify)
    verify.add_argument(
        "--checkpoint", help="a signed tree head file: check that the log still extends it (catches a forked history)"
    )
    verify.add_argument("--progress", action="store_true", help="show a progress bar on stderr even when not a TTY")
    verify.add_argument("--batch-size", dest="batch_size", type=int, default=1 << 14, help=argparse.SUPPRESS)
    verify.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel scans of the log: processes on SQLite, connections on PostgreSQL "
        "(default from 200,000 records: one per core on SQLite, 4 on PostgreSQL; 0: one at a time)",
    )
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(handler=cmd_verify)

    checkpoint = audit_sub.add_parser("checkpoint", help="integrate, verify, then sign the tree head into a file")
    _add_database_options(checkpoint)
    _add_key_option(checkpoint)
    checkpoint.add_argument("--out", help="file to write (default DATA_DIR/audit-checkpoints/tree-head-SIZE.json)")
    checkpoint.add_argument("--no-verify", dest="no_verify", action="store_true", help="sign even a broken log")
    checkpoint.set_defaults(handler=cmd_checkpoint)

    audit_proofs.register(audit_sub, _add_database_options, _add_key_option)

    tail = audit_sub.add_parser("tail", help="the latest records, one line each; --follow for new ones")
    _add_database_options(tail)
    _add_filters(tail)
    tail.add_argument("-n", "--lines", type=int, default=20, help="how many recent records (default 20)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep polling for new records")
    tail.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
    tail.add_argument("--max-polls", dest="max_polls", type=int, help="stop following after this many polls")
    tail.set_defaults(handler=cmd_tail)

    show = audit_sub.add_parser("show", help="one record in full, with its integrity")
    _add_database_options(show)
    show.add_argument("id", help="record id (aud_...) or chain position (seq)")
    show.add_argument("--json", action="store_true", help="print the record as one JSON object")
    show.set_defaults(handler=cmd_show)

    export = audit_sub.add_parser("export", help="records as JSON Lines, for SIEM ingestion")
    _add_database_options(export)
    _add_filters(export)
    export.add_argument("--format", choices=["jsonl"], default="jsonl")
    export.add_argument("--out", help="file to write (default stdout)")
    export.set_defaults(handler=cmd_export)

    lineage = audit_sub.add_parser("lineage", help="from an effect to its cause, or from a client to its actions")
    _add_database_options(lineage)
    target = lineage.add_mutually_exclusive_group(required=True)
    target.add_argument("--refund", help="refund id")
    target.add_argument("--order", help="order id: its cancellation and refunds")
    target.add_argument("--account-change", dest="account_change", help="account change id")
    target.add_argument("--client-id", dest="client_id", help="everything this client did (with --since/--until)")
    target.add_argument("--sub", help="everything this subject did (with --since/--until)")
    lineage.add_argument("--since", help="at or after (with --client-id/--sub)")
    lineage.add_argument("--until", help="before (with --client-id/--sub)")
    lineage.add_argument("--json", action="store_true", help="print JSON")
    lineage.set_defaults(handler=cmd_lineage)
