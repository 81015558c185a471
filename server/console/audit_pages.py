"""The audit pages: ``/console/audit`` (the trail filtered by agent, tool, outcome and time), ``/console/audit/
records/{id}`` (one record and the lineage of its effects) and ``/console/audit/verify`` (check the log against the
newest signed file kept outside the database); docs/console.md "Pages".

All need ``audit:read`` (:class:`.page_group.PageGroup`). The search is a call of the ``audit_search`` tool through
the enforcer, as the signed-in person; the record, the signed tree heads (RFC 9162 section 4.10) and the
verification are read by :mod:`.reading`, which writes nothing. Verifying is a form (CSRF-checked) and is recorded
(:mod:`.events`: ``verified_chain``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from server.console import events, reading
from server.console.page_group import AUDIT_TOOL, PageGroup
from server.console.web import call_info, render

OUTCOMES = ("succeeded", "failed", "refused", "invalid_arguments", "pending_approval", "replayed", "listed")
"""The outcomes the search form offers to filter by."""


class AuditPages(PageGroup):
    async def audit(self, request: Request) -> Response:
        signed = await self._signed(request, reading="reading the audit trail")
        if isinstance(signed, Response):
            return signed
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
        posted = await self._posted(request, reading="verifying the audit trail")
        if isinstance(posted, Response):
            return posted
        signed, _form = posted
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
        signed = await self._signed(request, reading="reading the audit trail")
        if isinstance(signed, Response):
            return signed
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
