"""The two ways a policy goes wrong: a file that cannot be loaded, and a rule that cannot be evaluated.

A :class:`PolicyError` is raised when a policy file (or a policy test file) is loaded; its message names the file,
the rule and the field. A :class:`RuleError` is raised while a rule is evaluated and is never seen by a caller: the
decision function turns it into a deny recorded as an error (fail closed).
"""

from __future__ import annotations


class PolicyError(ValueError):
    """A policy file or policy test file is missing, is not TOML, or does not fit its model."""


class RuleError(Exception):
    """A rule could not be evaluated: a missing value, an unknown currency, values that cannot be compared."""
