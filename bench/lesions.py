"""What each piece of a refund costs: Mandate with one piece taken away, beside Mandate whole and the bare servers.

    uv run python -m bench.lesions                        # every lesion (bench.patches.LESIONS), SQLite
    uv run python -m bench.lesions --only lesion-audit --only lesion-gc --calls 600
    uv run python -m bench.lesions --timers               # one Mandate, its pieces timed in process (bench.patches)

A sampling profiler charges its own per-frame cost to whatever runs many small Python frames, so it overstates
Python against C (SQLite, hashing, JSON). This measures instead: every side is a server process of its own, pinned
to the same CPU, serving stateless ``refund_create`` over HTTP in alternating blocks, and the figure is the server
process's CPU per call (user + system, from ``/proc``), which the machine's other load does not inflate. A lesion
is not a fix and its server is not correct (no audit record, no metrics...): the difference to Mandate whole is what
that piece costs a call.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from bench.bench_refund import DIRECT, _op, _open
from bench.harness import ab_latency
from bench.patches import LESIONS
from bench.serve import SiteSpec
from bench.servers import can_pin, client_pinned, cpu_seconds, running


async def measure(lesions: list[str], calls: int, rounds: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="mandate-lesions-") as scratch:

        def spec(kind: str, group: str, patches: tuple[str, ...] = ()) -> SiteSpec:
            return SiteSpec(kind, 0, True, str(Path(scratch) / group), 0, patches=patches, group=group)

        specs = [("bare", SiteSpec("bare", 50, True, str(Path(scratch) / "bare"), 0, group="bare"))]
        specs += [(DIRECT, spec("bare_refund_direct", DIRECT)), ("mandate", spec("mandate_refund", "mandate"))]
        specs += [(name, spec("mandate_refund", name, (name,))) for name in lesions]
        pin = can_pin()
        async with running(specs, pin=pin) as sites:
            with client_pinned(pin):
                clients = {name: await _open(site) for name, site in sites.items()}
                try:
                    ops = {name: _op(client, name != "bare") for name, client in clients.items()}
                    before = {name: cpu_seconds(site) for name, site in sites.items()}
                    measured = await ab_latency(ops, warmup=200, rounds=rounds, per_round=max(1, calls // rounds))
                    after = {name: cpu_seconds(site) for name, site in sites.items()}
                finally:
                    for client in clients.values():
                        await client.close()
    total = measured.sides["mandate"].n + 200
    cpu: dict[str, float] = {}
    for name in sites:
        start, end = before[name], after[name]
        if start is not None and end is not None:
            cpu[name] = (end - start) / (measured.sides[name].n) * 1e6
    lines = [
        f"{total - 200} calls a side in {rounds} alternating rounds; server process CPU per call (user + system)",
        "",
        "| side | p50 | CPU per call | CPU against Mandate whole |",
        "| --- | ---: | ---: | ---: |",
    ]
    whole = cpu.get("mandate")
    for name in sites:
        p50 = measured.sides[name].p(50)
        used = cpu.get(name)
        delta = f"{used - whole:+,.0f} us" if used is not None and whole is not None and name != "mandate" else ""
        shown = f"{used:,.0f} us" if used is not None else "n/a"
        lines.append(f"| {name} | {p50:,.0f} us | {shown} | {delta} |")
    return lines


async def timed(calls: int) -> list[str]:
    """One Mandate refund server with the ``timers`` patch: each piece's inclusive time per call, in process."""
    import os
    import signal

    with tempfile.TemporaryDirectory(prefix="mandate-timers-") as scratch:
        out = Path(scratch) / "timers.txt"
        os.environ["BENCH_TIMERS_OUT"] = str(out)
        spec = SiteSpec("mandate_refund", 0, True, str(Path(scratch) / "m"), 0, patches=("timers",), group="m")
        pin = can_pin()
        async with running([("mandate", spec)], pin=pin) as sites:
            site = sites["mandate"]
            with client_pinned(pin):
                client = await _open(site)
                try:
                    op = _op(client, True)
                    for _ in range(300):
                        await op()
                    await site.profile(signal.SIGUSR2)  # the warm-up's times are dropped
                    cpu_before = cpu_seconds(site)
                    for _ in range(calls):
                        await op()
                    cpu_after = cpu_seconds(site)
                    await site.profile(signal.SIGUSR2)
                finally:
                    await client.close()
        lines = out.read_text().splitlines()
    if cpu_before is not None and cpu_after is not None:
        lines.append(f"server process CPU per call (user + system): {(cpu_after - cpu_before) / calls * 1e6:,.0f} us")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lesions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=LESIONS, help="this lesion (repeatable); default: all")
    parser.add_argument("--calls", type=int, default=2000, help="measured calls a side (default 2000)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--timers", action="store_true", help="time each piece in one Mandate process instead")
    options = parser.parse_args()
    if options.timers:
        for line in asyncio.run(timed(options.calls)):
            print(line)
        return
    for line in asyncio.run(measure(list(options.only or LESIONS), options.calls, options.rounds)):
        print(line)


if __name__ == "__main__":
    main()
