"""The approvals pages: ``/console/approvals`` (the queue), ``/console/approvals/{id}`` (one approval in full) and
``/console/approvals/{id}/decision`` (approve or reject it with a comment); docs/console.md "Pages".

Each is a call of the ``approvals_list``, ``approval_get`` or ``approval_decide`` tool through the enforcer as the
signed-in person (:class:`.page_group.PageGroup`), so the scope, approver claim, separation of duties
(:mod:`server.approvals.authority`) and the audit record are exactly those of MCP and the CLI. A decision is a form
(CSRF-checked, :func:`.web.checked_form`); once taken, the page redirects to the approval with a message saying how
it ended; a refused decision shows the approval again with the refusal (409 for a refusal about the approval's
state, such as no longer pending; 403 otherwise).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from server.console.page_group import PageGroup
from server.console.web import render

STATUSES = ("pending", "executed", "failed", "rejected", "expired", "any")
"""The queue's status filter (``approvals_list``'s ``status``); anything else shows the pending ones."""


class ApprovalPages(PageGroup):
    async def approvals(self, request: Request) -> Response:
        signed = await self._signed(request)
        if isinstance(signed, Response):
            return signed
        status = request.query_params.get("status", "pending")
        status = status if status in STATUSES else "pending"
        ok, body = await self._call(signed, request, "approvals_list", {"status": status, "limit": 200})
        return render(
            self.mandate,
            request,
            "approvals.html",
            signed,
            status=200 if ok else 403,
            items=body.get("items", []) if ok else [],
            refusal=None if ok else body,
            status_filter=status,
            statuses=STATUSES,
            flash=await self._take_flash(signed),
        )

    async def approval(self, request: Request) -> Response:
        signed = await self._signed(request)
        if isinstance(signed, Response):
            return signed
        approval_id = request.path_params["approval_id"]
        ok, body = await self._call(signed, request, "approval_get", {"approval_id": approval_id})
        status = 200 if ok else 404 if body.get("code") in ("not_found", "invalid_arguments") else 403
        return render(
            self.mandate,
            request,
            "approval.html",
            signed,
            status=status,
            approval=body if ok else None,
            refusal=None if ok else body,
            approval_id=approval_id,
            flash=await self._take_flash(signed),
        )

    async def decide(self, request: Request) -> Response:
        posted = await self._posted(request)
        if isinstance(posted, Response):
            return posted
        signed, form = posted
        approval_id = request.path_params["approval_id"]
        decision = form.get("decision", "")
        arguments: dict[str, Any] = {"approval_id": approval_id, "decision": decision}
        comment = form.get("comment", "").strip()
        if comment:
            arguments["comment"] = comment
        ok, body = await self._call(signed, request, "approval_decide", arguments)
        if not ok:
            detail_ok, detail = await self._call(signed, request, "approval_get", {"approval_id": approval_id})
            return render(
                self.mandate,
                request,
                "approval.html",
                signed,
                status=409 if body.get("code", "").startswith("approval_") else 403,
                approval=detail if detail_ok else None,
                refusal=None if detail_ok else detail,
                decision_refusal=body,
                approval_id=approval_id,
                comment=comment,
            )
        outcome = body.get("outcome") or {}
        if body.get("status") == "executed":
            message = f"Approved: {body.get('tool')} ran once and succeeded."
        elif body.get("status") == "failed":
            message = f"Approved, but the action was refused when it ran: {outcome.get('message')}"
        else:
            message = "Rejected: nothing was done."
        await self._set_flash(signed, message)
        return RedirectResponse(f"/console/approvals/{approval_id}", status_code=303)
