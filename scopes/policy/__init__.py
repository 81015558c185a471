"""Policy as data: per-tool conditions, cumulative caps and approvals, in a TOML file security teams own.

The public API: :func:`load_policy` / :func:`parse_policy` read and check a policy file; :func:`ledger_needs` and
:func:`decide` are the deterministic, I/O-free decision function (:func:`prepare` is the two in one pass: the
totals a call needs, then its decision given them); :mod:`scopes.policy.lint` checks a policy against
the tools a server publishes and :mod:`scopes.policy.testing` runs a security team's test suite. See docs/policy.md.
"""

from scopes.policy.decision import DecisionRequest, Prepared, decide, ledger_needs, prepare
from scopes.policy.errors import PolicyError, RuleError
from scopes.policy.policy import DEFAULT_POLICY, Policy, load_policy, parse_policy
from scopes.policy.results import Decision, LedgerKey, RuleResult, Spend
from scopes.policy.values import Caller

__all__ = [
    "DEFAULT_POLICY",
    "Caller",
    "Decision",
    "DecisionRequest",
    "LedgerKey",
    "Policy",
    "PolicyError",
    "Prepared",
    "RuleError",
    "RuleResult",
    "Spend",
    "decide",
    "ledger_needs",
    "load_policy",
    "parse_policy",
    "prepare",
]
