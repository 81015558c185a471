"""The small expression language rules are written in: paths, durations, windows and message templates.

A path names one value of a decision's input: ``args.<field>`` (the tool's validated arguments; money fields are
:class:`~scopes.money.Money`), ``facts.<name>`` (stored state the tool's facts loader read), ``principal.<field>``
(``scopes``, ``tenant``, ``subject``, ``client_id``, ``issuer``, ``actor``, ``claims.<name>...``) or ``now``. There is
no ``eval``: a path is split on dots once, when the policy is loaded, and looked up in plain mappings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from scopes.identity import identity_key
from scopes.money import Money
from scopes.policy.errors import RuleError

ROOTS = ("args", "facts", "principal", "now")
PRINCIPAL_FIELDS = ("scopes", "tenant", "subject", "client_id", "issuer", "actor", "claims")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
PATH_PATTERN = (
    rf"^(now|(args|facts)\.{_NAME}|principal\.({'|'.join(PRINCIPAL_FIELDS[:-1])})|principal\.claims(\.{_NAME})+)$"
)
_PATH = re.compile(PATH_PATTERN)
_DURATION = re.compile(r"^([1-9][0-9]{0,5}) ?(minute|minutes|hour|hours|day|days)$")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


@dataclass(frozen=True, slots=True)
class Caller:
    """The principal as the policy sees it: what a verified token says, and nothing else."""

    subject: str
    client_id: str
    issuer: str
    scopes: frozenset[str]
    tenant: str | None = None
    actor: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict[str, Any])
    authorization_details: tuple[Mapping[str, Any], ...] = ()
    _key: str | None = field(default=None, init=False, repr=False, compare=False)
    """:attr:`key`, once worked out (a server keeps one Caller per verified token, so it is asked again and again)."""

    @property
    def key(self) -> str:
        """Issuer, client and subject: the same string as ``Principal.key``, so ledgers match across tools."""
        key = self._key
        if key is None:
            key = identity_key(self.issuer, self.client_id, self.subject)
            object.__setattr__(self, "_key", key)
        return key

    @property
    def client_key(self) -> str:
        return identity_key(self.issuer, self.client_id)


@dataclass(frozen=True, slots=True)
class Path:
    """A compiled path such as ``facts.refundable_left``."""

    text: str
    parts: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Path:
        if not _PATH.fullmatch(text):
            raise ValueError(
                f"{text!r} is not a path; write args.<field>, facts.<name>, principal.<scopes|tenant|subject|"
                "client_id|issuer|actor>, principal.claims.<name> or now"
            )
        return cls(text, tuple(text.split(".")))

    @property
    def root(self) -> str:
        return self.parts[0]

    def resolve(self, args: Mapping[str, Any], facts: Mapping[str, Any], caller: Caller, now: datetime) -> Any:
        """The value, or ``None`` when the input does not have it (the caller decides if that is an error)."""
        root = self.parts[0]
        if root == "now":
            return now
        if root == "args":
            return args.get(self.parts[1])
        if root == "facts":
            return facts.get(self.parts[1])
        name = self.parts[1]
        if name != "claims":
            return getattr(caller, name)
        value: Any = caller.claims
        for part in self.parts[2:]:
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)  # pyright: ignore[reportUnknownMemberType]
        return value


def parse_duration(text: str) -> timedelta:
    """``"48 hours"``, ``"30 days"``, ``"15 minutes"``."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration; write e.g. '48 hours', '30 days' or '15 minutes'")
    number, unit = int(match.group(1)), match.group(2).rstrip("s")
    return timedelta(**{f"{unit}s": number})


def describe_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"  # pragma: no cover - durations are whole minutes


def show(value: Any) -> str:
    """A value as a sentence shows it: money with its currency, times in ISO 8601."""
    if isinstance(value, Money):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, frozenset | set | list | tuple):
        return ", ".join(sorted(str(item) for item in value))  # pyright: ignore[reportUnknownVariableType,reportUnknownArgumentType]
    return str(value)


@dataclass(frozen=True, slots=True)
class Template:
    """A message with ``{placeholders}``: paths (``{facts.status}``) or a rule's own values (``{limit}``)."""

    text: str
    paths: tuple[Path, ...]

    @classmethod
    def parse(cls, text: str, variables: frozenset[str]) -> Template:
        paths: list[Path] = []
        for name in _PLACEHOLDER.findall(text):
            if name in variables:
                continue
            if "." not in name and name != "now":
                raise ValueError(f"unknown placeholder {{{name}}}; known: {', '.join(sorted(variables)) or 'none'}")
            paths.append(Path.parse(name))
        return cls(text, tuple(paths))

    def render(
        self,
        variables: Mapping[str, Any],
        args: Mapping[str, Any],
        facts: Mapping[str, Any],
        caller: Caller,
        now: datetime,
    ) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return show(variables[name])
            value = Path.parse(name).resolve(args, facts, caller, now)
            if value is None:
                raise RuleError(f"message placeholder {{{name}}} has no value")
            return show(value)

        return _PLACEHOLDER.sub(replace, self.text)
