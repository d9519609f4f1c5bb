"""Validate a batch's input file, then start the batch or fail it.

The file is streamed once (twice only when a duplicate `custom_id` is
suspected); chunks are cut in the same pass. The ids' hashes are spilled to
local disk as they pile up (runner/hash_spill.py), so memory stays flat.

With `prefix_dispatch`, the same pass learns each request's prompt prefix
once the file reaches a second chunk (a batch of one chunk, most of them,
keys none: `FileValidator.on_request`), and a valid batch of several chunks whose prefixes are mixed gets a grouped
copy of its input (runner/regroup.py): its chunks are cut from that copy.
"""

from __future__ import annotations

import logging
import time

from overnight.blobs import BlobStore
from overnight.domain.batch import Batch
from overnight.domain.lines import LineError, LineRules
from overnight.domain.prefixes import PROMPT_ENDPOINTS
from overnight.domain.regrouping import PrefixGroups
from overnight.domain.status import BatchStatus
from overnight.domain.validation import DuplicateFinder, FileValidator
from overnight.runner.hash_spill import SpilledHashes
from overnight.runner.reading import lines_with_offsets
from overnight.runner.regroup import grouped_key, write_grouped
from overnight.settings import Settings
from overnight.store.contracts import RunnerStore
from overnight.types import WorkerId

log = logging.getLogger("overnight.runner")


async def validate_batch(
    batch: Batch,
    *,
    worker: WorkerId,
    store: RunnerStore,
    blobs: BlobStore,
    settings: Settings,
    model_names: frozenset[str],
) -> BatchStatus | None:
    started = time.monotonic()
    record = await store.get_file(None, batch.input_file_id)
    if record is None:
        error = LineError(
            "file_not_found", f"The input file {batch.input_file_id} no longer exists.", None
        )
        return await store.fail_batch(batch.id, worker, [error], int(time.time()))

    rules = LineRules(
        endpoint=batch.endpoint,
        models=model_names,
        require_method_and_url=batch.dialect.require_method_and_url,
        max_custom_id_length=settings.max_custom_id_length,
        max_line_bytes=settings.max_line_bytes,
    )
    max_line = settings.max_line_bytes
    groups = None
    if settings.prefix_dispatch and settings.prefix_regroup and batch.endpoint in PROMPT_ENDPOINTS:
        groups = PrefixGroups(batch.endpoint, settings.prefix_chars)
    hashes = SpilledHashes(settings.data_dir / "staging" / f"hashes-{batch.id}-{worker}")
    try:
        validator = FileValidator(
            rules,
            chunk_lines=settings.chunk_lines,
            chunk_bytes=settings.chunk_bytes,
            max_requests=settings.max_requests_per_batch,
            require_single_model=settings.require_single_model,
            hash_sink=hashes,
            on_request=None if groups is None else groups.add_request,
        )
        async for lines in lines_with_offsets(blobs, record.blob_key, max_line=max_line):
            validator.feed_many(lines)
        candidates = validator.duplicate_candidates()
    finally:
        hashes.close()

    duplicates: list[LineError] = []
    if candidates:
        finder = DuplicateFinder(candidates, rules)
        async for lines in lines_with_offsets(blobs, record.blob_key, max_line=max_line):
            for raw, _ in lines:
                finder.feed(raw)
        duplicates = finder.found

    report = validator.finish(record.bytes, duplicates)
    now = int(time.time())
    log.info(
        "validated %s: %d requests, %d errors, %d chunks in %.2f s",
        batch.id,
        report.requests,
        report.error_count,
        len(report.chunks),
        time.monotonic() - started,
    )
    if not report.ok:
        return await store.fail_batch(batch.id, worker, report.errors, now)
    chunks, grouped = report.chunks, None
    if groups is not None and groups.worth_grouping(len(chunks)):
        grouped = grouped_key(batch.id)
        chunks = await write_grouped(
            blobs,
            record.blob_key,
            groups.groups,
            key=grouped,
            folder=settings.data_dir / "staging" / f"grouped-{batch.id}-{worker}",
            chunk_lines=settings.chunk_lines,
            chunk_bytes=settings.chunk_bytes,
        )
        log.info(
            "grouped %s by prompt prefix: %d groups, %d chunks in %.2f s",
            batch.id,
            groups.used(),
            len(chunks),
            time.monotonic() - started,
        )
    status = await store.start_batch(
        batch.id,
        worker,
        requests=report.requests,
        model=report.model,
        chunk_ranges=chunks,
        grouped_blob_key=grouped,
        now=now,
    )
    if grouped is not None and status is BatchStatus.CANCELLED:
        await blobs.delete(grouped)  # cancelled meanwhile: no chunk reads it
    return status
