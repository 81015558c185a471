"""The figures as Markdown: printed at the end of a run, and written into BENCHMARKS.md with ``--write``."""

from __future__ import annotations

import re
from pathlib import Path

from bench.results import Results

BEGIN = "<!-- bench:figures:begin -->"
END = "<!-- bench:figures:end -->"


def _us(value: float) -> str:
    return f"{value / 1000:.2f} ms" if value >= 10_000 else f"{value:.0f} us"


def _value(value: float, unit: str) -> str:
    if unit == "us":
        return _us(value)
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.2f} {unit}"


def _spread(rounds: list[float]) -> str:
    if len(rounds) < 2:
        return ""
    return f"{min(rounds):.2f}-{max(rounds):.2f}"


def render(results: Results) -> str:
    lines = [
        f"Run: `{results.command}` ({results.mode}), {results.started}, {results.seconds:.0f} s.",
        "",
        "| figure | bare MCPServer | Mandate | Mandate / bare | per-round ratios |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in results.comparisons:
        lines.append(
            f"| {row.label} | {_value(row.bare, row.unit)} | {_value(row.mandate, row.unit)} | "
            f"**{row.ratio:.2f}x** | {_spread(row.rounds)} |"
        )
    lines += ["", "| component | figure | note |", "| --- | ---: | --- |"]
    for component in results.components:
        if component.status == "pending":
            lines.append(f"| {component.label} | pending | {component.note} |")
        elif component.value is None:
            lines.append(f"| {component.label} | {component.note} | |")
        elif component.unit == "figures":
            continue
        else:
            lines.append(f"| {component.label} | {_value(component.value, component.unit)} | {component.note} |")
    if results.notes:
        lines += ["", *[f"- {note}" for note in results.notes]]
    machine = results.machine
    lines += [
        "",
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cpus', '?')} CPUs, {machine.get('memory', '?')}; "
        f"{machine.get('platform', '?')}; Python {machine.get('python', '?')}; mcp {machine.get('mcp', '?')}, "
        f"uvicorn {machine.get('uvicorn', '?')} + uvloop {machine.get('uvloop', '?')} + httptools "
        f"{machine.get('httptools', '?')}; commit {machine.get('commit', '?')}.",
    ]
    return "\n".join(lines)


def write_into(path: Path, results: Results) -> None:
    """Replace the figures between the markers in ``path`` (BENCHMARKS.md) with this run's."""
    text = path.read_text() if path.exists() else f"{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    block = f"{BEGIN}\n{render(results)}\n{END}"
    path.write_text(re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _m: block, text, flags=re.S))
