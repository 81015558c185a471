"""Profile Mandate's ``refund_create`` path with a sampling profiler (pyinstrument, on the server's event loop).

    uv run python -m bench.profile_refund                       # 1,000 stateless refunds over HTTP, SQLite
    uv run python -m bench.profile_refund --calls 2000 --out bench/results/profiles/refund-mandate.txt
    uv run python -m bench.profile_refund --site bare-refund --out bench/results/profiles/refund-bare.txt
    uv run python -m bench.profile_refund --site bare-refund-direct --out bench/results/profiles/refund-direct.txt

One Mandate process serves the real catalog and default policy (``bench.mandate_site.refund_settings``); after 50
warm-up calls, SIGUSR1 starts pyinstrument inside it, the client (this process) makes ``--calls`` sequential
refunds, and SIGUSR2 stops it and writes the text profile. The profiler slows the server about twice: read shares,
not times. ``BENCH_PROFILE_CPU=1`` samples the event loop thread's CPU time instead of the wall clock (robust to a
shared machine; the loop's idle wait then costs nothing), ``BENCH_PROFILE_ALL=1`` keeps the libraries' frames.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
from dataclasses import replace
from pathlib import Path

from bench.bench_refund import _op, _open, refund_specs
from bench.servers import can_pin, client_pinned, running

ROOT = Path(__file__).resolve().parent.parent


async def profile_refunds(
    calls: int, out: Path, *, database_url: str | None = None, site_name: str = "mandate-refund"
) -> None:
    with tempfile.TemporaryDirectory(prefix="mandate-profile-") as scratch:
        specs = [
            (name, replace(spec, profile=str(out), database_url=database_url or spec.database_url))
            for name, spec in refund_specs(Path(scratch), postgres_url=None, bare_postgres_url=None)
            if name == site_name
        ]
        pin = can_pin()
        async with running(specs, pin=pin) as sites:
            site = sites[site_name]
            with client_pinned(pin):
                client = await _open(site)
                try:
                    op = _op(client, True)
                    for _ in range(50):
                        await op()
                    await site.profile(signal.SIGUSR1)
                    for _ in range(calls):
                        await op()
                    await site.profile(signal.SIGUSR2)
                finally:
                    await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_refund", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "profiles" / "refund-mandate.txt")
    parser.add_argument("--postgres", default=None, help="profile on this PostgreSQL database instead of SQLite")
    parser.add_argument(
        "--site",
        default="mandate-refund",
        choices=("mandate-refund", "bare-refund", "bare-refund-direct"),
        help="which server to profile",
    )
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(profile_refunds(args.calls, args.out.resolve(), database_url=args.postgres, site_name=args.site))
    print(f"profile: {args.out}")


if __name__ == "__main__":
    main()
