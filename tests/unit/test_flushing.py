"""The flusher (runner/flushing.py) writes every run's results, then stores
their counts in one transaction, and talks to a run only through the
`FlushedRun` protocol: these tests hand it runs that are not ChunkRuns. On
a real SQLite store and local blobs (tests/unit/pipeline.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from overnight.domain.chunk import ZERO_TALLY, ChunkKey, ChunkWork, Tally
from overnight.runner.flushing import FlushedRun, Flusher, Snapshot
from overnight.runner.parts import ChunkParts
from overnight.types import WorkerId
from unit.pipeline import Pipeline, request_line


@dataclass(eq=False)
class RecordingRun:
    """A run that only holds results and records what it is told."""

    key: ChunkKey
    attempt: int
    parts: ChunkParts
    held: Tally = ZERO_TALLY
    written: Tally = ZERO_TALLY
    stored: Tally = ZERO_TALLY
    lost: bool = False

    def add(self, flusher: Flusher, custom_id: str, *, succeeded: bool = True) -> None:
        line = orjson.dumps({"custom_id": custom_id}) + b"\n"
        self.parts.add(line, succeeded=succeeded)
        self.held = self.held + (Tally(1, 0) if succeeded else Tally(0, 1))
        flusher.added()

    def snapshot(self) -> Snapshot:
        return Snapshot(self.parts.buffered, self.held, self.parts.take())

    def wrote(self, tally: Tally) -> None:
        self.written = tally

    def counted(self, tally: Tally) -> None:
        self.stored = tally

    def lease_lost(self) -> None:
        self.lost = True


async def recording_run(pipeline: Pipeline, work: ChunkWork) -> RecordingRun:
    chunk = work.chunk
    staging = pipeline.settings.data_dir / "staging"
    parts = ChunkParts(staging, pipeline.blobs, chunk.key, chunk.attempts)
    await parts.open()
    run = RecordingRun(chunk.key, chunk.attempts, parts)
    _: FlushedRun = run  # the protocol is all the flusher needs
    return run


def new_flusher(pipeline: Pipeline) -> Flusher:
    return Flusher(pipeline.store, pipeline.worker, pipeline.settings)


async def test_one_flush_writes_every_run_and_stores_all_their_counts(
    pipeline: Pipeline,
) -> None:
    batch = await pipeline.add_batch([request_line(f"r-{i}") for i in range(6)])
    flusher = new_flusher(pipeline)
    first = await recording_run(pipeline, await pipeline.claim())
    second = await recording_run(pipeline, await pipeline.claim())
    for run in (first, second):
        flusher.register(run)
    first.add(flusher, "a")
    first.add(flusher, "b", succeeded=False)
    second.add(flusher, "c")

    await flusher.flush()

    assert first.written == first.stored == Tally(1, 1)
    assert second.written == second.stored == Tally(1, 0)
    assert first.parts.paths["output"].read_bytes() == b'{"custom_id":"a"}\n'
    assert first.parts.paths["error"].read_bytes() == b'{"custom_id":"b"}\n'
    assert [chunk.tally for chunk in await pipeline.chunks(batch.id)] == [
        Tally(1, 1),
        Tally(1, 0),
    ]
    counts = (await pipeline.batch(batch.id)).request_counts
    assert (counts.completed, counts.failed) == (2, 1)
    assert flusher.count == 0


async def test_a_run_whose_chunk_was_taken_over_is_told_and_not_counted(
    pipeline: Pipeline,
) -> None:
    batch = await pipeline.add_batch([request_line(f"r-{i}") for i in range(3)])
    stale = await pipeline.claim(now=time.time() - 1000)
    await pipeline.claim(WorkerId("w-other"))  # takes the lapsed lease over
    flusher = new_flusher(pipeline)
    run = await recording_run(pipeline, stale)
    flusher.register(run)
    run.add(flusher, "a")

    await flusher.flush()

    assert run.lost
    assert run.written == Tally(1, 0) and run.stored == ZERO_TALLY
    assert [chunk.tally for chunk in await pipeline.chunks(batch.id)] == [ZERO_TALLY]


async def test_dispatching_pauses_at_twice_flush_lines_until_a_write(
    pipeline: Pipeline,
) -> None:
    await pipeline.add_batch([request_line("r-0")])
    flusher = new_flusher(pipeline)
    run = await recording_run(pipeline, await pipeline.claim())
    flusher.register(run)
    for i in range(2 * pipeline.settings.flush_lines):
        assert flusher.has_room
        run.add(flusher, f"r-{i}")
    assert not flusher.has_room

    await flusher.write_results()

    assert flusher.has_room and flusher.count == 0
    assert run.written == Tally(2 * pipeline.settings.flush_lines, 0)


async def test_a_run_that_leaves_takes_its_unwritten_results_with_it(
    pipeline: Pipeline,
) -> None:
    await pipeline.add_batch([request_line("r-0")])
    flusher = new_flusher(pipeline)
    run = await recording_run(pipeline, await pipeline.claim())
    flusher.register(run)
    for i in range(2 * pipeline.settings.flush_lines):
        run.add(flusher, f"r-{i}")

    flusher.unregister(run)

    assert flusher.has_room and flusher.count == 0
    assert run.parts.buffered == 0 and flusher.runs == {}
    await flusher.flush()  # nothing left to write or count
    assert run.written == run.stored == ZERO_TALLY
