"""The agents page's kill switch (docs/console.md "Agents"; docs/operations.md "Suspensions"): which agents are
suspended, and the suspend and resume forms.

The forms are calls of the ``principal_suspend`` and ``principal_resume`` tools through the enforcer with transport
``console``, as the signed-in person: the scope check (``principals:suspend``), the reason's validation and the audit
record are those of MCP. This module only reads suspensions (to show them) and turns a posted form into the tool's
arguments; it never writes a suspension itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlmodel.ext.asyncio.session import AsyncSession

from server.auth.principal import Principal
from server.guards.store import Suspension
from server.guards.suspension import active

if TYPE_CHECKING:
    from server.app import Mandate

SUSPEND_TOOL = "principal_suspend"
RESUME_TOOL = "principal_resume"
FORM_KINDS = ("client", "subject")
"""What the agents page suspends: the agent's client id, or one of its subjects."""


def may_suspend(mandate: Mandate, principal: Principal) -> bool:
    """Whether the person's token grants the suspend tool's scope (read from the catalog); the buttons show only then.
    The tool checks it again on every post, so a forged form is refused whatever this says."""
    entry = mandate.catalog.get(SUSPEND_TOOL)
    return entry is not None and entry.spec.requires.is_met_by(principal.scopes)


@dataclass(slots=True)
class SuspensionState:
    """The active suspensions, and for each client id those that stop it (by client id or by one of its subjects)."""

    active: list[Suspension] = field(default_factory=list[Suspension])
    by_client: dict[str, list[Suspension]] = field(default_factory=dict[str, list[Suspension]])


async def state(session: AsyncSession, agents: Iterable[tuple[str, Iterable[str]]]) -> SuspensionState:
    """``agents``: (client id, subjects) pairs. A suspension bound to an issuer is shown for every issuer's agent of
    that name (the page does not know the issuer of each call), with the issuer named."""
    rows = await active(session)
    result = SuspensionState(active=rows)
    for client_id, subjects in agents:
        names = set(subjects)
        result.by_client[client_id] = [
            row
            for row in rows
            if (row.kind == "client" and row.value == client_id) or (row.kind == "subject" and row.value in names)
        ]
    return result


class FormProblem(ValueError):
    """A suspend or resume form that cannot become a tool call (nothing is called, nothing changes)."""


def _reason(form: Mapping[str, str]) -> str:
    reason = form.get("reason", "").strip()
    if not reason:
        raise FormProblem("A reason is required: it is recorded with the suspension and in the audit trail.")
    return reason


def suspend_arguments(form: Mapping[str, str]) -> dict[str, Any]:
    """The ``principal_suspend`` arguments of a posted form: ``target`` (the page's choice, ``"<kind> <value>"``) or
    ``kind`` (client or subject) and ``value``; and ``reason``."""
    kind, _, value = form["target"].partition(" ") if "target" in form else (form.get("kind", ""), "", "")
    value = value if "target" in form else form.get("value", "")
    if kind not in FORM_KINDS:
        raise FormProblem("Choose what to suspend: the agent's client id or one of its subjects.")
    value = value.strip()
    if not value:
        raise FormProblem(f"Say which {kind} to suspend.")
    return {"kind": kind, "value": value, "reason": _reason(form)}


def resume_arguments(form: Mapping[str, str]) -> dict[str, Any]:
    """The ``principal_resume`` arguments of a posted form: the ``suspension_id`` to end and a ``reason``."""
    suspension_id = form.get("suspension_id", "").strip()
    if not suspension_id:
        raise FormProblem("Say which suspension to end.")
    return {"suspension_id": suspension_id, "reason": _reason(form)}
