"""Reconciling payments: what Mandate recorded about refunds against what the provider holds.

Input: the refunds Mandate recorded (:class:`RecordedRefund`, from the demo store's ``refunds`` table and from the
effects protocol's outcomes) and the payments Mandate knows (orders' ``payment_ref``). For each payment, every
refund the provider holds is listed (:meth:`PaymentProvider.refunds_of`) and matched to a record by, in order: the
provider refund id the record stored, the audit id in the refund's ``mandate_audit`` metadata, the intent id in
``mandate_intent``. What is left over is a :class:`Difference`:

- ``unexplained``: a refund at the provider no Mandate record explains (made outside Mandate, e.g. with a leaked key
  or from the dashboard);
- ``duplicate``: a second provider refund for one record (a retry at a provider that ignored the idempotency key);
- ``missing``: a record whose provider refund does not exist (or whose payment the provider does not know);
- ``amount`` / ``status``: a record whose provider refund is for another amount, or failed or was canceled.

A provider refund still ``pending`` where Mandate recorded success is a :class:`Difference` with ``blocking``
false: reported, but money may still move as recorded, so it does not make the check fail.

``since`` narrows what is *reported* to records and provider refunds created at or after it; matching always sees
every refund of the payment, so a record just inside the window still finds its refund just outside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from scopes.money import Money
from server.providers.payments import (
    META_AUDIT,
    META_INTENT,
    PaymentProvider,
    ProviderRefund,
    ProviderRefused,
    RefundStatus,
)

DifferenceKind = Literal["unexplained", "duplicate", "missing", "amount", "status", "pending"]


@dataclass(frozen=True)
class RecordedRefund:
    """A refund as Mandate recorded it."""

    source: str
    """Where the record lives: ``store`` (the demo store's ``refunds`` table) or ``effects`` (an effect outcome)."""
    record_id: str
    payment_ref: str
    amount: Money
    created: datetime
    status: RefundStatus = "succeeded"
    order_id: str | None = None
    audit_id: str | None = None
    intent_id: str | None = None
    provider_refund_id: str | None = None


@dataclass(frozen=True)
class Difference:
    kind: DifferenceKind
    message: str
    payment_ref: str
    record: RecordedRefund | None = None
    refund: ProviderRefund | None = None
    order_id: str | None = None

    @property
    def blocking(self) -> bool:
        """Whether this difference makes the check fail (everything except a refund still pending)."""
        return self.kind != "pending"

    def as_json(self) -> dict[str, Any]:
        record, refund = self.record, self.refund
        return {
            "kind": self.kind,
            "blocking": self.blocking,
            "message": self.message,
            "payment_ref": self.payment_ref,
            "order_id": self.order_id,
            "record": None
            if record is None
            else {
                "source": record.source,
                "id": record.record_id,
                "amount": record.amount.formatted,
                "currency": record.amount.currency,
                "status": record.status,
                "created": record.created.isoformat(),
                "audit_id": record.audit_id,
                "intent_id": record.intent_id,
                "provider_refund_id": record.provider_refund_id,
            },
            "provider_refund": None
            if refund is None
            else {
                "id": refund.id,
                "amount": refund.amount.formatted,
                "currency": refund.amount.currency,
                "status": refund.status,
                "created": refund.created.isoformat(),
                "metadata": dict(refund.metadata),
            },
        }


@dataclass
class Reconciliation:
    provider: str
    since: datetime | None
    payments: int = 0
    records: int = 0
    provider_refunds: int = 0
    matched: int = 0
    differences: list[Difference] = field(default_factory=list[Difference])

    @property
    def clean(self) -> bool:
        return not any(d.blocking for d in self.differences)

    def as_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "since": self.since.isoformat() if self.since else None,
            "clean": self.clean,
            "payments": self.payments,
            "records": self.records,
            "provider_refunds": self.provider_refunds,
            "matched": self.matched,
            "differences": [d.as_json() for d in self.differences],
        }


def _in_window(moment: datetime, since: datetime | None) -> bool:
    return since is None or moment >= since.replace(microsecond=0)  # the provider counts whole seconds


def _match(
    record: RecordedRefund, by_id: Mapping[str, ProviderRefund], refunds: Sequence[ProviderRefund]
) -> list[ProviderRefund]:
    """The provider refunds that carry out ``record``: by stored id, else by audit id, else by intent id."""
    if record.provider_refund_id is not None:
        found = by_id.get(record.provider_refund_id)
        return [found] if found is not None else []
    for key, value in ((META_AUDIT, record.audit_id), (META_INTENT, record.intent_id)):
        if value is not None:
            hits = [r for r in refunds if r.metadata.get(key) == value]
            if hits:
                return sorted(hits, key=lambda r: r.created)
    return []


def compare_payment(
    payment_ref: str,
    records: Sequence[RecordedRefund],
    refunds: Sequence[ProviderRefund],
    *,
    since: datetime | None,
    order_id: str | None = None,
) -> tuple[int, list[Difference]]:
    """Match one payment's records to its provider refunds; return how many matched and what differs."""
    by_id = {r.id: r for r in refunds}
    explained: set[str] = set()
    differences: list[Difference] = []
    matched = 0
    for record in sorted(records, key=lambda r: r.created):
        hits = [r for r in _match(record, by_id, refunds) if r.id not in explained]
        reported = _in_window(record.created, since)
        if not hits:
            if reported:
                differences.append(
                    Difference(
                        "missing",
                        f"Mandate recorded {record.source} refund {record.record_id} of {record.amount}, but the "
                        "provider holds no such refund",
                        payment_ref,
                        record=record,
                        order_id=record.order_id or order_id,
                    )
                )
            continue
        first, *extra = hits
        explained.update(r.id for r in hits)
        for duplicate in extra:
            if _in_window(duplicate.created, since):
                differences.append(
                    Difference(
                        "duplicate",
                        f"provider refund {duplicate.id} of {duplicate.amount} repeats {first.id} for the same "
                        f"Mandate record {record.record_id}",
                        payment_ref,
                        record=record,
                        refund=duplicate,
                        order_id=record.order_id or order_id,
                    )
                )
        if not reported:
            continue
        if first.amount != record.amount:
            differences.append(
                Difference(
                    "amount",
                    f"Mandate recorded {record.amount} for {record.record_id}; provider refund {first.id} is "
                    f"for {first.amount}",
                    payment_ref,
                    record=record,
                    refund=first,
                    order_id=record.order_id or order_id,
                )
            )
        elif first.status != record.status:
            kind: DifferenceKind = "pending" if first.status == "pending" else "status"
            differences.append(
                Difference(
                    kind,
                    f"Mandate recorded {record.record_id} as {record.status}; provider refund {first.id} is "
                    f"{first.status}",
                    payment_ref,
                    record=record,
                    refund=first,
                    order_id=record.order_id or order_id,
                )
            )
        else:
            matched += 1
    for refund in refunds:
        if refund.id in explained or not _in_window(refund.created, since):
            continue
        claimed = refund.metadata.get(META_INTENT) or refund.metadata.get(META_AUDIT)
        why = (
            f"it names Mandate's {claimed}, which no record has"
            if claimed
            else "no Mandate record explains it (made outside Mandate?)"
        )
        differences.append(
            Difference(
                "unexplained",
                f"provider refund {refund.id} of {refund.amount} ({refund.status}): {why}",
                payment_ref,
                refund=refund,
                order_id=order_id,
            )
        )
    return matched, differences


async def reconcile_payments(
    provider: PaymentProvider,
    payments: Mapping[str, str | None],
    records: Iterable[RecordedRefund],
    *,
    since: datetime | None = None,
) -> Reconciliation:
    """Compare ``records`` with the provider's refunds of every payment in ``payments`` (payment ref -> order id).

    Raises :class:`~server.providers.payments.ProviderInDoubt` when the provider cannot be asked: a partial
    answer is never reported as a clean one.
    """
    report = Reconciliation(provider=provider.name, since=since)
    by_payment: dict[str, list[RecordedRefund]] = {}
    for record in records:
        by_payment.setdefault(record.payment_ref, []).append(record)
        report.records += _in_window(record.created, since)
    for payment_ref in sorted(set(payments) | set(by_payment)):
        report.payments += 1
        order_id = payments.get(payment_ref)
        try:
            refunds = [r async for r in provider.refunds_of(payment_ref)]
        except ProviderRefused as refused:
            report.differences.append(
                Difference(
                    "missing",
                    f"the provider does not know payment {payment_ref} ({refused.message})",
                    payment_ref,
                    order_id=order_id,
                )
            )
            for record in by_payment.get(payment_ref, []):
                if _in_window(record.created, since):
                    report.differences.append(
                        Difference(
                            "missing",
                            f"Mandate recorded refund {record.record_id} of {record.amount} on a payment the "
                            "provider does not know",
                            payment_ref,
                            record=record,
                            order_id=record.order_id or order_id,
                        )
                    )
            continue
        report.provider_refunds += sum(1 for r in refunds if _in_window(r.created, since))
        matched, differences = compare_payment(
            payment_ref, by_payment.get(payment_ref, []), refunds, since=since, order_id=order_id
        )
        report.matched += matched
        report.differences.extend(differences)
    return report


def render(report: Reconciliation, *, where: str) -> str:
    """The report as a person reads it."""
    window = f" since {report.since.isoformat()}" if report.since else ""
    lines = [
        f"Payments reconciliation with {report.provider} ({where}){window}",
        f"  {report.payments} payment(s) checked; {report.records} Mandate refund record(s); "
        f"{report.provider_refunds} refund(s) at the provider; {report.matched} matched exactly",
    ]
    blocking = [d for d in report.differences if d.blocking]
    notes = [d for d in report.differences if not d.blocking]
    if blocking:
        lines.append(f"DIFFERENCES ({len(blocking)}):")
        lines += [_line(d) for d in blocking]
    if notes:
        lines.append(f"Still pending at the provider ({len(notes)}):")
        lines += [_line(d) for d in notes]
    lines.append("Result: " + ("everything agrees" if report.clean else "Mandate and the provider DISAGREE"))
    return "\n".join(lines)


def _line(difference: Difference) -> str:
    order = f" order {difference.order_id}," if difference.order_id else ""
    return f"  {difference.kind:<11} payment {difference.payment_ref},{order} {difference.message}"
