"""The policy page: ``/console/policy`` (the version in force, its rules and budgets) and ``/console/policy/explain``
(the decision a hypothetical call would get now); docs/console.md "Pages".

Both need ``audit:read`` (:class:`.page_group.PageGroup`). Explaining is a form (CSRF-checked) for a hypothetical
principal (an agent of ``scopes/agents.toml``, or scopes typed in) and runs the enforcer's explain
(:mod:`server.callpath.explain`, rolled back): nothing is executed or recorded. The report is the one
``mandate explain --json`` prints (:data:`server.cli.policy.explanation_report`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from server.auth.principal import Principal
from server.console.page_group import PageGroup
from server.console.web import Signed, render


class PolicyPages(PageGroup):
    async def policy(self, request: Request) -> Response:
        signed = await self._signed(request, reading="reading the policy")
        if isinstance(signed, Response):
            return signed
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
        posted = await self._posted(request, reading="explaining the policy")
        if isinstance(posted, Response):
            return posted
        signed, form = posted
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
