"""Why the external-effects bench runs localstripe in memory: a refund's time at localstripe as refunds accumulate,
with its state file (as the tests run it, ``server.providers.localstripe.LocalStripe``) and without
(``LocalStripe(..., persist=False)``, as ``bench.external_provider.memory_localstripe`` makes it).

    uv run python -m bench.localstripe_growth [--refunds 1500]

One process makes ``--refunds`` sequential one-cent refunds of one payment through Mandate's Stripe adapter and
prints the median time of a refund in the first, middle and last hundred, for each variant in turn.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from scopes.money import Money
from server.providers.localstripe import LocalStripe
from server.providers.stripe import StripeProvider


async def refund_times(localstripe: LocalStripe, refunds: int) -> list[float]:
    """Milliseconds of each refund, in order."""
    provider = StripeProvider(api_key=localstripe.api_key, api_base=localstripe.api_base)
    try:
        payment = await provider.create_test_payment(
            amount=Money.parse("100000.00", "EUR"),
            customer_name="Bench Growth",
            customer_email="growth@example.com",
            description="localstripe growth",
            metadata={"purpose": "bench"},
        )
        cent = Money.parse("0.01", "EUR")
        times: list[float] = []
        for index in range(refunds):
            started = time.perf_counter()
            await provider.refund(
                payment_ref=payment, amount=cent, idempotency_key=f"growth-{index}", metadata={"n": str(index)}
            )
            times.append((time.perf_counter() - started) * 1e3)
        return times
    finally:
        await provider.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.localstripe_growth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--refunds", type=int, default=1500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mandate-localstripe-growth-") as scratch:
        for persist in (True, False):
            localstripe = LocalStripe(Path(scratch) / f"persist-{persist}", persist=persist)
            localstripe.start()
            try:
                times = anyio.run(refund_times, localstripe, args.refunds)
            finally:
                localstripe.stop()
            marks = sorted({0, len(times) // 2 - 50, len(times) - 100})
            medians = ", ".join(
                f"refunds {m + 1}-{m + 100}: {statistics.median(times[m : m + 100]):.2f} ms" for m in marks
            )
            print(f"{'with its state file' if persist else 'in memory'}: {medians}")


if __name__ == "__main__":
    main()
