"""A worker: the loops that move batches through validation, execution and
finalisation, supervised together.

Side tasks (heartbeat, stop watcher) and the three claim loops run in one
TaskGroup: if any of them dies, the whole worker stops loudly instead of
limping on without, say, its heartbeat.

    heartbeat   renews every lease this worker holds, every heartbeat_interval,
                snapshots running batches' counts for the dashboard, and runs
                the process's full garbage collections (runner/collection.py)
    flusher     writes every running chunk's results and stores their counts
    stops       closes expired windows; tells running chunks of a cancel/expiry
    retention   deletes expired files and uploads (runner/retention.py)
    validator   claims `validating` batches and validates them
    chunks      claims chunks while its models have slots to fill (runner/demand.py)
    finalizer   claims `finalizing` batches and assembles their results
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import Any, TypeVar

from overnight._ids import new_worker_id
from overnight.blobs import BlobStore
from overnight.domain.batch import Batch
from overnight.domain.chunk import ChunkKey, ChunkWork
from overnight.domain.lines import LineError
from overnight.errors import StorageError
from overnight.runner.collection import Collector
from overnight.runner.demand import Holding, Slots, chunks_wanted, within_cap
from overnight.runner.executor import ChunkRun, LeaseLost
from overnight.runner.finalize import finalize_batch
from overnight.runner.flushing import Flusher
from overnight.runner.models import Models
from overnight.runner.retention import sweep_forever
from overnight.runner.validate import validate_batch
from overnight.runner.wakeups import Backoff, Wakeups
from overnight.settings import Settings
from overnight.store.contracts import RunnerStore
from overnight.types import WorkerId

log = logging.getLogger("overnight.runner")

T = TypeVar("T")

#: Validations and finalisations one worker runs at once.
BATCH_PHASE_CONCURRENCY = 2


class Worker:
    def __init__(
        self,
        *,
        store: RunnerStore,
        blobs: BlobStore,
        models: Models,
        settings: Settings,
        wakeups: Wakeups,
        worker_id: WorkerId | None = None,
        collector: Collector | None = None,
    ) -> None:
        self.id = worker_id or new_worker_id()
        #: The worker process's garbage collection (runner/collection.py).
        self.collector = collector
        self.store = store
        self.blobs = blobs
        self.models = models
        self.settings = settings
        self.wakeups = wakeups
        self.runs: dict[ChunkKey, ChunkRun] = {}
        self.flusher = Flusher(store, self.id, settings)

    async def run(self) -> None:
        log.info("worker %s starting", self.id)
        if await self._beat() > 1:
            await self._wait_to_be_counted()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._heartbeat(), name="heartbeat")
                group.create_task(self.flusher.run_forever(), name="flusher")
                group.create_task(self._watch_stops(), name="stops")
                group.create_task(
                    sweep_forever(self.store, self.blobs, self.settings.retention_interval),
                    name="retention",
                )
                group.create_task(
                    self._claim_loop(
                        "validator", self._claim_validation, self._validate, BATCH_PHASE_CONCURRENCY
                    ),
                    name="validator",
                )
                group.create_task(self._chunk_loop(), name="chunks")
                group.create_task(
                    self._claim_loop(
                        "finalizer",
                        self._claim_finalization,
                        self._finalize,
                        BATCH_PHASE_CONCURRENCY,
                    ),
                    name="finalizer",
                )
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.release_leases(self.id))
            log.info("worker %s stopped; leases released", self.id)

    # -- side tasks

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            if self.collector is not None:
                self.collector.tick()
            try:
                await self._beat()
                # The dashboard's throughput chart samples running batches'
                # counts at the heartbeat's pace (sparser as a batch ages).
                await self.store.record_snapshots(
                    int(time.time()), max(1, int(self.settings.heartbeat_interval))
                )
            except StorageError:  # transient (a deadlock, a lost connection): beat again
                log.warning("heartbeat failed; retrying", exc_info=True)

    async def _wait_to_be_counted(self) -> None:
        """Others are running: wait until each has counted us in (and so
        shrunk to its new share of every model's max_concurrency) before
        sending anything, so joining never pushes a model past its global
        limit. A worker that does not answer within a few heartbeats is not
        waited for (it is stalled, or about to be declared dead)."""
        settings = self.settings
        deadline = time.monotonic() + 4 * settings.heartbeat_interval
        while time.monotonic() < deadline:
            if await self.store.counted_by_all(self.id, time.time(), settings.lease_ttl):
                return
            await asyncio.sleep(settings.heartbeat_interval / 5)
        log.warning("worker %s starts before every other worker counted it", self.id)

    async def _beat(self) -> int:
        alive = await self.store.heartbeat(
            self.id, time.time(), self.settings.lease_ttl, running=list(self.runs)
        )
        self.models.share_between(max(1, alive))
        return alive

    async def _watch_stops(self) -> None:
        """Stop flags are read every poll_interval while this worker runs
        chunks (a cancel from another process takes effect within about
        that); an idle worker only watches for closing windows, backing off."""
        wake = self.wakeups.subscribe()
        backoff = self._backoff()
        found = True
        while True:
            await backoff.wait(wake, found)
            expired = await self.store.expire_due(int(time.time()))
            if expired:
                log.info("completion window closed for %s", ", ".join(expired))
                self.wakeups.notify()
            for model in self.models.all():
                model.report()
            running = {key.batch_id for key in self.runs}
            for batch_id, reason in (await self.store.stop_reasons(running)).items():
                for key, run in list(self.runs.items()):
                    if key.batch_id == batch_id:
                        run.stop(reason)
            found = bool(expired or self.runs)

    def _backoff(self) -> Backoff:
        return Backoff(self.settings.poll_interval, self.settings.idle_poll_interval)

    # -- claim loops

    async def _claim_loop(
        self,
        name: str,
        claim: Callable[[], Awaitable[T | None]],
        handle: Callable[[T], Coroutine[Any, Any, None]],
        concurrency: int,
    ) -> None:
        """Claim and handle items, up to `concurrency` at once."""
        wake = self.wakeups.subscribe()
        backoff = self._backoff()
        active: set[asyncio.Task[Any]] = set()

        def finished(task: asyncio.Task[Any]) -> None:
            active.discard(task)
            wake.set()

        try:
            while True:
                found = False
                while len(active) < concurrency and (item := await claim()) is not None:
                    found = True
                    task = asyncio.create_task(handle(item), name=f"{name}-work")
                    active.add(task)
                    task.add_done_callback(finished)
                await backoff.wait(wake, found)
        finally:
            await _cancel_all(active)

    async def _chunk_loop(self) -> None:
        """Claim the chunks `chunks_wanted` says this worker's slots need
        (runner/demand.py), several in one transaction. One that wants none still admits up to
        `worker_chunks` chunks of batches with nothing running anywhere
        (`idle_only`), within `worker_max_lines`, so a newcomer starts at
        once instead of waiting for a running chunk to end. A chunk whose
        lines all hold a slot wakes the loop: it may be time for the next."""
        wake = self.wakeups.subscribe()
        backoff = self._backoff()
        active: set[asyncio.Task[None]] = set()
        admitted: set[asyncio.Task[None]] = set()
        settings = self.settings

        def finished(task: asyncio.Task[None]) -> None:
            active.discard(task)
            admitted.discard(task)
            wake.set()

        def start(work: ChunkWork) -> asyncio.Task[None]:
            # The run is registered before its task starts, so the next
            # `_holding` already counts its lines.
            run = self._chunk_run(work, on_drained=wake.set)
            task = asyncio.create_task(self._run_chunk(run), name="chunks-work")
            active.add(task)
            task.add_done_callback(finished)
            return task

        try:
            while True:
                found = False
                while wanted := self._chunks_wanted():
                    claimed = await self._claim_chunks(wanted)
                    found = found or bool(claimed)
                    for work in claimed:
                        start(work)
                    if len(claimed) < wanted:
                        break  # no more pending work
                if not wanted:
                    while (
                        len(admitted) < settings.worker_chunks
                        and within_cap(
                            self._holding(),
                            chunk_lines=settings.chunk_lines,
                            max_lines=settings.worker_max_lines,
                        )
                        and (newcomer := await self._claim_idle_chunk()) is not None
                    ):
                        found = True
                        admitted.add(start(newcomer))
                await backoff.wait(wake, found)
        finally:
            await _cancel_all(active)

    def _holding(self) -> Holding:
        runs = self.runs.values()
        return Holding(
            chunks=len(self.runs),
            lines=sum(run.work.chunk.requests for run in runs),
            waiting=sum(run.unsent for run in runs),
        )

    def _chunks_wanted(self) -> int:
        limiters = [model.limiter for model in self.models.all()]
        slots = Slots(
            limit=sum(limiter.limit for limiter in limiters),
            free=sum(max(0, limiter.limit - limiter.in_flight) for limiter in limiters),
        )
        return chunks_wanted(
            self._holding(),
            slots,
            worker_chunks=self.settings.worker_chunks,
            chunk_lines=self.settings.chunk_lines,
            max_lines=self.settings.worker_max_lines,
        )

    async def _claim_validation(self) -> Batch | None:
        return await self.store.claim_validation(self.id, time.time(), self.settings.lease_ttl)

    async def _claim_finalization(self) -> Batch | None:
        return await self.store.claim_finalization(self.id, time.time(), self.settings.lease_ttl)

    async def _claim_chunks(self, count: int) -> list[ChunkWork]:
        return await self.store.claim_chunks(
            self.id,
            time.time(),
            self.settings.lease_ttl,
            count,
            urgent_within=self.settings.urgent_within,
            running=list(self.runs),
        )

    async def _claim_idle_chunk(self) -> ChunkWork | None:
        return await self.store.claim_chunk(
            self.id,
            time.time(),
            self.settings.lease_ttl,
            urgent_within=self.settings.urgent_within,
            idle_only=True,
            running=list(self.runs),
        )

    # -- the work itself

    async def _validate(self, batch: Batch) -> None:
        if batch.crashes >= self.settings.max_chunk_attempts:
            await self._give_up(batch, "validation", batch.crashes)
            return
        try:
            status = await validate_batch(
                batch,
                worker=self.id,
                store=self.store,
                blobs=self.blobs,
                settings=self.settings,
                model_names=self.models.names,
            )
        except Exception as exc:
            await self._crashed(batch, "validation", exc)
            return
        log.info("batch %s is %s", batch.id, status.value if status else "taken by another worker")
        self.wakeups.notify()

    async def _crashed(self, batch: Batch, phase: str, exc: Exception) -> None:
        """Validation or finalisation raised: hand the batch back with one
        crash more, or, at `max_chunk_attempts`, fail it with the reason
        rather than retrying it for ever."""
        crashes = batch.crashes + 1
        if crashes < self.settings.max_chunk_attempts:
            log.exception("%s of %s failed; it will be retried", phase, batch.id)
            await self.store.release_batch(batch.id, self.id, crashed=True)
            await asyncio.sleep(self.settings.poll_interval)
            return
        log.exception("%s of %s failed %d times", phase, batch.id, crashes)
        await self._give_up(batch, phase, crashes, f" (the last time: {type(exc).__name__}: {exc})")

    async def _give_up(self, batch: Batch, phase: str, crashes: int, detail: str = "") -> None:
        """Fail a batch whose `phase` crashed `crashes` times (a worker died
        holding it, or it raised): edges b and k."""
        error = LineError(
            f"{phase}_failed",
            f"The batch's {phase} crashed {crashes} times{detail}; it was given up "
            f"(max_chunk_attempts is {self.settings.max_chunk_attempts}).",
        )
        status = await self.store.fail_batch(batch.id, self.id, [error], int(time.time()))
        log.error(
            "%s of %s crashed %d times; the batch is %s",
            phase,
            batch.id,
            crashes,
            status.value if status else "taken by another worker",
        )
        self.wakeups.notify()

    def _chunk_run(self, work: ChunkWork, on_drained: Callable[[], None]) -> ChunkRun:
        run = ChunkRun(
            work,
            worker=self.id,
            store=self.store,
            blobs=self.blobs,
            models=self.models,
            settings=self.settings,
            flusher=self.flusher,
            on_drained=on_drained,
        )
        self.runs[work.chunk.key] = run
        return run

    async def _run_chunk(self, run: ChunkRun) -> None:
        key = run.key
        try:
            outcome = await run.run()
            if outcome.finalizing:
                self.wakeups.notify()
        except LeaseLost:
            log.warning("chunk %s/%d was taken over by another worker", key.batch_id, key.index)
        except Exception:
            log.exception("chunk %s/%d failed; it will be retried", key.batch_id, key.index)
            await self.store.release_chunk(key, self.id, run.attempt, crashed=True)
            await asyncio.sleep(self.settings.poll_interval)
        finally:
            if self.runs.get(key) is run:
                del self.runs[key]

    async def _finalize(self, batch: Batch) -> None:
        if batch.crashes >= self.settings.max_chunk_attempts:
            await self._give_up(batch, "finalization", batch.crashes)
            return
        try:
            finished = await finalize_batch(
                batch, worker=self.id, store=self.store, blobs=self.blobs, settings=self.settings
            )
        except Exception as exc:
            await self._crashed(batch, "finalization", exc)
            return
        if finished:  # its webhook event is due now
            self.wakeups.notify()


async def _cancel_all(tasks: Collection[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
