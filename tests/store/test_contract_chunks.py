"""The store's contract for chunks and workers: claims with leases, the
attempt as a fencing token (a stale attempt writes nothing), progress,
hand-backs, crash counts, heartbeats; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from overnight.domain.batch import Usage
from overnight.domain.chunk import ChunkStatus, Tally
from overnight.domain.dialects import OPENAI
from overnight.domain.status import BatchStatus
from overnight.store import Store

from .records import ACME, ALICE, BOB, GLOBEX, NOW, TTL, add_batch, claim, running_batch

pytestmark = pytest.mark.asyncio(loop_scope="module")

LAPSED = NOW + TTL + 1
SOME = Tally(completed=3, failed=1, usage=Usage(input_tokens=30, output_tokens=12))
MORE = Tally(completed=7, failed=1, usage=Usage(input_tokens=70, output_tokens=28))


async def test_a_claim_leases_the_next_chunk_with_what_running_it_needs(store: Store) -> None:
    batch = await running_batch(store, chunks=2)
    first = await claim(store)
    assert (first.chunk.key.batch_id, first.chunk.index) == (batch.id, 0)
    assert (first.chunk.status, first.chunk.attempts, first.chunk.crashes) == (
        ChunkStatus.RUNNING,
        1,
        0,
    )
    input_file = await store.get_file(None, batch.input_file_id)
    assert input_file is not None
    assert (first.tenant, first.endpoint, first.dialect, first.input_blob_key) == (
        ACME,
        batch.endpoint,
        OPENAI,
        input_file.blob_key,
    )
    assert first.stop_reason is None
    second = await claim(store, BOB)
    assert second.chunk.index == 1
    assert await store.claim_chunk(BOB, NOW, TTL) is None


async def test_chunks_cut_from_a_grouped_copy_are_read_from_it(store: Store) -> None:
    batch = await running_batch(store, chunks=2, grouped_blob_key="grouped/some.jsonl")
    stored = await store.get_batch(None, batch.id)
    assert stored is not None and stored.grouped_blob_key == "grouped/some.jsonl"
    assert (await claim(store)).input_blob_key == "grouped/some.jsonl"
    assert (await claim(store, BOB)).input_blob_key == "grouped/some.jsonl"


async def test_a_lapsed_lease_is_taken_first_and_counted_as_a_crash(store: Store) -> None:
    await running_batch(store, chunks=2)
    held = await claim(store)
    taken = await claim(store, BOB, now=LAPSED)
    assert taken.chunk.key == held.chunk.key  # work under way comes first
    assert (taken.chunk.attempts, taken.chunk.crashes) == (2, 1)


async def test_a_stale_attempt_writes_nothing(store: Store) -> None:
    batch = await running_batch(store, chunks=1)
    stale = await claim(store)
    key = stale.chunk.key
    fresh = await claim(store, BOB, now=LAPSED)

    refused = await store.record_progress(key, ALICE, 1, SOME, Tally(), done=True, now=NOW)
    assert refused is None
    assert await store.record_progress(key, BOB, 1, SOME, Tally(), done=False, now=NOW) is None
    assert await store.record_progress_many(ALICE, [(key, 1, SOME, Tally())]) == set()
    await store.release_chunk(key, ALICE, 1)
    untouched = (await store.chunks_of(batch.id))[0]
    assert (untouched.status, untouched.tally, untouched.attempts) == (
        ChunkStatus.RUNNING,
        Tally(),
        2,
    )
    assert await store.claim_chunk(ALICE, LAPSED, TTL) is None  # BOB's lease stands

    accepted = await store.record_progress(
        key, BOB, fresh.chunk.attempts, SOME, Tally(), done=False, now=NOW
    )
    assert accepted is False  # stored; the batch is not finalizing
    stored = await store.get_batch(ACME, batch.id)
    assert stored is not None and stored.request_counts.completed == 3


async def test_a_worker_that_stalled_cannot_write_with_its_old_attempt(store: Store) -> None:
    await running_batch(store, chunks=1)
    before = await claim(store)
    after = await claim(store, now=LAPSED)  # the same worker took it again
    key = before.chunk.key
    assert await store.record_progress(key, ALICE, 1, SOME, Tally(), done=False, now=NOW) is None
    assert after.chunk.attempts == 2
    assert await store.record_progress(key, ALICE, 2, SOME, Tally(), done=False, now=NOW) is False


async def test_a_claim_never_retakes_what_the_claimer_runs(store: Store) -> None:
    await running_batch(store, chunks=2)
    mine = await claim(store)
    again = await store.claim_chunk(ALICE, LAPSED, TTL, running=[mine.chunk.key])
    assert again is not None and again.chunk.index == 1


async def test_one_claim_of_several_chunks_shares_them_as_separate_claims_would(
    store: Store,
) -> None:
    # Two tenants' batches: five chunks in one claim go 3 + 2 between the
    # tenants (fewest running first after each), lowest index first.
    acme = await running_batch(store, chunks=4)
    globex = await running_batch(store, GLOBEX, chunks=4)
    claimed = await store.claim_chunks(ALICE, NOW, TTL, 5)
    assert [(w.chunk.key.batch_id, w.chunk.index) for w in claimed] == [
        (acme.id, 0),
        (globex.id, 0),
        (acme.id, 1),
        (globex.id, 1),
        (acme.id, 2),
    ]
    assert {w.tenant for w in claimed} == {ACME, GLOBEX}
    assert all((w.chunk.status, w.chunk.attempts) == (ChunkStatus.RUNNING, 1) for w in claimed)
    # Leased, so another worker finds only the three left, and then nothing.
    rest = await store.claim_chunks(BOB, NOW, TTL, 10)
    assert sorted((w.chunk.key.batch_id, w.chunk.index) for w in rest) == sorted(
        [(acme.id, 3), (globex.id, 2), (globex.id, 3)]
    )
    assert await store.claim_chunks(BOB, NOW, TTL, 10) == []


async def test_a_claim_of_several_takes_lapsed_leases_first(store: Store) -> None:
    batch = await running_batch(store, chunks=3)
    held = await claim(store)
    taken = await store.claim_chunks(BOB, LAPSED, TTL, 2)
    assert [(w.chunk.index, w.chunk.crashes) for w in taken] == [(held.chunk.index, 1), (1, 0)]
    assert [c.status for c in await store.chunks_of(batch.id)] == [
        ChunkStatus.RUNNING,
        ChunkStatus.RUNNING,
        ChunkStatus.PENDING,
    ]


async def test_a_full_worker_admits_only_batches_with_nothing_running(store: Store) -> None:
    busy = await running_batch(store, chunks=2)
    idle = await running_batch(store, GLOBEX, chunks=1)
    first = await claim(store)
    assert first.chunk.key.batch_id == busy.id
    newcomer = await store.claim_chunk(ALICE, NOW, TTL, idle_only=True)
    assert newcomer is not None and newcomer.chunk.key.batch_id == idle.id
    assert await store.claim_chunk(ALICE, NOW, TTL, idle_only=True) is None
    rest = await store.claim_chunk(ALICE, NOW, TTL)
    assert rest is not None and (rest.chunk.key.batch_id, rest.chunk.index) == (busy.id, 1)


async def test_progress_adds_only_what_is_new_to_the_batch(store: Store) -> None:
    batch = await running_batch(store, chunks=2)
    work = await claim(store)
    key, attempt = work.chunk.key, work.chunk.attempts
    assert (
        await store.record_progress(key, ALICE, attempt, SOME, Tally(), done=False, now=NOW)
        is False
    )
    assert await store.record_progress(key, ALICE, attempt, MORE, SOME, done=True, now=NOW) is False

    chunk = (await store.chunks_of(batch.id))[0]
    assert (chunk.status, chunk.tally) == (ChunkStatus.DONE, MORE)
    stored = await store.get_batch(ACME, batch.id)
    assert stored is not None and stored.status is BatchStatus.IN_PROGRESS
    counts, usage = stored.request_counts, stored.usage
    assert (counts.completed, counts.failed) == (7, 1)
    assert (usage.input_tokens, usage.output_tokens) == (70, 28)
    assert await store.record_progress(key, ALICE, attempt, MORE, MORE, done=True, now=NOW) is None


async def test_the_last_chunk_done_moves_its_batch_to_finalizing(store: Store) -> None:
    batch = await running_batch(store, chunks=2)
    works = [await claim(store), await claim(store)]
    results = [
        await store.record_progress(
            w.chunk.key, ALICE, w.chunk.attempts, SOME, Tally(), done=True, now=NOW + 7
        )
        for w in works
    ]
    assert results == [False, True]
    stored = await store.get_batch(ACME, batch.id)
    assert stored is not None
    assert (stored.status, stored.finalizing_at) == (BatchStatus.FINALIZING, NOW + 7)


async def test_a_flush_moves_many_chunks_in_one_go(store: Store) -> None:
    one = await running_batch(store, chunks=2)
    other = await running_batch(store, GLOBEX, chunks=1)
    works = [await claim(store) for _ in range(3)]
    moves = [(w.chunk.key, w.chunk.attempts, SOME, Tally()) for w in works]
    assert await store.record_progress_many(ALICE, moves) == {w.chunk.key for w in works}
    again = [(w.chunk.key, w.chunk.attempts, MORE, SOME) for w in works]
    await store.record_progress_many(ALICE, again)

    first, second = await store.get_batch(None, one.id), await store.get_batch(None, other.id)
    assert first is not None and second is not None
    assert first.request_counts.completed == 14 and second.request_counts.completed == 7
    assert first.usage.input_tokens == 140
    assert [c.tally for c in await store.chunks_of(one.id)] == [MORE, MORE]
    assert {c.status for c in await store.chunks_of(one.id)} == {ChunkStatus.RUNNING}


async def test_a_flush_moves_only_the_chunks_still_held(store: Store) -> None:
    batch = await running_batch(store, chunks=2)
    kept = await claim(store)
    lost = await claim(store)
    await store.heartbeat(ALICE, NOW + TTL / 2, TTL, running=[kept.chunk.key])
    await claim(store, BOB, now=LAPSED)  # takes the chunk whose lease lapsed
    moves = [(w.chunk.key, w.chunk.attempts, SOME, Tally()) for w in (kept, lost)]
    assert await store.record_progress_many(ALICE, moves) == {kept.chunk.key}
    stored = await store.get_batch(None, batch.id)
    assert stored is not None and stored.request_counts.completed == 3


async def test_a_released_chunk_is_claimable_again_counting_only_crashes(store: Store) -> None:
    await running_batch(store, chunks=1)
    work = await claim(store)
    await store.release_chunk(work.chunk.key, ALICE, work.chunk.attempts)
    again = await claim(store, BOB)
    assert (again.chunk.key, again.chunk.attempts, again.chunk.crashes) == (work.chunk.key, 2, 0)
    await store.release_chunk(again.chunk.key, BOB, again.chunk.attempts, crashed=True)
    third = await claim(store)
    assert (third.chunk.attempts, third.chunk.crashes) == (3, 1)


async def test_stop_reasons_name_only_stopped_batches(store: Store) -> None:
    stopped = await running_batch(store, chunks=1)
    going = await running_batch(store, chunks=1)
    await store.request_cancel(ACME, stopped.id, NOW)
    reasons = await store.stop_reasons([stopped.id, going.id])
    assert list(reasons) == [stopped.id]
    assert await store.stop_reasons([]) == {}


# ---------------------------------------------------------------- workers


async def test_heartbeats_count_the_live_workers(store: Store) -> None:
    assert await store.heartbeat(ALICE, NOW, TTL) == 1
    assert await store.heartbeat(BOB, NOW, TTL) == 2
    assert await store.live_workers(NOW, TTL) == [ALICE, BOB]
    assert await store.heartbeat(ALICE, LAPSED, TTL) == 1  # BOB went quiet
    assert await store.live_workers(LAPSED, TTL) == [ALICE]


async def test_a_newcomer_is_counted_once_every_other_worker_has_beaten(store: Store) -> None:
    await store.heartbeat(ALICE, NOW, TTL)
    await store.heartbeat(BOB, NOW, TTL)
    assert not await store.counted_by_all(BOB, NOW, TTL)
    await store.heartbeat(ALICE, NOW + 1, TTL)
    assert await store.counted_by_all(BOB, NOW + 1, TTL)
    assert await store.counted_by_all(ALICE, NOW + 1, TTL)


async def test_a_heartbeat_renews_only_what_its_worker_runs(store: Store) -> None:
    await running_batch(store, chunks=2)
    renewed = await claim(store)
    await claim(store)  # held, but no longer run: left to lapse
    await add_batch(store)
    await store.claim_validation(ALICE, NOW, TTL)

    await store.heartbeat(ALICE, NOW + TTL / 2, TTL, running=[renewed.chunk.key])
    taken = await claim(store, BOB, now=LAPSED)
    assert taken.chunk.index == 1
    assert await store.claim_chunk(BOB, LAPSED, TTL) is None
    assert await store.claim_validation(BOB, LAPSED, TTL) is None  # renewed with the chunk


async def test_a_stopping_worker_hands_everything_back(store: Store) -> None:
    batch = await running_batch(store, chunks=1)
    await claim(store)
    await add_batch(store)
    await store.claim_validation(ALICE, NOW, TTL)
    await store.heartbeat(ALICE, NOW, TTL)

    await store.release_leases(ALICE)
    assert await store.live_workers(NOW, TTL) == []
    again = await claim(store, BOB)
    assert (again.chunk.key.batch_id, again.chunk.crashes) == (batch.id, 0)
    validation = await store.claim_validation(BOB, NOW, TTL)
    assert validation is not None and validation.crashes == 0


async def test_a_worker_that_died_hands_back_with_a_crash(store: Store) -> None:
    await running_batch(store, chunks=1)
    await claim(store)
    await add_batch(store)
    await store.claim_validation(ALICE, NOW, TTL)
    await store.release_leases(ALICE, died=True)
    assert (await claim(store, BOB)).chunk.crashes == 1
    validation = await store.claim_validation(BOB, NOW, TTL)
    assert validation is not None and validation.crashes == 1


async def test_a_sqlite_start_up_frees_every_lease_as_a_crash(store: Store) -> None:
    await running_batch(store, chunks=1)
    await claim(store)
    await add_batch(store)
    await store.claim_validation(BOB, NOW, TTL)
    await store.heartbeat(ALICE, NOW, TTL)
    await store.release_all_leases()
    assert await store.live_workers(NOW, TTL) == []  # nobody to wait for
    assert (await claim(store, BOB)).chunk.crashes == 1
    validation = await store.claim_validation(ALICE, NOW, TTL)
    assert validation is not None and validation.crashes == 1
