"""A batch's result lines so far, over `service`: what the `/output` and
`/errors` routes of every dialect call.

While the batch runs, the lines come from its chunks' parts, after the
reader's `after` cursor (domain/result_cursor.py); once it has ended, from
its final output and error files, the same cursor mapped onto them. Either
way the lines stream: nothing holds more than a piece (about 1 MiB) of a
part or file in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from overnight.domain.batch import Batch
from overnight.domain.chunk import Chunk
from overnight.domain.result_cursor import (
    BadCursor,
    ResultCursor,
    ResultKind,
    Take,
    ended_cursor,
    lines_of,
    plan_ended,
    plan_running,
)
from overnight.errors import InvalidRequest
from overnight.runner.results_so_far import running_lines, select_lines
from overnight.service import Service
from overnight.types import TenantScope


@dataclass(frozen=True, slots=True)
class ResultsSoFar:
    batch: Batch
    #: Whether the batch may still add lines (it has not ended).
    incomplete: bool
    #: The cursor to pass as `after` for the lines that come next.
    next_after: str
    lines: AsyncIterator[bytes]


class BatchResults:
    def __init__(self, service: Service) -> None:
        self.service = service

    async def so_far(
        self, tenant: TenantScope, batch_id: str, kind: ResultKind, after: str | None = None
    ) -> ResultsSoFar:
        """The lines of `kind` written since `after` (all of them without
        it). Another tenant's batch is a 404, as everywhere."""
        service = self.service
        batch = await service.get_batch(tenant, batch_id)
        cursor = ResultCursor() if after is None else _decode(after, batch, kind)
        chunks = await service.store.chunks_of(batch.id)
        if batch.status.is_terminal:
            following = ended_cursor(chunks).encode(batch.id, kind)
            return ResultsSoFar(
                batch, False, following, self._ended_lines(batch, kind, chunks, cursor, after)
            )
        takes, following_cursor = plan_running(chunks, cursor, kind)
        staging = service.settings.data_dir / "staging"

        async def from_final_file(take: Take, first: int) -> AsyncIterator[bytes] | None:
            return await self._in_final_file(batch, kind, take, first)

        return ResultsSoFar(
            batch,
            True,
            following_cursor.encode(batch.id, kind),
            running_lines(service.blobs, staging, takes, kind, from_final_file),
        )

    async def _in_final_file(
        self, batch: Batch, kind: ResultKind, take: Take, first: int
    ) -> AsyncIterator[bytes] | None:
        """A take's lines from `first` on, once its part is gone because the
        batch has ended meanwhile: in the final file, after the lines of the
        chunks before it (their counts are final once it has ended)."""
        ended = await self.service.store.get_batch(None, batch.id)
        if ended is None or not ended.status.is_terminal:
            return None
        pieces = await self.final_file(ended, kind)
        if pieces is None:
            return None
        chunks = await self.service.store.chunks_of(batch.id)
        before = sum(lines_of(chunk, kind, ended=True) for chunk in chunks[: take.chunk.index])
        return select_lines(pieces, [(before + first, take.upto - first)])

    async def _ended_lines(
        self,
        batch: Batch,
        kind: ResultKind,
        chunks: list[Chunk],
        cursor: ResultCursor,
        after: str | None,
    ) -> AsyncIterator[bytes]:
        pieces = await self.final_file(batch, kind)
        if pieces is None:
            return
        if after is None:  # the whole file, byte for byte
            async for piece in pieces:
                yield piece
            return
        async for lines in select_lines(pieces, plan_ended(chunks, cursor, kind)):
            yield lines

    async def final_file(self, batch: Batch, kind: ResultKind) -> AsyncIterator[bytes] | None:
        """An ended batch's output or error file as it stands (None if it
        has none, or it was deleted)."""
        file_id = batch.output_file_id if kind is ResultKind.OUTPUT else batch.error_file_id
        if file_id is None:
            return None
        record = await self.service.store.get_file(None, file_id)
        return None if record is None else self.service.blobs.read(record.blob_key)


def _decode(after: str, batch: Batch, kind: ResultKind) -> ResultCursor:
    try:
        return ResultCursor.decode(after, batch.id, kind)
    except BadCursor:
        raise InvalidRequest(
            f"after={after[:64]!r} is not a cursor of this batch's {kind.value}; pass the "
            "X-Overnight-Next-After of the previous answer.",
            param="after",
            code="invalid_cursor",
        ) from None
