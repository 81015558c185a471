"""The console's route table: every page and form under ``/console`` (docs/console.md), and the module that serves it.

- ``/console/login``, ``/console/callback``, ``/console/logout``: the OAuth 2.1 login (:mod:`.login_pages`, the
  client in :mod:`.login`).
- ``/console/approvals``: the queue; ``/console/approvals/{id}``: one approval in full, approve or reject with a
  comment (:mod:`.approval_pages`). Both are calls of the ``approvals_list``, ``approval_get`` and
  ``approval_decide`` tools through the enforcer, so scope, approver claim, separation of duties and the audit
  record are exactly those of MCP and the CLI.
- ``/console/audit``: the audit trail filtered by agent, tool, outcome and time (the ``audit_search`` tool);
  ``/console/audit/records/{id}``: one record and the lineage of its effects; ``/console/audit/verify`` (POST):
  check the hash chain, against the last signed checkpoint (:mod:`.audit_pages`).
- ``/console/agents``: per client, recent activity, denials, budgets used today and whether it is suspended;
  ``/console/agents/suspend`` and ``/console/agents/resume`` (POST): the kill switch, calls of the
  ``principal_suspend`` and ``principal_resume`` tools through the enforcer (:mod:`.agent_pages`, :mod:`.suspending`).
- ``/console/policy``: the version in force and its rules; ``/console/policy/explain`` (POST): the decision a
  hypothetical call would get, without doing or recording anything (:mod:`.policy_pages`).

Pages need a signed-in person; reading the audit trail, agents and policy needs ``audit:read`` (the scope of the
``audit_search`` tool, read from the catalog). What the groups share is :class:`.page_group.PageGroup`; the
cookie, CSRF and rendering are :mod:`.web`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from server.console.agent_pages import AgentPages
from server.console.approval_pages import ApprovalPages
from server.console.audit_pages import AuditPages
from server.console.login_pages import LoginPages
from server.console.policy_pages import PolicyPages

if TYPE_CHECKING:
    from server.app import Mandate

STATIC = Path(__file__).parent / "static"


async def home(_request: Request) -> Response:
    return RedirectResponse("/console/approvals", status_code=303)


class Console:
    """The console's page groups, one object each, and the routes that lead to them."""

    def __init__(self, mandate: Mandate) -> None:
        self.login = LoginPages(mandate)
        self.approvals = ApprovalPages(mandate)
        self.audit = AuditPages(mandate)
        self.agents = AgentPages(mandate)
        self.policy = PolicyPages(mandate)

    def routes(self) -> list[BaseRoute]:
        login, approvals, audit, agents, policy = self.login, self.approvals, self.audit, self.agents, self.policy
        return [
            Route("/console", home, methods=["GET"]),
            Route("/console/", home, methods=["GET"]),
            Route("/console/login", login.login_start, methods=["GET"]),
            Route("/console/callback", login.callback, methods=["GET"]),
            Route("/console/logout", login.logout, methods=["POST"]),
            Route("/console/approvals", approvals.approvals, methods=["GET"]),
            Route("/console/approvals/{approval_id}", approvals.approval, methods=["GET"]),
            Route("/console/approvals/{approval_id}/decision", approvals.decide, methods=["POST"]),
            Route("/console/audit", audit.audit, methods=["GET"]),
            Route("/console/audit/records/{record_id}", audit.record, methods=["GET"]),
            Route("/console/audit/verify", audit.verify, methods=["POST"]),
            Route("/console/agents", agents.agents, methods=["GET"]),
            Route("/console/agents/suspend", agents.suspend, methods=["POST"]),
            Route("/console/agents/resume", agents.resume, methods=["POST"]),
            Route("/console/policy", policy.policy, methods=["GET"]),
            Route("/console/policy/explain", policy.explain, methods=["POST"]),
            Mount("/console/static", StaticFiles(directory=STATIC), name="console-static"),
        ]
