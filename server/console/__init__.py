"""The web console: server-rendered pages for the people in the loop (approvers, investigators).

docs/console.md. Pages (:mod:`server.console.pages`) for the approvals queue, the audit browser, agents and the
policy; login by OAuth 2.1 authorization code with PKCE (:mod:`server.console.login`) against the configured
issuer; sessions kept server-side (:mod:`server.console.sessions`); the JSON API the CLI's ``--url`` uses
(:mod:`server.console.api`). Every decision goes through the same tools/call path as MCP and the CLI
(:class:`server.callpath.enforcer.Enforcer`), so the same checks and the same audit record apply.
"""
