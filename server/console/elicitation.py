"""URL-mode elicitation for an action waiting for approval: the agent's client is offered the console page where a
person can decide it (MCP 2026-07-28, "Elicitation", URL mode; the multi-round-trip ``input_required`` result).

Offered only when all hold: the console is on, the request is on protocol 2026-07-28, the client declared
``capabilities.elicitation.url`` for this request, and the answer is ``pending_approval``. The result is then an
``InputRequiredResult`` whose ``input_requests`` hold one URL elicitation (the approval's console page) and whose
``request_state`` is the approval id. When the client retries (it showed the URL, or the user declined): while the
approval is pending, the call runs again and finds the same open approval (the same answer, recorded again); once
it was decided, the retry is answered with how it ended (the action's own result, or the refusal) and recorded as a
replay, never by running the tool again, so a retry never asks for a second refund.

On protocol 2025-11-25 nothing is offered: the server runs stateless (``stateless_http``, the default), and a
server-to-client ``elicitation/create`` request needs a session that outlives the call, and the
``URLElicitationRequiredError`` (-32042) of that revision would turn the pending answer into an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mcp_types as types
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from server.approvals.authority import is_own_request
from server.approvals.views import console_link, effective_status
from server.auth.principal import Principal
from server.callpath.decide import pending_result
from server.callpath.record import CallInfo, Invocation, Outcome

if TYPE_CHECKING:
    from server.callpath.enforcer import Enforcer

REQUEST_KEY = "mandate_approval"


def offer(
    ctx: Any, params: types.CallToolRequestParams, result: types.CallToolResult, console_url: str | None
) -> types.InputRequiredResult | None:
    """The URL elicitation to return instead of ``result``, or None to return ``result`` as it is."""
    content = result.structured_content or {}
    approval_id = content.get("approval_id")
    if console_url is None or content.get("status") != "pending_approval" or not isinstance(approval_id, str):
        return None
    if params.input_responses is not None or params.request_state is not None:
        return None
    session = ctx.session
    if getattr(session, "protocol_version", None) not in MODERN_PROTOCOL_VERSIONS:
        return None
    capabilities = session.client_capabilities
    if capabilities is None or capabilities.elicitation is None or capabilities.elicitation.url is None:
        return None
    link = console_link(console_url, approval_id)
    assert link is not None
    message = (
        f"This action needs a person's approval (approval {approval_id}). An approver can review and decide it at "
        "this page; the action runs once, exactly as asked, when approved."
    )
    request = types.ElicitRequest(params=types.ElicitRequestURLParams(message=message, url=link))
    return types.InputRequiredResult(input_requests={REQUEST_KEY: request}, request_state=approval_id)


async def answer_retry(
    enforcer: Enforcer, principal: Principal, params: types.CallToolRequestParams, info: CallInfo
) -> types.CallToolResult | None:
    """The answer to the retry of an offered elicitation once the approval is no longer pending: how it ended (the
    action's own result, or the refusal), recorded as a replay. None when the call should simply run again: no
    elicitation was offered, the approval is not the caller's, or it is still pending (the same call then finds
    the same open approval)."""
    approval_id, desk = params.request_state, enforcer.approvals
    if approval_id is None or not params.input_responses or REQUEST_KEY not in params.input_responses:
        return None
    if desk is None:
        return None
    async with enforcer.db.session() as session:
        approval = await desk.load(session, approval_id)
        now = enforcer.clock()
        if approval is None or not is_own_request(approval, principal) or approval.tool != params.name:
            return None
        status = effective_status(approval, now)
        if status == "pending":
            return None
        pending = pending_result(desk.pending_answer(approval, approval.request_audit_id))
        answer = await desk.refresh(session, principal, pending, now)
    raw = dict(params.arguments or {})
    call = Invocation(principal, info, params.name, raw, enforcer.sensitive(params.name))
    outcome = Outcome(
        "allow" if status == "executed" else "deny",
        "replayed",
        f"approval_{status}",
        f"the retry of an approval elicitation, answered with how approval {approval.id} ended",
        approval_id=approval.id,
        customer_id=approval.customer_id,
    )
    await enforcer.record_alone(call, outcome)
    return answer
