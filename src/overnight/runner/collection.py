"""The cyclic garbage collector, set for a worker that holds many requests.

A wide worker holds about a million objects: the lines of the chunks it
runs, and for each request in flight a task, a future, a connection and its
parser. A request lives as long as the model server takes (seconds), so
almost everything allocated outlives the young generations and reaches the
oldest one, and CPython runs a full collection each time that grows by a
quarter: measured at 5,000 slots and 5 s, one every 5-10 s, each a pause of
0.1-1 s traversing everything held, while the young collections (every 700
allocations) took about as long again. The worker's objects die by
reference counting; cycles are rare (an exception and its traceback). So in
a worker process young collections run less often (what dies young is never
traversed), there is no automatic full collection, and the worker runs one
itself every `FULL_EVERY` seconds (`Collector.tick`, from its heartbeat), so
what cycles there are do not pile up.
"""

from __future__ import annotations

import gc
import time

#: Allocations (net of deallocations) between young collections: Python's
#: default is 700.
YOUNG = 100_000
#: Young collections between middle-generation ones (Python's default).
MIDDLE = 50
#: No automatic full collection: this many middle ones never come.
NEVER = 2**31 - 1
#: Seconds between the worker's own full collections.
FULL_EVERY = 60.0


class Collector:
    """Sets the thresholds while a worker runs (`start`, `stop` puts back
    the ones before), and runs the full collections (`tick`)."""

    def __init__(self, every: float = FULL_EVERY) -> None:
        self.every = every
        self._before: tuple[int, int, int] | None = None
        self._last_full = time.monotonic()

    def start(self) -> None:
        if self._before is None:
            self._before = gc.get_threshold()
            gc.set_threshold(YOUNG, MIDDLE, NEVER)
        self._last_full = time.monotonic()

    def stop(self) -> None:
        if self._before is not None:
            gc.set_threshold(*self._before)
            self._before = None

    def tick(self) -> None:
        """A full collection if `every` seconds passed since the last."""
        now = time.monotonic()
        if self._before is not None and now - self._last_full >= self.every:
            self._last_full = now
            gc.collect()
