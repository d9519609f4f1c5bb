"""In-process wake-ups: the API tells the runner at once that there is new
work or a cancel, instead of waiting for the next poll. Polling stays as the
fallback (and is the only path between processes).

A loop that finds nothing to do polls less and less often (`Backoff`): an
idle worker's looks cost a few database transactions each, and at a fast
`poll_interval` they kept a core a third busy doing nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


async def wait_at_most(event: asyncio.Event, seconds: float) -> None:
    """Until `event` is set or `seconds` pass, whichever comes first.

    Not `asyncio.wait_for(event.wait(), seconds)`: on Python 3.11 a cancel
    that arrives just as the event is set is swallowed (wait_for returns
    the event's result instead, CPython gh-86296), and a loop around it
    then never ends: a worker told to stop at the moment a flush fell due
    kept flushing for ever. `asyncio.timeout` tells its own cancel from
    anyone else's."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class Backoff:
    """How long a polling loop waits for a wake-up before it looks again:
    `base` (poll_interval) after a look that found work or a wake-up, twice
    as long after each look that found nothing, up to `cap`
    (idle_poll_interval). Doubling keeps the delay of a poll-only event
    (work from another process, a window closing, a retry falling due) within
    the time the loop had been idle, so quiet periods stay cheap and busy
    ones fast."""

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = max(base, cap)
        self.delay = base

    def busy(self) -> None:
        self.delay = self.base

    def idle(self) -> None:
        self.delay = min(self.cap, self.delay * 2)

    async def wait(self, event: asyncio.Event, found: bool) -> None:
        """After a look that `found` work (or not): wait for `event` or the
        next look, then clear it. A wake-up resets the delay to `base`."""
        if found:
            self.busy()
        else:
            self.idle()
        await wait_at_most(event, self.delay)
        if event.is_set():
            self.busy()
        event.clear()


class Wakeups:
    def __init__(self) -> None:
        self._events: list[asyncio.Event] = []
        self._callbacks: list[Callable[[], None]] = []

    def subscribe(self) -> asyncio.Event:
        event = asyncio.Event()
        self._events.append(event)
        return event

    def forward(self, callback: Callable[[], None]) -> None:
        """Also call `callback` on every wake-up (to reach worker processes)."""
        self._callbacks.append(callback)

    def notify(self) -> None:
        for event in self._events:
            event.set()
        for callback in self._callbacks:
            callback()
