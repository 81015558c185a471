"""The reconciler (docs/effects.md, "In doubt: never twice, never lost"): resolves every intent left ``started``
past its lease, asking the provider what happened.

Any replica runs it as upkeep (:func:`reconcile_forever`, started by :meth:`server.app.Mandate.upkeep`: a round
every interval, and rounds back to back while full batches resolve, so a backlog after an outage drains), and
``mandate effects reconcile`` runs one round on demand. A round takes up due intents for itself
(:func:`server.effects.intents.claim_due`: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, and a new lease, renewed for
an intent the round reaches late or left to the reconciler that took it up meanwhile, so two replicas never work
on one intent at once), then for each (``effects.reconcile_concurrency`` at a time, each in its own transaction)
asks the tool's ``find`` (by the metadata naming the intent: localstripe ignores idempotency
keys, so the lookup must stand on its own):

- found: the outcome is written as if the call had answered (:func:`server.effects.outcome.succeed`);
- definitely absent (the provider answered, and the lease, longer than the provider's timeout, has passed, so the
  call can no longer be in flight): failed, and the reservation released (:func:`server.effects.outcome.fail`).
  A 404 for what the call would have changed counts as absent only while the provider still shows an object it
  is known to have made (:func:`_absence_unproven`: a key for another account answers 404 for everything);
- the provider unreachable, or any doubt about its answer: the intent stays in doubt, with the reason noted, and a
  later round tries again. A budget never gives back an amount in doubt.

Every resolution is an audit record, written by :mod:`server.effects.outcome` in the resolution's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import anyio

from server.effects import faults, intents, outcome
from server.effects.errors import describe, refusal_of
from server.effects.models import COMPLETED, CONFLICT, FAILED, STARTED, Intent
from server.toolkit import External

if TYPE_CHECKING:
    from server.callpath.core import CallPathCore

logger = logging.getLogger("server.effects")

RESOLVED = (COMPLETED, FAILED, CONFLICT)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a round did with one intent: ``completed``, ``failed``, ``conflict`` or ``in_doubt`` (and why)."""

    intent_id: str
    tool: str
    status: str
    detail: str = ""
    object_id: str | None = None


async def reconcile_due(
    core: CallPathCore, *, now: datetime | None = None, limit: int | None = None
) -> list[Resolution]:
    """One round: take up the intents past their lease and resolve each one that the provider can answer for."""
    at = now or core.clock()
    lease = timedelta(seconds=core.effects.lease_seconds)
    taken = await intents.claim_due(core.db, at, lease=lease, limit=limit or core.effects.reconcile_batch)
    resolutions: list[Resolution] = [Resolution(intent.id, intent.tool, "in_doubt") for intent in taken]
    limiter = anyio.CapacityLimiter(core.effects.reconcile_concurrency)

    async def one(index: int, intent: Intent) -> None:
        async with limiter:
            try:
                held = await _still_held(core, intent, lease)
                if held is None:
                    resolutions[index] = Resolution(intent.id, intent.tool, "in_doubt", TAKEN_ELSEWHERE)
                    return
                resolutions[index] = await resolve(core, held)
            except Exception as exc:  # one intent that cannot be resolved does not stop the others
                logger.exception("intent %s could not be reconciled; it stays in doubt", intent.id)
                resolutions[index] = await _still_in_doubt(core, intent, describe(exc))

    async with anyio.create_task_group() as group:  # each waits mostly on its provider lookup
        for index, intent in enumerate(taken):
            group.start_soon(one, index, intent)
    return resolutions


TAKEN_ELSEWHERE = "taken up by another reconciler while this round worked on others"

LOOKUP_SHARE = 0.8
"""A lookup may take this share of the lease; the rest is left for writing what it learned."""


async def _still_held(core: CallPathCore, intent: Intent, lease: timedelta) -> Intent | None:
    """``intent`` with enough of its claim left to be resolved within it, renewed when the round reached it late
    (its lookups ahead of it took time); ``None`` when the claim ran out and another reconciler took it up."""
    left = intent.lease_until - core.clock()
    if left >= lease * (LOOKUP_SHARE + 0.1):
        return intent
    return await intents.renew_claim(core.db, intent, core.clock(), lease=lease)


async def _absence_unproven(core: CallPathCore, intent: Intent, external: External, provider: object) -> str | None:
    """Why a provider's "no such object" (404) for ``intent`` proves nothing, or ``None`` when it does.

    A 404 for the thing a request would have changed (the payment a refund is of) says the request cannot have
    happened, provided the provider is the one the request was sent to. A payments key changed to another account
    or mode answers 404 for everything made before it, and reading that as "never happened" would give back the
    budget and the order's hold of refunds that were made. So the provider must still show an object it is known
    to have made before this request was written: the one of the latest intent of this tool it completed that was
    written earlier (a refund completed since, with a new key, would vouch only for the new key). Only then is the
    404 taken at its word. What this cannot tell apart: a key changed away and back again around this request, with
    nothing completed in between (docs/decisions.md)."""
    known = await intents.latest_completed_before(core.db, intent)
    if known is None:
        return (
            f"the {intent.provider_name} provider answered 404 (no such object), and no {intent.tool} it completed "
            "before this one can be looked up to show that its key still reaches the account and mode of this request"
        )
    plan = external.plan.model_validate_json(known.plan)
    effect_call = intents.effect_call(known)
    try:
        with anyio.fail_after(core.effects.lease_seconds * LOOKUP_SHARE):
            seen = await external.find(plan, provider, effect_call)
    except Exception as exc:  # noqa: BLE001 - whatever the reason, the 404 is not confirmed
        seen, why = None, describe(exc)
    else:
        why = "it is not found"
    if seen is None:
        return (
            f"the {intent.provider_name} provider answered 404 (no such object), and {known.provider_object_id}, "
            f"which it made for intent {known.id}, cannot be seen there either ({why}): is the payments key for "
            "the account and mode these requests were sent to?"
        )
    return None


async def resolve(core: CallPathCore, intent: Intent) -> Resolution:
    """Ask the provider about one intent this reconciler has taken up, and write what it learns."""
    try:
        external = outcome.external_of(core, intent.tool)
    except outcome.ToolGone as exc:
        return await _still_in_doubt(core, intent, str(exc))
    provider = core.providers.get(external.provider)
    if provider is None:
        return await _still_in_doubt(core, intent, f"no {external.provider} provider is configured here")
    plan = external.plan.model_validate_json(intent.plan)
    effect_call = intents.effect_call(intent)
    try:
        with anyio.fail_after(core.effects.lease_seconds * LOOKUP_SHARE):
            found = await external.find(plan, provider, effect_call)
    except Exception as exc:  # noqa: BLE001 - every failure to learn the outcome keeps the intent in doubt
        # Only "the thing it would have changed does not exist" (404) proves absence, and only from a provider that
        # still shows what it made (:func:`_absence_unproven`); a refused key (401, 403) proves nothing about the
        # refund, so the intent stays in doubt.
        if refusal_of(exc) is None or getattr(exc, "http_status", None) != 404:
            return await _still_in_doubt(core, intent, describe(exc))
        # a second lookup follows: the claim is renewed first, so that it covers that one too
        lease = timedelta(seconds=core.effects.lease_seconds)
        if await intents.renew_claim(core.db, intent, core.clock(), lease=lease) is None:
            return Resolution(intent.id, intent.tool, "in_doubt", TAKEN_ELSEWHERE)
        unproven = await _absence_unproven(core, intent, external, provider)
        if unproven is not None:
            return await _still_in_doubt(core, intent, unproven)
        found = None
    faults.reach("after_provider_find")
    try:
        if found is None:
            message = (
                f"The {intent.provider_name} provider holds no object for this request, and the request can no "
                "longer be in flight, so it never happened there; nothing was spent."
            )
            await outcome.fail(
                core,
                intent.id,
                code="effect_not_made",
                message=message,
                provider_code=None,
                resolver=outcome.RESOLVED_BY_RECONCILER,
            )
        elif found.status in ("failed", "canceled"):
            message = f"The {intent.provider_name} provider did not carry this out ({found.id} ended {found.status})."
            await outcome.fail(
                core,
                intent.id,
                code=f"provider_{found.status}",
                message=message,
                provider_code=found.status,
                resolver=outcome.RESOLVED_BY_RECONCILER,
            )
        else:
            await outcome.succeed(core, intent.id, found, resolver=outcome.RESOLVED_BY_RECONCILER)
    except Exception as exc:
        logger.exception("the resolution of intent %s could not be recorded; it stays in doubt", intent.id)
        return await _still_in_doubt(core, intent, describe(exc))
    async with core.db.session() as session:
        resolved = await intents.get(session, intent.id)
    status = resolved.status if resolved is not None else STARTED
    object_id = resolved.provider_object_id if resolved is not None else None
    return Resolution(intent.id, intent.tool, status, resolved.error_code or "" if resolved else "", object_id)


async def _still_in_doubt(core: CallPathCore, intent: Intent, why: str) -> Resolution:
    logger.warning("intent %s stays in doubt: %s", intent.id, why)
    try:
        await intents.note_error(core.db, intent.id, why)
    except Exception:
        logger.exception("could not note why intent %s is in doubt", intent.id)
    return Resolution(intent.id, intent.tool, "in_doubt", why)


def pause_after(taken: Sequence[Resolution], batch: int, interval: float) -> float:
    """Seconds to wait before the next round: none after a full batch that resolved something (a backlog, after
    an outage, drains at the provider's pace rather than one batch per interval), else the interval. A full batch
    that resolved nothing (the provider still unreachable) waits too: those intents' leases moved on, so the next
    round would only ask the same provider about the next batch at once."""
    if len(taken) >= batch and any(resolution.status in RESOLVED for resolution in taken):
        return 0.0
    return interval


async def reconcile_forever(core: CallPathCore, *, sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> None:
    """Upkeep: rounds every ``effects.reconcile_interval_seconds``, back to back while a backlog drains
    (:func:`pause_after`); a failing round is logged, never fatal."""
    while True:
        taken: list[Resolution] = []
        try:
            taken = await reconcile_due(core)
        except Exception:
            logger.exception("a round of the effects reconciler failed; the next one runs as usual")
        await sleep(pause_after(taken, core.effects.reconcile_batch, core.effects.reconcile_interval_seconds))
