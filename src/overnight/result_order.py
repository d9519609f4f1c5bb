"""Result lines put back in input order when they may come in any order.

`overnight run --ordered` sorts a batch's results with a heap one chunk
wide (offline.py, `in_input_order`), which holds while each chunk is a run
of consecutive input lines. A batch whose chunks were cut from a grouped
copy of its input (runner/regroup.py) breaks that: a chunk holds one
prompt prefix's lines from all over the file. Its results are sorted here
instead, in two passes on local disk: each line goes to the bucket file of
its range of input places (at most `MAX_BUCKETS` ranges, each at least
`span` places wide), then each bucket is read, sorted and yielded in turn.
Memory: one bucket, about 1/64 of the results (or one chunk's, if more).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from overnight.runner.bucket_files import BucketFiles

MAX_BUCKETS = 64
_HEAD = struct.Struct("<QI")  # input place, line length


async def sorted_by_place(
    lines: AsyncIterator[list[bytes]],
    place_of: Callable[[bytes], int | None],
    places: int,
    span: int,
    folder: Path,
) -> AsyncIterator[list[bytes]]:
    """`lines` sorted by `place_of` (0 to `places` - 1; a line with no
    place goes last, in arrival order). `folder` is scratch space, removed
    at the end."""
    width = max(span, 1, -(-places // MAX_BUCKETS))
    buckets = BucketFiles(folder, ".bin")
    await buckets.open()
    try:
        arrival = 0
        async for batch in lines:
            records: dict[int, list[bytes]] = {}
            for line in batch:
                place = place_of(line)
                if place is None:
                    place = places + arrival
                arrival += 1
                records.setdefault(min(place // width, MAX_BUCKETS), []).append(
                    _HEAD.pack(place, len(line)) + line
                )
            await buckets.append({bucket: b"".join(packed) for bucket, packed in records.items()})
        for bucket in buckets.finish():
            data = await asyncio.to_thread(buckets.path(bucket).read_bytes)
            yield [line for _, line in sorted(_records(data), key=lambda r: r[0])]
    finally:
        buckets.remove()


def _records(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    at = 0
    while at < len(data):
        place, length = _HEAD.unpack_from(data, at)
        at += _HEAD.size
        out.append((place, data[at : at + length]))
        at += length
    return out
