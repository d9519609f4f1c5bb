"""How many requests may be in flight to one model at once, and how that
number adapts to the model server.

A counting limiter, shared by every chunk that sends to the model, with a
FIFO queue so chunks take turns. Unlike `asyncio.Semaphore`, its limit can
move while requests are in flight (adaptive concurrency changes it), and a
caller can ask for a slot without waiting (`try_acquire`), which keeps the
common case on the dispatch path free of extra tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class Limiter:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._limit = max(1, value)
        self._wake()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        if self.in_flight < self._limit and not self._waiters:
            self.in_flight += 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot arrived just as we were cancelled
            elif waiter in self._waiters:  # `_wake` may have dropped it already
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self._limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)


#: Answers averaged before the latency baseline is taken.
WARM_UP = 10


class AdaptiveLimit:
    """Additive increase, multiplicative decrease of a Limiter's limit.

    Each healthy answer adds 1/limit (so about +1 per window, a window being
    `limit` answers), but only while the server is not queueing: while
    latency stays within `latency_tolerance` times the baseline (the lowest
    smoothed latency seen, slowly forgotten).

    A failure is one of two kinds, and only one of them is about load:

    - `on_overload`: the server says it is overloaded (429, 503, 504), or
      any failure comes while latency is raised. It multiplies the limit by
      `decrease`.
    - `on_fault`: a failure while answers come back at the usual speed (a
      request that hangs on its connection until our timeout, a reset, a
      500). Sending less would not make it rarer, so it holds the limit: no
      growth, no cut.

    A cut happens at most once per window (`limit` answers) and at most once
    per epoch: each cut starts a new epoch, and the outcome of a request
    that started in an earlier epoch cannot cut again, because the cut it
    would ask for has already been made. Without that, requests that were
    all in flight at one moment and fail together (a burst of timeouts
    landing one timeout after they were sent) would each cut in turn. The
    limit stays within [1, maximum].
    """

    def __init__(
        self,
        limiter: Limiter,
        *,
        maximum: int,
        decrease: float = 0.9,
        latency_tolerance: float = 2.0,
    ) -> None:
        self.limiter = limiter
        self.maximum = maximum
        self.value = float(limiter.limit)
        self.decrease = decrease
        self.latency_tolerance = latency_tolerance
        self.smoothed: float | None = None
        self.baseline: float | None = None
        #: How many cuts so far: an attempt notes it when it starts.
        self.epoch = 0
        self._answers_since_cut = limiter.limit
        self._observed = 0

    @property
    def queueing(self) -> bool:
        """Latency is past tolerance: the server is queueing our requests."""
        if self.smoothed is None or self.baseline is None:
            return False
        return self.smoothed > self.latency_tolerance * max(self.baseline, 0.001)

    def cap(self, maximum: int) -> None:
        """Move the ceiling (this worker's share of a global limit)."""
        self.maximum = max(1, maximum)
        if self.value > self.maximum:
            self._set(float(self.maximum))

    def on_answer(self, latency: float) -> None:
        self._answers_since_cut += 1
        self._observe(latency)
        if not self.queueing:
            self._set(min(float(self.maximum), self.value + 1.0 / self.value))

    def on_overload(self, started_in: int, latency: float | None = None) -> None:
        """A sign of overload from an attempt that started in epoch `started_in`."""
        self._answers_since_cut += 1
        if latency is not None:
            self._observe(latency)
        self._cut(started_in)

    def on_fault(self, started_in: int, latency: float | None = None) -> None:
        """A failure that is not by itself a sign of load: it cuts only while
        the server is queueing (then it is one)."""
        self._answers_since_cut += 1
        if latency is not None:
            self._observe(latency)
        if self.queueing:
            self._cut(started_in)

    def _cut(self, started_in: int) -> None:
        if started_in < self.epoch:
            return  # sent before the last cut: that cut was the answer to it
        if self._answers_since_cut < int(self.value):
            return  # already cut in this window
        self.epoch += 1
        self._answers_since_cut = 0
        self._set(max(1.0, self.value * self.decrease))

    def _observe(self, latency: float) -> None:
        # The first answers are averaged plainly, and the baseline is taken
        # only then: a baseline taken from the first answer or two (by
        # chance the fastest of a jittery server) would make every later
        # answer look like queueing.
        self._observed += 1
        if self.smoothed is None:
            self.smoothed = latency
        else:
            self.smoothed += max(0.1, 1.0 / self._observed) * (latency - self.smoothed)
        if self._observed < WARM_UP:
            return
        if self.baseline is None or self.smoothed < self.baseline:
            self.baseline = self.smoothed
        else:  # forget slowly, so a server that became slower for good is relearned
            self.baseline += 0.001 * (self.smoothed - self.baseline)

    def _set(self, value: float) -> None:
        self.value = value
        self.limiter.limit = int(value)


async def acquire_unless(limiter: Limiter, stopped: asyncio.Event) -> bool:
    """Take a slot, unless `stopped` is set first (then hold nothing)."""
    if stopped.is_set():
        return False
    if limiter.try_acquire():
        return True
    acquire = asyncio.ensure_future(limiter.acquire())
    stop = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not acquire.done():
            acquire.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquire
    if acquire.cancelled():
        return False
    if stopped.is_set():
        limiter.release()
        return False
    return True
