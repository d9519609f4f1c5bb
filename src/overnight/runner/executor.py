"""Run one chunk: read its lines, dispatch them, append their results.

Lines are dispatched concurrently, bounded by each model's limiter. Each
result is rendered in the batch's dialect and appended to the chunk's output
or error part. A flusher writes the parts to disk and then stores the
counters, every `flush_lines` results or `flush_interval` seconds: one
transaction per group, never one per request.

A stop (cancel or expiry) ends dispatching: in-flight requests get
`stop_grace` seconds to finish, and every line that did not run is written
to the error part as `batch_cancelled` / `batch_expired`. A shutdown is not a
stop: the chunk is abandoned as it stands and its lease released, so another
worker (or this one, restarted) resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from overnight.backends.base import UpstreamRequest, UpstreamResult
from overnight.blobs import BlobStore
from overnight.domain.batch import Usage
from overnight.domain.chunk import ChunkWork, Tally
from overnight.domain.lines import LineRules, Request, check_line, is_blank, strip_bom
from overnight.domain.results import Outcome, renderer_for
from overnight.domain.status import StopReason
from overnight.runner.dispatch import send_with_retries
from overnight.runner.limiter import acquire_unless
from overnight.runner.models import Models, ServedModel
from overnight.runner.parts import ChunkParts
from overnight.runner.unflushed import UnflushedResults
from overnight.settings import Settings
from overnight.store.sql import SqlStore
from overnight.types import WorkerId

log = logging.getLogger("overnight.runner")


class LeaseLost(Exception):
    """Another worker took the chunk over; this one must stop touching it."""


@dataclass
class ChunkOutcome:
    finalizing: bool


class ChunkRun:
    def __init__(
        self,
        work: ChunkWork,
        *,
        worker: WorkerId,
        store: SqlStore,
        blobs: BlobStore,
        models: Models,
        settings: Settings,
        unflushed: UnflushedResults | None = None,
    ) -> None:
        self.work = work
        self.worker = worker
        self.store = store
        self.blobs = blobs
        self.models = models
        self.settings = settings
        self.parts = ChunkParts(settings.data_dir / "staging", blobs, work.chunk.key)
        self.render = renderer_for(work.dialect)
        self.stop_reason: StopReason | None = work.stop_reason
        self._stopped = asyncio.Event()
        if self.stop_reason is not None:
            self._stopped.set()
        self._tally = Tally()
        self._stored = work.chunk.tally
        self._flush_now = asyncio.Event()
        self.unflushed = unflushed or UnflushedResults(settings.flush_lines)
        self._mine = 0  # of `unflushed`, how many are this chunk's
        self._finishing = False
        self._uploaded_at = time.monotonic()
        self._in_flight: set[asyncio.Task[None]] = set()

    def stop(self, reason: StopReason) -> None:
        """Cancel or expiry: stop dispatching; unrun lines become errors."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self._stopped.set()

    async def run(self) -> ChunkOutcome:
        self.unflushed.subscribe(self._flush_now)
        try:
            return await self._run()
        finally:
            self.unflushed.unsubscribe(self._flush_now)
            self.unflushed.written(self._mine)

    async def _run(self) -> ChunkOutcome:
        done_ids, self._tally = await self.parts.open()
        flusher = asyncio.create_task(self._flush_periodically(), name="chunk-flusher")
        dispatch = asyncio.create_task(self._dispatch_all(done_ids), name="chunk-dispatch")
        try:
            await asyncio.wait({flusher, dispatch}, return_when=asyncio.FIRST_COMPLETED)
            if flusher.done():  # it only ends early by failing (a lost lease)
                dispatch.cancel()
                await flusher
            await dispatch
            self._finishing = True
            self._flush_now.set()
            await flusher
            await self.parts.hand_over()
            return ChunkOutcome(finalizing=await self._store_tally(done=True))
        except asyncio.CancelledError:
            # Shutdown, not a stop: keep what ran, release the chunk as it stands.
            await self._abandon(dispatch, flusher)
            raise
        finally:
            flusher.cancel()
            dispatch.cancel()
            self.parts.close()

    async def _abandon(self, dispatch: asyncio.Task[None], flusher: asyncio.Task[None]) -> None:
        for task in (dispatch, flusher, *self._in_flight):
            task.cancel()
        await asyncio.gather(dispatch, flusher, *self._in_flight, return_exceptions=True)
        try:
            await self._flush_and_store()
        except Exception:  # best effort: what is not stored is re-run on resume
            log.warning("could not save progress of %s on shutdown", self.work.chunk.key)

    # -- dispatch

    async def _dispatch_all(self, done_ids: set[str]) -> None:
        unrun: list[str] = []
        for request in await self._requests():
            if request.custom_id in done_ids:
                continue
            if self._stopped.is_set():
                unrun.append(request.custom_id)
                continue
            served = self.models.get(request.model)
            if served is None:
                self._record(
                    Outcome.never_ran(
                        request.custom_id,
                        "model_not_found",
                        f"The model {request.model!r} is no longer configured.",
                    )
                )
                continue
            await self.unflushed.wait_for_room()
            if not await acquire_unless(served.limiter, self._stopped):
                unrun.append(request.custom_id)
                continue
            task = asyncio.create_task(self._send(request, served))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        if self._in_flight:
            await self._drain_in_flight()
        for custom_id in unrun:
            self._record(self._never_ran(custom_id))

    async def _drain_in_flight(self) -> None:
        """Wait for in-flight requests; after a stop, only `stop_grace` more."""
        pending: set[asyncio.Future[Any]] = set(self._in_flight)
        stopped: asyncio.Future[Any] = asyncio.ensure_future(self._stopped.wait())
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending | {stopped}, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(stopped)
                if stopped in done:
                    if pending:
                        _, pending = await asyncio.wait(pending, timeout=self.settings.stop_grace)
                    break
        finally:
            stopped.cancel()
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _send(self, request: Request, served: ServedModel) -> None:
        upstream = UpstreamRequest(self.work.endpoint, request.body)
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
        self._record(
            Outcome(
                request.custom_id,
                result.status_code,
                result.body,
                result.request_id,
                result.error_code,
                result.error_message,
            )
        )

    def _never_ran(self, custom_id: str) -> Outcome:
        reason = self.stop_reason or StopReason.CANCELLED
        verb = "was cancelled" if reason is StopReason.CANCELLED else "expired"
        return Outcome.never_ran(
            custom_id, reason.error_code, f"The batch {verb} before this request ran."
        )

    def _record(self, outcome: Outcome) -> None:
        succeeded = outcome.succeeded
        self.parts.add(self.render(outcome), succeeded=succeeded)
        t = self._tally
        if succeeded:
            self._tally = Tally(
                t.completed + 1, t.failed, t.usage + Usage.from_response(outcome.body)
            )
        else:
            self._tally = Tally(t.completed, t.failed + 1, t.usage)
        self._mine += 1
        self.unflushed.added()

    # -- reading the chunk

    async def _requests(self) -> list[Request]:
        chunk = self.work.chunk
        data = await self.blobs.read_bytes(self.work.input_blob_key, chunk.start, chunk.end)
        rules = LineRules(self.work.endpoint, models=None, require_method_and_url=False)
        return list(_parse(data, chunk.first_line, rules))

    # -- flushing

    async def _flush_periodically(self) -> None:
        while not self._finishing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), self.settings.flush_interval)
            self._flush_now.clear()
            await self._flush_and_store()
            if (
                self.blobs.remote
                and time.monotonic() - self._uploaded_at >= self.settings.part_upload_interval
            ):
                self._uploaded_at = time.monotonic()
                await self.parts.upload_snapshot()

    async def _flush_and_store(self) -> None:
        taken = self.parts.buffered
        tally, pending = self._tally, self.parts.take()  # one instant: counts match the bytes
        await self.parts.write(pending)
        self._mine -= taken
        self.unflushed.written(taken)
        if tally != self._stored:
            await self._store_tally(done=False, tally=tally)

    async def _store_tally(self, *, done: bool, tally: Tally | None = None) -> bool:
        tally = self._tally if tally is None else tally
        result = await self.store.record_progress(
            self.work.chunk.key, self.worker, tally, self._stored, done=done, now=int(time.time())
        )
        if result is None:
            raise LeaseLost(f"lost the lease on {self.work.chunk.key}")
        self._stored = tally
        return result


def _parse(data: bytes, first_line: int, rules: LineRules) -> Iterator[Request]:
    for offset, raw in enumerate(data.split(b"\n")):
        line = first_line + offset
        raw = strip_bom(raw, line)
        if is_blank(raw):
            continue
        checked = check_line(raw, line, rules)
        if isinstance(checked, Request):
            yield checked
