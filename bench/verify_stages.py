"""Where PostgreSQL's CPU goes when ``mandate audit verify`` reads a range of leaves: one backend, each stage a
statement over the same ranges of a kept log, CPU per record from ``/proc`` (same machine; issue 15).

    uv run python -m bench.verify_stages --postgres-schema pgv1m            # 6 ranges of 16,384, 3 rounds, ABBA

The stages add to each other: reaching the rows, reading the content columns, building the canonical JSON
(``octet_length``, which counts nothing), then ``convert_to`` and ``sha256`` of it, then the whole range summary
that verify runs (server/audit/levels.py). ``sha256, 20 bytes`` is what one call costs before it hashes anything.
Not a test: nothing asserts a speed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.pg import postgres_url_from_env
from server.audit import levels
from server.audit.chain import LEAF_FIELDS

_RANGE = "FROM audit_records WHERE leaf_index >= %s AND leaf_index < %s"


def _sum(expression: str) -> str:
    return f"SELECT pg_catalog.sum({expression}) {_RANGE}"


STAGES = {
    "reach the rows": f"SELECT pg_catalog.count(*) {_RANGE}",
    "read the content columns": _sum(f"pg_catalog.num_nulls({', '.join(LEAF_FIELDS)})"),
    "build the JSON": _sum(f"pg_catalog.octet_length({levels._postgres_json()})"),
    "build it, convert_to and sha256": _sum(f"pg_catalog.get_byte({levels._leaf(levels._postgres_json())}, 0)"),
    "the range summary (verify's statement)": levels._FAST.summary,
    "sha256, 20 bytes": _sum("pg_catalog.get_byte(pg_catalog.sha256(pg_catalog.convert_to(id, 'UTF8')), 0)"),
    "convert_to, 20 bytes": _sum("pg_catalog.octet_length(pg_catalog.convert_to(id, 'UTF8'))"),
}


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(args: argparse.Namespace) -> None:
    import psycopg

    plain = postgres_url_from_env().replace("postgresql+psycopg://", "postgresql://").split("?")[0]
    url = f"{plain}?options=-csearch_path%3D{args.postgres_schema}"
    size = 1 << 14
    figures: dict[str, list[float]] = {name: [] for name in STAGES}
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute("SELECT pg_catalog.pg_backend_pid()").fetchone()
        assert row is not None
        pid = int(row[0])
        names = list(STAGES)
        for round_number in range(args.rounds):
            for name in names if round_number % 2 == 0 else names[::-1]:
                started = _cpu(pid)
                for number in range(args.ranges):
                    connection.execute(STAGES[name], (number * size, (number + 1) * size)).fetchone()
                figures[name].append((_cpu(pid) - started) / (args.ranges * size) * 1e6)
    print(f"server CPU per record, us ({args.ranges} ranges of {size}, load {os.getloadavg()[0]:.1f}):")
    for name, values in figures.items():
        print(f"| {name} | {' / '.join(f'{value:.2f}' for value in values)} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres-schema", dest="postgres_schema", default="pgv1m")
    parser.add_argument("--ranges", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    main(parser.parse_args())
