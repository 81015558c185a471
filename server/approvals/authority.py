"""Who may see and decide an approval: the approver marker, separation of duties, tenancy.

- **Approver marker** (``approvals.approver_claim``, by default ``"mandate_approver": true``): the
  ``approvals:decide`` scope is the permission, and a claim that the authorization server issues only to people
  (``"mandate_approver": true``, or e.g. ``"roles": ["approver"]``) is required too, so an agent's token that was
  given the scope by mistake still cannot approve. ``approvals.allow_any_approver = true`` turns the marker off.
- **Separation of duties** (NIST SP 800-53 AC-5): the approver must not be the requester. Compared on the principal
  key (issuer, client and subject) and on the people behind the tokens: the subjects, and the RFC 8693 ``act``
  actor of either token. The same person through another client is still the same person.
- **Tenancy**: an approver whose token names a tenant sees only that tenant's approvals; another tenant's approval
  is "not found", the same answer as one that does not exist.
"""

from __future__ import annotations

from server.approvals.models import Approval
from server.auth.principal import Principal
from server.config import ApprovalSettings
from server.toolkit import NotFound, ToolError


def is_approver(principal: Principal, settings: ApprovalSettings) -> bool:
    """Whether the token carries the approver marker (by default ``"mandate_approver": true``); any token with the
    scope only when ``approvals.allow_any_approver`` says so."""
    if settings.allow_any_approver:
        return True
    if not settings.approver_claim:
        return False
    value = principal.claims.get(settings.approver_claim)
    if settings.approver_claim_value is None:
        return value is True
    if isinstance(value, str):
        return value == settings.approver_claim_value or settings.approver_claim_value in value.split()
    if isinstance(value, list | tuple):
        return settings.approver_claim_value in value
    return False


def require_approver(principal: Principal, settings: ApprovalSettings) -> None:
    if not is_approver(principal, settings):
        raise ToolError(
            "not_an_approver",
            "Your token holds the approvals scope but is not marked as a human approver "
            f"(claim {settings.approver_claim!r}), so it cannot list, inspect or decide approvals.",
            details={"claim": settings.approver_claim or ""},
        )


def _people(approval_subject: str, approval_actor: str | None) -> set[str]:
    return {approval_subject} | ({approval_actor} if approval_actor else set())


def is_requester(approval: Approval, principal: Principal) -> bool:
    """Whether ``principal`` is, or acts for or as, whoever asked for the action."""
    if principal.key == approval.requester_key:
        return True
    requesters = _people(approval.requester_subject, approval.requester_actor)
    return bool(requesters & _people(principal.subject, principal.actor))


def require_separation(approval: Approval, approver: Principal) -> None:
    if is_requester(approval, approver):
        raise ToolError(
            "self_approval",
            "You asked for this action (or act for whoever did), so you cannot decide it: another person must "
            "(separation of duties).",
        )


def visible_to_approver(approval: Approval, principal: Principal) -> bool:
    return principal.tenant is None or principal.tenant == approval.requester_tenant


def approval_for_approver(approval: Approval | None, approval_id: str, principal: Principal) -> Approval:
    if approval is None or not visible_to_approver(approval, principal):
        raise NotFound("approval", approval_id)
    return approval


def is_own_request(approval: Approval, principal: Principal) -> bool:
    """Whether ``principal`` asked for it: the same principal key within the same tenant (a subject holding tokens
    for two tenants never sees one tenant's request through the other)."""
    return approval.requester_key == principal.key and approval.requester_tenant == principal.tenant


def approval_for_requester(approval: Approval | None, approval_id: str, principal: Principal) -> Approval:
    """The approval if ``principal`` asked for it (:func:`is_own_request`); anyone else gets "not found"."""
    if approval is None or not is_own_request(approval, principal):
        raise NotFound("approval", approval_id)
    return approval
