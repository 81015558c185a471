"""What a run produces: comparison rows (Mandate against the bare server, with the ratio) and component rows.

Every figure has a stable key; ``EXPECTED_KEYS`` lists those every run produces (the smoke test checks them). A
component measured by another module that is not there yet is a row with ``status = "pending"`` and no value.
"""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

COMPARISON_KEYS: tuple[str, ...] = (
    "call.http.stateless.p50",
    "call.http.stateless.p99",
    "call.http.stateful.p50",
    "call.http.stateful.p99",
    "call.memory.p50",
    "call.memory.p99",
    "throughput.http.c8",
    "throughput.http.c32",
    "list.http.50.p50",
    "list.http.50.p99",
    "list.http.1000.p50",
    "list.http.1000.p99",
    "refund.http.stateless.p50",
    "refund.http.stateless.vs_trivial.p50",
    "refund.throughput.c1",
    "refund.throughput.c8",
    "refund.throughput.c32",
    "refund.http.stateless.direct.p50",
    "refund.throughput.direct.c32",
)
COMPONENT_KEYS: tuple[str, ...] = (
    "token.verify.es256",
    "token.verify.rs256",
    "token.verify.cached",
    "decision",
    "audit",
    "ledger",
    "history",
    "ledger.history.sqlite.n100",
)
EXPECTED_KEYS = COMPARISON_KEYS + COMPONENT_KEYS


@dataclass
class Comparison:
    key: str
    label: str
    unit: str
    bare: float
    mandate: float
    rounds: list[float] = field(default_factory=list[float])
    """The ratio in each round (block pair), to show its spread."""
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.mandate / self.bare


@dataclass
class Component:
    key: str
    label: str
    value: float | None
    unit: str
    note: str = ""
    status: str = "measured"


@dataclass
class Results:
    mode: str
    command: str
    comparisons: list[Comparison] = field(default_factory=list[Comparison])
    components: list[Component] = field(default_factory=list[Component])
    notes: list[str] = field(default_factory=list[str])
    profiles: dict[str, str] = field(default_factory=dict[str, str])
    started: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    seconds: float = 0.0
    machine: dict[str, str] = field(default_factory=lambda: machine())

    def keys(self) -> set[str]:
        return {row.key for row in self.comparisons} | {row.key for row in self.components}

    def comparison(self, key: str) -> Comparison:
        return next(row for row in self.comparisons if row.key == key)

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        for row, raw in zip(self.comparisons, data["comparisons"], strict=True):
            raw["ratio"] = row.ratio
        return json.dumps(data, indent=2)

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.mode}.json"
        path.write_text(self.to_json())
        return path


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpus": str(_cpu_count()),
        "cpu": _cpu_model(),
        "memory": _memory(),
    }
    from importlib.metadata import PackageNotFoundError, version

    for package in ("mcp", "uvicorn", "uvloop", "httptools", "sqlalchemy"):
        with contextlib.suppress(PackageNotFoundError):
            info[package] = version(package)
    info["commit"] = _git_commit()
    return info


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return "unknown"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - informational
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent,
        )
    except OSError:
        return "unknown"
    commit = out.stdout.strip() or "unknown"
    return f"{commit}{' (with uncommitted changes)' if dirty.stdout.strip() else ''}"
