"""API rate limits: a token bucket per API key, so that one client polling
in a tight loop cannot slow the others down.

Each caller's bucket holds up to `rate_limit_burst` tokens and refills at
`rate_limit_per_second`; a request takes one token, and a request that finds
none is answered 429 (`rate_limit_exceeded`, in the dialect's error shape)
with `Retry-After` (and `retry-after-ms`, which the official SDKs read
first) saying when a token will be there. The SDKs retry such a 429 on
their own after that wait.

Whose bucket: the API key's (by its SHA-256, so no key is held in the
clear). Single-user local mode has no limit: it has one user and no one
else to protect, and a limit there would only surprise a script or a
benchmark on the user's own machine. Paths served without a key (health,
metrics, signed upload URLs) are not limited. Buckets live in the API
process's memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from overnight.api.auth import api_key_of
from overnight.api.errors import error_response
from overnight.api.responses import runtime_of
from overnight.domain.keys import key_digest
from overnight.errors import RateLimited

#: Past this many buckets, full ones (callers idle long enough to have
#: refilled, which a new bucket would equal) are dropped.
MAX_IDLE_BUCKETS = 10_000


@dataclass(slots=True)
class TokenBucket:
    tokens: float
    updated: float

    def take(self, now: float, rate: float, burst: float) -> float:
        """Take a token: 0 when there was one, else the seconds until one."""
        self.tokens = min(burst, self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / rate


class RateLimits:
    """The buckets of every caller seen, by caller."""

    def __init__(
        self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = per_second
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, caller: str) -> float:
        """0 if `caller` may go ahead, else the seconds to wait."""
        now = self.clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= MAX_IDLE_BUCKETS:
                self._forget_idle(now)
            bucket = self._buckets[caller] = TokenBucket(self.burst, now)
        return bucket.take(now, self.rate, self.burst)

    def _forget_idle(self, now: float) -> None:
        full = now - self.burst / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if b.updated > full}


def caller_key(request: Request) -> str | None:
    """The bucket a request draws from; None in local mode: no limit."""
    if runtime_of(request).tenants.local_mode:
        return None
    return key_digest(api_key_of(request) or "")


class LimitRate:
    """ASGI middleware, inside `Authenticate`: only callers it let through
    are counted, so unknown keys cannot fill the table."""

    def __init__(self, app: ASGIApp, *, per_second: float, burst: int) -> None:
        self.app = app
        self.limits = RateLimits(per_second, burst) if per_second > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.limits is None or scope["type"] != "http" or "caller" not in scope.get("state", {}):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        caller = caller_key(request)
        wait = 0.0 if caller is None else self.limits.take(caller)
        if wait > 0:
            error = RateLimited(
                f"Too many requests: this key may send {self.limits.rate:g} per second "
                f"(bursts of {self.limits.burst:g}). Retry after {wait:.3f} s.",
                retry_after=wait,
            )
            await error_response(request, error)(scope, receive, send)
            return
        await self.app(scope, receive, send)
