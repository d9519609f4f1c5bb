"""Whole-file validation and chunk planning, as a pure state machine.

The runner streams the file and feeds it here line by line; this module
holds no file handles. To find duplicate `custom_id`s it keeps one 8-byte
hash per request; given a `HashSink` (the runner's spills them to disk,
runner/hash_spill.py) it hands them over every `SPILL_EVERY` requests, so
memory stays flat whatever the file size. Hash hits are confirmed exactly in
a second pass, which only runs when the first pass found a candidate (a
duplicate, or a 1-in-2^64 collision), so a valid file is read once.

Chunks are cut while validating, at line boundaries, when a chunk reaches
`chunk_lines` requests or `chunk_bytes` bytes, whichever comes first.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

from overnight.domain.lines import (
    LineError,
    LineRules,
    Request,
    check_line,
    is_blank,
    strip_bom,
)

MAX_REPORTED_ERRORS = 100
#: Hashes held in memory before they go to the `HashSink` (2 MiB).
SPILL_EVERY = 256 * 1024


class HashSink(Protocol):
    """Where a validator puts its `custom_id` hashes when they pile up."""

    def add(self, hashes: array[int]) -> None: ...

    def repeated(self) -> frozenset[int]:
        """Every hash added more than once."""
        ...


def repeated_hashes(hashes: np.ndarray) -> frozenset[int]:
    """The values found more than once in `hashes` (int64; sorted in place)."""
    # numpy is imported here, not with the module: the API process imports
    # this module for its types and would pay numpy's import (0.13 s) at start.
    import numpy as np

    if len(hashes) < 2:
        return frozenset()
    hashes.sort()
    repeated = hashes[1:][hashes[1:] == hashes[:-1]]
    return frozenset(int(h) for h in np.unique(repeated))


def repeated_in_block(hashes: array[int]) -> frozenset[int]:
    """The values found more than once in one block of hashes (at most
    `SPILL_EVERY` of them), with a set: 50 ms for a full block, where
    numpy's import alone cost a process 0.18 s of CPU, and most files are
    far smaller than a block."""
    if len(set(hashes)) == len(hashes):
        return frozenset()
    seen: set[int] = set()
    repeated: set[int] = set()
    for value in hashes:
        if value in seen:
            repeated.add(value)
        else:
            seen.add(value)
    return frozenset(repeated)


@dataclass(frozen=True, slots=True)
class ChunkRange:
    """Bytes [start, end) of the input file, holding `requests` requests; the
    byte at `start` begins physical line `first_line` of the file (1-based)."""

    index: int
    start: int
    end: int
    first_line: int
    requests: int


@dataclass(frozen=True, slots=True)
class ValidationReport:
    requests: int
    errors: tuple[LineError, ...]
    error_count: int
    model: str | None
    chunks: tuple[ChunkRange, ...]

    @property
    def ok(self) -> bool:
        return self.error_count == 0


@dataclass
class _OpenChunk:
    start: int = 0
    first_line: int = 1
    requests: int = 0


@dataclass
class FileValidator:
    rules: LineRules
    chunk_lines: int = 500
    chunk_bytes: int = 8 * 1024 * 1024
    max_requests: int | None = None
    require_single_model: bool = False
    #: Takes the hashes every `SPILL_EVERY` requests; None keeps them all in
    #: memory (8 bytes a request: fine for tests and small files).
    hash_sink: HashSink | None = None
    spill_every: int = SPILL_EVERY
    #: Shown every request counted, in file order, but only in a file of
    #: more than one chunk: the first chunk's requests are held and shown
    #: when the second chunk begins, so a file of one chunk (most batches)
    #: shows none. The prefix grouping of runner/regroup.py learns each
    #: line's prefix in this same pass, and a file of one chunk has nothing
    #: to group across chunks. What is held is the lines' bytes, at most one
    #: chunk's (`chunk_bytes`): bytes cost the garbage collector nothing,
    #: where decoded requests held cost it about 2 us a line; the first
    #: chunk's lines are checked again when they are shown.
    on_request: Callable[[Request], None] | None = None

    requests: int = 0
    model: str | None = None
    _line: int = 0
    _errors: list[LineError] = field(default_factory=list)
    _error_count: int = 0
    _hashes: array[int] = field(default_factory=lambda: array("q"))
    _chunks: list[ChunkRange] = field(default_factory=list)
    _open: _OpenChunk = field(default_factory=_OpenChunk)
    _too_many_reported: bool = False
    _spilled: bool = False
    #: The first chunk's request lines, while it is the only chunk (with
    #: `on_request` only), and their `append`.
    _held: list[bytes] | None = None
    _hold: Callable[[bytes], None] | None = None

    def __post_init__(self) -> None:
        if self.on_request is not None:
            self._held = []
            self._hold = self._held.append

    def feed(self, raw: bytes, offset: int) -> None:
        """One physical line without its trailing newline, at byte `offset`."""
        self.feed_many([(raw, offset)])

    def feed_many(self, lines: list[tuple[bytes, int]]) -> None:
        """Physical lines (without newlines) with their byte offsets, in order.

        The hot loop of validation: a valid line costs one `check_line` (a
        C-level decode and a few field checks) and a few integer updates;
        errors and blank lines take the slower path."""
        rules = self.rules
        append_hash = self._hashes.append
        chunk_lines, chunk_bytes = self.chunk_lines, self.chunk_bytes
        max_requests = self.max_requests or 1 << 62
        single_model = self.require_single_model
        valid = Request
        hold, show = self._hold, self.on_request
        # Counters live in locals for the loop (attribute writes cost as
        # much as the rest of a line's bookkeeping), and go back to `self`
        # around the slow path and at the end.
        line, requests, model = self._line, self.requests, self.model
        chunk = self._open
        in_chunk, chunk_start = chunk.requests, chunk.start
        for raw, offset in lines:
            line += 1
            checked = check_line(raw, line, rules)
            if (
                type(checked) is valid
                and requests < max_requests
                and (model is None or checked.model == model or not single_model)
            ):
                counted = True
                requests += 1
                append_hash(hash(checked.custom_id))
                if hold is not None:
                    hold(raw)
                elif show is not None:
                    show(checked)
                if model is None:
                    model = checked.model
            else:
                counted = not is_blank(strip_bom(raw, line))
                if counted:
                    self.requests, self.model = requests, model
                    self._count(checked, line, raw)
                    requests, model = self.requests, self.model
            if in_chunk and (
                in_chunk >= chunk_lines or offset + len(raw) + 1 - chunk_start > chunk_bytes
            ):
                chunk.requests = in_chunk
                self._close_chunk(offset)
                chunk = self._open
                chunk.start, chunk.first_line = offset, line
                in_chunk, chunk_start = 0, offset
                if hold is not None:
                    self._release_held()
                    hold = None
            if counted:
                in_chunk += 1
        self.requests, self.model = requests, model
        chunk.requests = in_chunk
        self._line = line
        if self.hash_sink is not None and len(self._hashes) >= self.spill_every:
            self._hand_over_hashes(self.hash_sink)

    def _count(self, result: Request | LineError, line: int, raw: bytes) -> None:
        """A line off the hot path: an error, one request too many, or a
        second model."""
        if isinstance(result, LineError):
            self._error(result)
            return
        self.requests += 1
        if self.max_requests is not None and self.requests > self.max_requests:
            if not self._too_many_reported:
                self._too_many_reported = True
                self._error(
                    LineError(
                        "too_many_requests_in_file",
                        f"The file has more than {self.max_requests} requests.",
                        line,
                    )
                )
            return
        self._hashes.append(hash(result.custom_id))
        if self._hold is not None:
            self._hold(raw)
        elif self.on_request is not None:
            self.on_request(result)
        self._note_model(result, line)

    def _release_held(self) -> None:
        """A second chunk begins: show the first chunk's requests, then
        every request as it comes."""
        held, self._held, self._hold = self._held or [], None, None
        show = self.on_request
        for raw in held:
            # Each was valid as held; checked as line 1, which only lets a
            # byte-order mark go (a line after the first with one was not).
            request = check_line(raw, 1, self.rules)
            if show is not None and type(request) is Request:
                show(request)

    def _note_model(self, request: Request, line: int) -> None:
        if self.model is None:
            self.model = request.model
        elif self.require_single_model and request.model != self.model:
            self._error(
                LineError(
                    "model_mismatch",
                    f"Line {line}: every line of a batch must use the same model "
                    f"({self.model!r}), not {request.model!r}.",
                    line,
                    "body.model",
                )
            )

    def _error(self, error: LineError) -> None:
        self._error_count += 1
        if len(self._errors) < MAX_REPORTED_ERRORS:
            self._errors.append(error)

    def _close_chunk(self, end: int) -> None:
        chunk = self._open
        if chunk.requests:
            self._chunks.append(
                ChunkRange(len(self._chunks), chunk.start, end, chunk.first_line, chunk.requests)
            )
        self._open = _OpenChunk()

    def _hand_over_hashes(self, sink: HashSink) -> None:
        sink.add(self._hashes)
        self._hashes = array("q")
        self._spilled = True

    def duplicate_candidates(self) -> frozenset[int]:
        """Hashes seen more than once; empty for almost every valid file.
        A file whose hashes all fit in one block never touches the sink."""
        if self.hash_sink is not None and self._spilled:
            self._hand_over_hashes(self.hash_sink)
            return self.hash_sink.repeated()
        return repeated_in_block(self._hashes)

    def finish(self, size: int, duplicates: list[LineError] | None = None) -> ValidationReport:
        """Close the last chunk and report. `duplicates` comes from
        `DuplicateFinder` when `duplicate_candidates()` was not empty."""
        self._close_chunk(size)
        self._hashes = array("q")
        self._held = self._hold = None  # one chunk: nothing was, or will be, shown
        errors = self._errors
        count = self._error_count
        if duplicates:
            count += len(duplicates)
            errors = sorted([*errors, *duplicates], key=lambda e: e.line or 0)
        if self.requests == 0 and count == 0:
            errors = [LineError("empty_file", "The file contains no requests.", None)]
            count = 1
        return ValidationReport(
            requests=self.requests,
            errors=tuple(errors[:MAX_REPORTED_ERRORS]),
            error_count=count,
            model=self.model,
            chunks=tuple(self._chunks) if count == 0 else (),
        )


@dataclass
class DuplicateFinder:
    """Second pass: confirms duplicate `custom_id`s among hash candidates."""

    candidates: frozenset[int]
    rules: LineRules
    found: list[LineError] = field(default_factory=list)
    _first_seen: dict[str, int] = field(default_factory=dict)
    _line: int = 0

    def feed(self, raw: bytes) -> None:
        self._line += 1
        line = self._line
        raw = strip_bom(raw, line)
        if is_blank(raw):
            return
        result = check_line(raw, line, self.rules)
        if not isinstance(result, Request) or hash(result.custom_id) not in self.candidates:
            return
        first = self._first_seen.setdefault(result.custom_id, line)
        if first != line and len(self.found) < MAX_REPORTED_ERRORS:
            self.found.append(
                LineError(
                    "duplicate_custom_id",
                    f"Line {line}: custom_id {result.custom_id!r} was already used on line {first}.",
                    line,
                    "custom_id",
                )
            )
