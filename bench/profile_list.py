"""Profile a tools/list over HTTP with a sampling profiler (pyinstrument, on the server's event loop), on either side.

    uv run python -m bench.profile_list                          # Mandate, 1,000 tools, 40 listings
    uv run python -m bench.profile_list --site bare --tools 1000  # the bare MCPServer listing the same tools
    uv run python -m bench.profile_list --tools 50 --calls 2000
    BENCH_PROFILE_ALL=1 uv run python -m bench.profile_list       # library frames too (the SDK's passes)

One server process serves the benchmark catalog (``bench.catalog_tools``) statelessly, as the HTTP section of
``python -m bench`` does; after a few warm-up listings SIGUSR1 starts pyinstrument inside it, the client (this
process) makes ``--calls`` sequential listings, and SIGUSR2 stops it and writes the text profile. The profiler slows
the server: read shares, not times.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
from pathlib import Path

from bench.bench_http import _clients, _list_op
from bench.serve import SiteSpec
from bench.servers import can_pin, client_pinned, running

ROOT = Path(__file__).resolve().parent.parent


async def profile_listings(kind: str, tools: int, calls: int, out: Path, *, source: str = "") -> None:
    with tempfile.TemporaryDirectory(prefix="mandate-profile-") as scratch:
        spec = SiteSpec(kind, tools, True, scratch, 0, profile=str(out), group=kind, source=source)
        pin = can_pin()
        async with running([(kind, spec)], pin=pin) as sites:
            site = sites[kind]
            with client_pinned(pin):
                async with _clients(sites, [kind]) as clients:
                    op = _list_op(clients[kind][0], tools)
                    for _ in range(max(3, min(50, calls // 10))):
                        await op()
                    await site.profile(signal.SIGUSR1)
                    for _ in range(calls):
                        await op()
                    await site.profile(signal.SIGUSR2)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_list", description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default="mandate", choices=("mandate", "bare"), help="which server to profile")
    parser.add_argument("--tools", type=int, default=1000, choices=(50, 1000))
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--source", default="", help="serve Mandate from this checkout (as bench.ab does)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / "results" / "profiles" / f"list{args.tools}-{args.site}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(profile_listings(args.site, args.tools, args.calls, out.resolve(), source=args.source))
    print(f"profile: {out}")


if __name__ == "__main__":
    main()
