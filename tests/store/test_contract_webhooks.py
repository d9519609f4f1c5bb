"""The store's contract for webhooks: endpoints and their secrets, the
outbox written by the transactions that end batches, claims of deliveries
(leased, fenced, SKIP LOCKED), the delivery log, and disabling an endpoint
that keeps failing; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from overnight.domain.lines import LineError
from overnight.domain.status import BatchStatus
from overnight.domain.webhooks import (
    EVENT_TYPES,
    AttemptResult,
    Delivery,
    EndpointSource,
    EventType,
    SigningSecrets,
    WebhookEndpoint,
)
from overnight.store import Store
from overnight.types import TenantId, WorkerId

from .records import (
    ACME,
    ALICE,
    BOB,
    GLOBEX,
    NOW,
    TTL,
    add_batch,
    claim,
    created_us,
    running_batch,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "whsec_" + "A" * 43 + "="
NEW_SECRET = "whsec_" + "B" * 43 + "="
OK = AttemptResult(200, 12)
DOWN = AttemptResult(None, 3, "failed: connection refused")
DAY = 86_400.0


def endpoint(
    name: str,
    tenant: TenantId = ACME,
    events: tuple[EventType, ...] = EVENT_TYPES,
    **fields: object,
) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=f"we_{name}",
        tenant=tenant,
        url=f"https://{name}.example.com/hook",
        event_types=events,
        created_at=NOW,
        **fields,  # type: ignore[arg-type]
    )


async def add_endpoint(store: Store, name: str, **fields: object) -> WebhookEndpoint:
    made = endpoint(name, **fields)  # type: ignore[arg-type]
    await store.insert_webhook(made, SigningSecrets(SECRET))
    return made


async def cancelled_batch(store: Store, tenant: TenantId = ACME) -> str:
    """A batch that ends (cancelled at once, nobody validating it)."""
    batch = await add_batch(store, tenant)
    ended = await store.request_cancel(tenant, batch.id, NOW)
    assert ended is not None and ended.status is BatchStatus.CANCELLED
    return batch.id


async def claim_all(store: Store, now: float = NOW, worker: WorkerId = ALICE) -> list[Delivery]:
    return await store.claim_deliveries(worker, now, TTL, 100)


async def record(
    store: Store,
    delivery: Delivery,
    result: AttemptResult,
    *,
    retry_at: float | None = None,
    now: float = NOW,
    worker: WorkerId = ALICE,
    disable_after: float = 5 * DAY,
) -> bool:
    return await store.record_attempt(
        delivery, worker, result, retry_at=retry_at, now=now, disable_after=disable_after
    )


# ---------------------------------------------------------------- endpoints


async def test_endpoints_read_back_per_tenant_and_go_with_their_deliveries(store: Store) -> None:
    first, second = await add_endpoint(store, "a"), await add_endpoint(store, "b")
    theirs = await add_endpoint(store, "c", tenant=GLOBEX)
    assert await store.get_webhook(first.id) == first
    assert await store.list_webhooks("acme") == [first, second]
    assert await store.list_webhooks() == [first, second, theirs]
    await cancelled_batch(store)

    assert await store.delete_webhook(first.id) == first
    assert await store.get_webhook(first.id) is None
    assert await store.delete_webhook(first.id) is None
    assert {d.endpoint_id for d in await claim_all(store)} == {second.id}


async def test_config_endpoints_are_synced_keeping_their_health(store: Store) -> None:
    mine = await add_endpoint(store, "mine")
    kept = endpoint("kept", source=EndpointSource.CONFIG)
    gone = endpoint("gone", source=EndpointSource.CONFIG)
    both = [(kept, SigningSecrets(SECRET)), (gone, SigningSecrets(SECRET))]
    await asyncio.gather(*(store.sync_config_webhooks(both) for _ in range(3)))  # replicas
    assert await store.list_webhooks() == [gone, kept, mine]  # by creation, then id
    await cancelled_batch(store)
    failing = next(d for d in await claim_all(store) if d.endpoint_id == kept.id)
    await record(store, failing, DOWN, retry_at=NOW + 1)

    changed = dataclasses.replace(kept, event_types=(EventType.FAILED,), created_at=NOW + 50)
    await store.sync_config_webhooks([(changed, SigningSecrets(NEW_SECRET, SECRET))])
    assert await store.list_webhooks() == [
        dataclasses.replace(changed, created_at=NOW, failing_since=NOW),
        mine,
    ]
    redo = await claim_all(store, now=NOW + 1)
    assert [(d.endpoint_id, d.secrets) for d in redo] == [(kept.id, (NEW_SECRET, SECRET))]


async def test_a_rotated_secret_signs_beside_the_new_one_until_the_overlap_ends(
    store: Store,
) -> None:
    made = await add_endpoint(store, "a")
    rotated = await store.rotate_webhook_secret(made.id, NEW_SECRET, previous_until=NOW + 100)
    assert rotated == dataclasses.replace(made, rotating_until=NOW + 100)
    assert await store.rotate_webhook_secret("we_none", NEW_SECRET, previous_until=NOW) is None
    await cancelled_batch(store)
    (during,) = await claim_all(store)
    assert during.secrets == (NEW_SECRET, SECRET)
    await record(store, during, DOWN, retry_at=NOW + 200)
    (after,) = await claim_all(store, now=NOW + 200)
    assert after.secrets == (NEW_SECRET,)


# ------------------------------------------------------------------ outbox


async def test_an_ended_batch_records_its_event_for_each_listening_endpoint(store: Store) -> None:
    every = await add_endpoint(store, "every")
    await add_endpoint(store, "only-failed", events=(EventType.FAILED,))
    await add_endpoint(store, "off", disabled_at=NOW, disabled_reason="off")
    await add_endpoint(store, "theirs", tenant=GLOBEX)
    batch_id = await cancelled_batch(store)

    (delivery,) = await claim_all(store)
    assert (delivery.endpoint_id, delivery.tenant, delivery.batch_id) == (every.id, ACME, batch_id)
    assert (delivery.event_type, delivery.attempt) == (EventType.CANCELLED, 1)
    assert (delivery.url, delivery.secrets) == (every.url, (SECRET,))
    body = json.loads(delivery.body)
    assert body == {
        "id": delivery.event_id,
        "object": "event",
        "type": "batch.cancelled",
        "created_at": NOW,
        "data": {"id": batch_id},
    }
    assert delivery.event_id.startswith("evt_") and delivery.created_at == NOW


async def test_every_terminal_edge_records_its_event_and_a_refused_move_none(
    store: Store,
) -> None:
    await add_endpoint(store, "every")
    cancelled_at_once = await cancelled_batch(store)

    invalid = await add_batch(store)
    await store.claim_validation(ALICE, NOW, TTL)
    errors = [LineError("invalid_json", "bad", line=1)]
    assert await store.fail_batch(invalid.id, BOB, errors, NOW) is None  # not BOB's: no event
    assert await store.fail_batch(invalid.id, ALICE, errors, NOW) is BatchStatus.FAILED

    drained = await add_batch(store)
    await store.claim_validation(ALICE, NOW, TTL)
    await store.request_cancel(ACME, drained.id, NOW)
    status = await store.start_batch(
        drained.id, ALICE, requests=1, model="m", chunk_ranges=[], now=NOW
    )
    assert status is BatchStatus.CANCELLED

    finished: dict[str, BatchStatus] = {}
    for final in (BatchStatus.COMPLETED, BatchStatus.EXPIRED):
        batch = await running_batch(store, chunks=1)
        work = await claim(store)
        await store.record_progress(
            work.chunk.key, ALICE, work.chunk.attempts, work.chunk.tally, work.chunk.tally,
            done=True, now=NOW,
        )  # fmt: skip
        assert await store.claim_finalization(BOB, NOW, TTL) is not None
        finish = dict(
            status=final, output=None, errors=None, never_ran=0, now=NOW, created_us=created_us()
        )
        assert not await store.finish_batch(batch.id, ALICE, **finish)  # type: ignore[arg-type]
        assert await store.finish_batch(batch.id, BOB, **finish)  # type: ignore[arg-type]
        finished[batch.id] = final

    events = {d.batch_id: d.event_type for d in await claim_all(store)}
    assert events == {
        cancelled_at_once: EventType.CANCELLED,
        invalid.id: EventType.FAILED,
        drained.id: EventType.CANCELLED,
        **{batch_id: EventType(f"batch.{s.value}") for batch_id, s in finished.items()},
    }


async def test_a_together_batch_event_shows_the_id_as_together_does(store: Store) -> None:
    from overnight.domain.dialects import TOGETHER

    await add_endpoint(store, "every")
    batch = dataclasses.replace(
        (await add_batch(store)), id=f"batch_{'0123456789abcdef' * 2}", dialect=TOGETHER
    )
    await store.insert_batch(batch, created_us())
    await store.request_cancel(ACME, batch.id, NOW)
    shown = {json.loads(d.body)["data"]["id"] for d in await claim_all(store)}
    assert "01234567-89ab-cdef-0123-456789abcdef" in shown


# ----------------------------------------------------------- claims and log


async def test_a_claim_holds_until_it_lapses_and_a_late_attempt_moves_nothing(
    store: Store,
) -> None:
    await add_endpoint(store, "every")
    await cancelled_batch(store)
    (first,) = await claim_all(store)
    assert await claim_all(store, worker=BOB) == []
    (second,) = await claim_all(store, now=NOW + TTL + 1, worker=BOB)
    assert (second.event_id, second.attempt) == (first.event_id, 2)

    await record(store, first, OK, now=NOW + TTL + 2)  # ALICE's claim lapsed: logged only
    await record(store, second, DOWN, retry_at=NOW + 100, worker=BOB, now=NOW + TTL + 3)
    (third,) = await claim_all(store, now=NOW + 100)
    assert third.attempt == 3
    log = await store.webhook_attempts(first.endpoint_id)
    assert [(a.attempt, a.status_code, a.succeeded) for a in log] == [
        (2, None, False),
        (1, 200, True),
    ]


async def test_a_failing_delivery_is_retried_at_its_time_then_given_up(store: Store) -> None:
    made = await add_endpoint(store, "every")
    await cancelled_batch(store)
    (delivery,) = await claim_all(store)
    await record(store, delivery, AttemptResult(503, 40), retry_at=NOW + 10)
    assert await claim_all(store, now=NOW + 9) == []
    (again,) = await claim_all(store, now=NOW + 10)
    await record(store, again, DOWN, retry_at=None, now=NOW + 10)
    assert await claim_all(store, now=NOW + DAY) == []

    log = await store.webhook_attempts(made.id)
    assert [(a.attempt, a.status_code, a.latency_ms, a.error) for a in log] == [
        (2, None, 3, "failed: connection refused"),
        (1, 503, 40, None),
    ]
    assert log[0].at == NOW + 10 and log[0].event_id == delivery.event_id
    older = await store.webhook_attempts(made.id, after=log[0].id, limit=5)
    assert older == log[1:]


async def test_an_endpoint_failing_for_long_enough_is_disabled_until_enabled(
    store: Store,
) -> None:
    made = await add_endpoint(store, "flaky")
    await cancelled_batch(store)
    (delivery,) = await claim_all(store)
    assert not await record(store, delivery, DOWN, retry_at=NOW + 50, disable_after=100)
    (again,) = await claim_all(store, now=NOW + 50)
    assert not await record(store, again, DOWN, retry_at=NOW + 100, now=NOW + 50, disable_after=100)
    (last,) = await claim_all(store, now=NOW + 100)
    assert await record(store, last, DOWN, retry_at=NOW + 150, now=NOW + 100, disable_after=100)

    disabled = await store.get_webhook(made.id)
    assert disabled is not None and not disabled.enabled
    assert (disabled.failing_since, disabled.disabled_at) == (NOW, NOW + 100)
    assert disabled.disabled_reason and "connection refused" in disabled.disabled_reason
    await cancelled_batch(store)  # no event for a disabled endpoint
    assert await claim_all(store, now=NOW + 150) == []  # and what is pending waits

    enabled = await store.enable_webhook(made.id)
    assert enabled == made
    (resumed,) = await claim_all(store, now=NOW + 150)
    assert resumed.event_id == delivery.event_id
    await record(store, resumed, OK, now=NOW + 150)
    assert (await store.get_webhook(made.id)) == made


async def test_released_leases_hand_claims_back_at_once(store: Store) -> None:
    await add_endpoint(store, "every")
    await cancelled_batch(store)
    await claim_all(store)
    await store.release_leases(ALICE)
    (taken,) = await claim_all(store, worker=BOB)
    assert taken.attempt == 2
    await store.release_all_leases()
    assert [d.attempt for d in await claim_all(store)] == [3]


async def test_many_claimers_make_each_attempt_once(store: Store) -> None:
    """On PostgreSQL the claims run at once (FOR UPDATE SKIP LOCKED); on
    SQLite they queue for the writer. Either way no delivery is claimed
    twice and none is left."""
    for n in range(40):
        await add_endpoint(store, f"e{n:02}")
    await cancelled_batch(store)

    async def claimer(n: int) -> list[tuple[str, str]]:
        taken: list[tuple[str, str]] = []
        while batch := await store.claim_deliveries(ALICE, NOW, TTL, 3):
            taken += [(d.event_id, d.endpoint_id) for d in batch]
        return taken

    claimed = [key for taken in await asyncio.gather(*map(claimer, range(8))) for key in taken]
    assert len(claimed) == 40 and len(set(claimed)) == 40


async def test_old_ended_deliveries_and_log_lines_are_pruned(store: Store) -> None:
    made = await add_endpoint(store, "every")
    await cancelled_batch(store)
    (delivery,) = await claim_all(store)
    await record(store, delivery, OK)
    assert await store.delete_old_webhook_records(NOW) == 0
    assert await store.delete_old_webhook_records(NOW + 1) == 2
    assert await store.webhook_attempts(made.id) == []
