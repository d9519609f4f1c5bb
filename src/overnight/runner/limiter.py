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


class AdaptiveLimit:
    """Additive increase, multiplicative decrease of a Limiter's limit.

    Each healthy answer adds 1/limit (so about +1 per window, a window being
    `limit` answers), but only while latency stays within
    `latency_tolerance` times the baseline (the lowest smoothed latency
    seen, slowly forgotten): a server that is merely queueing our requests
    stops the growth. A sign of congestion (no answer, 408, 429, 5xx)
    multiplies the limit by `decrease`, at most once per window, so a burst
    of failures from one overload counts once. Under a steady rate of
    failures that have nothing to do with load the limit settles where one
    decrease per window balances one increase per window (about 10 with the
    default 0.9) instead of collapsing to 1; under real overload latency
    rises too, growth stops, and the decreases compound. The limit stays
    within [1, maximum].
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
        self._answers_since_decrease = limiter.limit

    def cap(self, maximum: int) -> None:
        """Move the ceiling (this worker's share of a global limit)."""
        self.maximum = max(1, maximum)
        if self.value > self.maximum:
            self._set(float(self.maximum))

    def on_answer(self, latency: float) -> None:
        self._answers_since_decrease += 1
        self._observe(latency)
        assert self.smoothed is not None and self.baseline is not None
        if self.smoothed <= self.latency_tolerance * max(self.baseline, 0.001):
            self._set(min(float(self.maximum), self.value + 1.0 / self.value))

    def on_congestion(self, latency: float | None = None) -> None:
        self._answers_since_decrease += 1
        if latency is not None:
            self._observe(latency)
        if self._answers_since_decrease < int(self.value):
            return  # already cut in this window
        self._answers_since_decrease = 0
        self._set(max(1.0, self.value * self.decrease))

    def _observe(self, latency: float) -> None:
        if self.smoothed is None:
            self.smoothed = latency
        else:
            self.smoothed += 0.1 * (latency - self.smoothed)
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
