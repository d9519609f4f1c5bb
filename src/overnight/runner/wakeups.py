"""In-process wake-ups: the API tells the runner at once that there is new
work or a cancel, instead of waiting for the next poll. Polling stays as the
fallback (and is the only path between processes)."""

from __future__ import annotations

import asyncio


class Wakeups:
    def __init__(self) -> None:
        self._events: list[asyncio.Event] = []

    def subscribe(self) -> asyncio.Event:
        event = asyncio.Event()
        self._events.append(event)
        return event

    def notify(self) -> None:
        for event in self._events:
            event.set()
