"""How many requests may be in flight to one model at once, and how that
number adapts to the model server.

A counting limiter, shared by every chunk that sends to the model, with a
FIFO queue so chunks take turns. Unlike `asyncio.Semaphore`, its limit can
move while requests are in flight (adaptive concurrency changes it), and a
caller can ask for a slot without waiting (`try_acquire`), which keeps the
common case on the dispatch path free of extra tasks.

Turns follow prompt prefixes. A worker runs several chunks of a model at
once, and with prefix-aware dispatch each chunk's lines share a prefix
(often one prefix a chunk). Taken strictly in turn, a server with one slot
(llama.cpp with one slot, llama-cpp-python's server, Ollama) would see the
chunks' prefixes alternate and evict each other's prompt cache at every
request. So a freed slot goes first to a waiter with the prefix of the
last request let in, for at most `AFFINITY_STREAK` slots in a row; then
to the longest waiter, whose prefix runs next (so a waiter waits at most
64 slots for each prefix ahead of it). Callers with no prefix key wait in
plain FIFO order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

#: Slots in a row that may go to waiters with the last prefix while others
#: wait: one prompt-cache miss in this many on a one-slot server, and
#: another chunk's wait bounded by this many requests.
AFFINITY_STREAK = 64


class Limiter:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self.in_flight = 0
        # Every waiter in arrival order, and those with a prefix key again
        # by key. A waiter let in through one queue stays in the other as a
        # done future, skipped when reached (removing it would mean a scan).
        self._waiters: deque[tuple[asyncio.Future[None], int | None]] = deque()
        self._by_key: dict[int, deque[asyncio.Future[None]]] = {}
        self._waiting = 0
        self._last_key: int | None = None
        self._streak = 0

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._limit = max(1, value)
        self._wake()

    @property
    def waiting(self) -> int:
        return self._waiting

    def try_acquire(self, key: int | None = None) -> bool:
        if self.in_flight < self._limit and not self._waiting:
            self.in_flight += 1
            self._let_in(key)
            return True
        return False

    async def acquire(self, key: int | None = None) -> None:
        """Wait for a slot; `key` is the request's prompt-prefix key."""
        if self.try_acquire(key):
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((waiter, key))
        if key is not None:
            self._by_key.setdefault(key, deque()).append(waiter)
        self._waiting += 1
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot arrived just as we were cancelled
            else:  # still queued: it is skipped when reached
                self._waiting -= 1
                # A slot freed while this waiter was counted but could not
                # take it (its future already cancelled) is handed on now,
                # or a lane that queued behind the count would wait for the
                # next release, for ever if none comes.
                self._wake()
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _let_in(self, key: int | None) -> None:
        if key is not None and key == self._last_key:
            self._streak += 1
        else:
            self._last_key, self._streak = key, 1

    def _next(self) -> tuple[asyncio.Future[None], int | None] | None:
        """The waiter to let in next: one with the last prefix while the
        streak lasts, else the longest waiting."""
        key = self._last_key
        if key is not None and self._streak < AFFINITY_STREAK:
            same = self._by_key.get(key)
            while same:
                waiter = same.popleft()
                if not waiter.done():
                    return waiter, key
            self._by_key.pop(key, None)
        while self._waiters:
            waiter, key = self._waiters.popleft()
            if not waiter.done():
                if key is not None:
                    self._drop_before(key, waiter)
                return waiter, key
        return None

    def _drop_before(self, key: int, waiter: asyncio.Future[None]) -> None:
        """`waiter` was taken from the arrival queue: drop it and what is
        done before it from its key's queue (both keep arrival order), so
        a key that is served in arrival order leaves nothing behind."""
        same = self._by_key.get(key)
        while same:
            first = same.popleft()
            if first is waiter:
                break
        if not same:
            self._by_key.pop(key, None)

    def _wake(self) -> None:
        while self._waiting and self.in_flight < self._limit:
            found = self._next()
            if found is None:
                break
            waiter, key = found
            self._waiting -= 1
            self.in_flight += 1
            self._let_in(key)
            waiter.set_result(None)
        if not self._waiting:
            self._waiters.clear()
            self._by_key.clear()
        else:
            self._compact()

    def _compact(self) -> None:
        """Drop the done futures once they outnumber the waiters, so a
        stop that cancels thousands of waiters leaves no queue behind."""
        if len(self._waiters) > 2 * self._waiting + 64:
            self._waiters = deque(item for item in self._waiters if not item[0].done())
            self._by_key = {
                key: live
                for key, queue in self._by_key.items()
                if (live := deque(waiter for waiter in queue if not waiter.done()))
            }


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


async def acquire_unless(limiter: Limiter, stopped: asyncio.Event, key: int | None = None) -> bool:
    """Take a slot, unless `stopped` is set first (then hold nothing)."""
    if stopped.is_set():
        return False
    if limiter.try_acquire(key):
        return True
    acquire = asyncio.ensure_future(limiter.acquire(key))
    stop = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        # The caller was cancelled: the slot may have come meanwhile.
        stop.cancel()
        if not acquire.done():
            acquire.cancel()  # `acquire` gives back a slot that comes late
        elif not acquire.cancelled() and acquire.exception() is None:
            limiter.release()
        raise
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
