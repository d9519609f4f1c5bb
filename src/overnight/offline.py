"""One file through the whole service, in this process, with no server:
what `overnight run` does.

The service runs on a state directory of its own (SQLite and local blobs,
with the worker in this event loop). The input becomes a file and a batch
whose metadata carries the input's SHA-256, so running the same input on
the same state directory again finds that batch and attaches to it
instead of starting over: after Ctrl-C (leases handed back), `kill -9` or a
power cut (leases found at start-up and released; the chunks' parts say
what already ran), the worker picks up where the parts end. Only the
results of the last flush window can run twice (docs/operations.md, "The
durability window"), and the output holds each line once, because it is
the batch's own output file, written at the end.

`--ordered` puts the results back in input order. The output file is the
chunks' parts in chunk order, and a chunk is a run of consecutive input
lines, so a line is never further than one chunk from its place: a heap
one chunk wide sorts the stream in bounded memory, plus a map of
custom_id to line number. A batch whose chunks were cut from a grouped copy
of its input (prefix grouping, runner/regroup.py) has no such bound; its
results are sorted through bucket files on disk instead (result_order.py)."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

import msgspec

from overnight.domain.batch import Batch
from overnight.result_order import sorted_by_place
from overnight.runner.reading import lines_with_offsets
from overnight.runtime import Runtime
from overnight.settings import Settings
from overnight.tenants import LOCAL_TENANT
from overnight.types import BatchId

#: The batch metadata key that ties a batch to the input it was made of.
INPUT_KEY = "overnight_run_input"

#: How much of a file is handed to the blob store at once.
PIECE = 1024 * 1024


class RunFailed(Exception):
    """The in-process worker stopped on an error of its own."""


class Interrupted(Exception):
    """Told to stop while writing the results; the sinks are not committed."""


class ResultSink(Protocol):
    """Where a result file goes: written in order, then committed whole."""

    async def write(self, data: bytes) -> None: ...


class _CustomId(msgspec.Struct):
    custom_id: str = ""


_read_custom_id = msgspec.json.Decoder(_CustomId).decode


def offline_settings(settings: Settings, state_dir: Path) -> Settings:
    """The configured settings (models, chunking, limits) on a state
    directory of this run's own: SQLite and local blobs in it, the worker in
    this process, and a completion window as long as allowed."""
    return settings.model_copy(
        update={
            "data_dir": state_dir,
            "database_url": None,
            "storage_url": None,
            "worker": True,
            "worker_processes": 0,
            "default_completion_window": settings.max_completion_window,
        }
    )


class OfflineRun:
    """The service and its worker, started on a state directory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.failure: BaseException | None = None
        self._failed = asyncio.Event()
        self.runtime = Runtime(settings, on_failure=self._worker_failed)

    def _worker_failed(self, error: BaseException) -> None:
        self.failure = error
        self._failed.set()

    async def start(self) -> None:
        await self.runtime.start()

    async def stop(self) -> None:
        await self.runtime.stop()

    async def find(self, input_sha256: str) -> Batch | None:
        """The batch an earlier run made of this input, if any."""
        service = self.runtime.service
        after: str | None = None
        while True:
            page = await service.list_batches(LOCAL_TENANT, after=after, limit=100)
            for batch in page.items:
                if (batch.metadata or {}).get(INPUT_KEY) == input_sha256:
                    return batch
            if not page.has_more or not page.items:
                return None
            after = page.items[-1].id

    async def submit(self, source: Path, *, name: str, sha256: str, endpoint: str) -> Batch:
        """Store the input as a file and make a batch of it."""
        service = self.runtime.service
        sink = service.new_file_sink()
        try:
            with source.open("rb") as handle:
                while piece := await asyncio.to_thread(handle.read, PIECE):
                    await sink.write(piece)
        except BaseException:
            await sink.abort()
            raise
        record = await service.create_file(LOCAL_TENANT, sink, filename=name, purpose="batch")
        return await service.create_batch(
            LOCAL_TENANT,
            input_file_id=record.id,
            endpoint=endpoint,
            metadata={INPUT_KEY: sha256},
        )

    async def look(self, batch_id: BatchId) -> Batch:
        return await self.runtime.service.get_batch(LOCAL_TENANT, batch_id)

    async def follow(
        self,
        batch: Batch,
        show: Callable[[Batch], None],
        stop: asyncio.Event,
        interval: float = 0.25,
    ) -> Batch | None:
        """Look at the batch every `interval` seconds until it ends (the
        batch), `stop` is set (None), or the worker fails (RunFailed)."""
        show(batch)
        while not batch.status.is_terminal:
            waits = [asyncio.ensure_future(e.wait()) for e in (stop, self._failed)]
            _, pending = await asyncio.wait(waits, timeout=interval, return_when="FIRST_COMPLETED")
            for waiting in pending:
                waiting.cancel()
            if self.failure is not None:
                raise RunFailed(f"the worker stopped: {self.failure!r}") from self.failure
            if stop.is_set():
                return None
            batch = await self.look(batch.id)
            show(batch)
        return batch

    async def write_results(
        self,
        batch: Batch,
        *,
        output: ResultSink,
        errors: ResultSink,
        ordered: bool,
        stop: asyncio.Event | None = None,
    ) -> None:
        """The ended batch's output and error files into the two sinks, as
        stored or (`ordered`) in input order."""
        order = await self._input_order(batch) if ordered else None
        window = await self._widest_chunk(batch) if ordered else 0
        for file_id, sink in ((batch.output_file_id, output), (batch.error_file_id, errors)):
            if file_id is None:
                continue
            record = await self.runtime.service.get_file(LOCAL_TENANT, file_id)
            lines = self._lines(record.blob_key)
            if order is not None and batch.grouped_blob_key is not None:
                scratch = self.settings.data_dir / "staging" / f"order-{batch.id}"
                lines = sorted_by_place(lines, _place_in(order), len(order), window, scratch)
            elif order is not None:
                lines = in_input_order(lines, order, window)
            await _copy(lines, sink, stop)

    async def _lines(self, key: str) -> AsyncIterator[list[bytes]]:
        async for lines in lines_with_offsets(self.runtime.blobs, key):
            yield [line for line, _ in lines if line.strip()]

    async def _input_order(self, batch: Batch) -> dict[str, int]:
        record = await self.runtime.service.get_file(LOCAL_TENANT, batch.input_file_id)
        order: dict[str, int] = {}
        async for lines in self._lines(record.blob_key):
            for line in lines:
                try:
                    order.setdefault(_read_custom_id(line).custom_id, len(order))
                except msgspec.DecodeError:
                    continue
        return order

    async def _widest_chunk(self, batch: Batch) -> int:
        chunks = await self.runtime.store.chunks_of(batch.id)
        return max((chunk.requests for chunk in chunks), default=0)


def _place_in(order: dict[str, int]) -> Callable[[bytes], int | None]:
    def place(line: bytes) -> int | None:
        try:
            return order.get(_read_custom_id(line).custom_id)
        except msgspec.DecodeError:
            return None

    return place


async def in_input_order(
    lines: AsyncIterator[list[bytes]], order: dict[str, int], window: int
) -> AsyncIterator[list[bytes]]:
    """Result lines sorted by their input line, for a stream in which no
    line is more than `window` places from its sorted place across a block
    boundary (the chunks: each a run of consecutive input lines, in order).
    Once the heap holds more than `window` lines, one of them comes from an
    earlier block than anything still to come, so its smallest is final."""
    heap: list[tuple[int, int, bytes]] = []
    place_of = _place_in(order)
    unknown = len(order)  # lines naming no input line (cannot happen) go last
    arrival = 0
    async for batch in lines:
        out: list[bytes] = []
        for line in batch:
            arrival += 1
            place = place_of(line)
            heapq.heappush(heap, (unknown + arrival if place is None else place, arrival, line))
            if len(heap) > window:
                out.append(heapq.heappop(heap)[2])
        if out:
            yield out
    rest = [heapq.heappop(heap)[2] for _ in range(len(heap))]
    if rest:
        yield rest


async def _copy(
    lines: AsyncIterator[list[bytes]], sink: ResultSink, stop: asyncio.Event | None
) -> None:
    async for batch in lines:
        if stop is not None and stop.is_set():
            raise Interrupted("stopped while writing the results")
        await sink.write(b"".join(line + b"\n" for line in batch))
