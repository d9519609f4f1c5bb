"""Nothing is retried for ever: validation and finalisation crash at most
`max_chunk_attempts` times, then the batch fails, naming the phase; and only
crashes count, never a clean hand-back.

In-process, on a real SQLite store and a real worker's batch handlers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from overnight.blobs import open_blobs
from overnight.domain.batch import Batch
from overnight.domain.chunk import ChunkWork
from overnight.domain.files import FilePurpose, FileRecord
from overnight.domain.status import BatchStatus
from overnight.domain.validation import ChunkRange
from overnight.runner.models import Models
from overnight.runner.wakeups import Wakeups
from overnight.runner.worker import Worker
from overnight.settings import ModelSettings, Settings
from overnight.store.sql import SqlStore, open_store
from overnight.types import BatchId, FileId, TenantId, WorkerId

TTL = 10.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        models=[ModelSettings(name="m", base_urls=["http://127.0.0.1:9"])],
        max_chunk_attempts=2,
        poll_interval=0.01,
    )


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[SqlStore]:
    store = await open_store(settings.resolved_database_url)
    yield store
    await store.close()


def worker(name: str, store: SqlStore, settings: Settings) -> Worker:
    return Worker(
        store=store,
        blobs=open_blobs(settings),
        models=Models(settings.served_models),
        settings=settings,
        wakeups=Wakeups(),
        worker_id=WorkerId(name),
    )


async def add_batch(store: SqlStore, status: BatchStatus) -> BatchId:
    """A batch in `status` whose input file's bytes are missing: validating
    it raises."""
    file_id = FileId("file-gone")
    await store.insert_file(
        FileRecord(
            id=file_id,
            tenant=TenantId("t"),
            filename="in.jsonl",
            purpose=FilePurpose.BATCH,
            bytes=10,
            created_at=0,
            sha256="0" * 64,
            blob_key="files/file-gone",
        ),
        created_us=0,
    )
    batch_id = BatchId("batch-1")
    batch = Batch(
        id=batch_id,
        tenant=TenantId("t"),
        endpoint="/v1/chat/completions",
        input_file_id=file_id,
        completion_window="24h",
        status=status,
        created_at=0,
        expires_at=10**10,
    )
    await store.insert_batch(batch, created_us=0)
    return batch_id


async def test_a_validation_that_keeps_raising_fails_its_batch(
    store: SqlStore, settings: Settings
) -> None:
    batch_id = await add_batch(store, BatchStatus.VALIDATING)
    validator = worker("w-1", store, settings)
    for _ in range(settings.max_chunk_attempts):
        claimed = await store.claim_validation(validator.id, 0, TTL)
        assert claimed is not None and claimed.id == batch_id
        await validator._validate(claimed)

    batch = await store.get_batch(None, batch_id)
    assert batch is not None and batch.status is BatchStatus.FAILED
    (error,) = batch.errors
    assert error.code == "validation_failed"
    assert "validation crashed 2 times" in error.message
    assert "the last time: FileNotFoundError" in error.message


async def test_a_finalization_whose_workers_keep_dying_fails_its_batch(
    store: SqlStore, settings: Settings
) -> None:
    batch_id = await add_batch(store, BatchStatus.FINALIZING)
    # Each worker claims the batch and dies (it never renews its lease); the
    # next one finds the lease lapsed: one crash each.
    now = 0.0
    for name in ("w-1", "w-2"):
        assert await store.claim_finalization(WorkerId(name), now, TTL) is not None
        now += 2 * TTL
    last = worker("w-3", store, settings)
    claimed = await store.claim_finalization(last.id, now, TTL)
    assert claimed is not None and claimed.crashes == 2
    await last._finalize(claimed)

    batch = await store.get_batch(None, batch_id)
    assert batch is not None and batch.status is BatchStatus.FAILED
    (error,) = batch.errors
    assert error.code == "finalization_failed"
    assert "finalization crashed 2 times" in error.message
    assert batch.output_file_id is None and batch.error_file_id is None


async def test_only_crashes_count_never_a_clean_hand_back(
    store: SqlStore, settings: Settings
) -> None:
    batch_id = await add_batch(store, BatchStatus.FINALIZING)
    holder = WorkerId("w-1")
    for _ in range(3):  # three clean shutdowns (deploys): no crash
        assert await store.claim_finalization(holder, 0, TTL) is not None
        await store.release_leases(holder)
    assert await store.claim_finalization(holder, 0, TTL) is not None
    await store.release_leases(holder, died=True)  # its process exited
    claimed = await store.claim_finalization(holder, 0, TTL)
    assert claimed is not None and claimed.crashes == 1
    await store.release_batch(batch_id, holder, crashed=True)  # it raised
    claimed = await store.claim_finalization(holder, 0, TTL)
    assert claimed is not None and claimed.crashes == 2


async def test_a_chunk_counts_each_way_its_worker_can_die(store: SqlStore) -> None:
    batch_id = await add_batch(store, BatchStatus.VALIDATING)
    first = WorkerId("w-1")
    assert await store.claim_validation(first, 0, TTL) is not None
    ranges = [ChunkRange(index=0, start=0, end=10, first_line=1, requests=1)]
    assert (
        await store.start_batch(batch_id, first, requests=1, model="m", chunk_ranges=ranges, now=0)
        is BatchStatus.IN_PROGRESS
    )

    def crashes_of(work: ChunkWork | None) -> int:
        assert work is not None
        return work.chunk.crashes

    assert crashes_of(await store.claim_chunk(first, 0, TTL)) == 0
    await store.release_leases(first)  # a clean shutdown
    assert crashes_of(await store.claim_chunk(first, 0, TTL)) == 0
    # ...its lease lapsed: the next claim counts a crash.
    work = await store.claim_chunk(WorkerId("w-2"), 2 * TTL, TTL)
    assert crashes_of(work) == 1
    assert work is not None
    await store.release_chunk(work.chunk.key, WorkerId("w-2"), work.chunk.attempts, crashed=True)
    assert crashes_of(await store.claim_chunk(first, 0, TTL)) == 2
    await store.release_leases(first, died=True)  # its process exited
    assert crashes_of(await store.claim_chunk(first, 0, TTL)) == 3
    await store.release_all_leases()  # a SQLite server restarted after a kill
    assert crashes_of(await store.claim_chunk(first, 0, TTL)) == 4
