"""tools/list over HTTP from several checkouts of Mandate in one run, beside the bare MCPServer listing the same tools
(A B C ... alternating blocks): to bisect a listing regression, or to measure a change before and after.

    git archive 9a8a700 | tar -x -C /tmp/old                         # a checkout before, with its own bench/
    uv run python -m bench.ab_list /tmp/old                           # 1,000 tools: bare, /tmp/old, this checkout
    uv run python -m bench.ab_list /tmp/a /tmp/b --tools 50 --rounds 8 --per-round 50

Each side serves statelessly in a process of its own, pinned to the server CPU, as the HTTP section of
``python -m bench`` does. An older checkout serves with its own ``bench/`` (its ``bench.serve`` reads the spec
this bench sends: one from before ``SiteSpec.source`` existed needs its ``from_dict`` to drop unknown keys) and the
venv of this checkout. Printed: each side's p50, its ratio to the bare server, the range of per-round ratios, and
the server process's CPU time per listing (user + system, every thread), which a loaded machine disturbs less than
latency.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import uvloop

from bench.bench_http import _clients, _list_op
from bench.harness import ab_latency
from bench.serve import SiteSpec
from bench.servers import can_pin, client_pinned, cpu_seconds, running


async def compare(checkouts: list[Path], workdir: Path, tools: int, rounds: int, per_round: int) -> list[str]:
    names = ["bare", *(f"{index}:{path.name}" for index, path in enumerate(checkouts)), "this"]
    bare_spec = SiteSpec("bare", tools, True, str(workdir / "bare"), 0, group="bare")
    specs: list[tuple[str, SiteSpec]] = [("bare", bare_spec)]
    for name, path in zip(names[1:-1], checkouts, strict=True):
        group = name.replace(":", "-")
        specs.append((name, SiteSpec("mandate", tools, True, str(workdir / group), 0, group=group, source=str(path))))
    specs.append(("this", SiteSpec("mandate", tools, True, str(workdir / "this"), 0, group="this")))
    pin = can_pin()
    async with running(specs, pin=pin) as sites, _clients(sites, names) as clients:
        with client_pinned(pin):
            ops = {name: _list_op(clients[name][0], tools) for name in names}
            for op in ops.values():  # warm-up, not counted in the CPU figure
                await op()
            cpu_before = {name: cpu_seconds(sites[name]) or 0.0 for name in names}
            measured = await ab_latency(ops, warmup=1, rounds=rounds, per_round=per_round)
            listings = 1 + rounds * per_round
            cpu = {name: ((cpu_seconds(sites[name]) or 0.0) - cpu_before[name]) / listings * 1000 for name in names}
    bare = measured.sides["bare"].p(50)
    lines = [
        f"tools/list, {tools} tools, HTTP stateless: {rounds} rounds of {per_round} per side",
        "",
        "| side | p50 | / bare | per-round ratios (median) | p99 | server CPU per listing | / bare |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for name in names:
        side = measured.sides[name]
        if name == "bare":
            p99 = side.p(99) / 1000
            lines.append(f"| bare | {bare / 1000:.2f} ms | 1.00x | | {p99:.2f} ms | {cpu[name]:.2f} ms | 1.00x |")
            continue
        ratios = measured.round_ratios(name, "bare")
        lines.append(
            f"| {name} | {side.p(50) / 1000:.2f} ms | {side.p(50) / bare:.2f}x | "
            f"{min(ratios):.2f}-{max(ratios):.2f} ({statistics.median(ratios):.2f}) | {side.p(99) / 1000:.2f} ms | "
            f"{cpu[name]:.2f} ms | {cpu[name] / cpu['bare']:.2f}x |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ab_list", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkouts", type=Path, nargs="*", help="other checkouts of Mandate, each served as a side")
    parser.add_argument("--tools", type=int, default=1000, choices=(50, 1000))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=0, help="listings per block (default: 5, or 50 for 50 tools)")
    args = parser.parse_args()
    per_round = args.per_round or (5 if args.tools == 1000 else 50)
    with tempfile.TemporaryDirectory(prefix="mandate-ab-list-") as scratch:
        checkouts = [path.resolve() for path in args.checkouts]
        lines = uvloop.run(compare(checkouts, Path(scratch), args.tools, args.rounds, per_round))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
