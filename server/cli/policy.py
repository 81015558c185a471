"""``mandate policy check``, ``mandate policy test`` and ``mandate explain``: reason about a policy without acting.

- ``policy check [FILE]`` loads a policy (errors name the file, rule and field) and warns about rules naming tools,
  arguments, facts or scopes this server does not have. ``--strict`` turns warnings into a failure.
- ``policy test FILE...`` runs security teams' test suites (docs/policy.md, "Testing a policy"); exit 1 when any
  case fails, so CI can run it.
- ``explain --agent NAME | --token T --tool TOOL --args JSON`` prints the decision a call would get now, with its
  reason, against the real store and ledger, and executes and records nothing (its transaction is rolled back).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import ValidationError

from scopes.policy import DEFAULT_POLICY, Policy, PolicyError, load_policy
from scopes.policy.lint import lint
from scopes.policy.testing import ArgsPreparer, load_suite, run_suite
from server.auth.principal import Principal
from server.catalog import ToolCatalog
from server.cli.common import CommandError, add_server_options
from server.config import Settings

if TYPE_CHECKING:
    from server.callpath.decide import Explanation


def _policy_path(args: argparse.Namespace, settings: Settings) -> Path:
    given = getattr(args, "policy", None) or getattr(args, "file", None)
    return Path(given) if given else (settings.policy_path or DEFAULT_POLICY)


def _load(path: Path) -> Policy:
    try:
        return load_policy(path)
    except PolicyError as exc:
        raise CommandError(str(exc)) from None


def catalog_args(catalog: ToolCatalog) -> ArgsPreparer:
    """Case arguments validated exactly as a tools/call's are (strict, money as Money)."""

    def prepare(tool: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        entry = catalog.get(tool)
        if entry is None:
            raise ValueError(f"this server publishes no tool {tool!r}")
        try:
            model = entry.spec.args_model.model_validate(dict(args), strict=True)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            raise ValueError(f"invalid arguments for {tool}: {problems}") from None
        return entry.spec.policy_args(model)

    return prepare


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from server.app import load_tool_catalog
    from server.policy_runtime import vocabulary_of

    path = _policy_path(args, settings)
    policy = _load(path)
    warnings = lint(policy, vocabulary_of(load_tool_catalog(settings)))
    print(f"{path}: policy {policy.version}: {len(policy.rules)} rules, {len(policy.budgets)} budgets, valid")
    guards = policy.guards
    if guards.rate_limits or guards.breakers or guards.max_open_approvals is not None:
        limit = guards.max_open_approvals
        print(
            f"guards: {len(guards.rate_limits)} rate limits, {len(guards.breakers)} circuit breakers, "
            f"open approvals per requester: {limit if limit is not None else 'unlimited'}"
        )
    for warning in warnings:
        print(f"warning: {warning}")
    return 1 if warnings and args.strict else 0


def cmd_test(args: argparse.Namespace, settings: Settings) -> int:
    from server.app import load_tool_catalog
    from server.policy_runtime import vocabulary_of

    catalog = load_tool_catalog(settings)
    vocabulary = vocabulary_of(catalog)
    failed = total = 0
    for name in args.files:
        try:
            suite = load_suite(Path(name))
            given = Path(args.policy) if args.policy else suite.policy_path() or settings.policy_path or DEFAULT_POLICY
            policy = load_policy(given)
            results = run_suite(suite, policy, prepare=catalog_args(catalog), vocabulary=vocabulary)
        except PolicyError as exc:
            raise CommandError(str(exc)) from None
        print(f"{name}: policy {policy.version} ({given})")
        for result in results:
            total += 1
            if result.passed:
                if args.verbose:
                    print(f"  PASS  {result.name}")
                continue
            failed += 1
            print(f"  FAIL  {result.name}")
            for problem in result.problems:
                print(f"        {problem}")
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    try:
        arguments = json.loads(args.args)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--args is not JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise CommandError("--args must be a JSON object")
    at = datetime.fromisoformat(args.at) if args.at else None
    if at is not None and at.tzinfo is None:
        raise CommandError("--at needs a time zone, e.g. 2025-06-02T23:59:00+02:00")
    return anyio.run(_explain, args, settings, arguments, at)


async def _explain(args: argparse.Namespace, settings: Settings, arguments: dict[str, Any], at: datetime | None) -> int:
    from server.app import open_database
    from server.callpath.enforcer import Enforcer
    from server.policy_runtime import StaticPolicy

    policy = _load(_policy_path(args, settings))
    principal = await _token_principal(args.token, settings) if args.token else _agent_principal(args.agent, settings)
    db, catalog = await open_database(settings)
    try:
        enforcer = Enforcer(db, catalog, instance=f"{settings.instance}/explain", policies=StaticPolicy(policy))
        explanation = await enforcer.explain(principal, args.tool, arguments, now=at)
    finally:
        await db.dispose()
    report = _report(args.tool, principal.client_id, policy, explanation)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print(report)
    return 0


async def _token_principal(token: str, settings: Settings) -> Principal:
    """The token verified exactly as the server verifies it (``--dev-issuer`` to trust development tokens)."""
    import httpx2

    from server.app import trusted_issuers
    from server.auth.errors import InvalidToken
    from server.auth.jwt_verifier import JwtVerifier

    if not settings.issuers and not settings.dev_issuer:
        raise CommandError("no trusted issuer is configured to verify --token (use --dev-issuer for development)")
    async with httpx2.AsyncClient(timeout=5.0, follow_redirects=False) as client:
        verifier = JwtVerifier(trusted_issuers(settings, local_dev_jwks=True), settings.audience, http_client=client)
        try:
            return await verifier.verify(token)
        except InvalidToken as exc:
            raise CommandError(f"the token is not valid here: {exc.description}") from None


def _agent_principal(name: str, settings: Settings) -> Principal:
    from scopes.catalog import DEFAULT_AGENTS, DEFAULT_CATALOG, load_agents, load_catalog

    book = load_agents(settings.agents_path or DEFAULT_AGENTS, load_catalog(settings.catalog_path or DEFAULT_CATALOG))
    agent = book.agents.get(name)
    if agent is None:
        raise CommandError(f"unknown agent {name!r}; known: {', '.join(sorted(book.agents))}")
    return Principal(  # the identity `mandate token mint --agent NAME` gives, so the ledger totals are the agent's
        subject=f"agent:{name}",
        client_id=f"{name}-agent",
        scopes=frozenset(agent.scopes),
        issuer=settings.dev_issuer_url,
        audience=(settings.audience,),
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        tenant=agent.tenant,
    )


def _report(tool: str, client_id: str, policy: Policy, explanation: Explanation) -> dict[str, Any]:
    report: dict[str, Any] = {"tool": tool, "principal": client_id, "policy_version": policy.version}
    if explanation.refusal is not None:
        refusal = explanation.refusal
        report.update(decision="deny", reason_code=refusal.code, reason=refusal.message, stage="before the policy")
        report["would_allow"] = refusal.would_allow
        return report
    gate = explanation.gate
    assert gate is not None
    decision = gate.decision
    report.update(
        decision=decision.effect,
        reason_code=decision.reason_code,
        reason=decision.audit_reason or decision.reason,
        rule=decision.rule_id,
        would_allow=list(decision.would_allow),
        looks_like_not_found=decision.conceal,
        rules=[
            {"rule": r.rule_id, "outcome": r.outcome, "shadow": r.shadow, "note": r.internal or r.message}
            for r in decision.results
        ],
        ledger={budget: str(total) for budget, total in gate.request.usage.items()},
    )
    return report


explanation_report = _report
"""The report ``mandate explain --json`` prints; the web console's policy page shows the same."""


def _print(report: dict[str, Any]) -> None:
    rows = [
        ("tool", report["tool"]),
        ("principal", report["principal"]),
        ("policy", report["policy_version"]),
        ("decision", str(report["decision"]).upper()),
        ("reason code", report["reason_code"]),
        ("rule", report.get("rule") or "-"),
        ("reason", report["reason"]),
    ]
    for label, value in rows:
        print(f"{label + ':':<13}{value}")
    for hint in report.get("would_allow", []):
        print(f"{'would allow:':<13}{hint}")
    for rule in report.get("rules", []):
        mode = " (shadow)" if rule["shadow"] else ""
        note = f"  {rule['note']}" if rule["note"] else ""
        print(f"{'rule:':<13}{rule['rule']}{mode}: {rule['outcome']}{note}")
    for budget, total in report.get("ledger", {}).items():
        print(f"{'ledger:':<13}{budget} = {total}")
    print("Nothing was executed or recorded.", file=sys.stderr)


def register(sub: Any) -> None:
    policy = sub.add_parser("policy", help="check and test the policy (caps, budgets, approvals)")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_sub.add_parser("check", help="validate a policy file and warn about names this server lacks")
    check.add_argument("file", nargs="?", help="the policy file (default: the configured policy)")
    check.add_argument("--strict", action="store_true", help="exit 1 when there are warnings")
    check.set_defaults(handler=cmd_check)
    test = policy_sub.add_parser("test", help="run policy test suites; exit 1 if any case fails")
    test.add_argument("files", nargs="+", help="test suite files (scopes/policy-tests/*.toml)")
    test.add_argument("--policy", help="the policy to test (default: the suite's own 'policy', else the configured)")
    test.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    test.set_defaults(handler=cmd_test)

    explain = sub.add_parser("explain", help="print the decision a call would get, without executing anything")
    add_server_options(explain)
    who = explain.add_mutually_exclusive_group(required=True)
    who.add_argument("--agent", help="a development agent from scopes/agents.toml")
    who.add_argument("--token", help="an access token (verified as the server would)")
    explain.add_argument("--tool", required=True)
    explain.add_argument("--args", required=True, help="the arguments as a JSON object")
    explain.add_argument("--at", help="pin the clock (ISO 8601 with a time zone)")
    explain.add_argument("--policy", help="explain against this policy file instead of the configured one")
    explain.add_argument("--json", action="store_true", help="print the explanation as JSON")
    explain.add_argument("--dev-issuer", action="store_true", help="trust development tokens for --token")
    explain.set_defaults(handler=cmd_explain)
