"""The console's pages and forms under ``/console`` (docs/console.md).

- ``/console/login``, ``/console/callback``, ``/console/logout``: the OAuth 2.1 login (:mod:`.login`).
- ``/console/approvals``: the queue; ``/console/approvals/{id}``: one approval in full, approve or reject with a
  comment. Both are calls of the ``approvals_list``, ``approval_get`` and ``approval_decide`` tools through the
  enforcer, so scope, approver claim, separation of duties and the audit record are exactly those of MCP and the CLI.
- ``/console/audit``: the audit trail filtered by agent, tool, outcome and time (the ``audit_search`` tool);
  ``/console/audit/records/{id}``: one record and the lineage of its effects; ``/console/audit/verify`` (POST):
  check the hash chain, against the last signed checkpoint.
- ``/console/agents``: per client, recent activity, denials, budgets used today and whether it is suspended;
  ``/console/agents/suspend`` and ``/console/agents/resume`` (POST): the kill switch, calls of the
  ``principal_suspend`` and ``principal_resume`` tools through the enforcer (:mod:`.suspending`).
- ``/console/policy``: the version in force and its rules; ``/console/policy/explain`` (POST): the decision a
  hypothetical call would get, without doing or recording anything.

Pages need a signed-in person; reading the audit trail, agents and policy needs ``audit:read`` (the scope of the
``audit_search`` tool, read from the catalog).
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from server.auth.errors import InvalidToken
from server.auth.principal import Principal
from server.console import events, reading, sessions, suspending
from server.console.login import LoginClient, LoginError, pkce_pair
from server.console.web import (
    Signed,
    call_info,
    checked_form,
    clear_cookie,
    login_redirect,
    read_cookie,
    render,
    safe_return_to,
    set_cookie,
    signed_in,
)

if TYPE_CHECKING:
    from server.app import Mandate

AUDIT_TOOL = "audit_search"
STATUSES = ("pending", "executed", "failed", "rejected", "expired", "any")
OUTCOMES = ("succeeded", "failed", "refused", "invalid_arguments", "pending_approval", "replayed", "listed")


class Console:
    def __init__(self, mandate: Mandate) -> None:
        self.mandate = mandate
        self.login = LoginClient(mandate.settings, mandate.http_client)

    @property
    def _now(self) -> datetime:
        return self.mandate.enforcer.clock()

    def routes(self) -> list[BaseRoute]:
        from pathlib import Path

        static = Path(__file__).parent / "static"
        return [
            Route("/console", self.home, methods=["GET"]),
            Route("/console/", self.home, methods=["GET"]),
            Route("/console/login", self.login_start, methods=["GET"]),
            Route("/console/callback", self.callback, methods=["GET"]),
            Route("/console/logout", self.logout, methods=["POST"]),
            Route("/console/approvals", self.approvals, methods=["GET"]),
            Route("/console/approvals/{approval_id}", self.approval, methods=["GET"]),
            Route("/console/approvals/{approval_id}/decision", self.decide, methods=["POST"]),
            Route("/console/audit", self.audit, methods=["GET"]),
            Route("/console/audit/records/{record_id}", self.record, methods=["GET"]),
            Route("/console/audit/verify", self.verify, methods=["POST"]),
            Route("/console/agents", self.agents, methods=["GET"]),
            Route("/console/agents/suspend", self.suspend, methods=["POST"]),
            Route("/console/agents/resume", self.resume, methods=["POST"]),
            Route("/console/policy", self.policy, methods=["GET"]),
            Route("/console/policy/explain", self.explain, methods=["POST"]),
            Mount("/console/static", StaticFiles(directory=static), name="console-static"),
        ]

    # --- helpers ----------------------------------------------------------------------------------------------------

    async def _call(self, signed: Signed, request: Request, tool: str, arguments: dict[str, Any]) -> tuple[bool, Any]:
        result = await self.mandate.enforcer.call_tool(signed.principal, tool, arguments, call_info(request))
        return (not result.is_error), dict(result.structured_content or {})

    def _may_read_audit(self, principal: Principal) -> bool:
        entry = self.mandate.catalog.get(AUDIT_TOOL)
        return entry is not None and entry.spec.requires.is_met_by(principal.scopes)

    def _forbidden(self, request: Request, signed: Signed, what: str) -> Response:
        return render(
            self.mandate,
            request,
            "error.html",
            signed,
            status=403,
            title="Not permitted",
            message=f"Your token does not grant {what}: it needs the audit:read scope. Ask for it, then sign in again.",
        )

    async def _take_flash(self, signed: Signed) -> str | None:
        if signed.row.flash is None:
            return None
        message = signed.row.flash

        async def work(session: Any) -> None:
            row = await sessions.load(session, signed.cookie, self._now)
            if row is not None:
                row.flash = None
                session.add(row)

        await self.mandate.db.run_in_transaction(work)
        return message

    async def _set_flash(self, signed: Signed, message: str) -> None:
        async def work(session: Any) -> None:
            row = await sessions.load(session, signed.cookie, self._now)
            if row is not None:
                row.flash = message
                session.add(row)

        await self.mandate.db.run_in_transaction(work)

    # --- login ------------------------------------------------------------------------------------------------------

    async def home(self, _request: Request) -> Response:
        return RedirectResponse("/console/approvals", status_code=303)

    async def login_start(self, request: Request) -> Response:
        return_to = safe_return_to(request.query_params.get("next"))
        if await signed_in(self.mandate, request) is not None:
            return RedirectResponse(return_to, status_code=303)
        state = secrets.token_urlsafe(32)
        verifier, challenge = pkce_pair()
        try:
            url = await self.login.authorization_url(state=state, challenge=challenge)
        except LoginError as exc:
            return render(
                self.mandate, request, "error.html", None, status=503, title="Cannot sign in", message=str(exc)
            )

        async def work(session: Any) -> str:
            await sessions.purge_expired(session, self._now)
            return await sessions.start(session, self._now, state=state, verifier=verifier, return_to=return_to)

        cookie = await self.mandate.db.run_in_transaction(work)
        response = RedirectResponse(url, status_code=303)
        set_cookie(self.mandate, request, response, cookie, int(sessions.LOGIN_TTL.total_seconds()))
        return response

    async def callback(self, request: Request) -> Response:
        params = request.query_params
        cookie = read_cookie(self.mandate, request)
        async with self.mandate.db.session() as session:
            pending = await sessions.load(session, cookie, self._now)
        state = params.get("state", "")
        if pending is None or pending.login_state is None or not secrets.compare_digest(pending.login_state, state):
            return self._login_failed(request, "This sign-in was not started in this browser, or took too long.")
        if params.get("error"):
            return self._login_failed(request, f"The issuer did not sign you in ({params.get('error')}).")
        try:
            token = await self.login.exchange(
                code=params.get("code", ""), verifier=pending.login_verifier or "", iss=params.get("iss")
            )
            principal = await self.mandate.verifier.verify(token)
        except LoginError as exc:
            return self._login_failed(request, str(exc))
        except InvalidToken as exc:
            return self._login_failed(request, f"The issuer's token is not accepted here: {exc.description}")
        now = self._now
        ttl = timedelta(seconds=self.mandate.settings.console.session_ttl_seconds)
        expires = min(now + ttl, principal.expires_at)

        async def work(session: Any) -> str:
            row = await sessions.load(session, cookie, now)
            if row is None:
                raise LoginError("the sign-in session ended meanwhile")
            return await sessions.complete(
                session, row, token=token, subject=principal.subject, expires_at=expires, now=now
            )

        try:
            new_cookie = await self.mandate.db.run_in_transaction(work)
        except LoginError as exc:
            return self._login_failed(request, str(exc))
        await events.record(
            self.mandate,
            principal,
            call_info(request),
            action="signed_in",
            allowed=True,
            details={"until": str(expires)},
        )
        response = RedirectResponse(safe_return_to(pending.return_to), status_code=303)
        set_cookie(self.mandate, request, response, new_cookie, max(1, int((expires - now).total_seconds())))
        return response

    def _login_failed(self, request: Request, message: str) -> Response:
        response = render(
            self.mandate, request, "error.html", None, status=400, title="Sign-in failed", message=message
        )
        clear_cookie(self.mandate, request, response)
        return response

    async def logout(self, request: Request) -> Response:
        signed = await signed_in(self.mandate, request)
        if signed is None:
            return RedirectResponse("/console/login", status_code=303)
        form = await checked_form(self.mandate, request, signed)
        if isinstance(form, Response):
            return form

        async def work(session: Any) -> None:
            await sessions.end(session, signed.cookie)

        await self.mandate.db.run_in_transaction(work)
        await events.record(self.mandate, signed.principal, call_info(request), action="signed_out", allowed=True)
        response = render(self.mandate, request, "signed_out.html", None)
        clear_cookie(self.mandate, request, response)
        return response

    # --- approvals --------------------------------------------------------------------------------------------------

    async def approvals(self, request: Request) -> Response:
        signed = await signed_in(self.mandate, request)
        if signed is None:
            return login_redirect(request)
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
        signed = await signed_in(self.mandate, request)
        if signed is None:
            return login_redirect(request)
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
        signed = await signed_in(self.mandate, request)
        if signed is None:
            return login_redirect(request)
        form = await checked_form(self.mandate, request, signed)
        if isinstance(form, Response):
            return form
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

    # --- audit ------------------------------------------------------------------------------------------------------

    async def audit(self, request: Request) -> Response:
        signed = await signed_in(self.mandate, request)
        if signed is None:
            return login_redirect(request)
        if not self._may_read_audit(signed.principal):
            return self._forbidden(request, signed, "reading the audit trail")
        q = request.query_params
        filters = {k: q.get(k, "").strip() for k in ("agent", "tool", "outcome", "since", "until", "cursor")}
        arguments: dict[str, Any] = {"limit": 50}
        for field, name in (("agent", "principal"), ("tool", "tool"), ("outcome", "outcome")):
            if filters[field]:
                arguments[name] = filters[field]
        for field in ("since", "until", "cursor"):
            if filters[field]:
                arguments[field] = filters[field]
        ok, body = await self._call(signed, request, AUDIT_TOOL, arguments)
        async with self.mandate.db.session() as session:
            head = await reading.head(session)
        return render(
            self.mandate,
            request,
            "audit.html",
            signed,
            status=200 if ok else 400,
            items=body.get("items", []) if ok else [],
            next_cursor=body.get("next_cursor") if ok else None,
            refusal=None if ok else body,
            filters=filters,
            outcomes=OUTCOMES,
            tools=sorted(e.spec.name for e in self.mandate.catalog),
            head=head,
            tree=await reading.tree_heads(self.mandate.db, self.mandate.settings),
            report=None,
        )

    async def verify(self, request: Request) -> Response:
        signed = await signed_in(self.mandate, request)
        if signed is None:
            return login_redirect(request)
        form = await checked_form(self.mandate, request, signed)
        if isinstance(form, Response):
            return form
        if not self._may_read_audit(signed.principal):
            return self._forbidden(request, signed, "verifying the audit trail")
        tree = await reading.tree_heads(self.mandate.db, self.mandate.settings)
        report = await reading.verify(self.mandate.db, tree)
        await events.record(
            self.mandate,
            signed.principal,
            call_info(request),
            action="verified_chain",
            allowed=True,
            details={"ok": report.ok, "records": report.records, "tree_size": report.tree_size},
        )
        async with self.mandate.db.session() as session:
            head = await reading.head(session)
        return render(
            self.mandate,
            request,
            "audit.html",
            signed,
            items=[],
            next_cursor=None,
            refusal=None,
            filters={},
            outcomes=OUTCOMES,
            tools=[],
            head=head,
            tree=tree,
            report=report,
        )

    async def record(self, request: Request) -> Response:
        signed = await signed_in(self.mandate, request)
        if signed is None:
            return login_redirect(request)
        if not self._may_read_audit(signed.principal):
            return self._forbidden(request, signed, "reading the audit trail")
        async with self.mandate.db.session() as session:
            view = await reading.record_view(session, request.path_params["record_id"], signed.principal)
        if view is None:
            return render(
                self.mandate,
                request,
                "error.html",
                signed,
                status=404,
                title="No such record",
                message="There is no audit record with this id that you may see.",
            )
        return render(
            self.mandate,
            request,
            "record.html",
            signed,
            view=view,
        )

    # --- agents -----------------------------------------------------------------------------------------------------

    async def agents(self, request: Request) -> Response:
        signed = await signed_in(self.mandate, request)
        if signed is None:
            return login_redirect(request)
        if not self._may_read_audit(signed.principal):
            return self._forbidden(request, signed, "seeing agents' activity")
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
        signed = await signed_in(self.mandate, request)
        if signed is None:
            return login_redirect(request)
        form = await checked_form(self.mandate, request, signed)
        if isinstance(form, Response):
            return form
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
                return render(
                    self.mandate,
                    request,
                    "error.html",
                    signed,
                    status=403,
                    title="Not permitted",
                    message=f"Refused ({code}): {body.get('message', '')} Nothing was changed.",
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

    # --- policy -----------------------------------------------------------------------------------------------------

    async def policy(self, request: Request) -> Response:
        signed = await signed_in(self.mandate, request)
        if signed is None:
            return login_redirect(request)
        if not self._may_read_audit(signed.principal):
            return self._forbidden(request, signed, "reading the policy")
        return self._policy_page(request, signed, form={}, report=None, error=None)

    def _policy_page(
        self, request: Request, signed: Signed, *, form: dict[str, str], report: Any, error: str | None
    ) -> Response:
        policy = self.mandate.enforcer.policies.current()
        return render(
            self.mandate,
            request,
            "policy.html",
            signed,
            status=400 if error else 200,
            policy=policy,
            rules=[
                (r.id, type(r).__name__.removesuffix("Rule").lower(), sorted(r.tools), r.shadow) for r in policy.rules
            ],
            budgets=sorted(policy.budgets.values(), key=lambda b: b.id),
            tools=sorted(e.spec.name for e in self.mandate.catalog),
            agents=self._agents(),
            form=form,
            report=report,
            error=error,
        )

    def _agents(self) -> dict[str, Any]:
        from scopes.catalog import DEFAULT_AGENTS, CatalogError, load_agents

        settings = self.mandate.settings
        try:
            return dict(load_agents(settings.agents_path or DEFAULT_AGENTS, self.mandate.catalog.scopes).agents)
        except (CatalogError, OSError):
            return {}

    async def explain(self, request: Request) -> Response:
        signed = await signed_in(self.mandate, request)
        if signed is None:
            return login_redirect(request)
        form = await checked_form(self.mandate, request, signed)
        if isinstance(form, Response):
            return form
        if not self._may_read_audit(signed.principal):
            return self._forbidden(request, signed, "explaining the policy")
        tool = form.get("tool", "")
        agent_name = form.get("agent", "")
        agent = self._agents().get(agent_name)
        scopes = form.get("scopes", "").split() or (list(agent.scopes) if agent else [])
        try:
            arguments = json.loads(form.get("arguments") or "{}")
            if not isinstance(arguments, dict):
                raise ValueError("not an object")
        except ValueError:
            return self._policy_page(
                request, signed, form=form, report=None, error="The arguments are not a JSON object."
            )
        settings = self.mandate.settings
        hypothetical = Principal(
            subject=form.get("subject", "").strip() or f"agent:{agent_name or 'hypothetical'}",
            client_id=form.get("client_id", "").strip() or f"{agent_name or 'hypothetical'}-agent",
            scopes=frozenset(scopes),
            issuer=signed.principal.issuer,
            audience=(settings.audience,),
            expires_at=datetime.now(UTC) + timedelta(hours=1),
            tenant=signed.principal.tenant or (agent.tenant if agent else None),
        )
        from server.cli.policy import explanation_report

        explanation = await self.mandate.enforcer.explain(hypothetical, tool, arguments)
        report = explanation_report(tool, hypothetical.client_id, self.mandate.enforcer.policies.current(), explanation)
        return self._policy_page(request, signed, form=form, report=report, error=None)
