"""The store's contract for what the dashboard reads: filtered batch lists,
snapshots of running batches (sparser as a batch ages), the backlog per
model, workers with the chunks they hold, and browser sessions; on SQLite
and PostgreSQL."""

from __future__ import annotations

import pytest

from overnight.domain.chunk import Tally
from overnight.domain.dashboard import SNAPSHOTS_PER_BATCH, Snapshot, UiSession
from overnight.domain.status import BatchStatus
from overnight.store import Store
from overnight.types import TenantId

from .records import ACME, ALICE, GLOBEX, NOW, TTL, add_batch, claim, running_batch

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_batch_lists_filter_by_status_model_and_dialect(store: Store) -> None:
    running = await running_batch(store)
    waiting = await add_batch(store)
    await add_batch(store, GLOBEX)

    async def ids(tenant: TenantId | None = ACME, **filters: str) -> list[str]:
        found = await store.list_batches(tenant, after=None, limit=10, **filters)
        assert found is not None
        return [b.id for b in found]

    assert await ids(status="in_progress") == [running.id]
    assert await ids(status="validating") == [waiting.id]
    assert await ids(model="m") == [running.id]
    assert await ids(dialect="openai") == [waiting.id, running.id]
    assert await ids(dialect="anthropic") == []
    assert len(await ids(None, status="validating")) == 2
    # A cursor pages within the filter.
    found = await store.list_batches(
        ACME, after=waiting.id, limit=10, dialect="openai", status="in_progress"
    )
    assert found is not None and [b.id for b in found] == [running.id]


async def test_running_batches_are_snapshotted_sparser_as_they_age(store: Store) -> None:
    batch = await running_batch(store)
    await add_batch(store)  # still validating: not snapshotted
    assert await store.record_snapshots(NOW, 5) == 1
    assert await store.record_snapshots(NOW + 2, 5) == 0  # too soon
    work = await claim(store)
    await store.record_progress(
        work.chunk.key,
        ALICE,
        work.chunk.attempts,
        Tally(completed=4, failed=1),
        Tally(),
        done=False,
        now=NOW,
    )
    assert await store.record_snapshots(NOW + 6, 5) == 1
    assert await store.batch_snapshots(batch.id) == [
        Snapshot(NOW, 0, 0),
        Snapshot(NOW + 6, 4, 1),
    ]
    # An hour in, the interval is an hour / SNAPSHOTS_PER_BATCH, not 5 s.
    late = NOW + 3600
    assert await store.record_snapshots(late, 5) == 1
    assert await store.record_snapshots(late + 6, 5) == 0
    assert await store.record_snapshots(late + 3600 // SNAPSHOTS_PER_BATCH + 1, 5) == 1


async def test_the_backlog_counts_unrun_lines_of_running_batches_by_model(store: Store) -> None:
    await running_batch(store, chunks=3, lines=10)
    await running_batch(store, GLOBEX, chunks=1, lines=5)
    await add_batch(store)  # not running yet: its lines are not counted
    work = await claim(store)
    await store.record_progress(
        work.chunk.key,
        ALICE,
        work.chunk.attempts,
        Tally(completed=10),
        Tally(),
        done=True,
        now=NOW,
    )
    assert await store.queued_by_model() == {"m": 25}
    assert await store.queued_by_model(GLOBEX) == {"m": 5}


async def test_workers_are_listed_with_the_chunks_they_hold(store: Store) -> None:
    await running_batch(store, chunks=3)
    await store.heartbeat(ALICE, NOW, TTL)
    await claim(store)
    await claim(store)
    views = await store.worker_views(NOW, TTL)
    assert [(v.id, v.chunks_held) for v in views] == [(ALICE, 2)]
    assert await store.chunks_leased() == 2
    assert await store.worker_views(NOW + 10 * TTL, TTL) == []


async def test_sessions_are_found_until_they_expire_or_end(store: Store) -> None:
    session = UiSession("a" * 64, ACME, False, "csrf-token", NOW, NOW + 60, "e" * 64)
    await store.insert_ui_session(session)
    admin = UiSession("b" * 64, None, True, "other", NOW, NOW + 60)
    await store.insert_ui_session(admin)
    assert await store.find_ui_session("a" * 64, NOW) == session
    assert await store.find_ui_session("b" * 64, NOW) == admin
    assert await store.find_ui_session("a" * 64, NOW + 60) is None
    assert await store.find_ui_session("c" * 64, NOW) is None
    assert await store.delete_ui_session("a" * 64)
    assert not await store.delete_ui_session("a" * 64)
    assert await store.find_ui_session("a" * 64, NOW) is None
    # A new session sweeps out the expired ones.
    await store.insert_ui_session(UiSession("d" * 64, ACME, False, "x", NOW + 61, NOW + 120))
    assert await store.find_ui_session("b" * 64, NOW) is None


async def test_batches_count_by_status(store: Store) -> None:
    await running_batch(store)
    await add_batch(store)
    await add_batch(store)
    counts = await store.count_batches_by_status()
    assert counts == {BatchStatus.IN_PROGRESS.value: 1, BatchStatus.VALIDATING.value: 2}
