"""Reading an input file in bounded memory: as lines with their byte
offsets (validation), or a chunk's byte range as requests (execution and
finalisation)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import accumulate
from operator import add

from overnight.blobs import BlobStore
from overnight.domain.chunk import Chunk
from overnight.domain.lines import LineRules, Request, Unreadable, read_requests


async def lines_with_offsets(
    blobs: BlobStore,
    key: str,
    start: int = 0,
    end: int | None = None,
    *,
    max_line: int | None = None,
) -> AsyncIterator[list[tuple[bytes, int]]]:
    """Yield lists of (line without newline, offset of its first byte), one
    list per piece read (about 1 MiB), so callers loop in tight batches and
    the event loop gets a turn between pieces. A final line without a
    trailing newline is yielded too.

    With `max_line`, a longer line is yielded cut to `max_line + 1` bytes
    (enough to tell that it is too long) and the rest is skipped unread into
    memory, so one huge line cannot exhaust it; offsets stay exact."""
    carry = b""
    carry_offset = start
    dropped = 0  # bytes of the carried line skipped beyond its first max_line + 1
    async for piece in blobs.read(key, start, end):
        if max_line is not None and len(carry) > max_line:
            newline = piece.find(b"\n")
            if newline < 0:
                dropped += len(piece)
                continue
            dropped += newline
            piece = piece[newline:]
        data = carry + piece if carry else piece
        lines = data.split(b"\n")
        carry = lines.pop()
        # Offsets in C-level iterators (this runs for every line of every
        # file): start + the lengths before each line + one newline each.
        starts = list(
            map(add, accumulate(map(len, lines), initial=carry_offset), range(len(lines) + 1))
        )
        if dropped and lines:  # the first line was cut: everything after it moves
            starts[1:] = [start + dropped for start in starts[1:]]
            dropped = 0
        out = list(zip(lines, starts, strict=False))
        carry_offset = starts[-1]
        if max_line is not None and len(carry) > max_line:
            dropped += len(carry) - (max_line + 1)
            carry = carry[: max_line + 1]
        if out:
            yield out
    if carry:
        yield [(carry, carry_offset)]


async def chunk_requests(
    blobs: BlobStore, key: str, chunk: Chunk, endpoint: str
) -> AsyncIterator[list[Request | Unreadable]]:
    """The chunk reader of execution and finalisation: a chunk's requests
    (and any line that no longer reads as one), a list per piece read, each
    checked by the rule validation applied (`read_requests`) and numbered
    by its physical line in the file, blank lines skipped."""
    rules = LineRules.rereading(endpoint)
    line = chunk.first_line
    async for lines in lines_with_offsets(blobs, key, chunk.start, chunk.end):
        yield list(read_requests((raw for raw, _ in lines), line, rules))
        line += len(lines)
