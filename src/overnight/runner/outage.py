"""A model server that is down for a while: its requests wait, not fail.

A model server restarts (an upgrade, a crash, a new model loaded), and for
that minute nothing listens on its port. Counted as attempts, the refused
connects failed every line in flight within a second or two (`max_attempts`
with the default backoff): a 10M-line batch lost thousands of lines to a
restart. A refused connect sent nothing, so it need not be an attempt.

When a request's connect is refused, the model's servers are probed (a TCP
connect to each address, nothing sent). If one answers, the refusal was
one replica's, and it counts as an attempt as before (replica ejection
deals with it). If none does, the model is out: one watcher per model
probes with backoff, every request that meets the refusal waits on it
holding no slot, and when a probe connects they all go again, the refused
try not counted. Past `outage_patience` seconds the watcher gives up:
refusals count as attempts again, so lines fail as they used to, until the
server answers. A stop (cancel, expiry, shutdown) ends the wait at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from overnight.runner.reachability import why_unreachable

log = logging.getLogger("overnight.runner")

#: Seconds between probes: the first, then doubling up to the last.
FIRST_PROBE = 0.25
LAST_PROBE = 5.0
#: Seconds one probe's connect may take.
PROBE_TIMEOUT = 2.0

Probe = Callable[[str], Awaitable[str | None]]


async def connect(url: str) -> str | None:
    """Why `url`'s server cannot be connected to, or None when it can."""
    return await why_unreachable(url, PROBE_TIMEOUT)


class Outage:
    """One model's view of whether its servers are down."""

    def __init__(
        self, name: str, urls: Sequence[str], patience: float, probe: Probe = connect
    ) -> None:
        self.name = name
        self.urls = list(urls)
        self.patience = patience
        self._probe = probe
        self._watcher: asyncio.Task[bool] | None = None
        #: When the servers were first all found refusing, since the last
        #: answer: patience counts from here across watchers, so a server
        #: that accepts a probe now and then and refuses again (a crash
        #: loop) does not start the clock again each time.
        self.out_since: float | None = None
        #: Patience ran out: refusals count as attempts until an answer.
        self.given_up = False

    async def ride_out(self, stopped: asyncio.Event) -> bool:
        """After a refused connect: True when the model was out and is back
        (the refusal was no attempt; send again); False when it counts as
        an attempt (another address answers, patience is spent, or
        `stopped` was set)."""
        if self.given_up or self.patience <= 0 or stopped.is_set():
            return False
        watcher = self._watcher
        if watcher is None or watcher.done():
            watcher = self._watcher = asyncio.ensure_future(self._watch())
        stop = asyncio.ensure_future(stopped.wait())
        try:
            await asyncio.wait({watcher, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not watcher.done() or watcher.cancelled():
            return False
        return watcher.result()

    def answered(self) -> None:
        """The model answered a request: it is up, patience is whole again."""
        self.out_since = None
        self.given_up = False

    async def _any_up(self) -> bool:
        """Whether some address accepts a connection (the first that does
        ends the probing: one that does not answer costs no wait then)."""
        probes = [asyncio.ensure_future(self._probe(url)) for url in self.urls]
        try:
            for probe in asyncio.as_completed(probes):
                if await probe is None:
                    return True
            return False
        finally:
            for probe in probes:
                probe.cancel()

    async def _watch(self) -> bool:
        if await self._any_up():
            return False  # one address refused, another answers
        if self.out_since is None:
            self.out_since = time.monotonic()
            log.warning(
                "model %r: its server refuses connections (%s); its requests wait for it, "
                "for up to %g s (outage_patience)",
                self.name,
                ", ".join(self.urls),
                self.patience,
            )
        started = self.out_since
        delay = FIRST_PROBE
        while True:
            waited = time.monotonic() - started
            if waited >= self.patience:
                self.given_up = True
                log.error(
                    "model %r: its server refused connections for %.0f s; its requests "
                    "now fail after max_attempts tries, until it answers again",
                    self.name,
                    waited,
                )
                return False
            await asyncio.sleep(min(delay, self.patience - waited))
            delay = min(delay * 2, LAST_PROBE)
            if await self._any_up():
                log.warning(
                    "model %r: its server accepts connections again after %.1f s; "
                    "its waiting requests go again",
                    self.name,
                    time.monotonic() - started,
                )
                return True

    async def close(self) -> None:
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
