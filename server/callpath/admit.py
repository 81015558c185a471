"""Steps 2 and 3 of a tools/call (DESIGN.md section 3): the tool exists, the token's scopes allow it, and the
arguments are valid, strictly (no coercion; money fits its currency's decimals). A call refused here runs nothing;
the Enforcer records the refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from server.auth.principal import Principal
from server.callpath.answers import Refusal
from server.catalog import IDEMPOTENCY_FIELD, CatalogEntry, ToolCatalog


@dataclass(frozen=True, slots=True)
class Rejected:
    """A call refused before the decision. ``ended``: the audit outcome (``refused`` or ``invalid_arguments``)."""

    refusal: Refusal
    ended: str
    sensitive: frozenset[str]


@dataclass(frozen=True, slots=True)
class Admitted:
    entry: CatalogEntry
    args: BaseModel
    policy_args: dict[str, Any]
    """The arguments as the policy sees them (money as Money)."""
    idempotency_key: str | None


def admit(catalog: ToolCatalog, principal: Principal, name: str, raw: dict[str, Any]) -> Admitted | Rejected:
    """Check a call; ``raw`` loses its ``idempotency_key`` (it is not an argument of the tool)."""
    entry = catalog.get(name)
    if entry is None:
        return Rejected(
            Refusal(status="denied", code="unknown_tool", message=f"Unknown tool: {name}"), "refused", frozenset()
        )
    spec = entry.spec
    if not spec.requires.is_met_by(principal.scopes):
        needed = spec.requires.challenge_scopes(principal.scopes)
        refusal = Refusal(
            status="insufficient_scope",
            code="insufficient_scope",
            message=f"This action needs the scope {spec.requires.describe()}, which your access token does not hold.",
            would_allow=[f"a token with scope {' '.join(needed)}"],
            details={"required": list(spec.requires.scopes), "mode": spec.requires.mode},
        )
        return Rejected(refusal, "refused", spec.sensitive)

    idempotency_key = raw.pop(IDEMPOTENCY_FIELD, None) if spec.has_side_effect else None
    try:
        if idempotency_key is not None and not (isinstance(idempotency_key, str) and 8 <= len(idempotency_key) <= 200):
            raise ValueError("idempotency_key must be a string of 8 to 200 characters")
        args = spec.args_model.model_validate(raw, strict=True)
        policy_args = spec.policy_args(args)
    except (ValidationError, ValueError) as exc:
        problems: list[dict[str, str]] = []
        if isinstance(exc, ValidationError):
            message, problems = _validation_message(exc)
        else:
            message = f"The arguments are not valid, so nothing was done: {exc}."
        refusal = Refusal(
            status="invalid_arguments", code="invalid_arguments", message=message, details={"problems": problems}
        )
        return Rejected(refusal, "invalid_arguments", spec.sensitive)
    return Admitted(entry, args, policy_args, idempotency_key)


def _validation_message(exc: ValidationError) -> tuple[str, list[dict[str, str]]]:
    problems: list[dict[str, str]] = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "(arguments)"
        problems.append({"field": where, "problem": error["msg"]})
    text = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
    return f"The arguments are not valid, so nothing was done: {text}.", problems
