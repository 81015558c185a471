"""Per-statement CPU overhead of server/storage/prepared/ (and ToolContext's wrappers) on a held sqlite3 connection.

    # two checkouts alternating, each in a subprocess of its own (same interpreter and venv):
    git archive <before> | tar -x -C /tmp/before
    uv run python -m bench.bench_statements --compare /tmp/before .

    # one checkout only (prints the raw figures as JSON):
    uv run python -m bench.bench_statements --checkout .

For each statement kind of a served refund, in one SQLite write transaction held by HeldWriter (as served):
``layer`` is the CPU time of the call through the layer (ctx.fetch_one / ctx.write / chain's run / defer_many),
``raw`` is the same statement with the same already-processed values executed straight on the sqlite3 connection
(SQLite's own C time plus a bare call), and ``own`` = layer - raw: what this layer costs. Microseconds per
statement, best and median of the batches (``time.process_time``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("select_by_key", "update_write", "bucket_update_defer", "audit_insert_38", "executemany_2")


def child(checkout: str, batches: int, iterations: int) -> None:
    sys.path.insert(0, checkout)
    os.chdir(checkout)
    import gc
    from datetime import UTC, datetime, timedelta
    from typing import Any

    import anyio
    from sqlalchemy import create_engine

    from server.app import load_tool_catalog
    from server.auth.principal import Principal
    from server.config import Settings
    from server.storage import prepared as statements
    from server.storage.database import Database
    from server.storage.migrate import upgrade_connection
    from server.toolkit import ToolContext

    try:
        from server.storage.prepared.driver import _driver
        from server.storage.prepared.forms import _values
    except ModuleNotFoundError:  # a checkout from before server/storage/prepared.py was split by concept
        _driver, _values = statements._driver, statements._values

    assert statements.__file__.startswith(checkout), statements.__file__
    tmp = Path(tempfile.mkdtemp(prefix="prepared-bench-"))
    path = tmp / "mandate.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        upgrade_connection(connection)
    engine.dispose()
    settings = Settings(data_dir=tmp / "data", database_url=f"sqlite+aiosqlite:///{path}", dev_issuer=True)
    load_tool_catalog(settings)

    from server import ledger
    from server.audit import chain
    from tools.store import access
    from tools.store.seed import seed_demo_store

    now = datetime(2026, 12, 4, 10, 0, 0, 123456, tzinfo=UTC)
    db = Database(settings.effective_database_url)
    results: dict[str, dict[str, list[float]]] = {kind: {"layer": [], "raw": []} for kind in KINDS}

    async def main() -> None:
        await db.run_in_transaction(lambda session: seed_demo_store(session, now - timedelta(days=1)))
        order_id = "ord_5001"

        async def prep(session: Any) -> None:
            await statements.run(
                session,
                ledger._CREATE_BUCKET["sqlite"],
                {"budget": "b", "holder": "h", "unit": "EUR", "period": "p", "spent": 0, "updated_at": now},
            )

        await db.run_in_transaction(prep)

        class Rollback(Exception):
            pass

        async def work(session: Any) -> None:
            principal = Principal("agent:bench", "bench", frozenset(), "https://issuer", ("mandate",), now)
            ctx = ToolContext(principal, session, now, "aud_x", "refund_create")
            found = await ctx.fetch_one(access._ORDER_LOCKED, order_id=order_id)
            assert found is not None, "seeded order"
            driver = await _driver(session)
            conn = driver.connection
            dialect = driver.dialect

            def raw_form(prepared: Any, params: dict[str, Any]) -> tuple[str, Any]:
                keys = tuple(params) if prepared.takes_columns else None
                form = prepared.form(dialect, keys)
                return form.sql, _values(form, params)

            bucket = {"k_budget": "b", "k_holder": "h", "k_unit": "EUR", "k_period": "p"}
            audit_base = {
                "id": "aud_0",
                "at": now,
                "instance": "bench",
                "kind": "call",
                "subject": "agent:bench",
                "client_id": "bench",
                "issuer": "https://issuer",
                "scopes": "orders:read refunds:create",
                "token_id": "tok",
                "tenant": "acme",
                "actor": None,
                "transport": "http",
                "client_address": "127.0.0.1",
                "client_name": "c",
                "client_version": "1",
                "origin": None,
                "user_agent": "ua",
                "tool": "refund_create",
                "customer_id": "cus_1",
                "arguments": '{"amount":"12.50"}',
                "arguments_digest": "d" * 64,
                "decision": "allow",
                "reason_code": "ok",
                "reason": "fits",
                "rule_id": "r",
                "policy_version": "v1",
                "outcome": "ok",
                "result_summary": "{}",
                "latency_us": 100,
                "approval_id": None,
                "idempotency_key": None,
                "request_id": "1",
                "trace_id": None,
                "leaf_index": None,
                "prev_hash": None,
                "hash": None,
                "leaf_hash": "a" * 64,
            }
            assert len(audit_base) == 37, len(audit_base)  # the 38 columns but seq (the rowid)

            def entry(n: int) -> dict[str, Any]:
                return {
                    "budget": "b",
                    "holder": "h",
                    "unit": "EUR",
                    "period": "p",
                    "amount": n,
                    "at": now,
                    "tool": "refund_create",
                    "audit_id": f"aud_{n}",
                }

            select_sql, select_values = raw_form(access._ORDER_LOCKED, {"order_id": order_id})
            update_sql, update_values = raw_form(access._ADD_REFUNDED, {"k_order_id": order_id, "k_amount": 0})
            bucket_params = {**bucket, "k_amount": 0, "k_at": now}
            bucket_sql, bucket_values = raw_form(ledger._ADD_NOW, bucket_params)
            audit_sql, _ = raw_form(chain._INSERT_RECORD, audit_base)
            many_sql, _ = raw_form(ledger._ADD_ENTRY, entry(0))

            for batch in range(batches + 1):  # the first batch warms up
                audits = [{**audit_base, "id": f"aud_l{batch}_{i}"} for i in range(iterations)]
                raw_audits = [
                    raw_form(chain._INSERT_RECORD, {**audit_base, "id": f"aud_r{batch}_{i}"})[1]
                    for i in range(iterations)
                ]
                pairs = [[entry(i), entry(i + 1)] for i in range(iterations)]
                raw_pairs = [[raw_form(ledger._ADD_ENTRY, row)[1] for row in pair] for pair in pairs]
                gc.collect()
                gc.disable()
                timings: dict[str, tuple[float, float]] = {}

                t0 = time.process_time()
                for _ in range(iterations):
                    await ctx.fetch_one(access._ORDER_LOCKED, order_id=order_id)
                t1 = time.process_time()
                for _ in range(iterations):
                    conn.execute(select_sql, select_values).fetchall()
                t2 = time.process_time()
                timings["select_by_key"] = (t1 - t0, t2 - t1)

                t0 = time.process_time()
                for _ in range(iterations):
                    await ctx.write(access._ADD_REFUNDED, k_order_id=order_id, k_amount=0)
                t1 = time.process_time()
                for _ in range(iterations):
                    conn.execute(update_sql, update_values).rowcount  # noqa: B018
                t2 = time.process_time()
                timings["update_write"] = (t1 - t0, t2 - t1)

                t0 = time.process_time()
                for _ in range(iterations):
                    await statements.defer(session, ledger._ADD_NOW, {**bucket, "k_amount": 0, "k_at": now}, expect=1)
                t1 = time.process_time()
                for _ in range(iterations):
                    {**bucket, "k_amount": 0, "k_at": now}  # noqa: B018 - the caller's dict, as above
                    conn.execute(bucket_sql, bucket_values).rowcount  # noqa: B018
                t2 = time.process_time()
                timings["bucket_update_defer"] = (t1 - t0, t2 - t1)

                t0 = time.process_time()
                for values in audits:
                    await statements.run(session, chain._INSERT_RECORD, values)
                t1 = time.process_time()
                for values in raw_audits:
                    conn.execute(audit_sql, values)
                t2 = time.process_time()
                timings["audit_insert_38"] = (t1 - t0, t2 - t1)

                t0 = time.process_time()
                for pair in pairs:
                    await statements.defer_many(session, ledger._ADD_ENTRY, pair)
                t1 = time.process_time()
                for raw_pair in raw_pairs:
                    conn.executemany(many_sql, raw_pair)
                t2 = time.process_time()
                timings["executemany_2"] = (t1 - t0, t2 - t1)

                gc.enable()
                if batch:
                    for kind, (layer, raw_time) in timings.items():
                        results[kind]["layer"].append(layer / iterations * 1e6)
                        results[kind]["raw"].append(raw_time / iterations * 1e6)
            raise Rollback

        with contextlib.suppress(Rollback):  # every batch is rolled back: the database stays as seeded
            await db.run_in_transaction(work)
        await db.dispose()

    anyio.run(main)
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results))


def summarise(label: str, runs: list[dict[str, dict[str, list[float]]]]) -> dict[str, tuple[float, float]]:
    own: dict[str, tuple[float, float]] = {}
    print(f"\n{label}")
    print(f"  {'kind':22} {'layer best/med':>16} {'raw best/med':>16} {'own best/med':>16}")
    for kind in KINDS:
        layer = [v for run in runs for v in run[kind]["layer"]]
        raw = [v for run in runs for v in run[kind]["raw"]]
        mine = [a - b for run in runs for a, b in zip(run[kind]["layer"], run[kind]["raw"], strict=True)]
        own[kind] = (min(mine), statistics.median(mine))
        print(
            f"  {kind:22} {min(layer):7.2f}/{statistics.median(layer):7.2f} "
            f"{min(raw):7.2f}/{statistics.median(raw):7.2f} {own[kind][0]:7.2f}/{own[kind][1]:7.2f}"
        )
    return own


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkout")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two checkouts (--compare)")
    args = parser.parse_args()
    if args.checkout:
        child(os.path.abspath(args.checkout), args.batches, args.iterations)
        return
    before, after = (os.path.abspath(p) for p in args.compare)
    runs: dict[str, list[dict[str, dict[str, list[float]]]]] = {before: [], after: []}
    for _ in range(args.rounds):
        for checkout in (before, after):
            command = [sys.executable, __file__, "--checkout", checkout]
            command += ["--batches", str(args.batches), "--iterations", str(args.iterations)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603 - this script
            runs[checkout].append(json.loads(done.stdout.strip().splitlines()[-1]))
    old = summarise(f"before: {before}", runs[before])
    new = summarise(f"after:  {after}", runs[after])
    print("\n  own overhead, median: before -> after (cut)")
    for kind in KINDS:
        print(f"  {kind:22} {old[kind][1]:7.2f} -> {new[kind][1]:7.2f} us ({1 - new[kind][1] / old[kind][1]:.0%})")


if __name__ == "__main__":
    main()
