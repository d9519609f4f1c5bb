"""Anthropic's Message Batches over `service`: the use cases the Anthropic
dialect (api/anthropic.py) needs beyond the core's.

A create carries its requests in its body rather than in a file: they
stream into an input file in the core's line format as each one is
checked, and the batch is created over that file only once every request
passed. A bad request, a body cut short or over a limit drops the bytes
written so far: nothing is left half-created. From there it is a batch
like any other (chunks, leases, fair share, windows, quotas), whose result
lines are rendered in Anthropic's shape (`domain/results.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from overnight.domain.batch import Batch
from overnight.domain.dialects import ANTHROPIC
from overnight.domain.message_requests import ENDPOINT, BadRequest, RequestChecker
from overnight.domain.results import Outcome
from overnight.domain.status import BatchStatus, StopReason
from overnight.errors import InvalidRequest, NotFound
from overnight.service import Service
from overnight.types import TenantId, TenantScope

#: Lines are written to storage in pieces of about this size.
WRITE_BYTES = 1024 * 1024
#: The name the input file made for a create is stored under.
INPUT_FILENAME = "message_batch_requests.jsonl"


class _CustomId(msgspec.Struct):
    custom_id: str


_decode_custom_id = msgspec.json.Decoder(_CustomId).decode


class MessageBatches:
    def __init__(self, service: Service) -> None:
        self.service = service

    async def create(self, tenant: TenantId, requests: AsyncIterator[Any]) -> Batch:
        """A batch of the requests `requests` yields, as they are parsed."""
        service = self.service
        settings = service.settings
        checker = RequestChecker(
            models=service.model_names,
            max_line_bytes=settings.max_line_bytes,
            max_custom_id_length=settings.max_custom_id_length,
            single_model=settings.require_single_model,
        )
        sink = service.new_file_sink()
        pending = bytearray()
        try:
            async for item in requests:
                if checker.count >= settings.max_message_batch_requests:
                    raise BadRequest(
                        f"requests[{checker.count}]",
                        f"a batch holds at most {settings.max_message_batch_requests} requests.",
                    )
                pending += checker.check(item)
                if len(pending) >= WRITE_BYTES:
                    await sink.write(bytes(pending))
                    pending.clear()
            if checker.count == 0:
                # Also what a body of another shape (`[]`, `{"requests": {}}`)
                # comes to: the stream finds no request in it.
                raise BadRequest(
                    "requests",
                    'at least one request is required; the body is {"requests": '
                    '[{"custom_id": ..., "params": {...}}, ...]}.',
                )
            await sink.write(bytes(pending))
        except BadRequest as exc:
            await sink.abort()
            raise InvalidRequest(str(exc), param=exc.param, code="invalid_request") from None
        except BaseException:
            await sink.abort()
            raise
        record = await service.create_file(tenant, sink, filename=INPUT_FILENAME, purpose="batch")
        try:
            return await service.create_batch(
                tenant, input_file_id=record.id, endpoint=ENDPOINT, dialect=ANTHROPIC
            )
        except BaseException:
            await service.delete_file(tenant, record.id)  # no input without its batch
            raise

    async def requests_in(self, batch: Batch) -> int:
        """How many requests the batch holds. Counted by validation; until
        then (or when a cancel came first), its input file's lines."""
        total = batch.request_counts.total
        if total or batch.status not in (BatchStatus.VALIDATING, BatchStatus.CANCELLED):
            return total
        record = await self.service.store.get_file(None, batch.input_file_id)
        return (record.line_count or 0) if record is not None else 0

    async def results(
        self, tenant: TenantScope, batch_id: str
    ) -> tuple[Batch, AsyncIterator[bytes]]:
        """An ended batch and its result lines, one per request, in no
        particular order: its output file, then its error file."""
        batch = await self.service.get_batch(tenant, batch_id)
        if not batch.status.is_terminal:
            raise NotFound(
                f"Batch {batch_id} has no results yet: it is still {ANTHROPIC.status_of(batch)}.",
                param="batch_id",
                code="results_not_ready",
            )
        return batch, self._result_lines(batch)

    async def _result_lines(self, batch: Batch) -> AsyncIterator[bytes]:
        blobs = self.service.blobs
        for file_id in (batch.output_file_id, batch.error_file_id):
            record = None if file_id is None else await self.service.store.get_file(None, file_id)
            if record is not None:
                async for piece in blobs.read(record.blob_key):
                    yield piece
        if batch.in_progress_at is None and batch.stop_reason is StopReason.CANCELLED:
            # Cancelled before validation began: no line ran, none has a
            # result line, and each is reported canceled.
            async for piece in self._never_started(batch):
                yield piece

    async def _never_started(self, batch: Batch) -> AsyncIterator[bytes]:
        record = await self.service.store.get_file(None, batch.input_file_id)
        if record is None:
            return
        render = batch.dialect.render
        rest = b""
        async for piece in self.service.blobs.read(record.blob_key):
            *lines, rest = (rest + piece).split(b"\n")
            yield b"".join(_canceled(render, line) for line in lines)
        yield _canceled(render, rest)

    async def delete(self, tenant: TenantScope, batch_id: str) -> Batch:
        """Delete an ended batch and its results; its input file too when
        the batch was created here (the file was made for it alone)."""
        batch = await self.service.get_batch(tenant, batch_id)
        return await self.service.delete_batch(  # its errors name the id as given (msgbatch_...)
            tenant, batch_id, with_input=batch.dialect is ANTHROPIC
        )


def _canceled(render: Any, line: bytes) -> bytes:
    if not line.strip():
        return b""
    try:
        custom_id = _decode_custom_id(line).custom_id
    except (msgspec.DecodeError, UnicodeDecodeError):
        return b""
    rendered: bytes = render(Outcome.stopped(custom_id, StopReason.CANCELLED))
    return rendered
