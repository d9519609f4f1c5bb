"""Choosing a replica of a model server, and taking sick ones out.

Requests go to the replica with the fewest outstanding requests (ties go
round-robin), which keeps fast replicas busier than slow ones without any
tuning. A replica that fails `eject_after` times in a row (no answer, or a
5xx) is taken out for `cooldown` seconds, doubling each time it fails again,
up to `max_cooldown`; when the cooldown ends it gets a single probe request,
and one success brings it fully back. If every replica is out, the one due
back first is used anyway: a model is never left with nowhere to send.

Pure bookkeeping, no I/O: the HTTP backend reports outcomes to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Replica:
    url: str
    outstanding: int = 0
    failures_in_a_row: int = 0
    ejected_until: float = 0.0
    cooldown: float = 0.0
    probing: bool = False

    def available(self, now: float) -> bool:
        return self.ejected_until <= now and not self.probing


class Replicas:
    def __init__(
        self,
        urls: list[str],
        *,
        eject_after: int = 5,
        cooldown: float = 5.0,
        max_cooldown: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("a model needs at least one URL")
        self.replicas = [Replica(url) for url in urls]
        self.eject_after = eject_after
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.clock = clock
        self._turn = 0

    def pick(self) -> Replica:
        """The replica for the next request; the caller must `release` it."""
        now = self.clock()
        count = len(self.replicas)
        best: Replica | None = None
        for step in range(count):
            replica = self.replicas[(self._turn + step) % count]
            if replica.ejected_until > now or replica.probing:
                continue
            if best is None or replica.outstanding < best.outstanding:
                best = replica
        self._turn = (self._turn + 1) % count
        if best is None:
            best = min(self.replicas, key=lambda r: r.ejected_until)
        if best.ejected_until > 0 and best.ejected_until <= now:
            best.probing = True  # the first request after a cooldown is a probe
        best.outstanding += 1
        return best

    def release(self, replica: Replica, *, healthy: bool) -> None:
        replica.outstanding -= 1
        was_probe = replica.probing
        replica.probing = False
        if healthy:
            replica.failures_in_a_row = 0
            replica.ejected_until = 0.0
            replica.cooldown = 0.0
            return
        replica.failures_in_a_row += 1
        if was_probe or replica.failures_in_a_row >= self.eject_after:
            replica.cooldown = min(
                self.max_cooldown,
                replica.cooldown * 2 if replica.cooldown else self.base_cooldown,
            )
            replica.ejected_until = self.clock() + replica.cooldown
            replica.failures_in_a_row = 0

    def healthy_count(self) -> int:
        now = self.clock()
        return sum(1 for r in self.replicas if r.ejected_until <= now)
