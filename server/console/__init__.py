"""The web console: server-rendered pages for the people in the loop (approvers, investigators).

docs/console.md. Pages for the approvals queue, the audit browser, agents and the policy, one module per group and
the route table in :mod:`server.console.pages`; login by OAuth 2.1 authorization code with PKCE
(:mod:`server.console.login`) against the configured issuer; sessions kept server-side
(:mod:`server.console.sessions`); the JSON API the CLI's ``--url`` uses (:mod:`server.console.api`). Every decision
goes through the same tools/call path as MCP and the CLI (:class:`server.callpath.enforcer.Enforcer`), so the same
checks and the same audit record apply.

==================  ================================================================================================
``pages``           the route table: every path under ``/console`` and the handler that serves it
``login_pages``     sign in, the OAuth callback, sign out
``approval_pages``  the approvals queue, one approval, the decision
``audit_pages``     the audit search, one record and its lineage, verifying the log
``agent_pages``     the agents page and its kill switch (suspend, resume)
``policy_pages``    the policy in force and the explain form
``page_group``      what the page groups share: tool calls as the person, the ``audit:read`` check, the flash message
``web``             request plumbing: who is signed in, the session cookie, CSRF, rendering
``login``           the console as an OAuth 2.1 client of the issuer
``sessions``        the server-side sessions table
``reading``         what the investigation pages read (records, lineage, tree heads, agents' activity)
``suspending``      which agents are suspended, and the suspend and resume forms as tool arguments
``events``          audit records of what people do that is not a tool call
``api``             the approvals JSON API (``mandate approvals --url``)
``elicitation``     URL-mode elicitation of an approval's page (MCP 2026-07-28)
==================  ================================================================================================
"""
