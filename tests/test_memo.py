"""What the call path derives from a verified principal is worked out once per principal, and never mixed up between
two principals, however alike; a record's identity columns stay its own."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from server.auth.principal import Principal
from server.callpath.record import CallInfo, Invocation, Outcome, build_record
from server.memo import PerObject
from server.policy_runtime import caller_of

AT = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)


def _principal(**changes: Any) -> Principal:
    fields: dict[str, Any] = {
        "subject": "agent:refunds",
        "client_id": "refunds-agent",
        "scopes": frozenset({"refunds:create", "orders:read"}),
        "issuer": "https://issuer",
        "audience": ("mandate",),
        "expires_at": AT,
    }
    fields.update(changes)
    return Principal(**fields)


def test_a_value_is_made_once_per_object_and_again_for_an_equal_but_different_object() -> None:
    made: list[object] = []

    def make(obj: object) -> int:
        made.append(obj)
        return len(made)

    memo: PerObject[object, int] = PerObject(make)
    one, other = _principal(), _principal()
    assert (memo(one), memo(one), memo(other), memo(one)) == (1, 1, 2, 1)
    assert made == [one, other] and made[0] is one and made[1] is other


def test_the_memo_forgets_its_oldest_objects_past_its_size() -> None:
    memo: PerObject[object, str] = PerObject(lambda obj: f"made for {id(obj)}", size=3)
    objects = [_principal(subject=f"agent:{i}") for i in range(5)]
    for obj in objects:
        memo(obj)
    assert len(memo) == 3


def test_the_policy_sees_each_principal_as_it_is_even_one_seen_before() -> None:
    agent, senior = _principal(), _principal(scopes=frozenset({"refunds:create", "refunds:create:large"}))
    first = caller_of(agent)
    assert caller_of(agent) is first
    assert first.scopes == agent.scopes and first.key == agent.key == caller_of(agent).key
    assert caller_of(senior).scopes == senior.scopes != first.scopes


def test_each_record_has_identity_columns_of_its_own_principal() -> None:
    def record(principal: Principal | None) -> dict[str, Any]:
        call = Invocation(principal, CallInfo("http"), tool="refund_create", raw={"amount": "1.00"})
        return build_record("i-1", call, Outcome("allow", "ok"), "aud_1", AT)

    agent = _principal(tenant="acme", token_id="jti-1")
    first = record(agent)
    first["scopes"] = "tampered"
    again, other, anonymous = record(agent), record(_principal(actor="agent:x")), record(None)
    assert (again["scopes"], again["tenant"], again["token_id"]) == ("orders:read refunds:create", "acme", "jti-1")
    assert (other["actor"], other["tenant"]) == ("agent:x", None)
    identity = ("subject", "client_id", "issuer", "scopes", "token_id", "tenant", "actor")
    assert [anonymous[name] for name in identity] == [None] * 7
