"""``python -m bench``: Mandate against a bare MCP server, side by side, and the cost of each component.

    uv run python -m bench            # the full run (a few minutes), as published in BENCHMARKS.md
    uv run python -m bench --quick    # the same figures with fewer samples (under 30 s)
    uv run python -m bench --write    # also write the figures into BENCHMARKS.md
    uv run python -m bench --only external [--quick]   # refunds at a payments provider: not by default
                                                       # (results in bench/results/external/<mode>.json)

Results go to bench/results/<mode>.json (and the profiles next to them); the table is printed at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import uvloop

from bench.bench_http import run_http
from bench.bench_memory import profile_memory, run_memory, run_rss
from bench.bench_tokens import run_tokens
from bench.hooks import HOOKS, run_hook
from bench.pg import postgres_url_from_env, reachable, scratch_schema
from bench.plan import FULL, QUICK, SMOKE, Plan
from bench.policy import policy_status
from bench.report import render, write_into
from bench.results import Results
from bench.serve import SERVER_STACK
from bench.servers import can_pin

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("http", "memory", "components")
OPTIONAL_SECTIONS = ("external",)
"""Run only when named with ``--only``: ``external`` starts localstripe and four more servers (bench.bench_external)."""


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer samples: under 30 s")
    size.add_argument("--smoke", action="store_true", help="one short iteration of everything (the smoke test)")
    parser.add_argument(
        "--only", choices=SECTIONS + OPTIONAL_SECTIONS, action="append", help="run only this section (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where results are written")
    parser.add_argument("--write", action="store_true", help="write the figures into BENCHMARKS.md")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the servers and the client to CPUs")
    parser.add_argument("--postgres", default=None, help="PostgreSQL URL (default: POSTGRES_URL or the local test db)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL figures")
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="profile one call path (default: full runs only)",
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, plan: Plan, command: str) -> Results:
    results = Results(plan.name, command)
    sections = args.only or list(SECTIONS)
    pin = can_pin() and not args.no_pin and not plan.in_process_servers
    profile = plan is FULL if args.profile is None else args.profile
    if profile and not plan.profile_calls and not plan.in_process_servers:
        plan = replace(plan, profile_calls=300)  # --quick --profile: a shorter profile
    profile_dir = args.out / "profiles" if profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    # the PostgreSQL server and the SDK-auth variant are extra figures: full runs only (or --postgres URL)
    postgres = (
        None
        if args.no_postgres or (plan is not FULL and not args.postgres)
        else (args.postgres or postgres_url_from_env())
    )
    if postgres and not reachable(postgres):
        results.notes.append(f"PostgreSQL not reachable at {postgres}: its figures are skipped")
        postgres = None
    results.notes.append(f"Server stack, both sides: {SERVER_STACK}; JSON responses (not SSE).")
    results.notes.append(
        "Servers pinned to CPU 0, the load generator to CPU 1."
        if pin
        else "No CPU pinning (servers and client share CPUs)."
    )
    results.notes.append(f"Policy: {policy_status()}.")
    started = time.perf_counter()
    load_before = _load()
    timings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mandate-bench-") as scratch:
        workdir = Path(scratch)
        if "http" in sections:
            t0 = time.perf_counter()
            if postgres:
                with scratch_schema(postgres) as schema_url, scratch_schema(postgres) as bare_schema_url:
                    await run_http(
                        results,
                        plan,
                        workdir,
                        pin=pin,
                        postgres_url=schema_url,
                        bare_postgres_url=bare_schema_url,
                        sdk_auth=plan is FULL,
                        profile_dir=profile_dir,
                    )
            else:
                await run_http(
                    results, plan, workdir, pin=pin, postgres_url=None, sdk_auth=plan is FULL, profile_dir=profile_dir
                )
            timings.append(f"http {time.perf_counter() - t0:.0f} s")
        if "memory" in sections:
            t0 = time.perf_counter()
            await run_memory(results, plan, workdir)
            await run_rss(results, plan, workdir, pin=pin)
            if profile_dir is not None and plan.profile_calls:
                path = profile_dir / "memory-mandate.txt"
                await profile_memory(workdir, plan.profile_calls // 2, path)
                results.profiles["memory-mandate"] = str(path)
            timings.append(f"memory {time.perf_counter() - t0:.0f} s")
        if "components" in sections:
            t0 = time.perf_counter()
            await run_tokens(results, plan, workdir)
            for section in HOOKS:
                await run_hook(results, section, plan.name)
            timings.append(f"components {time.perf_counter() - t0:.0f} s")
        if "external" in sections:
            from bench.bench_external import postgres_schemas, profile_external, run_external

            t0 = time.perf_counter()
            await run_external(results, plan, workdir, pin=pin)
            if postgres:
                with postgres_schemas(postgres) as urls:
                    await run_external(results, plan, workdir, pin=pin, urls=urls)
            if profile_dir is not None and plan.profile_calls:
                path = profile_dir / "external-mandate.txt"
                await profile_external(plan.profile_calls, path, pin=pin)
                results.profiles["external-mandate"] = str(path)
            timings.append(f"external {time.perf_counter() - t0:.0f} s")
    results.seconds = time.perf_counter() - started
    results.notes.append(
        f"Load average (1 min) before and after the run: {load_before} / {_load()}; sections: {', '.join(timings)}."
    )
    return results


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    plan = SMOKE if args.smoke else QUICK if args.quick else FULL
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("server.auth.dev_issuer").setLevel(logging.ERROR)
    command = "uv run python -m bench" + (f" --{plan.name}" if plan is not FULL else "")
    results = uvloop.run(run(args, plan, command))
    # an optional section alone writes beside its standalone module's results, never over the published run's
    only_optional = bool(args.only) and set(args.only) <= set(OPTIONAL_SECTIONS)
    path = results.write(args.out / "external" if only_optional else args.out)
    print(render(results))
    print(f"\nresults: {path}")
    for name, profile in results.profiles.items():
        print(f"profile {name}: {profile}")
    if args.write:
        write_into(ROOT / "BENCHMARKS.md", results)
        print("BENCHMARKS.md updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
