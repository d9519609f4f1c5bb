"""When a worker claims another chunk: while its models have slots to fill.

A fixed number of chunks per worker caps the requests it can keep in flight
at `worker_chunks * chunk_lines`; against a slow upstream (a hosted API, a
big vLLM fleet answering in 5-60 s) most of a wide `max_concurrency` then
sits idle (measured: 0.68x of max_concurrency / latency at 10,000 slots and
5 s, docs/benchmarks.md). So the chunk count is only a floor:

1. A worker always runs `worker_chunks` chunks. Each running chunk gets an
   equal turn at its model's slots, and running chunks are what fair share
   between tenants and batches balances (domain/scheduling.py), so narrow
   models (a GPU server at 64 slots) keep that behaviour unchanged.
2. Beyond them it claims another chunk while its models' free slots exceed
   the lines already waiting for a slot in the chunks it holds, keeping a
   reserve of one round of slots (at most one chunk) waiting, so a slot that
   frees never waits for a claim to read its next line.
3. Never past `worker_max_lines` lines held: every held line costs memory
   (its request, and while in flight a connection and a task).

Slots are this worker's share of each model's `max_concurrency` (the
limiters are split between live workers), so an idle worker claims only
what its own share can run, and a second worker finds work left to take.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Holding:
    """What a worker holds: chunks, their lines, and of those the lines
    that have neither a slot nor a result yet."""

    chunks: int
    lines: int
    waiting: int


@dataclass(frozen=True, slots=True)
class Slots:
    """A worker's slots over every model it serves: how many, how many free."""

    limit: int
    free: int


def chunks_wanted(
    holding: Holding, slots: Slots, *, worker_chunks: int, chunk_lines: int, max_lines: int
) -> int:
    """How many more chunks a worker holding `holding` should claim now
    (reckoning each at `chunk_lines`; a smaller one leaves the rest wanted
    at the next look)."""
    floor = worker_chunks - holding.chunks
    short = slots.free + min(slots.limit, chunk_lines) - holding.waiting
    for_slots = -(-short // chunk_lines) if short > 0 else 0
    room = max(0, (max_lines - holding.lines) // chunk_lines)
    return max(floor, min(for_slots, room), 0)


def within_cap(holding: Holding, *, chunk_lines: int, max_lines: int) -> bool:
    """Whether one more chunk keeps the lines held within `max_lines`."""
    return holding.lines + chunk_lines <= max_lines
