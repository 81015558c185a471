"""The call path: one module per step of a tools/call (DESIGN.md section 3), and the facade that runs them
(:class:`server.callpath.enforcer.Enforcer`). The package itself imports nothing, so any step can be imported alone
(the catalog and the approval desk import the answers without the whole path).

=================  =====================================================================================
``admit``          steps 2-3: the tool exists, the token's scopes allow it, the arguments are valid
``keys``           idempotency keys: claim, replay, refuse a reused or running key
``decide``         step 4: the policy's decision in the call's transaction, and the answers it gives
``refuse``         step 5 for deny / approval: the record (and the pending approval) and the answer
``act_local``      step 5 for allow: ledger, effect, stored answer and audit record in one transaction
``approved``       an approved action run once, as its requester
``explain``        the decision a call would get, rolled back
``record``         what an invocation leaves: its audit record and the MCP answer
``answers``        the structured refusal and pending-approval answers
``pending``        the action handed to the approval desk
``core``           what the steps share (database, catalog, policy, clock) and the recording helpers
``enforcer``       the facade the transports call
=================  =====================================================================================
"""
