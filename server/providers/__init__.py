"""Payment providers: the systems where customers' money lives, reached over their own APIs.

:mod:`server.providers.payments` is the interface the effects protocol (``server/effects/``) calls: refund, find a
refund again by the intent that made it, list refunds. :mod:`server.providers.stripe` implements it over the
official ``stripe`` SDK; :mod:`server.providers.localstripe` runs the ``localstripe`` fake Stripe server for
development and tests. Nothing here decides whether an action is allowed: the call path does that before a
provider is ever called.
"""
