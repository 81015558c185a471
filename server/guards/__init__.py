"""Guards in front of the call path: suspensions (stop an agent everywhere), rate limits (slow it), circuit breakers
(stop it automatically) and auth-refusal aggregation (a flood of bad tokens cannot crowd the audit trail).

docs/operations.md describes them for operators. :class:`server.guards.rails.Guardrails` is the one object the call
path, the HTTP edge and the approval desk ask; the modules beside it each do one job.
"""
