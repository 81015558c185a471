"""The agents page and its kill switch: ``/console/agents`` (per client, recent activity, denials, budgets used today
and whether it is suspended), ``/console/agents/suspend`` and ``/console/agents/resume`` (docs/console.md "Pages";
docs/operations.md "Suspensions").

The page needs ``audit:read`` (:class:`.page_group.PageGroup`); the activity is read by :mod:`.reading`, the
suspensions by :mod:`.suspending`. Suspending and resuming are forms (CSRF-checked) that become calls of the
``principal_suspend`` and ``principal_resume`` tools through the enforcer as the signed-in person, so the scope
check (``principals:suspend``), the reason's validation and the audit record are those of MCP; a form without a
reason is answered here and calls nothing. Nothing here writes a suspension itself.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from server.console import reading, suspending
from server.console.page_group import PageGroup
from server.console.web import Signed, render


class AgentPages(PageGroup):
    async def agents(self, request: Request) -> Response:
        signed = await self._signed(request, reading="seeing agents' activity")
        if isinstance(signed, Response):
            return signed
        return await self._agents_page(request, signed, flash=await self._take_flash(signed))

    async def _agents_page(
        self,
        request: Request,
        signed: Signed,
        *,
        status: int = 200,
        refusal: Any = None,
        form: dict[str, str] | None = None,
        flash: str | None = None,
    ) -> Response:
        async with self.mandate.db.session() as session:
            activity = await reading.agents(session, signed.principal, self._now)
            state = await suspending.state(session, ((a.client_id, a.subjects) for a in activity))
        return render(
            self.mandate,
            request,
            "agents.html",
            signed,
            status=status,
            agents=activity,
            amount_text=reading.amount_text,
            suspensions=state,
            may_suspend=suspending.may_suspend(self.mandate, signed.principal),
            refusal=refusal,
            form=form or {},
            flash=flash,
        )

    async def suspend(self, request: Request) -> Response:
        return await self._kill_switch(request, suspending.SUSPEND_TOOL, suspending.suspend_arguments)

    async def resume(self, request: Request) -> Response:
        return await self._kill_switch(request, suspending.RESUME_TOOL, suspending.resume_arguments)

    async def _kill_switch(self, request: Request, tool: str, arguments_of: Any) -> Response:
        """Suspend or resume as the signed-in person: the tool call goes through the enforcer (scope, validation,
        audit record); a form without a reason is answered here and calls nothing."""
        posted = await self._posted(request)
        if isinstance(posted, Response):
            return posted
        signed, form = posted
        may_read = self._may_read_audit(signed.principal)
        try:
            arguments: dict[str, Any] = arguments_of(form)
        except suspending.FormProblem as exc:
            refusal = {"code": "invalid_form", "message": f"{exc} Nothing was changed."}
            if not may_read:
                return self._forbidden(request, signed, "seeing agents")
            return await self._agents_page(request, signed, status=400, refusal=refusal, form=form)
        ok, body = await self._call(signed, request, tool, arguments)
        if not ok:
            code = str(body.get("code", ""))
            status = 409 if code == "not_suspended" else 400 if code.startswith("invalid") else 403
            if not may_read:
                return self._not_permitted(
                    request, signed, f"Refused ({code}): {body.get('message', '')} Nothing was changed."
                )
            return await self._agents_page(request, signed, status=status, refusal=body, form=form)
        if tool == suspending.SUSPEND_TOOL:
            row = body.get("suspension") or {}
            verb = "Suspended" if body.get("created") else "Already suspended"
            message = f"{verb}: {row.get('kind')} {row.get('value')} ({row.get('suspension_id')})."
        else:
            ended = body.get("resumed") or []
            message = "Resumed: " + ", ".join(f"{r.get('kind')} {r.get('value')}" for r in ended) + "."
        await self._set_flash(signed, message)
        return RedirectResponse("/console/agents", status_code=303)
