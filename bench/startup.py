"""Start-up time of the ``mandate`` command line, beside a bare Python interpreter, in one run (issue 10 goal 5).

    uv run python -m bench.startup              # 15 alternating rounds, medians; results in bench/results/startup.json
    uv run python -m bench.startup --rounds 3   # quicker

Each round runs every command once, in turn, so load on the machine affects them alike. The figures are wall-clock
medians and their ratio to ``python -c pass`` (the floor no command can beat) and to ``python -c "import mcp"`` (what
loading the SDK alone costs, which the light commands must not pay). Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANDATE = [sys.executable, "-m", "server.cli"]
COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    'python -c "import mcp"': [sys.executable, "-c", "import mcp.server.lowlevel"],
    "mandate --version": [*MANDATE, "--version"],
    "mandate --help": [*MANDATE, "--help"],
    "mandate token mint --agent refunds": [*MANDATE, "token", "mint", "--agent", "refunds"],
    "mandate policy check": [*MANDATE, "policy", "check"],
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(rounds: int, data_dir: Path) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and CPU (user + system) seconds of each command, per round."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MANDATE_")}
    env["MANDATE_DATA_DIR"] = str(data_dir)
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    cpu: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for argv in COMMANDS.values():  # one warm-up each: the dev key, the page cache
        subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, check=True)  # noqa: S603 - our own commands
    for _ in range(rounds):
        for name, argv in COMMANDS.items():
            cpu_before, started = _children_cpu(), time.perf_counter()
            subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, check=True)  # noqa: S603
            samples[name].append(time.perf_counter() - started)
            cpu[name].append(_children_cpu() - cpu_before)
    return samples, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        samples, cpu = measure(args.rounds, Path(scratch))
    floor = statistics.median(samples["python -c pass"])
    sdk = statistics.median(samples['python -c "import mcp"'])
    rows = []
    for name, values in samples.items():
        median = statistics.median(values)
        rows.append(
            {
                "command": name,
                "median_s": round(median, 4),
                "max_s": round(max(values), 4),
                "cpu_median_s": round(statistics.median(cpu[name]), 4),
                "x_bare_python": round(median / floor, 2),
                "x_import_mcp": round(median / sdk, 2),
            }
        )
    args.out.mkdir(parents=True, exist_ok=True)
    document = {"rounds": args.rounds, "load_average": os.getloadavg()[0], "rows": rows}
    (args.out / "startup.json").write_text(json.dumps(document, indent=2) + "\n")
    print(f"{args.rounds} alternating rounds; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| command | wall median s | wall max s | CPU median s | x python -c pass | x import mcp |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| `{row['command']}` | {row['median_s']:.3f} | {row['max_s']:.3f} | {row['cpu_median_s']:.3f} | "
            f"{row['x_bare_python']:.1f} | {row['x_import_mcp']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
