"""Retry only what failed, over `service`: a new batch of the lines of an
ended batch that did not succeed, and one download of both batches' results.

`retry` reads the ended batch's error file as a stream, keeps the
`custom_id`s whose outcome was asked for (domain/retries.py) in a set on
local disk (runner/id_set.py), then streams the original input file and
copies each line whose id is in the set into a new input file, unchanged.
The new batch has the original's endpoint, dialect and priority, and the
metadata `retry_of` (the original's id) and `retry_outcomes`. Memory stays
flat whatever the file's size: one piece of a file and one block of hashes.

`merged` is the results of the original's every line once: the original's
(itself merged, if it was a retry too) with the lines the retry ran taken
from the retry instead. Successes cannot overlap (a retry only runs lines
that did not succeed), so the merged output is the original's output, then
the retry's; the merged errors are the original's error lines whose id the
retry did not run, then the retry's.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from overnight.batch_results import BatchResults
from overnight.domain.batch import Batch
from overnight.domain.files import FilePurpose
from overnight.domain.result_cursor import ResultKind
from overnight.domain.retries import (
    RETRY_OF,
    RETRY_OUTCOMES,
    RetryOutcome,
    outcome_of,
    outcomes_from,
)
from overnight.domain.status import StopReason
from overnight.errors import Conflict, InvalidRequest, NotFound
from overnight.runner.reading import lines_with_offsets
from overnight.service import Service
from overnight.types import TenantScope

if TYPE_CHECKING:
    # Imported where a retry or merged download needs it: it brings numpy
    # (0.13 s), which an API process would otherwise import at every start.
    from overnight.runner.id_set import SpilledIdSet


class _CustomId(msgspec.Struct):
    custom_id: str


_decode_custom_id = msgspec.json.Decoder(_CustomId).decode
_decode_any = msgspec.json.Decoder().decode


class Retries:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.results = BatchResults(service)

    async def retry(
        self,
        scope: TenantScope,
        batch_id: str,
        *,
        outcomes: Iterable[str] | None = None,
        completion_window: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Batch:
        service = self.service
        try:
            wanted = outcomes_from(outcomes if outcomes is not None else list(RetryOutcome))
        except ValueError:
            raise InvalidRequest(
                "outcomes must name one or more of 'failed', 'expired', 'cancelled'.",
                param="outcomes",
                code="invalid_value",
            ) from None
        original = await service.get_batch(scope, batch_id)
        if not original.status.is_terminal:
            raise _not_ended(batch_id)
        extra = {RETRY_OF: original.id, RETRY_OUTCOMES: ",".join(sorted(wanted))}
        metadata = {**(metadata or {}), **extra}
        service.check_batch_options(completion_window, metadata)
        source = await service.store.get_file(None, original.input_file_id)
        if source is None:
            raise InvalidRequest(
                f"The input file {original.input_file_id} of batch {batch_id} no longer "
                "exists; there is nothing to retry from.",
                param="batch_id",
                code="input_file_not_found",
            )
        sink = service.new_file_sink()
        try:
            from overnight.runner.id_set import SpilledIdSet

            with SpilledIdSet(self._scratch()) as ids:
                every_line = await self._collect(original, wanted, ids)
                ids.freeze()
                async for lines in lines_with_offsets(service.blobs, source.blob_key):
                    chosen = _chosen(lines, ids, every_line)
                    if chosen:
                        await sink.write(chosen)
            if sink.lines == 0:
                raise InvalidRequest(
                    f"No line of batch {batch_id} ended as "
                    f"{' or '.join(sorted(wanted))}; there is nothing to retry.",
                    param="outcomes",
                    code="nothing_to_retry",
                )
        except BaseException:
            await sink.abort()
            raise
        record = await service.create_file(
            original.tenant,
            sink,
            filename=f"{original.id}_retry.jsonl",
            purpose=FilePurpose.BATCH.value,
        )
        try:
            return await service.create_batch(
                original.tenant,
                input_file_id=record.id,
                endpoint=original.endpoint,
                completion_window=completion_window or original.completion_window,
                metadata=metadata,
                dialect=original.dialect,
                priority=original.priority,
                output_expires_after=original.output_expires_after,
            )
        except BaseException:  # a quota, say: no batch, so no file made for it either
            await service.delete_file(original.tenant, record.id)
            raise

    async def _collect(
        self, original: Batch, wanted: frozenset[RetryOutcome], ids: SpilledIdSet
    ) -> bool:
        """Add the ids of the error lines whose outcome is wanted. True when
        every line is wanted without reading anything: a batch cancelled
        before it was validated has no error lines, and every line of it
        counts as cancelled."""
        if (
            original.in_progress_at is None
            and original.stop_reason is StopReason.CANCELLED
            and RetryOutcome.CANCELLED in wanted
        ):
            return True
        errors = await self.results.final_file(original, ResultKind.ERRORS)
        if errors is None:
            return False
        async for lines in _lines_of(errors):
            ids.add_many(_wanted_ids(lines, wanted))
        return False

    async def merged(
        self, scope: TenantScope, batch_id: str, kind: ResultKind
    ) -> tuple[Batch, AsyncIterator[bytes]]:
        """A retry batch's results merged with its original's (see the
        module's docstring). Both must have ended."""
        batch = await self.service.get_batch(scope, batch_id)
        if not (batch.metadata or {}).get(RETRY_OF):
            raise InvalidRequest(
                f"Batch {batch_id} is not a retry (it has no metadata {RETRY_OF!r}); "
                "its own results are its whole result.",
                param="merged",
                code="not_a_retry",
            )
        if not batch.status.is_terminal:
            raise _not_ended(batch_id)
        chain = [batch]
        while origin := (chain[-1].metadata or {}).get(RETRY_OF):
            try:
                chain.append(await self.service.get_batch(scope, origin))
            except NotFound:
                raise NotFound(
                    f"Batch {origin}, which batch {chain[-1].id} retries, no longer exists.",
                    param="batch_id",
                    code="batch_not_found",
                ) from None
        chain.reverse()  # the first original first
        return batch, self._merged_lines(chain, kind)

    async def _merged_lines(self, chain: list[Batch], kind: ResultKind) -> AsyncIterator[bytes]:
        if kind is ResultKind.OUTPUT:
            for batch in chain:
                pieces = await self.results.final_file(batch, kind)
                if pieces is not None:
                    async for piece in pieces:
                        yield piece
            return
        # Each batch's error lines are kept unless a later retry in the chain
        # ran their id again.
        for position, batch in enumerate(chain):
            pieces = await self.results.final_file(batch, kind)
            if pieces is None:
                continue
            later = chain[position + 1 :]
            if not later:
                async for piece in pieces:
                    yield piece
                continue
            from overnight.runner.id_set import SpilledIdSet

            with SpilledIdSet(self._scratch()) as rerun:
                for retry in later:
                    await self._add_input_ids(retry, rerun)
                rerun.freeze()
                async for lines in _lines_of(pieces):
                    ids = [_decode_custom_id(line).custom_id for line in lines]
                    again = rerun.contains_many(ids)
                    kept = [line + b"\n" for line, hit in zip(lines, again, strict=True) if not hit]
                    if kept:
                        yield b"".join(kept)

    async def _add_input_ids(self, batch: Batch, ids: SpilledIdSet) -> None:
        record = await self.service.store.get_file(None, batch.input_file_id)
        if record is None:
            return
        async for lines in lines_with_offsets(self.service.blobs, record.blob_key):
            ids.add_many(_decode_custom_id(raw).custom_id for raw, _ in lines if raw.strip())

    def _scratch(self) -> Path:
        return self.service.settings.data_dir / "staging" / f"retry-{uuid.uuid4().hex}"


def _wanted_ids(lines: list[bytes], wanted: frozenset[RetryOutcome]) -> list[str]:
    found = []
    for line in lines:
        value = _decode_any(line)
        if outcome_of(value) in wanted:
            found.append(value["custom_id"])
    return found


def _chosen(lines: list[tuple[bytes, int]], ids: SpilledIdSet, every_line: bool) -> bytes:
    """The input lines (with their newline) to copy into the retry's file."""
    present = [raw for raw, _ in lines if raw.strip()]
    if every_line:
        return b"".join(raw + b"\n" for raw in present)
    hits = ids.contains_many([_decode_custom_id(raw).custom_id for raw in present])
    return b"".join(raw + b"\n" for raw, hit in zip(present, hits, strict=True) if hit)


async def _lines_of(pieces: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    """A JSONL stream as lists of lines (without newlines), one per piece."""
    carry = b""
    async for piece in pieces:
        data = carry + piece if carry else piece
        lines = data.split(b"\n")
        carry = lines.pop()
        present = [line for line in lines if line.strip()]
        if present:
            yield present
    if carry.strip():
        yield [carry]


def _not_ended(batch_id: str) -> Conflict:
    return Conflict(
        f"Batch {batch_id} has not ended; wait until it has, or cancel it.",
        param="batch_id",
        code="batch_not_ended",
    )
