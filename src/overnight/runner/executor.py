"""Run one chunk: read its lines, dispatch them, append their results.

Lines are dispatched concurrently by a pool of lanes, bounded by each
model's limiter, in file order or, with `prefix_dispatch`, with the lines
that share a prompt prefix brought together (domain/prefixes.py) and each
request carrying its prefix key, by which a backend with replicas picks one. Each result is rendered in the batch's dialect and held for
the chunk's output or error part; the worker's flusher (runner/flushing.py)
writes every chunk's results and stores their counts in one transaction per
flush, never one per request.

A stop (cancel or expiry) ends dispatching: in-flight requests get
`stop_grace` seconds to finish, and every line that did not run is written
to the error part as `batch_cancelled` / `batch_expired`. A shutdown is not a
stop: the chunk is abandoned as it stands and its lease released, so another
worker (or this one, restarted) resumes it.

A chunk whose workers died `max_chunk_attempts` times running it is given
up: its run sends nothing and writes every line its parts do not already
hold to the error part as `chunk_failed`, then completes as usual.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from overnight.backends.base import UpstreamRequest, UpstreamResult
from overnight.blobs import BlobStore
from overnight.domain.batch import Usage
from overnight.domain.chunk import ChunkKey, ChunkWork, Tally
from overnight.domain.lines import Request, Unreadable
from overnight.domain.prefixes import grouped, prefix_key
from overnight.domain.results import Outcome
from overnight.domain.status import StopReason
from overnight.runner.dispatch import send_with_retries
from overnight.runner.flushing import Flusher, Snapshot
from overnight.runner.models import Models, ServedModel
from overnight.runner.parts import ChunkParts
from overnight.runner.reading import chunk_requests
from overnight.settings import Settings
from overnight.store.contracts import RunnerStore
from overnight.testing.crash import CRASH_MARKER, crash_if_marked
from overnight.types import WorkerId

log = logging.getLogger("overnight.runner")

#: The codes of lines a cancel or an expiry kept from running.
_STOP_CODES = frozenset(reason.error_code for reason in StopReason)


class LeaseLost(Exception):
    """Another worker took the chunk over; this one must stop touching it."""


@dataclass
class ChunkOutcome:
    finalizing: bool


class ChunkRun:
    """One chunk being run; the worker's Flusher writes and counts its
    results through the `FlushedRun` protocol (runner/flushing.py)."""

    def __init__(
        self,
        work: ChunkWork,
        *,
        worker: WorkerId,
        store: RunnerStore,
        blobs: BlobStore,
        models: Models,
        settings: Settings,
        flusher: Flusher,
        on_drained: Callable[[], None] | None = None,
    ) -> None:
        self.work = work
        self.worker = worker
        self.store = store
        self.blobs = blobs
        self.models = models
        self.settings = settings
        #: The fencing token: every write to the chunk row names it.
        self.attempt = work.chunk.attempts
        self.parts = ChunkParts(settings.data_dir / "staging", blobs, work.chunk.key, self.attempt)
        self.render = work.dialect.render
        #: Its workers kept dying on it: send nothing, fail what is left.
        self.given_up = work.chunk.crashes >= settings.max_chunk_attempts
        self.stop_reason: StopReason | None = work.stop_reason
        self._stopped = asyncio.Event()
        if self.stop_reason is not None:
            self._stopped.set()
        self.flusher = flusher
        #: The counts the database holds for this chunk (moved by flushes)...
        self.stored = work.chunk.tally
        #: ...and those of what the part files hold (at least `stored`).
        self.written = work.chunk.tally
        # What the parts hold (written or not), as plain ints: this runs per result.
        self._completed = self._failed = self._stopped_lines = 0
        self._tokens = [0, 0, 0, 0]  # input, cached, output, reasoning
        self._lost = False
        self._dispatch: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._waiting: set[asyncio.Task[Any]] = set()  # lanes waiting for a slot
        #: custom_id -> prompt-prefix key, with `prefix_dispatch`.
        self._prefixes: dict[str, int] = {}
        #: Lines with neither a slot nor a result yet: the worker claims more
        #: chunks while its free slots exceed these (runner/demand.py).
        self.unsent = max(0, work.chunk.requests - work.chunk.tally.done)
        #: Called when `unsent` reaches 0: the worker may want another chunk.
        self._on_drained = on_drained

    def stop(self, reason: StopReason) -> None:
        """Cancel or expiry: stop dispatching; unrun lines become errors.
        Lanes waiting for a slot end at once; lanes with a request in flight
        get `stop_grace` seconds (see `_drain_in_flight`)."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self._stopped.set()
            for lane in list(self._waiting):
                lane.cancel()

    @property
    def key(self) -> ChunkKey:
        return self.work.chunk.key

    def lease_lost(self) -> None:
        """A flush found another worker owns this chunk now: stop at once."""
        self._lost = True
        if self._dispatch is not None:
            self._dispatch.cancel()

    def snapshot(self) -> Snapshot:
        """What a flush takes: the results held and the counts they make, at
        one instant, so the counts stored never exceed the bytes written."""
        results = self.parts.buffered
        return Snapshot(results, self._tally, self.parts.take())

    def wrote(self, tally: Tally) -> None:
        self.written = tally

    def counted(self, tally: Tally) -> None:
        self.stored = tally

    async def run(self) -> ChunkOutcome:
        done_ids, held = await self.parts.open()
        self.written = held
        self._completed, self._failed = held.completed, held.failed
        self._stopped_lines = held.stopped
        u = held.usage
        self._tokens = [u.input_tokens, u.cached_tokens, u.output_tokens, u.reasoning_tokens]
        self.flusher.register(self)
        dispatch = self._dispatch = asyncio.create_task(
            self._dispatch_all(done_ids), name="chunk-dispatch"
        )
        try:
            try:
                await dispatch
            except asyncio.CancelledError:
                if self._lost:
                    raise LeaseLost(f"lost the lease on {self.work.chunk.key}") from None
                raise
            await self.flusher.flush()
            if self._lost:
                raise LeaseLost(f"lost the lease on {self.work.chunk.key}")
            self.flusher.unregister(self)
            await self.parts.hand_over()
            return ChunkOutcome(finalizing=await self._store_tally(done=True))
        except asyncio.CancelledError:
            # Shutdown, not a stop: keep what ran, release the chunk as it stands.
            await self._abandon(dispatch)
            raise
        finally:
            self.flusher.unregister(self)
            dispatch.cancel()
            self.parts.close()

    async def _abandon(self, dispatch: asyncio.Task[None]) -> None:
        for task in (dispatch, *self._in_flight):
            task.cancel()
        await asyncio.gather(dispatch, *self._in_flight, return_exceptions=True)
        try:
            await self.flusher.flush()
        except Exception:  # best effort: what is not stored is re-run on resume
            log.warning("could not save progress of %s on shutdown", self.work.chunk.key)

    # -- dispatch

    async def _dispatch_all(self, done_ids: set[str]) -> None:
        """Send every line not yet done, through a pool of lanes.

        Each lane is one coroutine that takes the next line, waits for a
        slot of the line's model and sends it: no task is created per
        request, and the model's limiter (first come, first served) shares
        the slots between the lanes of every running chunk."""
        todo: list[Request] = []
        work = self.work
        async for reads in chunk_requests(
            self.blobs, work.input_blob_key, work.chunk, work.endpoint
        ):
            for read in reads:
                if read.custom_id in done_ids:
                    continue
                if isinstance(read, Unreadable):
                    log.error("%s: %s", self.key, read.error.message)
                    self._record(Outcome.unreadable(read))
                else:
                    todo.append(read)
        self.unsent = len(todo)
        if self.given_up:
            self._give_up(todo)
            self._sent(len(todo))
            return
        if self.settings.prefix_dispatch:
            todo = self._grouped_by_prefix(todo)
        if not todo:
            self._sent(0)
        queue = iter(todo)
        unrun: list[str] = []
        # One lane more than the widest model has slots: as a request ends,
        # a lane of this chunk is already waiting, so the freed slot can
        # stay with this chunk's prompt prefix (runner/limiter.py).
        count = min(len(todo), 1 + max(m.settings.max_concurrency for m in self.models.all()))
        lanes = [asyncio.create_task(self._lane(queue, unrun)) for _ in range(count)]
        for lane in lanes:
            self._in_flight.add(lane)
            lane.add_done_callback(self._in_flight.discard)
        if self._in_flight:
            await self._drain_in_flight()
        for lane in lanes:
            # A lane that died of a bug took the line it held with it. The
            # chunk must not end with a line in neither part: fail it, and
            # its retry runs what the parts do not hold.
            if not lane.cancelled() and (error := lane.exception()) is not None:
                raise error
        unrun.extend(request.custom_id for request in queue)  # lanes cut off by a stop
        for custom_id in unrun:
            self._record(self._never_ran(custom_id))

    def _grouped_by_prefix(self, todo: list[Request]) -> list[Request]:
        """The chunk's lines with those sharing a prompt prefix back to back
        (results are joined by `custom_id`, so their order is free), each
        prefix's key kept for its requests' choice of replica."""
        chars, endpoint = self.settings.prefix_chars, self.work.endpoint
        keys = self._prefixes
        for request in todo:
            key = prefix_key(endpoint, request.body, chars)
            if key is not None:
                keys[request.custom_id] = key
        return grouped(todo, lambda request: keys.get(request.custom_id))

    def _give_up(self, todo: list[Request]) -> None:
        crashes = self.work.chunk.crashes
        log.warning(
            "chunk %s/%d crashed its worker %d times; failing its %d unfinished lines",
            self.work.chunk.batch_id,
            self.work.chunk.index,
            crashes,
            len(todo),
        )
        message = (
            f"The worker running this request's chunk died {crashes} times "
            f"(max_chunk_attempts); the request was given up."
        )
        for request in todo:
            self._record(Outcome.never_ran(request.custom_id, "chunk_failed", message))

    async def _lane(self, queue: Iterator[Request], unrun: list[str]) -> None:
        stopped = self._stopped
        lane = asyncio.current_task()
        assert lane is not None
        for request in queue:
            if stopped.is_set():
                unrun.append(request.custom_id)
                continue
            served = self.models.get(request.model)
            if served is None:
                self._sent(1)
                self._record(
                    Outcome.never_ran(
                        request.custom_id,
                        "model_not_found",
                        f"The model {request.model!r} is no longer configured.",
                    )
                )
                continue
            limiter = served.limiter
            key = self._prefixes.get(request.custom_id)
            if not (self.flusher.has_room and limiter.try_acquire(key)):
                # The slow path: wait, cancellable by a stop (see `stop`).
                self._waiting.add(lane)
                try:
                    await self.flusher.wait_for_room()
                    await limiter.acquire(key)
                except asyncio.CancelledError:
                    if self.stop_reason is not None:
                        unrun.append(request.custom_id)
                    raise
                finally:
                    self._waiting.discard(lane)
            self._sent(1)
            await self._send(request, served, key)

    def _sent(self, lines: int) -> None:
        """`lines` took a slot (or ended without one)."""
        unsent = self.unsent = self.unsent - lines
        if unsent <= 0 and self._on_drained is not None:
            self._on_drained()

    async def _drain_in_flight(self) -> None:
        """Wait for in-flight requests; after a stop, only `stop_grace` more.

        All lanes are awaited through one future: waiting on the set of
        them again after each lane ends costs a callback per lane per wait,
        which with a wide model (2,000 lanes in a chunk, ending one by one)
        took a second of CPU per chunk."""
        lanes: asyncio.Future[Any] = asyncio.gather(*self._in_flight, return_exceptions=True)
        stopped: asyncio.Future[Any] = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({lanes, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not lanes.done():  # stopped: a grace period, then the rest are cut off
                await asyncio.wait({lanes}, timeout=self.settings.stop_grace)
        finally:
            stopped.cancel()
        pending = [task for task in self._in_flight if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(lanes, return_exceptions=True)

    async def _send(self, request: Request, served: ServedModel, key: int | None) -> None:
        if CRASH_MARKER is not None:  # test-only (overnight/testing/crash.py)
            crash_if_marked(request.body)
        upstream = UpstreamRequest(self.work.endpoint, request.body, key)
        try:
            result = await send_with_retries(served, upstream, self._stopped)
        except asyncio.CancelledError:
            if self.stop_reason is not None:  # cut off by a stop's grace period
                self._record(self._never_ran(request.custom_id))
            raise
        except Exception as exc:  # a backend bug must not lose the line
            log.exception("backend %s failed on %s", request.model, request.custom_id)
            result = UpstreamResult(
                None, error_code="backend_error", error_message=f"{type(exc).__name__}: {exc}"
            )
        if result.out_of_files:  # a stop came before it could be sent
            self._record(self._never_ran(request.custom_id))
            return
        usage = self._record(
            Outcome(
                request.custom_id,
                result.status_code,
                result.body,
                result.request_id,
                result.error_code,
                result.error_message,
            )
        )
        served.finished(self.work.tenant, result.ok, usage)

    def _never_ran(self, custom_id: str) -> Outcome:
        return Outcome.stopped(custom_id, self.stop_reason or StopReason.CANCELLED)

    @property
    def _tally(self) -> Tally:
        return Tally(self._completed, self._failed, Usage(*self._tokens), self._stopped_lines)

    def _record(self, outcome: Outcome) -> Usage | None:
        """Write the line's result and count it; the tokens it used, if any."""
        succeeded = outcome.succeeded
        self.parts.add(self.render(outcome), succeeded=succeeded)
        usage = None
        if succeeded:
            self._completed += 1
            body = outcome.body
            if isinstance(body, dict) and body.get("usage"):
                usage = Usage.from_response(body)
                tokens = self._tokens
                tokens[0] += usage.input_tokens
                tokens[1] += usage.cached_tokens
                tokens[2] += usage.output_tokens
                tokens[3] += usage.reasoning_tokens
        else:
            self._failed += 1
            if outcome.error_code in _STOP_CODES:
                self._stopped_lines += 1
        self.flusher.added()
        return usage

    # -- the end of the chunk

    async def _store_tally(self, *, done: bool) -> bool:
        # Shielded for the reason `Flusher.store_counts` is.
        return await asyncio.shield(self._store_tally_now(done=done))

    async def _store_tally_now(self, *, done: bool) -> bool:
        async with self.flusher.counting:  # never beside a flush's count
            tally = self._tally
            result = await self.store.record_progress(
                self.work.chunk.key,
                self.worker,
                self.attempt,
                tally,
                self.stored,
                done=done,
                now=int(time.time()),
            )
            if result is None:
                raise LeaseLost(f"lost the lease on {self.work.chunk.key}")
            self.stored = tally
            return result
