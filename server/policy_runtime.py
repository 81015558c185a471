"""The policy in force: loaded at start, reloaded when its file changes, never replaced by an invalid file.

Issue item 6: a running server picks up an edited policy without a restart. :meth:`PolicyRuntime.current` looks at
the file at most once per ``check_every`` seconds (a read and a SHA-256 of a few kilobytes) and compiles it when its
content changed; a file that does not load is logged as an error and the last good policy stays in force. A
policy that fails to load at start stops the server (fail closed). Every replica watches its own file; the version
in force is in each decision and audit record, so a rollout across replicas is visible in the trail.

Also here: the :class:`~scopes.policy.Caller` view of a principal, and the :class:`~scopes.policy.lint.Vocabulary`
of a tool catalog, the two bridges between the server's objects and the I/O-free policy package.
"""

from __future__ import annotations

import hashlib
import logging
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from scopes.money import Money
from scopes.policy import Caller, Policy, PolicyError, parse_policy
from scopes.policy.lint import ToolShape, Vocabulary, lint
from server.auth.principal import Principal
from server.catalog import ToolCatalog
from server.memo import PerObject
from server.toolkit import Facts

logger = logging.getLogger(__name__)


class PolicySource(Protocol):
    """Where the Enforcer gets the policy for one call (read once per call, so one call sees one version)."""

    def current(self) -> Policy:
        """The policy in force now."""
        ...


class StaticPolicy:
    """One policy, for tests and for tools that load a file once (``mandate explain``)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def current(self) -> Policy:
        return self.policy


class PolicyRuntime:
    """The policy from a file, reloaded when the file's content changes."""

    def __init__(
        self,
        path: Path,
        *,
        vocabulary: Vocabulary | None = None,
        check_every: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.vocabulary = vocabulary
        self.check_every = check_every
        self._monotonic = monotonic
        self.last_error: str | None = None
        data = self._read()
        self._policy = parse_policy(data, str(path))
        self._digest = hashlib.sha256(data).hexdigest()
        self._checked = monotonic()
        self._warn(self._policy)
        logger.info("policy %s in force from %s", self._policy.version, path)

    def current(self) -> Policy:
        now = self._monotonic()
        if now - self._checked >= self.check_every:
            self._checked = now
            self.reload()
        return self._policy

    def reload(self) -> Policy:
        """Load the file now if its content changed; keep the last good policy if it does not load."""
        try:
            data = self._read()
        except PolicyError as exc:
            return self._keep(str(exc))
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._digest:
            return self._policy
        self._digest = digest
        try:
            policy = parse_policy(data, str(self.path))
        except PolicyError as exc:
            return self._keep(str(exc))
        previous, self._policy, self.last_error = self._policy.version, policy, None
        logger.info("policy reloaded from %s: version %s replaces %s", self.path, policy.version, previous)
        self._warn(policy)
        return policy

    def _keep(self, error: str) -> Policy:
        self.last_error = error
        logger.error("policy file rejected; version %s stays in force:\n%s", self._policy.version, error)
        return self._policy

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise PolicyError(f"{self.path}: cannot be read: {exc.strerror}") from None

    def _warn(self, policy: Policy) -> None:
        if self.vocabulary is not None:
            for warning in lint(policy, self.vocabulary):
                logger.warning("policy %s: %s", policy.version, warning)


def caller_of(principal: Principal) -> Caller:
    """The policy's view of ``principal``: built once per principal (the verifier hands out the same one for every
    call with a token, and both are frozen), so a call does not rebuild it (:mod:`server.memo`)."""
    return _callers(principal)


def _caller(principal: Principal) -> Caller:
    return Caller(
        subject=principal.subject,
        client_id=principal.client_id,
        issuer=principal.issuer,
        scopes=principal.scopes,
        tenant=principal.tenant,
        actor=principal.actor,
        claims=principal.claims,
        authorization_details=principal.authorization_details,
    )


_callers: PerObject[Principal, Caller] = PerObject(_caller)


def vocabulary_of(catalog: ToolCatalog) -> Vocabulary:
    shapes: dict[str, ToolShape] = {}
    for entry in catalog:
        spec = entry.spec
        model = spec.facts_model
        facts = frozenset(model.model_fields) if model is not None else None
        money_facts = frozenset(
            name for name, info in (model.model_fields.items() if model else ()) if _is_money(info.annotation)
        )
        shapes[spec.name] = ToolShape(
            name=spec.name,
            scopes=frozenset(spec.requires.scopes),
            args=frozenset(spec.args_model.model_fields),
            money=dict(spec.money),
            facts=facts,
            money_facts=money_facts,
            concealable=model is not None and model.not_found is not Facts.not_found,
            read_only=spec.read_only,
        )
    return Vocabulary(shapes, frozenset(catalog.scopes.scopes))


def _is_money(annotation: object) -> bool:
    return annotation is Money or Money in typing.get_args(annotation)
