"""The grouped copy of a batch's input: its lines with one prompt prefix's
together, written at validation when that helps (domain/regrouping.py).

The input is streamed once more and each request line goes, byte for byte
(a first line's byte-order mark dropped), to the local bucket file of its
group; the buckets are then concatenated in group order into one staging
file, cut into chunks on the way, and moved into the blob store under a
key derived from the batch id. Memory: one piece of the input and the
group of each request (one byte a request); at most `MAX_GROUPS` files open.

Crash safety: the copy is in the blob store, whole, before `start_batch`
commits the chunks that read it, and its key depends only on the batch, so
a validation that crashed and runs again overwrites it rather than leaking
one. It is deleted when the batch is finalised (runner/finalize.py) or, if
a crash came in between, when the batch is deleted (service.py).
"""

from __future__ import annotations

import asyncio
import os
from array import array
from pathlib import Path

from overnight.blobs import BlobStore
from overnight.domain.lines import is_blank, strip_bom
from overnight.domain.regrouping import GroupedChunks
from overnight.domain.validation import ChunkRange
from overnight.runner.bucket_files import BucketFiles
from overnight.runner.reading import lines_with_offsets
from overnight.types import BatchId


def grouped_key(batch_id: BatchId) -> str:
    """Where a batch's grouped copy lives in the blob store."""
    return f"grouped/{batch_id}.jsonl"


async def write_grouped(
    blobs: BlobStore,
    source: str,
    groups: array[int],
    *,
    key: str,
    folder: Path,
    chunk_lines: int,
    chunk_bytes: int,
) -> tuple[ChunkRange, ...]:
    """Write the grouped copy of blob `source` under `key`, each request
    line to its place by `groups` (one entry a request, in file order), and
    return its chunks. `folder` is scratch space, removed at the end."""
    buckets = BucketFiles(folder, ".jsonl")
    await buckets.open()
    try:
        request = line = 0
        async for lines in lines_with_offsets(blobs, source):
            pieces: dict[int, list[bytes]] = {}
            for raw, _ in lines:
                line += 1
                raw = strip_bom(raw, line)
                if is_blank(raw):
                    continue
                pieces.setdefault(groups[request], []).append(raw)
                request += 1
            await buckets.append({g: b"\n".join(raws) + b"\n" for g, raws in pieces.items()})
        grouped = folder / "grouped.jsonl"
        cutter = GroupedChunks(chunk_lines, chunk_bytes)
        await asyncio.to_thread(_concatenate, grouped, buckets, cutter)
        await blobs.put_file(key, grouped)
        return cutter.finish()
    finally:
        buckets.remove()


def _concatenate(target: Path, buckets: BucketFiles, cutter: GroupedChunks) -> None:
    """The bucket files one after another into `target`, every line shown
    to `cutter` (a line is at most `max_line_bytes`: validation said so)."""
    with target.open("wb") as out:
        for group in buckets.finish():
            with buckets.path(group).open("rb") as bucket:
                for raw in bucket:
                    cutter.line(len(raw))
                    out.write(raw)
            cutter.group_ends()
        out.flush()
        os.fsync(out.fileno())  # durable before the chunks that read it are
