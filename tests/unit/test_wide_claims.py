"""How many chunks a worker claims (runner/demand.py): beyond
`worker_chunks` while its models have free slots, never past
`worker_max_lines`, and never so many that a second worker finds nothing.

Real workers (runner/worker.py) on a temporary SQLite store, against the
fake upstream told to hang: every request sent holds its slot until the
test ends, so what a worker claims settles and can be counted."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from overnight.domain.chunk import ChunkStatus
from overnight.runner.demand import Holding, Slots, chunks_wanted
from overnight.runner.models import Models
from overnight.runner.wakeups import Wakeups
from overnight.runner.worker import Worker
from overnight.settings import ModelSettings, Settings
from overnight.testing.fake_upstream import FakeUpstream
from overnight.types import BatchId, WorkerId
from unit.pipeline import MODEL, Pipeline, open_pipeline, request_line

CHUNK_LINES = 4


def wide_settings(data_dir: Path, upstream_url: str, slots: int, **overrides: Any) -> Settings:
    model = ModelSettings(
        name=MODEL, base_urls=[upstream_url], max_concurrency=slots, adaptive=False
    )
    defaults: dict[str, Any] = {
        "data_dir": data_dir,
        "models": [model],
        "chunk_lines": CHUNK_LINES,
        "worker_chunks": 1,
        "poll_interval": 0.05,
        "heartbeat_interval": 0.1,
        "flush_interval": 0.05,
        "stop_grace": 0.1,
    }
    return Settings(**{**defaults, **overrides})


@contextlib.asynccontextmanager
async def pipeline_of(settings: Settings) -> AsyncIterator[Pipeline]:
    async for pipeline in open_pipeline(settings):
        yield pipeline


@contextlib.asynccontextmanager
async def running_worker(pipeline: Pipeline, name: str) -> AsyncIterator[Worker]:
    models = Models(pipeline.settings.served_models)
    await models.start()
    worker = Worker(
        store=pipeline.store,
        blobs=pipeline.blobs,
        models=models,
        settings=pipeline.settings,
        wakeups=Wakeups(),
        worker_id=WorkerId(name),
    )
    task = asyncio.create_task(worker.run(), name=name)
    try:
        yield worker
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await models.close()


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + 20.0
    while not await check():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


async def settled(
    pipeline: Pipeline,
    upstream: FakeUpstream,
    batch_id: BatchId,
    workers: list[Worker],
    in_flight: int,
) -> dict[str, int]:
    """Once `in_flight` requests hang at the upstream, and some claim loop
    turns later, how many chunks each worker holds."""

    async def sent() -> bool:
        return int(upstream.stats()["in_flight"]) >= in_flight

    await eventually(sent)
    # Claims that would follow come at the next wake-up (a poll is 0.05 s):
    # give the loops several turns to show they have stopped.
    await asyncio.sleep(0.5)
    assert upstream.stats()["in_flight"] == in_flight
    held = {worker.id: len(worker.runs) for worker in workers}
    running = [c for c in await pipeline.chunks(batch_id) if c.status is ChunkStatus.RUNNING]
    assert len(running) == sum(held.values())
    return held


def lines(count: int) -> list[bytes]:
    return [request_line(f"r-{i}") for i in range(count)]


@pytest.fixture
def hanging() -> Iterator[FakeUpstream]:
    """An upstream of its own, so no other test's requests count in flight."""
    with FakeUpstream(hang_rate=1.0) as upstream:
        yield upstream


async def test_a_worker_with_free_slots_claims_beyond_worker_chunks(
    tmp_path: Path, hanging: FakeUpstream
) -> None:
    # 12 slots, chunks of 4 lines, worker_chunks 1: three chunks fill the
    # slots and a fourth waits in reserve (one round of slots, at most a
    # chunk); the other six stay pending for whoever has slots.
    settings = wide_settings(tmp_path, hanging.url, slots=12)
    async with pipeline_of(settings) as pipeline:
        batch = await pipeline.add_batch(lines(40))
        async with running_worker(pipeline, "w-a") as worker:
            held = await settled(pipeline, hanging, batch.id, [worker], in_flight=12)
        assert held == {"w-a": 4}


async def test_a_worker_stops_claiming_at_worker_max_lines(
    tmp_path: Path, hanging: FakeUpstream
) -> None:
    # 40 slots would take ten chunks and a reserve; the cap is 24 lines.
    settings = wide_settings(tmp_path, hanging.url, slots=40, worker_max_lines=24)
    async with pipeline_of(settings) as pipeline:
        batch = await pipeline.add_batch(lines(60))
        async with running_worker(pipeline, "w-a") as worker:
            held = await settled(pipeline, hanging, batch.id, [worker], in_flight=24)
        assert held == {"w-a": 6}


async def test_a_second_worker_finds_work_the_first_left(
    tmp_path: Path, hanging: FakeUpstream
) -> None:
    # 24 slots. The first worker, alone, claims for all of them (six chunks
    # and one in reserve), not the batch's 40 chunks. The second joins; each
    # now has 12 slots, and the second claims what its 12 need.
    settings = wide_settings(tmp_path, hanging.url, slots=24)
    async with pipeline_of(settings) as pipeline:
        batch = await pipeline.add_batch(lines(160))
        async with running_worker(pipeline, "w-a") as first:
            alone = await settled(pipeline, hanging, batch.id, [first], in_flight=24)
            assert alone == {"w-a": 7}
            async with running_worker(pipeline, "w-b") as second:

                async def shared() -> bool:
                    return first.models.all()[0].limiter.limit == 12

                await eventually(shared)
                held = await settled(
                    pipeline, hanging, batch.id, [first, second], in_flight=24 + 12
                )
        assert held == {"w-a": 7, "w-b": 4}


def test_the_claim_rule_fills_slots_above_a_floor_of_worker_chunks() -> None:
    rule = {"worker_chunks": 4, "chunk_lines": 2000, "max_lines": 60_000}
    narrow = Slots(limit=64, free=0)
    # Fewer than worker_chunks: up to worker_chunks, whatever the slots.
    assert chunks_wanted(Holding(chunks=3, lines=6000, waiting=5936), narrow, **rule) == 1
    # A narrow model with lines waiting: no more.
    assert chunks_wanted(Holding(chunks=4, lines=8000, waiting=7936), narrow, **rule) == 0
    # A wide model with 12,000 slots free: six chunks fill them, a seventh
    # waits in reserve; all in one claim.
    wide = Slots(limit=20_000, free=12_000)
    assert chunks_wanted(Holding(chunks=4, lines=8000, waiting=0), wide, **rule) == 7
    # Filled, with a chunk's worth waiting: enough.
    full = Slots(limit=20_000, free=0)
    assert chunks_wanted(Holding(chunks=11, lines=22_000, waiting=2000), full, **rule) == 0
    # The cap holds with slots free: what fits under it, then nothing.
    assert chunks_wanted(Holding(chunks=27, lines=54_000, waiting=0), wide, **rule) == 3
    assert chunks_wanted(Holding(chunks=30, lines=60_000, waiting=0), wide, **rule) == 0
