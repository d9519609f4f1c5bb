"""The chunk: a byte range of one batch's input file, and the unit of work.

A worker holds a chunk by lease, runs its lines, and appends each result to
the chunk's output or error part. Counters on the chunk say how many results
its parts held when the worker last flushed; the batch's counters are the
sum over its chunks, kept up to date in the same transactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from overnight.domain.batch import ZERO_USAGE, Usage
from overnight.domain.dialects import Dialect
from overnight.domain.status import StopReason
from overnight.types import BatchId, TenantId


class ChunkStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    #: The batch stopped (cancel, expiry) before the chunk was claimed; its
    #: lines are written as never-ran when the batch is finalised.
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Tally:
    """Results counted in a chunk's parts. `stopped` counts the failed
    lines that a cancel or an expiry kept from running (Anthropic's
    `canceled` and `expired` results); the rest of `failed` ran and erred."""

    completed: int = 0
    failed: int = 0
    usage: Usage = ZERO_USAGE
    stopped: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.completed + other.completed,
            self.failed + other.failed,
            self.usage + other.usage,
            self.stopped + other.stopped,
        )

    def __sub__(self, other: Tally) -> Tally:
        u, o = self.usage, other.usage
        return Tally(
            self.completed - other.completed,
            self.failed - other.failed,
            Usage(
                u.input_tokens - o.input_tokens,
                u.cached_tokens - o.cached_tokens,
                u.output_tokens - o.output_tokens,
                u.reasoning_tokens - o.reasoning_tokens,
            ),
            self.stopped - other.stopped,
        )

    @property
    def done(self) -> int:
        return self.completed + self.failed


ZERO_TALLY = Tally()


@dataclass(frozen=True, slots=True)
class ChunkKey:
    batch_id: BatchId
    index: int


@dataclass(frozen=True, slots=True)
class Chunk:
    batch_id: BatchId
    index: int
    start: int
    end: int
    first_line: int
    requests: int
    status: ChunkStatus
    attempts: int = 0
    tally: Tally = ZERO_TALLY
    #: Times a worker died (or raised) running it; see `Settings.max_chunk_attempts`.
    crashes: int = 0

    @property
    def key(self) -> ChunkKey:
        return ChunkKey(self.batch_id, self.index)


@dataclass(frozen=True, slots=True)
class ChunkWork:
    """A claimed chunk with what is needed to run it."""

    chunk: Chunk
    tenant: TenantId
    endpoint: str
    dialect: Dialect
    input_blob_key: str
    stop_reason: StopReason | None
