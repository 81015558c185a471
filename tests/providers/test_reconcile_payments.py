"""``mandate reconcile payments``: Mandate's refund records against a real localstripe, for a person and a script."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
import stripe
from sqlmodel import select

from scopes.money import Money
from server.cli import main
from server.cli.seeding import seed
from server.config import Settings
from server.providers.localstripe import LocalStripe
from server.providers.payments import META_AUDIT, META_INTENT, ProviderRefund
from server.providers.reconcile import RecordedRefund, compare_payment
from server.storage.database import Database
from tools.store.models import Order, Refund


@pytest.fixture
def linked(provider_settings: Settings, localstripe: LocalStripe, monkeypatch: pytest.MonkeyPatch) -> dict[str, Order]:
    """The demo store seeded and linked at localstripe; the environment set as a user of the CLI would set it."""
    for variable in ("MANDATE_CONFIG", "MANDATE_STRIPE_API_KEY", "MANDATE_STRIPE_API_BASE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MANDATE_DATA_DIR", str(provider_settings.data_dir))
    monkeypatch.setenv("MANDATE_DATABASE_URL", provider_settings.effective_database_url)
    monkeypatch.setenv("MANDATE_STRIPE_API_KEY", localstripe.api_key)
    monkeypatch.setenv("MANDATE_STRIPE_API_BASE", localstripe.api_base)
    anyio.run(seed, provider_settings)
    return {order.id: order for order in anyio.run(_orders, provider_settings)}


async def _orders(settings: Settings) -> list[Order]:
    db = Database(settings.effective_database_url)
    try:
        async with db.session() as session:
            return list((await session.exec(select(Order))).all())
    finally:
        await db.dispose()


def record(
    settings: Settings, order: Order, minor: int, *, audit_id: str, provider_refund_id: str | None = None
) -> str:
    """A refund row in the store, as refund_create writes it."""
    refund_id = f"ref_{uuid.uuid4().hex[:20]}"

    async def write() -> None:
        db = Database(settings.effective_database_url)
        try:

            async def add(session: object) -> None:
                session.add(  # type: ignore[attr-defined]
                    Refund(
                        id=refund_id,
                        order_id=order.id,
                        customer_id=order.customer_id,
                        amount_minor=minor,
                        currency=order.currency,
                        reason="test",
                        created_at=datetime.now(UTC),
                        created_by="agent:refunds",
                        audit_id=audit_id,
                        provider_refund_id=provider_refund_id,
                    )
                )

            await db.run_in_transaction(add)  # type: ignore[arg-type]
        finally:
            await db.dispose()

    anyio.run(write)
    return refund_id


def provider_refund(client: stripe.StripeClient, order: Order, minor: int, **metadata: str) -> str:
    refund = client.v1.refunds.create(
        params={"payment_intent": order.payment_ref or "", "amount": minor, "metadata": metadata}
    )
    return refund.id


def reconcile(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["reconcile", "payments", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_clean_state_exits_0_and_says_everything_agrees(
    linked: dict[str, Order],
    provider_settings: Settings,
    stripe_outside: stripe.StripeClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    order = linked["ord_5003"]
    provider_refund(stripe_outside, order, 1250, **{META_AUDIT: "aud_one"})
    record(provider_settings, order, 1250, audit_id="aud_one")
    by_id = provider_refund(stripe_outside, order, 300)
    record(provider_settings, order, 300, audit_id="aud_two", provider_refund_id=by_id)
    code, out, _ = reconcile(capsys)
    assert code == 0, out
    assert "everything agrees" in out and "2 matched exactly" in out and "9 payment(s) checked" in out
    code, out, _ = reconcile(capsys, "--json")
    report = json.loads(out)
    assert (code, report["clean"], report["matched"], report["differences"]) == (0, True, 2, [])


def test_a_refund_made_directly_through_the_sdk_outside_mandate_is_reported(
    linked: dict[str, Order], stripe_outside: stripe.StripeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    order = linked["ord_5005"]
    leaked = provider_refund(stripe_outside, order, 5000)  # someone with the key, not through Mandate
    code, out, _ = reconcile(capsys, "--json")
    report = json.loads(out)
    assert code == 1 and not report["clean"]
    [difference] = report["differences"]
    assert difference["kind"] == "unexplained" and difference["blocking"]
    assert difference["provider_refund"]["id"] == leaked and difference["provider_refund"]["amount"] == "50.00"
    assert (difference["payment_ref"], difference["order_id"]) == (order.payment_ref, order.id)
    code, out, _ = reconcile(capsys)
    assert code == 1
    assert "DIFFERENCES (1):" in out and leaked in out and "made outside Mandate" in out and "DISAGREE" in out


def test_a_record_whose_provider_refund_differs_in_amount_is_reported(
    linked: dict[str, Order],
    provider_settings: Settings,
    stripe_outside: stripe.StripeClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    order = linked["ord_5002"]
    at_provider = provider_refund(stripe_outside, order, 1000, **{META_AUDIT: "aud_x", META_INTENT: "int_x"})
    recorded = record(provider_settings, order, 2000, audit_id="aud_x")
    code, out, _ = reconcile(capsys, "--json")
    [difference] = json.loads(out)["differences"]
    assert code == 1 and difference["kind"] == "amount"
    assert (difference["record"]["id"], difference["record"]["amount"]) == (recorded, "20.00")
    assert (difference["provider_refund"]["id"], difference["provider_refund"]["amount"]) == (at_provider, "10.00")


def test_a_record_with_no_refund_at_the_provider_is_reported_missing(
    linked: dict[str, Order], provider_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded = record(provider_settings, linked["ord_5001"], 700, audit_id="aud_lost")
    code, out, _ = reconcile(capsys)
    assert code == 1 and "missing" in out and recorded in out and "holds no such refund" in out


def test_a_second_provider_refund_for_one_record_is_reported_as_a_duplicate(
    linked: dict[str, Order],
    provider_settings: Settings,
    stripe_outside: stripe.StripeClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    order = linked["ord_5007"]
    for _ in range(2):  # localstripe ignores idempotency keys: a retry made a second one
        provider_refund(stripe_outside, order, 900, **{META_AUDIT: "aud_dup"})
    record(provider_settings, order, 900, audit_id="aud_dup")
    code, out, _ = reconcile(capsys, "--json")
    kinds = [d["kind"] for d in json.loads(out)["differences"]]
    assert (code, kinds) == (1, ["duplicate"])


def test_since_leaves_out_what_happened_before_it(
    linked: dict[str, Order], stripe_outside: stripe.StripeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    provider_refund(stripe_outside, linked["ord_5003"], 100)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert reconcile(capsys, "--since", later)[0] == 0
    assert reconcile(capsys, "--since", "24h")[0] == 1
    code, _, err = reconcile(capsys, "--since", "last tuesday")
    assert code == 2 and "not a time" in err


def test_a_stopped_provider_is_an_error_never_a_clean_report(
    linked: dict[str, Order], localstripe: LocalStripe, capsys: pytest.CaptureFixture[str]
) -> None:
    localstripe.kill()
    code, out, err = reconcile(capsys)
    assert (code, out) == (2, "")
    assert "could not be asked" in err and localstripe.api_key not in err


def test_without_a_provider_the_command_says_what_to_configure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("MANDATE_CONFIG", "MANDATE_STRIPE_API_KEY", "MANDATE_PAYMENTS_PROVIDER"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MANDATE_DATA_DIR", str(tmp_path))
    code, _, err = reconcile(capsys)
    assert code == 2 and "no payments provider is configured" in err


def _refund(refund_id: str, minor: int, status: str = "succeeded", **metadata: str) -> ProviderRefund:
    return ProviderRefund(
        id=refund_id,
        payment_ref="pi_1",
        amount=Money.from_minor(minor, "EUR"),
        status=status,  # type: ignore[arg-type]
        metadata=metadata,
        created=datetime(2026, 1, 1, tzinfo=UTC),
    )


def _record(minor: int, **fields: str) -> RecordedRefund:
    return RecordedRefund(
        source="effects",
        record_id="int_1",
        payment_ref="pi_1",
        amount=Money.from_minor(minor, "EUR"),
        created=datetime(2026, 1, 1, tzinfo=UTC),
        **fields,  # type: ignore[arg-type]
    )


def test_a_failed_provider_refund_is_a_status_difference_and_a_pending_one_only_a_note() -> None:
    _, failed = compare_payment(
        "pi_1", [_record(100, intent_id="i")], [_refund("re_1", 100, "failed", **{META_INTENT: "i"})], since=None
    )
    _, pending = compare_payment(
        "pi_1", [_record(100, intent_id="i")], [_refund("re_1", 100, "pending", **{META_INTENT: "i"})], since=None
    )
    assert [(d.kind, d.blocking) for d in failed] == [("status", True)]
    assert [(d.kind, d.blocking) for d in pending] == [("pending", False)]


def test_a_provider_refund_naming_an_intent_mandate_has_no_record_of_is_unexplained() -> None:
    _, differences = compare_payment("pi_1", [], [_refund("re_9", 100, **{META_INTENT: "int_gone"})], since=None)
    assert [d.kind for d in differences] == ["unexplained"] and "int_gone" in differences[0].message
