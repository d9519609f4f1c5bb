"""In-process wake-ups: the API tells the runner at once that there is new
work or a cancel, instead of waiting for the next poll. Polling stays as the
fallback (and is the only path between processes)."""

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
