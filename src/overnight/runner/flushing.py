"""Writing results and counting them: one flush for all of a worker's chunks.

Results wait in memory until a write appends them to their chunks' part
files; after each write, one transaction moves every chunk's counters and
its batch's to what the parts now hold. A write happens when the worker
holds `flush_lines` unwritten results, or every `flush_interval` seconds.
When unwritten results reach twice `flush_lines`, dispatching pauses until
a write catches up. Counting runs beside writing, not in its way: a
transaction that takes long (the event loop is busy with requests) must not
hold up the next write, or dispatching stalls behind the database.

So at any moment, results not yet written plus requests in flight are at
most `2 * flush_lines + max_concurrency`: the most a `kill -9` can make the
model servers answer twice (docs/operations.md). One transaction per flush
(not one per chunk) keeps the database work per request small.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from overnight.domain.chunk import ChunkKey, Tally
from overnight.errors import StorageError
from overnight.runner.parts import ChunkParts, write_parts
from overnight.runner.wakeups import wait_at_most
from overnight.settings import Settings
from overnight.store.contracts import RunnerStore
from overnight.types import WorkerId

log = logging.getLogger("overnight.runner")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A run's results taken for one write, and the counts they make."""

    results: int
    tally: Tally
    pending: dict[str, bytes]


class FlushedRun(Protocol):
    """What the Flusher needs of a running chunk (runner/executor.py's
    `ChunkRun`, which imports this module, not the other way round). The
    Flusher reads a run's counts and tells it what it wrote and stored;
    the run keeps its own fields."""

    @property
    def key(self) -> ChunkKey: ...

    @property
    def attempt(self) -> int:
        """The fencing token every write to the chunk row names."""
        ...

    @property
    def parts(self) -> ChunkParts: ...

    @property
    def written(self) -> Tally:
        """The counts of what the part files hold."""
        ...

    @property
    def stored(self) -> Tally:
        """The counts the database holds for the chunk."""
        ...

    def snapshot(self) -> Snapshot:
        """Take the results held, with their counts, at one instant."""
        ...

    def wrote(self, tally: Tally) -> None:
        """A write left the part files holding `tally`."""
        ...

    def counted(self, tally: Tally) -> None:
        """A transaction stored `tally` as the chunk's counts."""
        ...

    def lease_lost(self) -> None:
        """Another worker owns the chunk now: stop at once."""
        ...


class Flusher:
    def __init__(self, store: RunnerStore, worker: WorkerId, settings: Settings) -> None:
        self.store = store
        self.worker = worker
        self.settings = settings
        self.flush_lines = settings.flush_lines
        self.count = 0  # results held in memory, across every chunk
        #: The running chunks, each with when its parts were last uploaded.
        self.runs: dict[FlushedRun, float] = {}
        self._due = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._count_due = asyncio.Event()
        self._writing = asyncio.Lock()
        #: Held while a run's stored counts are read and moved; a chunk's
        #: final count takes it too, so no difference is added twice.
        self.counting = asyncio.Lock()

    # -- accounting, called per result (keep cheap)

    def added(self) -> None:
        self.count += 1
        if self.count >= self.flush_lines:
            self._due.set()
            if self.count >= 2 * self.flush_lines:
                self._room.clear()

    def _written(self, n: int) -> None:
        self.count -= n
        if self.count < 2 * self.flush_lines:
            self._room.set()

    @property
    def has_room(self) -> bool:
        return self._room.is_set()

    async def wait_for_room(self) -> None:
        if not self._room.is_set():
            await self._room.wait()

    # -- the chunks it flushes

    def register(self, run: FlushedRun) -> None:
        self.runs[run] = time.monotonic()

    def unregister(self, run: FlushedRun) -> None:
        """A run that leaves takes its unwritten results with it (lost, and
        run again on resume): stop counting them."""
        self.runs.pop(run, None)
        self._written(run.snapshot().results)

    # -- flushing

    async def run_forever(self) -> None:
        """The worker's flushing side tasks: one writes, one counts."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._write_forever(), name="flusher-write")
            group.create_task(self._count_forever(), name="flusher-count")

    async def _write_forever(self) -> None:
        while True:
            await wait_at_most(self._due, self.settings.flush_interval)
            self._due.clear()
            await self.write_results()

    async def _count_forever(self) -> None:
        while True:
            await self._count_due.wait()
            self._count_due.clear()
            try:
                await self.store_counts()
            except StorageError:  # a deadlock, a lost connection: the next write retries
                log.warning("could not store progress; will retry", exc_info=True)

    async def flush(self) -> None:
        """Write every run's results, then store their counts: what a chunk
        does before it ends, so nothing it ran is left uncounted."""
        await self.write_results()
        await self.store_counts()

    async def write_results(self) -> None:
        """Append every run's held results to its part files (one trip to a
        worker thread for all of them); then dispatching may go on."""
        async with self._writing:
            taken = [(run, run.snapshot()) for run in list(self.runs)]
            pending = [(run.parts, snap.pending) for run, snap in taken if snap.pending]
            if pending:
                await asyncio.to_thread(write_parts, pending)
            for run, snap in taken:
                run.wrote(snap.tally)
            self._written(sum(snap.results for _, snap in taken))
            self._count_due.set()

    async def store_counts(self) -> None:
        """Store what the part files hold as every run's counts, in one
        transaction. A run whose lease turns out lost is told so.

        Counting trails writing and never holds it up: a slow transaction
        (a busy event loop takes a while to get through the driver's trips
        to its thread) delays the progress a client sees, not dispatching.
        The counts stored are always ones some write reached, so they never
        exceed what the parts hold.

        Shielded from cancellation (a worker shutting down): a count
        cancelled while its commit is under way would leave `stored` behind
        what the database holds, and the next count would add the
        difference twice."""
        await asyncio.shield(self._store_counts())

    async def _store_counts(self) -> None:
        async with self.counting:
            moved = [(run, run.written) for run in list(self.runs) if run.written != run.stored]
            if not moved:
                return
            kept = await self.store.record_progress_many(
                self.worker,
                [(run.key, run.attempt, tally, run.stored) for run, tally in moved],
            )
            held = []
            for run, tally in moved:
                if run.key in kept:
                    run.counted(tally)
                    held.append(run)
                else:
                    run.lease_lost()
            await self._upload_snapshots(held)

    async def _upload_snapshots(self, held: list[FlushedRun]) -> None:
        """With remote storage, copy running chunks' parts to the bucket every
        `part_upload_interval`, so a takeover from a lost machine re-runs
        little. Only runs whose lease this flush just confirmed do it."""
        now = time.monotonic()
        for run in held:
            uploaded_at = self.runs.get(run)
            if (
                uploaded_at is not None
                and run.parts.blobs.remote
                and now - uploaded_at >= self.settings.part_upload_interval
            ):
                self.runs[run] = now
                await run.parts.upload_snapshot()
