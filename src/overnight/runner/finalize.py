"""Finalise a batch: assemble its result files and end it, exactly once.

Runs only for a batch in `finalizing` whose lease this worker holds. The
output and error files are the chunks' parts concatenated in chunk order;
the lines of chunks that never ran (the batch stopped first) are written to
the error file as `batch_cancelled` / `batch_expired`, read from the input
or from the grouped copy the chunks were cut from (runner/regroup.py),
which is deleted once the batch has ended. Then one transaction
creates the file records and moves the batch to its final status, guarded by
the lease: if two workers ever raced here, only one would commit. A crash
midway leaves the batch in `finalizing` with a lease that expires, and the
next worker starts over: the result files' ids derive from the batch id, so
a second attempt overwrites the first one's blobs instead of leaking them.
"""

from __future__ import annotations

import logging
import shutil
import time

from overnight._ids import result_file_id
from overnight.blobs import BlobStore, BlobWriter
from overnight.domain.batch import Batch
from overnight.domain.chunk import ChunkStatus
from overnight.domain.files import FilePurpose, FileRecord
from overnight.domain.lines import Unreadable
from overnight.domain.results import Outcome
from overnight.domain.status import BatchStatus, StopReason
from overnight.runner.parts import part_key
from overnight.runner.reading import chunk_requests
from overnight.settings import Settings
from overnight.store.contracts import RunnerStore
from overnight.types import FileId, WorkerId

log = logging.getLogger("overnight.runner")


async def finalize_batch(
    batch: Batch, *, worker: WorkerId, store: RunnerStore, blobs: BlobStore, settings: Settings
) -> bool:
    started = time.monotonic()
    output_id, error_id = result_file_id(batch.id, "output"), result_file_id(batch.id, "error")
    output = blobs.writer(f"files/{output_id}")
    errors = blobs.writer(f"files/{error_id}")
    try:
        never_ran, stopped = await _assemble(
            batch, store=store, blobs=blobs, output=output, errors=errors
        )
        await output.commit()
        await errors.commit()
    except BaseException:
        await output.abort()
        await errors.abort()
        raise

    now = time.time()
    reason = batch.stop_reason
    status = reason.final_status if reason is not None else BatchStatus.COMPLETED
    output_record = _result_file(batch, output_id, "output", output, int(now))
    error_record = _result_file(batch, error_id, "error", errors, int(now))
    finished = await store.finish_batch(
        batch.id,
        worker,
        status=status,
        output=output_record,
        errors=error_record,
        never_ran=never_ran,
        stopped=stopped,
        now=int(now),
        created_us=int(now * 1_000_000),
    )
    if not finished:  # another worker finished it; the blobs are the same bytes, keep them
        return False
    for record, file_id in ((output_record, output_id), (error_record, error_id)):
        if record is None:  # nothing went into it
            await blobs.delete(f"files/{file_id}")
    await blobs.delete_prefix(f"parts/{batch.id}")
    if batch.grouped_blob_key is not None:  # no chunk reads it any more
        await blobs.delete(batch.grouped_blob_key)
    shutil.rmtree(settings.data_dir / "staging" / batch.id, ignore_errors=True)
    log.info("finalised %s as %s in %.2f s", batch.id, status.value, time.monotonic() - started)
    return True


async def _assemble(
    batch: Batch, *, store: RunnerStore, blobs: BlobStore, output: BlobWriter, errors: BlobWriter
) -> tuple[int, int]:
    """Concatenate the parts; write never-ran lines for skipped chunks.
    Returns how many lines never ran, and how many of them the stop kept
    from running (the rest no longer read as requests)."""
    render = batch.dialect.render
    reason = batch.stop_reason or StopReason.CANCELLED
    source = batch.grouped_blob_key
    if source is None:
        input_file = await store.get_file(None, batch.input_file_id)
        source = None if input_file is None else input_file.blob_key
    never_ran = stopped = 0
    for chunk in await store.chunks_of(batch.id):
        if chunk.status is ChunkStatus.DONE:
            for kind, writer in (("output", output), ("error", errors)):
                key = part_key(chunk.key, chunk.attempts, kind)
                if await blobs.exists(key):
                    async for piece in blobs.read(key):
                        await writer.write(piece)
        elif chunk.status is ChunkStatus.SKIPPED and source is not None:
            async for reads in chunk_requests(blobs, source, chunk, batch.endpoint):
                rendered = []
                for read in reads:
                    if isinstance(read, Unreadable):
                        rendered.append(render(Outcome.unreadable(read)))
                    else:
                        rendered.append(render(Outcome.stopped(read.custom_id, reason)))
                        stopped += 1
                never_ran += len(rendered)
                await errors.write(b"".join(rendered))
    return never_ran, stopped


def _result_file(
    batch: Batch, file_id: FileId, kind: str, writer: BlobWriter, now: int
) -> FileRecord | None:
    if writer.size == 0:
        return None
    return FileRecord(
        id=file_id,
        tenant=batch.tenant,
        filename=f"{batch.id}_{kind}.jsonl",
        purpose=FilePurpose.BATCH_OUTPUT,
        bytes=writer.size,
        created_at=now,
        sha256=writer.sha256,
        blob_key=f"files/{file_id}",
    )
