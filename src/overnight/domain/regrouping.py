"""Grouping a batch's lines by prompt prefix across chunks, at validation.

Within a chunk the runner already runs the lines that share a prefix back
to back (domain/prefixes.py); across chunks it cannot, because a chunk is a
byte range of the input. A shuffled file over a few system prompts then
pays each prefix's prefill once per chunk per prefix, and chunks running at
once on one engine interleave their prefixes. Here validation learns each
request's prefix group (`PrefixGroups.add`, one byte a request), once the
file has a second chunk (a file of one chunk keys nothing: the validator
holds the first chunk's lines, as bytes, and shows their requests when
the second begins,
`FileValidator.on_request`), and decides
whether a grouped copy is worth writing (`worth_grouping`); the runner then
writes the lines bucket by bucket and cuts the copy into chunks
(`GroupedChunks`), at `chunk_lines`/`chunk_bytes` as validation does, and
also where one prefix's lines end, so that a chunk holds one prefix.

Groups are numbered in the order their prefix first appears; the first
`MAX_GROUPS - 1` prefixes get a group each and every further prefix (and a
request with no prefix) shares the last one, in file order: memory and open
files stay bounded whatever the file.

Pure code: the runner (runner/regroup.py) does the reading and writing.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from overnight.domain.lines import Request
from overnight.domain.prefixes import prefix_text
from overnight.domain.validation import ChunkRange

#: Bucket files at most: one byte a request names its group.
MAX_GROUPS = 256
REST = MAX_GROUPS - 1
#: Requests looked at before deciding whether prefixes repeat at all: when
#: more than half of the first `SAMPLE` are distinct (a file of unrelated
#: one-message prompts, say), validation stops keying the rest, which
#: would cost about as much as checking them, and writes no copy.
SAMPLE = 4096


@dataclass
class PrefixGroups:
    """Each request's group, in file order, as validation reads them."""

    endpoint: str
    chars: int
    groups: array[int] = field(default_factory=lambda: array("B"))
    _numbers: dict[int, int] = field(default_factory=dict)
    _runs: int = 0
    _rest_used: bool = False
    #: The distinct keys among the first `SAMPLE` requests.
    _sampled: set[int] = field(default_factory=set)
    #: Set when the sample showed too few shared prefixes to group.
    gave_up: bool = False

    def add_request(self, request: Request) -> None:
        """The validator's hook (`FileValidator.on_request`). The groups
        live only in this process, so Python's `hash` of the prefix will
        do: a fraction of the cost of `prefix_key`'s stable one."""
        if self.gave_up:
            return
        text = prefix_text(self.endpoint, request.body, self.chars)
        self.add(None if text is None else hash(text))

    def add(self, key: int | None) -> None:
        """The next request's prefix key (None: it has none)."""
        if self.gave_up:
            return
        numbers = self._numbers
        if key is None:
            group = REST
        elif (known := numbers.get(key)) is not None:
            group = known
        elif len(numbers) < REST:  # a new prefix, numbered
            group = numbers[key] = len(numbers)
        else:  # a new prefix past the last numbered one
            group = REST
        if group == REST:
            self._rest_used = True
        groups = self.groups
        if not groups or groups[-1] != group:
            self._runs += 1
        groups.append(group)
        if len(groups) <= SAMPLE:
            self._sample(key, len(groups))

    def _sample(self, key: int | None, seen: int) -> None:
        if key is not None:
            self._sampled.add(key)
        if seen == SAMPLE:
            if len(self._sampled) > SAMPLE // 2:
                self.gave_up = True
                self.groups = array("B")
            self._sampled = set()

    def used(self) -> int:
        """How many groups hold a request."""
        return len(self._numbers) + self._rest_used

    def worth_grouping(self, chunks: int) -> bool:
        """A grouped copy helps when the batch spans several chunks and its
        requests carry several prefixes that are not already together (each
        group one run of consecutive lines). Otherwise nothing is written."""
        used = self.used()
        return not self.gave_up and chunks > 1 and used > 1 and self._runs > used


@dataclass
class GroupedChunks:
    """Cuts the grouped copy into chunks as its lines are written, group
    after group: at `chunk_lines` requests or `chunk_bytes` bytes, as
    validation cuts the input, and at the end of a group when the open
    chunk holds a quarter of `chunk_lines` or more (so small groups share
    a chunk rather than make many tiny ones)."""

    chunk_lines: int
    chunk_bytes: int
    chunks: list[ChunkRange] = field(default_factory=list)
    _start: int = 0
    _first_line: int = 1
    _requests: int = 0
    _offset: int = 0
    _line: int = 0

    def line(self, length: int) -> None:
        """One request line of `length` bytes, its newline included."""
        if self._requests and (
            self._requests >= self.chunk_lines
            or self._offset + length - self._start > self.chunk_bytes
        ):
            self._close()
        self._line += 1
        self._requests += 1
        self._offset += length

    def group_ends(self) -> None:
        if self._requests >= max(1, self.chunk_lines // 4):
            self._close()

    def finish(self) -> tuple[ChunkRange, ...]:
        self._close()
        return tuple(self.chunks)

    def _close(self) -> None:
        if self._requests:
            self.chunks.append(
                ChunkRange(
                    len(self.chunks), self._start, self._offset, self._first_line, self._requests
                )
            )
        self._start, self._first_line, self._requests = self._offset, self._line + 1, 0
