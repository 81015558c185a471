"""An audit record's bytes stay what they were: the column values ``build_record`` gives and ``chain.append`` stores,
the canonical JSON its leaf hash covers and the leaf hash itself, for invocations with and without a principal,
sensitive and unicode arguments, NUL bytes, values too long for their columns, no customer and an approval.

The golden figures were computed by the code before ``build_record``, ``chain.append`` and ``canonical_json`` were
made cheaper; the canonical forms are also checked against their definitions written with ``json.dumps``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext

from server.audit import chain
from server.audit.models import AuditRecord
from server.audit.redaction import canonical_json
from server.auth.principal import Principal
from server.callpath import record as record_module
from server.callpath.record import CallInfo, Invocation, Outcome, build_record

AT = datetime(2025, 6, 2, 8, 0, 0, 123456, tzinfo=UTC)
NUL = "a\x00b"
UNICODE = "Zoë 日本語 \u2026 😀 \u2028"


def _principal(**changes: Any) -> Principal:
    fields: dict[str, Any] = {
        "subject": "agent:1",
        "client_id": "c1",
        "scopes": frozenset({"refunds:create", "orders:read"}),
        "issuer": "https://issuer",
        "audience": ("mandate",),
        "expires_at": AT + timedelta(hours=1),
    }
    return Principal(**{**fields, **changes})


REFUND = {"order_id": "ord_1", "amount": "12.50", "currency": "EUR", "reason": "damaged"}
ODD = {
    "customer_id": "c" * 50,
    "nested": {"z": [1, "x y", {"k": "a@b.cd"}], "a": NUL},
    "uni": UNICODE,
    "k\x00": "x" * 99,
}


def _cases() -> Iterator[tuple[str, Invocation, Outcome, dict[str, Any]]]:
    """(name, invocation, outcome, build_record's other arguments)."""
    plain = CallInfo("http")
    full = CallInfo("stdio", "127.0.0.1", "claude", "1.0", "https://o", "ua/1", "req-1", "idem-1")
    huge = CallInfo("h" * 25, "a" * 101, NUL * 150, UNICODE * 30, "\x00" * 300, "u" * 301, "r" * 100, "k" * 199 + NUL)
    allowed = Outcome("allow", "succeeded", "allowed", "within caps", "r1", "v1", {"refund_id": "re_1"}, "cus_1")
    denied = Outcome("deny", "refused", "cap_exceeded", "over", "rule-1", "v1", {"refund_id": "re_1", "x": [1]}, None)
    pending = Outcome("approval", "pending_approval", "needs_approval", None, None, None, {}, None, "apr_1")
    oversized = Outcome("d" * 25, "o" * 31, "r" * 101, UNICODE + NUL, "ru" * 101, "p" * 101, {"s": NUL}, "", "a" * 41)
    odd_principal = _principal(subject="s" * 500, client_id=NUL * 3, issuer=UNICODE, scopes=frozenset({"a\x00", "b"}))
    yield "allowed refund", Invocation(_principal(), full, "refund_create", REFUND, frozenset({"reason"})), allowed, {}
    yield "no principal", Invocation(None, plain, None), denied, {"kind": "guard"}
    yield "actor, tenant, token", Invocation(_principal(tenant="acme", token_id="j", actor="x"), plain, "t"), denied, {}
    yield "approval, no customer", Invocation(_principal(), full, "refund_create", {"amount": "1"}), pending, {}
    yield "odd arguments", Invocation(_principal(), plain, "t\x00x", ODD, frozenset({"uni", "missing"})), allowed, {}
    yield (
        "emails and free text",
        Invocation(None, full, "c", {"email": "a@b.co", "n": 3, "f": 1.5, "b": True}),
        denied,
        {},
    )
    yield "too long everywhere", Invocation(odd_principal, huge, "t" * 101, {"customer_id": 5}), oversized, {}
    yield "long ids", Invocation(_principal(actor=""), huge, "x", REFUND), pending, {"audit_id": "i" * 41}
    yield (
        "other zone",
        Invocation(_principal(), plain, "x"),
        allowed,
        {"at": AT.astimezone(timezone(timedelta(hours=2)))},
    )
    yield (
        "effect",
        Invocation(_principal(), full, "refund_create", REFUND),
        allowed,
        {"kind": "effect", "audit_id": NUL},
    )
    yield "instance", Invocation(_principal(), plain, "x"), allowed, {"instance": "n" * 101, "trace": True}


def _built(call: Invocation, outcome: Outcome, options: dict[str, Any]) -> dict[str, Any]:
    args = (options.get("instance", "i-1"), call, outcome, options.get("audit_id", "aud_" + "0" * 32))
    at, kind = options.get("at", AT), options.get("kind", "call")
    if options.get("trace"):
        with trace.use_span(NonRecordingSpan(SpanContext(trace_id=0x1234ABCD, span_id=0x99, is_remote=False))):
            return build_record(*args, at, kind=kind)
    return build_record(*args, at, kind=kind)


def _appended(record: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The values ``chain.append`` hands the INSERT (on SQLite), caught before the database."""
    given: list[dict[str, Any]] = []

    async def run(session: Any, prepared: Any, values: dict[str, Any]) -> None:
        given.append(dict(values))

    monkeypatch.setattr(chain, "run", run)
    session = SimpleNamespace(bind=SimpleNamespace(dialect=SimpleNamespace(name="sqlite")))
    coroutine = chain.append(session, record)  # type: ignore[arg-type]
    with pytest.raises(StopIteration):
        coroutine.send(None)
    return given[0]


def _digest(values: dict[str, Any]) -> str:
    text = json.dumps([[name, value] for name, value in values.items()], default=repr, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


GOLDEN: dict[str, tuple[str, str]] = {
    "allowed refund": ("c099a3e4cb6e01a9", "52594ceab919d60aa67c445aada377517e926bce0295f29d4440d54c14fefe84"),
    "no principal": ("bb0d588a41cf6e37", "a44cb028a8eacc1dab8763dbc90f0cc70536cfbe31592ad6de3d7432e4893380"),
    "actor, tenant, token": ("12b8adb9c00cbdf3", "80587371bdb4f3219b6da5e9fb64c12f55608cc07589ca7c98ea79c00a5ec7c1"),
    "approval, no customer": ("9322ebe0065dd7c6", "306d4c7e1d873cdcbfdabaccd0a3630c5e10a93958f3716c19a5e03ff63878ac"),
    "odd arguments": ("7faa9da4f0640e80", "691852a9b723e95a021c4e4d4caeb4ab5d4730b399c2ee2f19866e35ed61b127"),
    "emails and free text": ("7578aa36faf72db0", "c9e22971467f7b133858521848d778ddc10c910b62ffb1d1097d86149e90b6a4"),
    "too long everywhere": ("3a35aaf2ec170816", "486fd03e15aecba4f9ff21eec42b56c834b30587ccc69406552482bf5d1ac154"),
    "long ids": ("53b6b0dd35e71673", "05161b973d5212aa1a3b604bb938376d0f75825696959a867a1c6dc486d40e92"),
    "other zone": ("5244f5851b077e1a", "587d4e7bfb6789b2f3ad625c02ef218462c08430668d4a2d172778d3c7c84820"),
    "effect": ("14f33d99b7757a0c", "45b3fc744fe3535a50e94fefd9a66fe336872d5a11188b6e63ff8e71fed8f6c7"),
    "instance": ("b3fdc6c53e317e17", "58cffb8d51f043776704a9cb9374ed38be6d67b6a5b86e01814ddafd57c74e83"),
}
"""Each case's stored values (a digest over their names, order and values) and its leaf hash."""


@pytest.fixture
def fixed_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record_module, "time", SimpleNamespace(perf_counter=lambda: 1000.0))


@pytest.mark.parametrize("name", [case[0] for case in _cases()])
def test_a_record_keeps_its_golden_column_values_and_leaf_hash(
    name: str, fixed_latency: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, call, outcome, options = next(case for case in _cases() if case[0] == name)
    call = Invocation(call.principal, call.info, call.tool, call.raw, call.sensitive, started=999.999877)
    values = _appended(_built(call, outcome, options), monkeypatch)
    assert (_digest(values), values["leaf_hash"]) == GOLDEN[name]
    assert chain.leaf_hash_of(values).hex() == values["leaf_hash"] and chain.stored_leaf_intact(values)


def _definition(body: dict[str, Any]) -> bytes:
    """The canonical form as docs/audit.md defines it: the fields in sorted order, no white space, UTF-8, the time in
    RFC 3339 (a value that is itself an object, which no writer stores, is written as it is)."""
    if isinstance(body["at"], datetime):
        body = {**body, "at": chain.canonical_time(body["at"])}
    return json.dumps(dict(sorted(body.items())), separators=(",", ":"), ensure_ascii=False).encode()


class _Text(str):
    pass


class _Number(int):
    pass


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("latency_us", 5),
        ("latency_us", True),
        ("latency_us", 1.5),
        ("latency_us", _Number(3)),
        ("latency_us", 2**70),
        ("tool", _Text('q"uote')),
        ("client_name", '"\\\n\u2028é\x00\x1f'),
        ("reason", ["a", 1, None]),
        ("reason", {"b": 1, "a": 2}),
        ("at", "2025-01-01T00:00:00.000000Z"),
        ("at", datetime(2025, 1, 1, 12)),
    ],
)
def test_a_leaf_is_the_canonical_json_of_the_record_whatever_its_values(column: str, value: object) -> None:
    row = {name: f"v-{name}" for name in chain.LEAF_FIELDS} | {"at": AT, "seq": 1, "leaf_hash": None, column: value}
    body = {name: row[name] for name in chain.LEAF_FIELDS}
    assert chain.leaf_data(row) == _definition(body)
    assert chain.leaf_hash_of(row) == hashlib.sha256(b"\x00" + _definition(body)).digest()


def test_a_leaf_refuses_what_the_canonical_form_cannot_hold_as_it_did() -> None:
    row: dict[str, Any] = {name: None for name in chain.LEAF_FIELDS} | {"at": AT}
    with pytest.raises(TypeError, match=r"^Object of type Decimal is not JSON serializable$"):
        chain.leaf_data({**row, "reason": Decimal("1")})
    with pytest.raises(TypeError, match=r"^an audit record's time must be a datetime, not int$"):
        chain.leaf_data({**row, "at": 5})
    with pytest.raises(KeyError, match="tool"):
        chain.leaf_data({name: value for name, value in row.items() if name != "tool"})


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": {"z": [1, 2.5, None, True], "y": "é\x00"}},
        {"amount": Decimal("1.10"), "at": AT},
        {2: "x", 1: "y"},
        [1, "two", {"b": 1, "a": 2}],
        "text \u2028 \x00",
        7,
        None,
    ],
)
def test_canonical_json_is_what_json_dumps_writes(value: object) -> None:
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    assert canonical_json(value) == expected


def test_canonical_json_refuses_a_circular_value_as_json_dumps_does() -> None:
    looped: dict[str, Any] = {}
    looped["self"] = looped
    with pytest.raises(ValueError, match=r"^Circular reference detected$"):
        canonical_json(looped)
    assert canonical_json({"after": "a refusal"}) == '{"after":"a refusal"}'  # nothing of it stays behind


def test_every_text_column_of_a_record_fits_however_long_or_nul_laden_its_inputs(fixed_latency: None) -> None:
    text = "\x00" + "x" * 1000
    written = text.replace("\x00", "\\u0000")
    identity = dict.fromkeys(("subject", "client_id", "issuer", "token_id", "tenant", "actor"), text)
    principal = _principal(**identity, scopes=frozenset({text}))
    info = CallInfo(text, text, text, text, text, text, text, text)
    outcome = Outcome(text, text, text, text, text, text, {"k": text}, text, text)
    record = build_record(text, Invocation(principal, info, text, {"customer_id": text}), outcome, text, AT, kind=text)
    columns = AuditRecord.__table__.columns  # type: ignore[attr-defined]
    limits = {column.name: getattr(column.type, "length", None) for column in columns}
    for name, value in record.items():
        if name in ("arguments", "result_summary"):  # canonical JSON: the NUL byte is written as an escape
            assert "\x00" not in value
        elif name in ("scopes", "reason"):  # text without a limit
            assert value == written, name
        elif isinstance(value, str) and name != "arguments_digest":
            limit = limits[name]
            assert value == written[: limit - 1] + "\u2026", name


def test_each_principal_gets_its_own_fitted_identity_columns_every_time(fixed_latency: None) -> None:
    long, nul = _principal(subject="s" * 401), _principal(subject="a\x00b", tenant="t" * 101)
    call = CallInfo("http")
    for _ in range(2):
        first = build_record("i", Invocation(long, call, "t"), Outcome("allow", "ok"), "aud_1", AT)
        second = build_record("i", Invocation(nul, call, "t"), Outcome("allow", "ok"), "aud_2", AT)
        anonymous = build_record("i", Invocation(None, call, "t"), Outcome("allow", "ok"), "aud_3", AT)
        assert first["subject"] == "s" * 399 + "\u2026" and first["tenant"] is None
        assert (second["subject"], second["tenant"]) == ("a\\u0000b", "t" * 99 + "\u2026")
        assert anonymous["subject"] is None and anonymous["tenant"] is None


def test_a_column_left_unfitted_is_fitted_again_once_a_migration_gives_it_a_limit() -> None:
    import sys

    from server.callpath import record

    assert not record._can_need_fitting("arguments", sys.maxsize)  # canonical JSON, no limit: nothing to fit
    assert record._can_need_fitting("arguments", 4000)
    assert record._can_need_fitting("result_summary", 4000)
    assert not record._can_need_fitting("arguments_digest", 64)
    assert record._can_need_fitting("arguments_digest", 32)
    assert not record._can_need_fitting("leaf_hash", 64) and not record._can_need_fitting("subject", 300)
    assert record._can_need_fitting("reason", sys.maxsize)  # free text from the policy: always checked
