"""Reading an input file as lines with their byte offsets, in bounded memory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from overnight.blobs import BlobStore


async def lines_with_offsets(
    blobs: BlobStore, key: str, start: int = 0, end: int | None = None
) -> AsyncIterator[list[tuple[bytes, int]]]:
    """Yield lists of (line without newline, offset of its first byte), one
    list per piece read (about 1 MiB), so callers loop in tight batches and
    the event loop gets a turn between pieces. A final line without a
    trailing newline is yielded too."""
    carry = b""
    carry_offset = start
    async for piece in blobs.read(key, start, end):
        data = carry + piece if carry else piece
        lines = data.split(b"\n")
        carry = lines.pop()
        out: list[tuple[bytes, int]] = []
        offset = carry_offset
        for line in lines:
            out.append((line, offset))
            offset += len(line) + 1
        carry_offset = offset
        if out:
            yield out
    if carry:
        yield [(carry, carry_offset)]
