"""What the cyclic garbage collector costs a tools/list: collections per listing and their time, by generation.

    uv run python -m bench.gc_probe                      # Mandate, 1,000 tools, 30 listings
    uv run python -m bench.gc_probe --site bare --tools 1000
    cp bench/gc_probe.py /tmp/before/bench/ && cd /tmp/before && PYTHONPATH=. uv run python -m bench.gc_probe

The server is served in this process (``bench.servers.running(in_process=True)``) with the start-up heap frozen as
``mandate serve`` freezes it (``gc.freeze`` once the app is built, before any request), and the client is this
process too, so the CPU figure includes the client's share on both sides; the collections are what the
``gc.callbacks`` hook sees while the listings run (Python documentation, ``gc.callbacks``). A collection walks every
tracked object not frozen, so what a listing leaves behind in the heap shows up here as time in generation 2.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from typing import Any

import uvloop


async def probe(kind: str, tools: int, listings: int, *, freeze: bool = True) -> list[str]:
    from bench.bench_http import _clients, _list_op
    from bench.serve import SiteSpec
    from bench.servers import running

    collections = {generation: [0, 0.0] for generation in range(3)}
    started = [0.0]

    def observe(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.process_time()
            return
        figures = collections[info["generation"]]
        figures[0] += 1
        figures[1] += time.process_time() - started[0]

    with tempfile.TemporaryDirectory(prefix="mandate-gc-probe-") as scratch:
        spec = SiteSpec(kind, tools, True, scratch, 0, group=kind)
        async with running([(kind, spec)], in_process=True) as sites, _clients(sites, [kind]) as clients:
            if freeze:  # as mandate serve does once the app is built (bench.serve freezes Mandate's sites only)
                gc.collect()
                gc.freeze()
            op = _list_op(clients[kind][0], tools)
            for _ in range(5):
                await op()
            unfrozen = len(gc.get_objects())
            gc.callbacks.append(observe)
            cpu: list[float] = []
            try:
                for _ in range(listings):
                    before = time.process_time()
                    await op()
                    cpu.append(time.process_time() - before)
            finally:
                gc.callbacks.remove(observe)
    lines = [
        f"{kind}, {tools} tools, {listings} listings, heap {'frozen' if freeze else 'not frozen'}; "
        f"{unfrozen:,} tracked objects not frozen after 5 listings",
        f"CPU per listing (server and client): median {statistics.median(cpu) * 1000:.1f} ms, "
        f"min {min(cpu) * 1000:.1f} ms",
    ]
    for generation, (count, seconds) in collections.items():
        lines.append(
            f"generation {generation}: {count / listings:.1f} collections per listing, "
            f"{seconds / listings * 1000:.2f} ms per listing"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gc_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default="mandate", choices=("mandate", "bare"))
    parser.add_argument("--tools", type=int, default=1000, choices=(50, 1000))
    parser.add_argument("--listings", type=int, default=30)
    parser.add_argument("--no-freeze", action="store_true", help="leave the start-up heap to the collector")
    args = parser.parse_args()
    print("\n".join(uvloop.run(probe(args.site, args.tools, args.listings, freeze=not args.no_freeze))))


if __name__ == "__main__":
    main()
