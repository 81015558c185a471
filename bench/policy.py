"""The policy hook: the cumulative cap the trivial tool spends from (``bench/policy.toml``).

Once the server takes a policy file in its settings, :func:`configure_policy` points the benchmark's Mandate at
``bench/policy.toml``: a per-call cap and a daily budget per principal on ``bench_spend``, so every benchmarked call
pays for the decision and the ledger reservation. Until then the settings are returned unchanged and
:func:`policy_status` says so; the report prints that status next to the figures.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from server.config import Settings

BENCH_POLICY = Path(__file__).with_name("policy.toml")
_SETTING_NAMES = ("policy_path", "policy_file", "policy")


def _policy_setting() -> str | None:
    return next((name for name in _SETTING_NAMES if name in Settings.model_fields), None)


def policy_engine_present() -> bool:
    return importlib.util.find_spec("scopes.policy") is not None


def policy_applied() -> bool:
    return policy_engine_present() and _policy_setting() is not None


def policy_status() -> str:
    if policy_applied():
        return (
            f"bench_spend is capped per call and spends from a daily budget (bench/{BENCH_POLICY.name}): every call "
            "decides and reserves"
        )
    if policy_engine_present():
        return (
            "pending: the policy engine exists but the server takes no policy file yet, so no decision or ledger "
            "reservation is on the call path"
        )
    return "pending: no policy engine yet, so no decision or ledger reservation on the call path"


def configure_policy(settings: Settings) -> Settings:
    """The settings with the benchmark's policy, when the server has a setting for it."""
    name = _policy_setting()
    if name is None:
        return settings
    return settings.model_copy(update={name: BENCH_POLICY})
