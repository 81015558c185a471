"""The structured answers a tool call can give besides its own result: a refusal and a pending approval.

Tool-level refusals are tool results with ``isError: true`` (MCP specification 2025-11-25, "Tools", error
handling), so the model can read them and explain them to the customer; they carry machine-readable fields too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Refusal(BaseModel):
    """Why an action was not done, in words a model can relay, and what would allow it."""

    status: Literal["denied", "failed", "invalid_arguments", "insufficient_scope"]
    code: str = Field(description="machine-readable reason, e.g. cap_exceeded, not_found, order_not_cancellable")
    message: str = Field(description="a sentence a model can relay to the customer")
    rule: str | None = None
    policy_version: str | None = None
    would_allow: list[str] = Field(default_factory=list[str])
    details: dict[str, Any] = Field(default_factory=dict[str, Any])
    audit_id: str | None = None


class PendingApproval(BaseModel):
    """The action waits for a human decision; nothing has happened yet."""

    status: Literal["pending_approval"] = "pending_approval"
    approval_id: str
    message: str
    expires_at: str
    check_with: str = Field(description="how to check on it, e.g. the approval_status tool")
    rule: str | None = None
    audit_id: str | None = None
