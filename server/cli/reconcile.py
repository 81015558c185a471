"""``mandate reconcile payments [--since WHEN] [--json]``: Mandate's refund records against the payments provider.

Reads the refunds Mandate recorded for orders linked to a payment (the store's ``refunds`` table) and every refund
the provider holds for those payments, and reports what does not agree (:mod:`server.providers.reconcile`): refunds
at the provider that no record explains, duplicates, records whose provider refund is missing or differs in amount
or status. Exit status: 0 when everything agrees, 1 when anything differs, 2 when the check could not be made (no
provider configured, database or provider unreachable): a partial answer is never reported as clean.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

import anyio
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select

from scopes.money import Money, MoneyError
from server.audit.query import BadQuery, parse_time
from server.cli.common import CommandError
from server.config import Settings
from server.providers.payments import ProviderError, open_provider
from server.providers.reconcile import Reconciliation, RecordedRefund, reconcile_payments, render
from server.storage.database import Database
from tools.store.models import Order, Refund

EXIT_DIFFERENT = 1


async def load_store_records(db: Database) -> tuple[dict[str, str | None], list[RecordedRefund]]:
    """The linked payments (payment ref -> order id) and the store's refunds of linked orders."""
    async with db.session() as session:
        orders = (
            await session.exec(select(Order.id, Order.payment_ref).where(col(Order.payment_ref).is_not(None)))
        ).all()
        rows = (
            await session.exec(
                select(Refund, Order.payment_ref)
                .join(Order, col(Order.id) == col(Refund.order_id))
                .where(col(Order.payment_ref).is_not(None))
            )
        ).all()
    payments: dict[str, str | None] = {ref: order_id for order_id, ref in orders if ref is not None}
    records: list[RecordedRefund] = []
    for refund, payment_ref in rows:
        assert payment_ref is not None
        try:
            amount = Money.from_minor(refund.amount_minor, refund.currency)
        except MoneyError as exc:
            raise CommandError(f"refund {refund.id} in the store has an invalid amount: {exc}") from None
        records.append(
            RecordedRefund(
                source="store",
                record_id=refund.id,
                payment_ref=payment_ref,
                amount=amount,
                created=refund.created_at,
                order_id=refund.order_id,
                audit_id=refund.audit_id,
                provider_refund_id=refund.provider_refund_id,
            )
        )
    return payments, records


async def run_reconciliation(settings: Settings, since: datetime | None) -> Reconciliation:
    provider = open_provider(settings)
    if provider is None:
        raise CommandError(
            "no payments provider is configured: set [payments] in MANDATE_CONFIG or MANDATE_STRIPE_API_KEY"
        )
    db = Database(settings.effective_database_url)
    try:
        if db.is_sqlite and db.url.database and not await anyio.Path(db.url.database).exists():
            raise CommandError(f"no database at {db.url.database}")
        try:
            payments, records = await load_store_records(db)
        except DBAPIError as exc:
            raise CommandError(f"cannot read Mandate's records in {db.safe_url}: {type(exc.orig).__name__}") from None
        try:
            return await reconcile_payments(provider, payments, records, since=since)
        except ProviderError as exc:
            raise CommandError(f"cannot reconcile: the provider could not be asked: {exc}") from None
    finally:
        await provider.aclose()
        await db.dispose()


def cmd_reconcile_payments(args: argparse.Namespace, settings: Settings) -> int:
    try:
        since = parse_time(args.since) if args.since else None
    except BadQuery as exc:
        raise CommandError(str(exc)) from None
    report = anyio.run(run_reconciliation, settings, since)
    if args.json:
        print(json.dumps(report.as_json(), indent=2, sort_keys=True))
    else:
        print(render(report, where=settings.payments.api_base or "https://api.stripe.com"))
    return 0 if report.clean else EXIT_DIFFERENT


def register(sub: Any) -> None:
    reconcile = sub.add_parser("reconcile", help="compare Mandate's records with the systems where effects happen")
    reconcile_sub = reconcile.add_subparsers(dest="reconcile_command", required=True)
    payments = reconcile_sub.add_parser(
        "payments",
        help="compare Mandate's refund records with the payments provider's refunds (exit 1 when they differ)",
    )
    payments.add_argument("--data-dir", dest="data_dir", help="data directory (default ./data)")
    payments.add_argument("--database-url", dest="database_url", help="SQLAlchemy URL, e.g. postgresql://host/db")
    payments.add_argument("--since", help="only report what was created since: 2026-01-31, 2026-01-31T09:00:00Z, 24h")
    payments.add_argument("--json", action="store_true", help="print the report as JSON, for automation")
    payments.set_defaults(handler=cmd_reconcile_payments)
