"""Reading a batch's result lines while it runs, and ranges of lines of
any result file, in bounded memory.

The plan (which lines of which chunk) comes from domain/result_cursor.py;
here the bytes are found and cut. A chunk that is done has its parts in the
blob store; one still running has them in the worker's staging folder
(`data_dir/staging`: the API reads it when it shares the worker's data
directory, as `overnight serve` does) or, with remote storage, as the
snapshot the worker copies to the bucket now and then. A source that turns
out to hold fewer lines than the plan promised (the batch was finalised
and its parts deleted meanwhile) raises `ShortSource`, so the response is
cut off with an error instead of silently missing lines: the client asks
again with the same cursor.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from overnight.blobs import BlobStore
from overnight.domain.chunk import ChunkStatus
from overnight.domain.result_cursor import ResultKind, Take
from overnight.runner.parts import part_key, snapshot_key

PIECE = 1 << 20


class ShortSource(RuntimeError):
    """A part or file ended before the lines it was known to hold."""


async def select_lines(
    pieces: AsyncIterator[bytes], runs: Iterable[tuple[int, int]]
) -> AsyncIterator[bytes]:
    """From a stream of JSONL bytes, yield the lines `runs` keep: each run
    skips `skip` lines, then keeps `keep`. Yields at most one piece's worth
    at a time; stops reading once the last run is served. Lines are only
    looked at one by one where a run starts or ends inside a piece."""
    queue = [(skip, keep) for skip, keep in runs if skip or keep]
    queue.reverse()
    if not any(keep for _, keep in queue):
        return
    skip, keep = queue.pop()
    carry = b""
    async for piece in pieces:
        data = carry + piece if carry else piece
        end = data.rfind(b"\n") + 1
        carry = data[end:]
        position = 0
        kept: list[bytes] = []
        while position < end:
            if skip:
                position, skip = _advance(data, position, end, skip)
                continue
            if keep:
                start = position
                position, keep = _advance(data, position, end, keep)
                kept.append(data[start:position])
                continue
            if not queue:
                break
            skip, keep = queue.pop()
        if kept:
            yield b"".join(kept)
        if not (skip or keep or queue):
            return
    if keep or any(k for _, k in queue):
        raise ShortSource("the source ended before the lines it holds")


def _advance(data: bytes, position: int, end: int, lines: int) -> tuple[int, int]:
    """Move over up to `lines` whole lines of data[position:end]; return
    the new position and the lines still to go."""
    available = data.count(b"\n", position, end)
    if available <= lines:
        return end, lines - available
    for _ in range(lines):
        position = data.index(b"\n", position, end) + 1
    return position, 0


#: Where a take's lines are found once its part is gone: given the take
#: and the first line still wanted, the rest of its lines, or None.
Fallback = Callable[[Take, int], Awaitable[AsyncIterator[bytes] | None]]


async def running_lines(
    blobs: BlobStore, staging: Path, takes: Sequence[Take], kind: ResultKind, fallback: Fallback
) -> AsyncIterator[bytes]:
    """The lines `takes` name, read from each chunk's parts wherever they
    are now. A part that is gone, before or during the read (the batch was
    finalised meanwhile: parts become the result files, then are deleted),
    leaves the rest of its lines to `fallback`."""
    for take in takes:
        served = 0
        try:
            source = await _part_source(blobs, staging, take, kind)
            if source is None:
                raise FileNotFoundError(take.chunk.index)
            async for lines in select_lines(source, [(take.skip, take.upto - take.skip)]):
                served += lines.count(b"\n")
                yield lines
        except (FileNotFoundError, ShortSource):
            rest = await fallback(take, take.skip + served)
            if rest is None:
                raise ShortSource(
                    f"chunk {take.chunk.index} has no {kind.part} part to read"
                ) from None
            async for lines in rest:
                yield lines


async def _part_source(
    blobs: BlobStore, staging: Path, take: Take, kind: ResultKind
) -> AsyncIterator[bytes] | None:
    chunk = take.chunk
    finished = part_key(chunk.key, chunk.attempts, kind.part)
    if chunk.status is ChunkStatus.DONE:
        return blobs.read(finished) if await blobs.exists(finished) else None
    local = staging / chunk.batch_id / f"{chunk.index:06d}.{kind.part}.jsonl"
    handle = await asyncio.to_thread(_open_if_there, local)
    if handle is not None:
        return _file_pieces(handle)
    # Handed over since the row was read (the file moved to the blob store),
    # or run on another machine (its snapshot, with remote storage).
    for key in (finished, snapshot_key(chunk.key, kind.part)):
        if await blobs.exists(key):
            return blobs.read(key)
    return None


def _open_if_there(path: Path) -> BinaryIO | None:
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None


async def _file_pieces(handle: BinaryIO) -> AsyncIterator[bytes]:
    """An open file's bytes as it stands (a rename or an unlink after it
    was opened does not matter: the open handle keeps reading the same
    file)."""
    try:
        while data := await asyncio.to_thread(handle.read, PIECE):
            yield data
    finally:
        handle.close()
