"""Where a reader of a batch's results so far has got to: the `after` cursor.

A batch's result files are its chunks' parts concatenated in chunk order
(runner/finalize.py). While the batch runs, each chunk's parts only grow,
and the first N lines of a part never change: a chunk's counts in the
database (`Chunk.tally`) never exceed what its parts hold, so "lines
[0, tally) of chunk i's part" is a stable, readable range at any moment.

A cursor therefore says, per chunk, how many of its lines the reader has
had. It stays small: the leading run of chunks that are done and fully read
is one number (`frontier`); only chunks beyond it that were partly or fully
read are listed (`read`), and a response adds at most `MAX_LISTED` of them.

After the batch ends the same cursor maps onto the final files: chunk i's
lines sit after those of chunks 0..i-1, whose counts the rows give
(a skipped chunk's lines are its never-ran lines, written to the error file
at finalisation). So a reader that tails a batch to its end gets every line
of the final files exactly once (in a different order: chunks interleave
while they run), and one read of an ended batch without a cursor is the
final file byte for byte.

Pure: no I/O. The bytes are read by runner/results_so_far.py.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from overnight.domain.chunk import Chunk, ChunkStatus

#: Chunks beyond the frontier one cursor may list; past it, a response stops
#: reading further chunks until the frontier moves on (the URL stays short).
MAX_LISTED = 512
_VERSION = 1


class ResultKind(StrEnum):
    OUTPUT = "output"
    ERRORS = "errors"

    @property
    def part(self) -> str:
        """The name of this kind's part file (runner/parts.py)."""
        return "output" if self is ResultKind.OUTPUT else "error"


class BadCursor(ValueError):
    """An `after` that this server did not hand out for this batch and kind."""


@dataclass(frozen=True, slots=True)
class ResultCursor:
    frontier: int = 0
    read: dict[int, int] = field(default_factory=dict)

    def delivered(self, index: int, lines: int) -> int:
        """Lines of chunk `index` (which holds `lines`) already read."""
        return lines if index < self.frontier else self.read.get(index, 0)

    def encode(self, batch_id: str, kind: ResultKind) -> str:
        out = bytearray([_VERSION, _KIND_BYTE[kind]])
        out += _tag(batch_id)
        _varint(out, self.frontier)
        _varint(out, len(self.read))
        previous = self.frontier
        for index in sorted(self.read):
            _varint(out, index - previous)
            _varint(out, self.read[index])
            previous = index
        return base64.urlsafe_b64encode(bytes(out)).rstrip(b"=").decode()

    @classmethod
    def decode(cls, text: str, batch_id: str, kind: ResultKind) -> ResultCursor:
        try:
            data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            if data[0] != _VERSION or data[1] != _KIND_BYTE[kind] or data[2:6] != _tag(batch_id):
                raise BadCursor(text)
            position = 6
            frontier, position = _read_varint(data, position)
            listed, position = _read_varint(data, position)
            if listed > MAX_LISTED:
                raise BadCursor(text)
            read: dict[int, int] = {}
            index = frontier
            for _ in range(listed):
                delta, position = _read_varint(data, position)
                count, position = _read_varint(data, position)
                index += delta
                read[index] = count
            if position != len(data):
                raise BadCursor(text)
        except (ValueError, IndexError) as exc:
            raise BadCursor(text) from exc
        return cls(frontier, read)


@dataclass(frozen=True, slots=True)
class Take:
    """Lines [skip, upto) of one chunk's part."""

    chunk: Chunk
    skip: int
    upto: int


def lines_of(chunk: Chunk, kind: ResultKind, *, ended: bool) -> int:
    """The lines of `kind` that chunk holds now: what its row counts (never
    more than its parts hold); for an ended batch, a skipped chunk's
    never-ran lines too (one per request, in the error file)."""
    if kind is ResultKind.OUTPUT:
        return chunk.tally.completed
    never_ran = chunk.requests if ended and chunk.status is ChunkStatus.SKIPPED else 0
    return chunk.tally.failed + never_ran


def plan_running(
    chunks: Sequence[Chunk], cursor: ResultCursor, kind: ResultKind
) -> tuple[list[Take], ResultCursor]:
    """What to read of a running batch's parts after `cursor`, and the
    cursor that follows it. Chunks in order, so the frontier moves over
    every leading chunk that is done and read to its end."""
    takes: list[Take] = []
    read = dict(cursor.read)
    for chunk in chunks[cursor.frontier :]:
        have = lines_of(chunk, kind, ended=False)
        delivered = read.get(chunk.index, 0)
        if have > delivered:
            if chunk.index not in read and len(read) >= MAX_LISTED:
                break
            takes.append(Take(chunk, delivered, have))
            read[chunk.index] = have
    frontier = cursor.frontier
    for chunk in chunks[cursor.frontier :]:
        done_and_read = chunk.status is ChunkStatus.DONE and read.get(chunk.index, 0) >= (
            lines_of(chunk, kind, ended=False)
        )
        if not done_and_read:
            break
        read.pop(chunk.index, None)
        frontier += 1
    return takes, ResultCursor(frontier, read)


def plan_ended(
    chunks: Sequence[Chunk], cursor: ResultCursor, kind: ResultKind
) -> list[tuple[int, int]]:
    """The final file read after `cursor`, as runs of (lines to skip, lines
    to keep), in file order. The cursor that follows is `ended_cursor`."""
    runs: list[tuple[int, int]] = []
    for chunk in chunks:
        lines = lines_of(chunk, kind, ended=True)
        delivered = min(cursor.delivered(chunk.index, lines), lines)
        runs.append((delivered, lines - delivered))
    return runs


def ended_cursor(chunks: Sequence[Chunk]) -> ResultCursor:
    """The cursor past every line of an ended batch."""
    return ResultCursor(len(chunks))


_KIND_BYTE = {ResultKind.OUTPUT: ord("o"), ResultKind.ERRORS: ord("e")}


def _tag(batch_id: str) -> bytes:
    return hashlib.blake2b(batch_id.encode(), digest_size=4).digest()


def _varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError(value)
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
