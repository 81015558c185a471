"""Demo orders linked to payments at the provider: ``mandate seed`` with a provider, ``mandate dev --localstripe``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import httpx2
import pytest
import stripe
from sqlmodel import select

from server.cli.seeding import seed
from server.config import Settings
from server.providers.localstripe import LocalStripe
from server.storage.database import Database
from tests.conftest import POSTGRES_URL
from tests.live import bound_socket
from tools.store.models import Order

pytestmark = pytest.mark.anyio

MANDATE = str(Path(sys.executable).with_name("mandate"))


async def _orders(settings: Settings) -> list[Order]:
    db = Database(settings.effective_database_url)
    try:
        async with db.session() as session:
            return list((await session.exec(select(Order).order_by(Order.id))).all())
    finally:
        await db.dispose()


async def test_seeding_with_a_provider_links_every_demo_order_to_a_paid_payment_there(
    provider_settings: Settings, stripe_outside: stripe.StripeClient
) -> None:
    seeded = await seed(provider_settings)
    orders = await _orders(provider_settings)
    assert seeded.added and seeded.linked == len(orders) > 0
    for order in orders:
        assert order.payment_ref is not None and order.payment_ref.startswith("pi_")
        payment = stripe_outside.v1.payment_intents.retrieve(order.payment_ref)
        assert (payment.status, payment.amount, payment.currency) == (
            "succeeded",
            order.total_minor,
            order.currency.lower(),
        )
        assert payment.metadata.to_dict()["mandate_order"] == order.id
    assert len({order.payment_ref for order in orders}) == len(orders)


async def test_seeding_again_links_nothing_twice(provider_settings: Settings) -> None:
    await seed(provider_settings)
    before = {o.id: o.payment_ref for o in await _orders(provider_settings)}
    again = await seed(provider_settings)
    assert (again.added, again.linked) == (False, 0)
    assert {o.id: o.payment_ref for o in await _orders(provider_settings)} == before


async def test_a_store_seeded_without_a_provider_is_linked_when_one_is_configured(
    settings: Settings, provider_settings: Settings
) -> None:
    plain = await seed(settings)
    assert (plain.added, plain.linked) == (True, None)
    assert all(order.payment_ref is None for order in await _orders(settings))
    later = await seed(provider_settings)
    assert not later.added and later.linked == len(await _orders(settings))


async def test_an_unreachable_provider_at_seeding_is_a_clear_error(
    provider_settings: Settings, localstripe: LocalStripe
) -> None:
    from server.cli.common import CommandError

    localstripe.kill()
    with pytest.raises(CommandError, match="could not link the demo orders") as error:
        await seed(provider_settings)
    assert localstripe.api_key not in str(error.value)


def _environment(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MANDATE_") and k != "STRIPE_LOG"}
    env.update({"MANDATE_DATA_DIR": str(tmp_path / "data"), "MANDATE_DATABASE_URL": database_url, **extra})
    return env


async def test_mandate_seed_with_the_key_in_the_environment_never_prints_or_stores_it(
    tmp_path: Path, database_url: str, localstripe: LocalStripe
) -> None:
    env = _environment(
        tmp_path,
        database_url,
        MANDATE_STRIPE_API_KEY=localstripe.api_key,
        MANDATE_STRIPE_API_BASE=localstripe.api_base,
        MANDATE_LOG_LEVEL="DEBUG",
        STRIPE_LOG="debug",
    )
    result = await anyio.run_process([MANDATE, "seed"], env=env, check=False)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    assert "linked 9 order(s) to payments" in out
    assert localstripe.api_key not in out + err
    if not POSTGRES_URL:  # the whole SQLite file, every table and page: the key is nowhere in it
        stored = await anyio.Path(database_url.removeprefix("sqlite+aiosqlite:///")).read_bytes()
        assert len(stored) > 0 and localstripe.api_key.encode() not in stored


async def test_dev_with_localstripe_serves_demo_orders_linked_to_payments_there(
    tmp_path: Path, database_url: str
) -> None:
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = _environment(tmp_path, database_url, MANDATE_PORT=str(port))
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        process = subprocess.Popen(  # noqa: ASYNC220 - runs beside the test, which polls without blocking
            [MANDATE, "dev", "--localstripe", "--localstripe-port", "0"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            async with httpx2.AsyncClient() as http:
                with anyio.fail_after(90):
                    while True:
                        assert process.poll() is None, log.read_text()
                        try:
                            if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                                break
                        except httpx2.TransportError:
                            pass
                        await anyio.sleep(0.1)
            printed = log.read_text()
            found = re.search(r"payments: localstripe at (http://127\.0\.0\.1:\d+)", printed)
            assert found, printed
            key = (tmp_path / "data" / "localstripe" / "api-key").read_text().strip()
            assert (tmp_path / "data" / "localstripe" / "api-key").stat().st_mode & 0o077 == 0
            client = stripe.StripeClient(key, base_addresses={"api": found.group(1)}, max_network_retries=0)
            settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
            orders = await _orders(settings)
            assert orders and all(o.payment_ref for o in orders)
            assert client.v1.payment_intents.retrieve(orders[0].payment_ref or "").status == "succeeded"
            assert "mandate reconcile payments" in printed and key not in printed
        finally:
            process.terminate()
            process.wait(timeout=30)
    # localstripe goes with the server: stopped on the way out, or (SIGTERM ends uvicorn by re-raising the signal)
    # by its own watch on its parent, within a second or two.
    async with httpx2.AsyncClient() as http:
        with anyio.fail_after(30):
            while True:
                try:
                    await http.get(f"{found.group(1)}/v1/customers", headers={"Authorization": f"Bearer {key}"})
                except httpx2.TransportError:
                    break
                await anyio.sleep(0.1)
