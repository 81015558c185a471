"""State of effects at outside systems (docs/effects.md): the intents table, how an intent's outcome is written,
the budget release of an effect that definitely did not happen, and the reconciler that resolves intents left in
doubt. The step of the call path that drives them is :mod:`server.callpath.act_external`.

The package itself imports nothing, so each module can be imported alone.
"""
