"""The store's contract for batches: created within quotas, read and listed
per tenant, cancelled and expired, and moved through validation and
finalisation by the worker that holds their lease; on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses

import pytest

from overnight.domain.chunk import ChunkStatus, Tally
from overnight.domain.files import FilePurpose
from overnight.domain.lines import LineError
from overnight.domain.quotas import QuotaOverrides, Quotas
from overnight.domain.status import BatchStatus, StopReason
from overnight.errors import Conflict, LimitExceeded
from overnight.store import Store

from .records import (
    ACME,
    ALICE,
    BOB,
    GLOBEX,
    NOW,
    TTL,
    add_batch,
    add_file,
    batch_of,
    claim,
    created_us,
    file_record,
    ranges,
    running_batch,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


# ----------------------------------------------------------- the API side


async def test_a_batch_reads_back_as_stored_to_its_tenant_only(store: Store) -> None:
    batch = await add_batch(store, priority=3, keep_output=3600)
    assert await store.get_batch(ACME, batch.id) == batch
    assert await store.get_batch(None, batch.id) == batch
    assert await store.get_batch(GLOBEX, batch.id) is None


async def test_batches_page_by_creation_with_cursors(store: Store) -> None:
    ids = [(await add_batch(store)).id for _ in range(3)]
    theirs = await add_batch(store, GLOBEX)

    async def page(after: str | None, newest_first: bool = True) -> list[str] | None:
        found = await store.list_batches(ACME, after=after, limit=2, newest_first=newest_first)
        return None if found is None else [b.id for b in found]

    assert await page(None) == [ids[2], ids[1]]
    assert await page(ids[1]) == [ids[0]]
    assert await page(None, newest_first=False) == [ids[0], ids[1]]
    assert await page(theirs.id) is None
    assert await page("batch_missing") is None
    everyone = await store.list_batches(None, after=None, limit=10)
    assert everyone is not None and len(everyone) == 4


async def test_a_new_batch_is_refused_past_the_pending_batches_quota(store: Store) -> None:
    quotas = Quotas(max_pending_batches=1, max_enqueued_requests=1000)
    first = batch_of(await add_file(store))
    await store.insert_batch(first, created_us(), default_quotas=quotas)
    second = batch_of(await add_file(store))
    with pytest.raises(LimitExceeded) as refused:
        await store.insert_batch(second, created_us(), default_quotas=quotas)
    assert refused.value.code == "too_many_pending_batches"
    assert await store.get_batch(None, second.id) is None
    await store.insert_batch(
        batch_of(await add_file(store, GLOBEX)), created_us(), default_quotas=quotas
    )

    await store.set_quota_overrides(ACME, QuotaOverrides(max_pending_batches=2), NOW)
    await store.insert_batch(second, created_us(), default_quotas=quotas)


async def test_a_new_batch_is_refused_past_the_enqueued_requests_quota(store: Store) -> None:
    quotas = Quotas(max_pending_batches=10, max_enqueued_requests=5)
    first = await add_file(store, line_count=3)  # until validated, its lines stand for requests
    await store.insert_batch(batch_of(first), created_us(), default_quotas=quotas, adding=3)
    with pytest.raises(LimitExceeded) as refused:
        await store.insert_batch(
            batch_of(await add_file(store, line_count=3)),
            created_us(),
            default_quotas=quotas,
            adding=3,
        )
    assert refused.value.code == "too_many_enqueued_requests"


async def test_cancelling_a_batch_nobody_validates_ends_it_at_once(store: Store) -> None:
    batch = await add_batch(store)
    assert await store.request_cancel(GLOBEX, batch.id, NOW) is None
    cancelled = await store.request_cancel(ACME, batch.id, NOW)
    assert cancelled is not None
    assert (cancelled.status, cancelled.stop_reason) == (
        BatchStatus.CANCELLED,
        StopReason.CANCELLED,
    )
    assert cancelled.cancelled_at == NOW
    assert await store.request_cancel(ACME, batch.id, NOW + 1) == cancelled  # again: no change
    assert await store.request_cancel(ACME, "batch_missing", NOW) is None


async def test_cancelling_a_running_batch_skips_what_has_not_started(store: Store) -> None:
    batch = await running_batch(store, chunks=3)
    work = await claim(store)
    cancelling = await store.request_cancel(ACME, batch.id, NOW)
    assert cancelling is not None and cancelling.status is BatchStatus.CANCELLING
    statuses = [c.status for c in await store.chunks_of(batch.id)]
    assert statuses == [ChunkStatus.RUNNING, ChunkStatus.SKIPPED, ChunkStatus.SKIPPED]
    assert await store.claim_chunk(BOB, NOW, TTL) is None
    assert await store.stop_reasons([batch.id]) == {batch.id: StopReason.CANCELLED}

    finalizing = await store.record_progress(
        work.chunk.key, ALICE, work.chunk.attempts, Tally(completed=10), Tally(), done=True, now=NOW
    )
    assert finalizing is True  # edge f: drained
    after = await store.get_batch(ACME, batch.id)
    assert after is not None and after.status is BatchStatus.FINALIZING
    assert await store.request_cancel(ACME, batch.id, NOW) == after  # already on its way


async def test_a_batch_that_ended_cannot_be_cancelled(store: Store) -> None:
    batch = await add_batch(store)
    await store.claim_validation(ALICE, NOW, TTL)
    await store.fail_batch(batch.id, ALICE, [LineError("invalid_json", "bad", line=1)], NOW)
    with pytest.raises(Conflict) as refused:
        await store.request_cancel(ACME, batch.id, NOW)
    assert refused.value.code == "batch_not_cancellable"


# -------------------------------------------------------- the runner side


async def test_a_validation_lease_is_exclusive_until_it_lapses(store: Store) -> None:
    first = await add_batch(store)
    second = await add_batch(store)
    held = await store.claim_validation(ALICE, NOW, TTL)
    assert held is not None and (held.id, held.crashes) == (first.id, 0)
    other = await store.claim_validation(BOB, NOW, TTL)
    assert other is not None and other.id == second.id  # the oldest one nobody holds
    assert await store.claim_validation(BOB, NOW, TTL) is None

    taken_over = await store.claim_validation(BOB, NOW + TTL + 1, TTL)
    assert taken_over is not None and taken_over.id == first.id
    assert taken_over.crashes == 1  # its holder went quiet: a crash


async def test_a_valid_batch_starts_with_its_chunks(store: Store) -> None:
    batch = await add_batch(store)
    await store.claim_validation(ALICE, NOW, TTL)
    lost = await store.start_batch(
        batch.id, BOB, requests=20, model="m", chunk_ranges=ranges(2), now=NOW
    )
    assert lost is None  # BOB holds no lease on it
    started = await store.start_batch(
        batch.id, ALICE, requests=20, model="m", chunk_ranges=ranges(2), now=NOW + 1
    )
    assert started is BatchStatus.IN_PROGRESS
    stored = await store.get_batch(ACME, batch.id)
    assert stored is not None
    assert (stored.status, stored.model, stored.request_counts.total) == (
        BatchStatus.IN_PROGRESS,
        "m",
        20,
    )
    assert stored.in_progress_at == NOW + 1
    chunks = await store.chunks_of(batch.id)
    assert [(c.index, c.start, c.end, c.requests, c.status) for c in chunks] == [
        (0, 0, 1000, 10, ChunkStatus.PENDING),
        (1, 1000, 2000, 10, ChunkStatus.PENDING),
    ]
    assert await store.claim_validation(BOB, NOW + TTL + 1, TTL) is None  # lease handed back


async def test_a_batch_cancelled_during_validation_ends_when_validation_does(store: Store) -> None:
    batch = await add_batch(store)
    await store.claim_validation(ALICE, NOW, TTL)
    cancelling = await store.request_cancel(ACME, batch.id, NOW)
    assert cancelling is not None and cancelling.status is BatchStatus.CANCELLING
    status = await store.start_batch(
        batch.id, ALICE, requests=20, model="m", chunk_ranges=ranges(2), now=NOW
    )
    assert status is BatchStatus.CANCELLED
    assert await store.chunks_of(batch.id) == []


async def test_a_batch_expired_during_validation_goes_straight_to_finalizing(store: Store) -> None:
    batch = await add_batch(store, window=60)
    await store.claim_validation(ALICE, NOW, TTL)
    assert await store.expire_due(NOW + 59) == []
    assert await store.expire_due(NOW + 60) == [batch.id]
    assert await store.expire_due(NOW + 61) == []  # once
    status = await store.start_batch(
        batch.id, ALICE, requests=20, model="m", chunk_ranges=ranges(2), now=NOW + 61
    )
    assert status is BatchStatus.FINALIZING
    assert {c.status for c in await store.chunks_of(batch.id)} == {ChunkStatus.SKIPPED}
    assert await store.stop_reasons([batch.id]) == {batch.id: StopReason.EXPIRED}


async def test_expiry_skips_a_running_batchs_pending_chunks(store: Store) -> None:
    batch = await running_batch(store, chunks=2, window=60)
    await claim(store)
    assert await store.expire_due(NOW + 60) == [batch.id]
    statuses = [c.status for c in await store.chunks_of(batch.id)]
    assert statuses == [ChunkStatus.RUNNING, ChunkStatus.SKIPPED]


async def test_an_invalid_file_fails_its_batch_with_the_errors(store: Store) -> None:
    batch = await add_batch(store)
    await store.claim_validation(ALICE, NOW, TTL)
    errors = [LineError("invalid_json", "Line 1 is not JSON.", line=1)]
    assert await store.fail_batch(batch.id, BOB, errors, NOW) is None
    assert await store.fail_batch(batch.id, ALICE, errors, NOW) is BatchStatus.FAILED
    failed = await store.get_batch(ACME, batch.id)
    assert failed is not None
    assert (failed.status, failed.errors, failed.failed_at) == (
        BatchStatus.FAILED,
        tuple(errors),
        NOW,
    )


async def test_a_cancelled_batch_whose_file_is_invalid_ends_cancelled(store: Store) -> None:
    batch = await add_batch(store)
    await store.claim_validation(ALICE, NOW, TTL)
    await store.request_cancel(ACME, batch.id, NOW)
    errors = [LineError("invalid_json", "bad", line=1)]
    assert await store.fail_batch(batch.id, ALICE, errors, NOW) is BatchStatus.CANCELLED


async def test_a_released_batch_is_claimable_again_counting_only_crashes(store: Store) -> None:
    batch = await add_batch(store)
    await store.claim_validation(ALICE, NOW, TTL)
    await store.release_batch(batch.id, BOB)  # not BOB's: nothing happens
    assert await store.claim_validation(BOB, NOW, TTL) is None
    await store.release_batch(batch.id, ALICE)
    again = await store.claim_validation(BOB, NOW, TTL)
    assert again is not None and again.crashes == 0
    await store.release_batch(batch.id, BOB, crashed=True)
    third = await store.claim_validation(ALICE, NOW, TTL)
    assert third is not None and third.crashes == 1


async def test_a_drained_batch_is_finished_once_by_its_finaliser(store: Store) -> None:
    batch = await running_batch(store, chunks=1, keep_output=600)
    work = await claim(store)
    tally = Tally(completed=9, failed=1)
    drained = await store.record_progress(
        work.chunk.key, ALICE, work.chunk.attempts, tally, Tally(), done=True, now=NOW + 5
    )
    assert drained is True
    assert await store.claim_validation(BOB, NOW, TTL) is None
    held = await store.claim_finalization(BOB, NOW, TTL)
    assert held is not None and held.id == batch.id and held.status is BatchStatus.FINALIZING
    assert held.finalizing_at == NOW + 5
    assert await store.claim_finalization(ALICE, NOW, TTL) is None

    output = file_record(purpose=FilePurpose.BATCH_OUTPUT)
    finish = dict(
        status=BatchStatus.COMPLETED,
        output=output,
        errors=None,
        never_ran=0,
        now=NOW + 9,
        created_us=created_us(),
    )
    assert not await store.finish_batch(batch.id, ALICE, **finish)
    assert await store.finish_batch(batch.id, BOB, **finish)
    assert not await store.finish_batch(batch.id, BOB, **finish)

    done = await store.get_batch(ACME, batch.id)
    assert done is not None
    assert (done.status, done.completed_at, done.output_file_id, done.error_file_id) == (
        BatchStatus.COMPLETED,
        NOW + 9,
        output.id,
        None,
    )
    assert (done.request_counts.completed, done.request_counts.failed) == (9, 1)
    kept = await store.get_file(ACME, output.id)
    assert kept == dataclasses.replace(output, expires_at=output.created_at + 600)


async def test_lines_that_never_ran_join_the_failed_count(store: Store) -> None:
    batch = await running_batch(store, chunks=2)
    work = await claim(store)
    await store.request_cancel(ACME, batch.id, NOW)
    await store.record_progress(
        work.chunk.key, ALICE, work.chunk.attempts, Tally(completed=10), Tally(), done=True, now=NOW
    )
    assert await store.claim_finalization(BOB, NOW, TTL) is not None
    errors = file_record(purpose=FilePurpose.BATCH_OUTPUT)
    assert await store.finish_batch(
        batch.id,
        BOB,
        status=BatchStatus.CANCELLED,
        output=None,
        errors=errors,
        never_ran=10,
        now=NOW,
        created_us=created_us(),
    )
    ended = await store.get_batch(ACME, batch.id)
    assert ended is not None and ended.status is BatchStatus.CANCELLED
    counts = ended.request_counts
    assert (counts.total, counts.completed, counts.failed) == (20, 10, 10)
    assert await store.get_file(ACME, errors.id) == errors


async def test_lines_a_stop_kept_from_running_are_counted_apart(store: Store) -> None:
    """`stopped` is the part of `failed` a cancel or expiry kept from
    running: moved by progress like the other counters, and by the lines
    of skipped chunks at the end (those that still read as requests)."""
    batch = await running_batch(store, chunks=2)
    work = await claim(store)
    await store.request_cancel(ACME, batch.id, NOW)
    ran = Tally(completed=4, failed=6, stopped=5)
    await store.record_progress(
        work.chunk.key, ALICE, work.chunk.attempts, ran, Tally(), done=True, now=NOW
    )
    assert await store.claim_finalization(BOB, NOW, TTL) is not None
    assert await store.finish_batch(
        batch.id,
        BOB,
        status=BatchStatus.CANCELLED,
        output=None,
        errors=None,
        never_ran=10,
        stopped=9,
        now=NOW,
        created_us=created_us(),
    )
    ended = await store.get_batch(ACME, batch.id)
    assert ended is not None
    counts = ended.request_counts
    assert (counts.completed, counts.failed, counts.stopped) == (4, 16, 14)
    chunks = await store.chunks_of(batch.id)
    assert [c.tally.stopped for c in chunks] == [5, 0]


async def test_only_an_ended_batch_is_deleted_with_the_files_named(store: Store) -> None:
    running = await running_batch(store, chunks=1)
    assert await store.delete_batch(ACME, running.id, []) is None
    assert await store.get_batch(ACME, running.id) is not None

    batch = await add_batch(store)
    await store.request_cancel(ACME, batch.id, NOW)  # nobody validated it: ended at once
    results = await add_file(store, purpose=FilePurpose.BATCH_OUTPUT)
    kept = await add_file(store)
    assert await store.delete_batch(GLOBEX, batch.id, [results.id]) is None
    deleted = await store.delete_batch(ACME, batch.id, [results.id, batch.input_file_id])
    assert deleted is not None
    assert sorted(r.id for r in deleted) == sorted([results.id, batch.input_file_id])
    assert await store.get_batch(None, batch.id) is None
    assert await store.get_file(None, results.id) is None
    assert await store.get_file(None, kept.id) == kept
    assert await store.delete_batch(ACME, batch.id, []) is None


async def test_a_finalisation_that_keeps_crashing_fails_the_batch(store: Store) -> None:
    batch = await running_batch(store, chunks=1)
    work = await claim(store)
    await store.record_progress(
        work.chunk.key, ALICE, work.chunk.attempts, Tally(completed=10), Tally(), done=True, now=NOW
    )
    await store.claim_finalization(BOB, NOW, TTL)
    failure = [LineError("finalization_failed", "gave up")]
    assert await store.fail_batch(batch.id, BOB, failure, NOW) is BatchStatus.FAILED  # edge k


async def test_batches_are_counted_by_status(store: Store) -> None:
    await running_batch(store)
    await add_batch(store)
    await add_batch(store, GLOBEX)
    assert await store.count_batches_by_status() == {"validating": 2, "in_progress": 1}
