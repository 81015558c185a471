"""50 parallel refunds through two ``mandate serve`` replicas sharing one database, against a daily cap, with the
provider slowed by a delaying proxy (some calls outlast the provider timeout and end in doubt): at every moment
the committed plus in-doubt amounts stay within the cap, and once the reconcilers of both replicas are done, each
intent has at most one provider refund and the ledger, the store and the provider agree."""

from __future__ import annotations

import pytest

# The real Stripe adapter and the localstripe fixtures come with the payments provider (server/providers/).
pytest.importorskip("server.providers.localstripe", reason="the payments provider (server/providers) is not installed")

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import stripe

from server.effects.models import COMPLETED, FAILED, STARTED
from server.storage.database import Database
from tests.effects import support
from tests.effects.delay_proxy import DelayProxy, delaying
from tests.effects.processes import environment, free_port, run, serving

if TYPE_CHECKING:
    from server.providers.localstripe import LocalStripe

pytestmark = pytest.mark.anyio

CAP_MINOR = 10000
ORDER = "ord_5007"  # 450.00 USD: the daily cap (100.00), not the order, is what runs out
POLICY = """
version = "effects-replicas"
description = "one daily cap on refunds"
timezone = "UTC"

[budgets.agent_refunds_daily]
label = "refunds by this agent today"
per = "principal"
window = "day"
limit = { USD = "100.00" }

[[rules]]
id = "refund-agent-daily"
kind = "budget"
tools = ["refund_create"]
budget = "agent_refunds_daily"
amount = "args.amount"
"""


async def test_fifty_parallel_refunds_through_two_replicas_never_exceed_the_daily_cap(
    tmp_path: Path, database_url: str, localstripe: LocalStripe, stripe_outside: stripe.StripeClient
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    upstream = urlsplit(localstripe.api_base).port
    assert upstream is not None
    data_dir = tmp_path / "data"
    direct = environment(data_dir=data_dir, database_url=database_url, payments=localstripe.payments_settings())
    seeded = await run(direct, "seed")  # the store, its orders linked to payments at localstripe
    assert seeded.returncode == 0, seeded.stderr
    first = free_port()
    async with delaying(DelayProxy(upstream, delay=0.05, slow_every=9, slow_delay=1.5)) as proxy:
        payments = localstripe.payments_settings(timeout_seconds=1.0).model_copy(update={"api_base": proxy.url})
        env = environment(
            data_dir=tmp_path / "data",
            database_url=database_url,
            payments=payments,
            lease=4.0,  # the slow chunk (1.5 s) plus a loaded machine's commit, loop and localstripe delays fit in it
            # one public URL for both replicas, as behind a load balancer: one issuer, one audience, one agent
            extra={"MANDATE_POLICY": str(policy), "MANDATE_PUBLIC_URL": f"http://127.0.0.1:{first}"},
        )
        db = Database(database_url)
        peak = [0]
        answers: list[Any] = []
        try:
            async with serving(env, first) as one, serving(env, free_port()) as two:
                done = anyio.Event()

                async def sample() -> None:
                    while not done.is_set():
                        peak[0] = max(peak[0], await support.spent(db))
                        await anyio.sleep(0.02)

                async def refund(index: int) -> None:
                    served = one if index % 2 else two
                    arguments = {"order_id": ORDER, "amount": "5.00", "currency": "USD", "reason": f"refund {index}"}
                    answers.append(await served.call("refund_create", arguments))

                async with anyio.create_task_group() as sampler:
                    sampler.start_soon(sample)
                    with anyio.fail_after(180):
                        async with anyio.create_task_group() as group:
                            for index in range(50):
                                group.start_soon(refund, index)
                        while any(i.status == STARTED for i in await support.intents(db)):  # noqa: ASYNC110 - polls the database
                            await anyio.sleep(0.1)  # the replicas' reconcilers resolve what is in doubt
                    done.set()
            intents = await support.intents(db)
            order = await support.order(db, ORDER)
        finally:
            await db.dispose()

    codes = [a.structured_content.get("code") for a in answers if a.is_error]
    assert len(answers) == 50 and set(codes) <= {"budget_exceeded", "effect_in_doubt"}, codes
    assert "budget_exceeded" in codes
    assert peak[0] <= CAP_MINOR
    completed = [i for i in intents if i.status == COMPLETED]
    assert sum(i.amount_minor or 0 for i in completed) <= CAP_MINOR
    assert order.payment_ref is not None
    listed = await anyio.to_thread.run_sync(
        lambda: stripe_outside.v1.refunds.list(params={"payment_intent": order.payment_ref, "limit": 100}).data
    )
    by_intent: dict[str, int] = {}
    for made in listed:
        intent_id = made.metadata.to_dict().get("mandate_intent") if made.metadata else None
        assert intent_id is not None
        by_intent[intent_id] = by_intent.get(intent_id, 0) + 1
    assert all(count == 1 for count in by_intent.values()), by_intent
    assert set(by_intent) == {i.id for i in completed}
    assert order.refunded_minor == sum(i.amount_minor or 0 for i in completed)
    # The cap was reached, not merely respected: every 5.00 of it went to a completed refund, or was held by an
    # intent in doubt that the reconciler later found the provider never carried out (the delayed request was cut
    # off with its connection), whose reservation came back only after every call had been answered.
    not_made = [i for i in intents if i.status == FAILED and i.error_code == "effect_not_made"]
    assert len(completed) + len(not_made) >= CAP_MINOR // 500, (len(completed), len(not_made))
