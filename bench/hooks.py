"""Component benchmarks that other modules own: ``bench.bench_decision`` (the policy engine), ``bench.bench_audit``
(the audit trail), ``bench.bench_ledger`` (cumulative caps) and ``bench.bench_history`` (a rolling window's cost as
history grows).

The contract, for whoever writes one of them: the module has a function ``run`` (sync or async) taking the keyword
``mode`` (``"full"``, ``"quick"`` or ``"smoke"``: smoke must take well under a second) and returning a mapping from
a figure's key (``"audit.append.sqlite"``) to its value, or to ``(value, unit)``, or to ``(value, unit, label)``.
A module that is not there yet is reported as pending, with what it will measure.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Mapping
from typing import Any

from bench.results import Component, Results

HOOKS: dict[str, tuple[str, str]] = {
    "decision": ("bench.bench_decision", "policy decisions per second, in process"),
    "audit": (
        "bench.bench_audit",
        "audit records written per second (SQLite WAL, PostgreSQL); audit verify, records per second over 100,000",
    ),
    "ledger": (
        "bench.bench_ledger",
        "ledger reservations per second with 32 concurrent writers, and whether the cap held",
    ),
    "history": (
        "bench.bench_history",
        "a rolling-window spend with 100 .. 100,000 entries in the window (sub-totals against the per-entry sum)",
    ),
}


def _component(section: str, key: str, value: Any) -> Component:
    unit, label = "", key
    if isinstance(value, tuple):
        value, unit, *rest = value
        label = rest[0] if rest else key
    if isinstance(value, bool):
        return Component(key, label, float(value), unit or "yes/no", status="measured")
    if isinstance(value, (int, float)):
        return Component(key, label, float(value), unit)
    return Component(key, label, None, unit, note=str(value), status="measured")


async def run_hook(results: Results, section: str, mode: str) -> None:
    module_name, what = HOOKS[section]
    if importlib.util.find_spec(module_name) is None:
        results.components.append(
            Component(section, what, None, "", note=f"pending: {module_name} not written yet", status="pending")
        )
        return
    module = importlib.import_module(module_name)
    run = getattr(module, "run", None)
    if run is None:
        results.components.append(
            Component(section, what, None, "", note=f"pending: {module_name} has no run()", status="pending")
        )
        return
    parameters = inspect.signature(run).parameters
    kwargs: dict[str, Any] = {}
    if "mode" in parameters:
        kwargs["mode"] = mode
    elif "quick" in parameters:
        kwargs["quick"] = mode != "full"
    outcome = run(**kwargs)
    if inspect.isawaitable(outcome):
        outcome = await outcome
    if isinstance(outcome, Component):
        outcome = [outcome]
    rows: list[Component] = []
    if isinstance(outcome, Mapping):
        rows = [_component(section, str(key), value) for key, value in outcome.items()]
    elif isinstance(outcome, list):
        rows = [row for row in outcome if isinstance(row, Component)]
    status = "pending" if not rows else "measured"
    results.components.append(
        Component(section, what, float(len(rows)), "figures", note=f"{module_name}", status=status)
    )
    results.components.extend(rows)
