"""Results a worker holds in memory, across all its chunks, not yet written.

A crash loses these (their requests run again), so they are what bounds the
work a crash repeats. When they reach `flush_lines`, every chunk is told to
write; when they reach twice that, dispatching pauses until writes catch up.
So at any moment, results not yet written plus requests in flight are at
most `2 * flush_lines + max_concurrency`: the most a `kill -9` can make the
model servers answer twice (docs/operations.md).
"""

from __future__ import annotations

import asyncio


class UnflushedResults:
    def __init__(self, flush_lines: int) -> None:
        self.flush_lines = flush_lines
        self.count = 0
        self._flush_events: set[asyncio.Event] = set()
        self._room = asyncio.Event()
        self._room.set()

    def subscribe(self, flush_now: asyncio.Event) -> None:
        self._flush_events.add(flush_now)

    def unsubscribe(self, flush_now: asyncio.Event) -> None:
        self._flush_events.discard(flush_now)

    def added(self) -> None:
        self.count += 1
        if self.count >= self.flush_lines:
            for event in self._flush_events:
                event.set()
        if self.count >= 2 * self.flush_lines:
            self._room.clear()

    def written(self, n: int) -> None:
        self.count -= n
        if self.count < 2 * self.flush_lines:
            self._room.set()

    async def wait_for_room(self) -> None:
        if not self._room.is_set():
            await self._room.wait()
