"""In-process wake-ups: the API tells the runner at once that there is new
work or a cancel, instead of waiting for the next poll. Polling stays as the
fallback (and is the only path between processes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


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
