"""Choosing a replica of a model server, and taking sick ones out.

Requests go to the replica with the fewest outstanding requests (ties go
round-robin), which keeps fast replicas busier than slow ones without any
tuning. A replica that fails `eject_after` times in a row (no answer, or a
5xx) is taken out for `cooldown` seconds, doubling each time it fails again,
up to `max_cooldown`; when the cooldown ends it gets a single probe request,
and one success brings it fully back. If every replica is out, the one due
back first is used anyway: a model is never left with nowhere to send.

A request with an affinity (its prompt-prefix key, domain/prefixes.py)
goes to the replica that key hashes to, so one prefix keeps hitting one
replica's prefix cache: rendezvous hashing (each replica scores the key,
the highest score wins), which moves only the keys of a replica that is
ejected or comes back. A replica is saturated when it holds
`load_factor` times its share of the requests outstanding (consistent
hashing with bounded loads): a request whose replica is saturated goes to
the next replica in its key's order that is not, so a hot prefix spreads
rather than queueing behind one replica while the others idle, and spreads
to the same few replicas each time (measured: 0.84 of requests hit an LRU
of two prefixes where the least busy replica got 0.79, docs/benchmarks.md).
When every replica is at its share, or the key's replicas are out, the
least busy replica takes it.

Pure bookkeeping, no I/O: the HTTP backend reports outcomes to it.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_MASK = (1 << 64) - 1


def _mix(value: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit score from a key and a
    replica's seed, without hashing bytes on every pick."""
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    value = (value ^ (value >> 27)) * 0x94D049BB133111EB & _MASK
    return value ^ (value >> 31)


@dataclass
class Replica:
    url: str
    outstanding: int = 0
    failures_in_a_row: int = 0
    ejected_until: float = 0.0
    cooldown: float = 0.0
    probing: bool = False
    #: Stable across processes, so every worker maps a key to the same replica.
    seed: int = field(init=False)

    def __post_init__(self) -> None:
        self.seed = int.from_bytes(hashlib.blake2b(self.url.encode(), digest_size=8).digest())

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
        load_factor: float = 1.25,
    ) -> None:
        if not urls:
            raise ValueError("a model needs at least one URL")
        self.replicas = [Replica(url) for url in urls]
        self.eject_after = eject_after
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.clock = clock
        self.load_factor = load_factor
        self._turn = 0

    def pick(self, affinity: int | None = None) -> Replica:
        """The replica for the next request (the one `affinity` hashes to,
        unless it is saturated or out); the caller must `release` it."""
        now = self.clock()
        if affinity is not None:
            chosen = self._by_affinity(affinity, now)
            if chosen is not None:
                chosen.outstanding += 1
                return chosen
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

    def _by_affinity(self, affinity: int, now: float) -> Replica | None:
        """The first replica in `affinity`'s order that is in and has room."""
        ranked: list[tuple[int, Replica]] = []
        busy = 0
        for replica in self.replicas:
            if not replica.available(now) or replica.ejected_until > 0:
                continue  # out, probing, or due a probe: left to the plain path
            busy += replica.outstanding
            ranked.append((_mix(affinity ^ replica.seed), replica))
        if not ranked:
            return None
        share = math.ceil(self.load_factor * (busy + 1) / len(ranked))
        ranked.sort(key=lambda scored: scored[0], reverse=True)
        for _, replica in ranked:
            if replica.outstanding < share:
                return replica
        return None

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
