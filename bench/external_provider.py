"""The payments provider both sides of the external-effects comparison call: one localstripe, and what they share.

localstripe runs as ``python -m server.providers.localstripe`` (the module the tests and ``mandate dev
--localstripe`` use: 127.0.0.1 only, one random ``sk_test_`` key read from the environment, gone when its parent
is) but *without* ``--state``. With a state file, localstripe pickles its whole store after every write, three
times per refund (the refund, its balance transaction, the POST itself), so each call gets slower as refunds pile
up; in memory, a refund costs it the same at the ten-thousandth call as at the first, and what grows is only its
heap. :func:`memory_localstripe` is :class:`~server.providers.localstripe.LocalStripe` with ``persist=False``.

The servers learn where the provider is the way a deployment does, from ``MANDATE_STRIPE_API_KEY``,
``MANDATE_STRIPE_API_BASE`` and ``MANDATE_PAYMENTS_TIMEOUT_SECONDS`` in their environment (:func:`provider_env`
sets them in this process for the duration, so the server processes started meanwhile inherit them); the key is
never on a command line or in a spec. Each side seeds its own copy of the bench order (``bench.refund_store``) and
links it to a paid payment of its own at localstripe, as ``mandate seed`` links the demo orders
(:func:`link_bench_order`), so neither side's refunds touch the other's payment and neither runs out: the payment is
the order's whole total (100 billion EUR), refunded one cent a call.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from server.providers.localstripe import LocalStripe

if TYPE_CHECKING:
    from server.config import PaymentsSettings
    from server.storage.database import Database

TIMEOUT_SECONDS = 10.0
"""The provider timeout of both sides: Mandate's default ``payments.timeout_seconds``."""
ENV_KEY = "MANDATE_STRIPE_API_KEY"
ENV_BASE = "MANDATE_STRIPE_API_BASE"
ENV_TIMEOUT = "MANDATE_PAYMENTS_TIMEOUT_SECONDS"
PROVIDER_VARIABLES = (ENV_KEY, ENV_BASE, ENV_TIMEOUT)


def memory_localstripe(state_dir: Path) -> LocalStripe:
    """A localstripe that keeps its objects in memory only (see the module docstring)."""
    return LocalStripe(state_dir, persist=False)


@contextlib.contextmanager
def provider_env(localstripe: LocalStripe) -> Iterator[None]:
    """``MANDATE_STRIPE_*`` pointing at ``localstripe`` in this process's environment, restored afterwards."""
    values = {ENV_KEY: localstripe.api_key, ENV_BASE: localstripe.api_base, ENV_TIMEOUT: f"{TIMEOUT_SECONDS:g}"}
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def payments_from_env(environ: Mapping[str, str] | None = None) -> PaymentsSettings:
    """The ``[payments]`` settings the provider variables give, read by Mandate's own settings loader."""
    from server.config import load_settings

    env = os.environ if environ is None else environ
    missing = [name for name in (ENV_KEY, ENV_BASE) if not env.get(name)]
    if missing:
        raise RuntimeError(f"the external-effects bench needs {', '.join(missing)} in the environment")
    payments = load_settings(environ={name: env[name] for name in PROVIDER_VARIABLES if name in env}).payments
    if payments.provider != "stripe":  # pragma: no cover - the key alone names the provider
        raise RuntimeError("no payments provider configured")
    return payments


async def link_bench_order(db: Database, payments: PaymentsSettings) -> str:
    """Give the bench order a paid payment at the provider (as ``mandate seed`` does); its ``pi_`` reference."""
    from sqlalchemy import select

    from bench.refund_store import ORDER
    from server.cli.seeding import link_demo_orders
    from server.providers.payments import open_provider
    from tools.store.models import Order

    provider = open_provider(payments)
    assert provider is not None
    try:
        await link_demo_orders(db, provider)
    finally:
        await provider.aclose()
    orders = Order.__table__  # type: ignore[attr-defined]
    async with db.engine.connect() as connection:
        ref = (await connection.execute(select(orders.c.payment_ref).where(orders.c.id == ORDER))).scalar_one()
    if not isinstance(ref, str) or not ref.startswith("pi_"):
        raise RuntimeError(f"the bench order was not linked to a payment at the provider ({ref!r})")
    return ref


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (every thread), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
