"""Reading an input file as lines with their byte offsets, in bounded memory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from overnight.blobs import BlobStore


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
        out: list[tuple[bytes, int]] = []
        offset = carry_offset
        for line in lines:
            out.append((line, offset))
            offset += len(line) + 1 + dropped
            dropped = 0
        carry_offset = offset
        if max_line is not None and len(carry) > max_line:
            dropped += len(carry) - (max_line + 1)
            carry = carry[: max_line + 1]
        if out:
            yield out
    if carry:
        yield [(carry, carry_offset)]
