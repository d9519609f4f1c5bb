"""Send one request to its model, retrying what is worth retrying.

Each attempt holds one of the model's slots; between attempts the slot is
given back, so a request waiting out a backoff does not block others. Every
attempt's outcome feeds the model's adaptive limit, with the limit's epoch
when it started (so that attempts sent before a cut cannot cut again).
Connection errors, timeouts, 408, 429 and 5xx are retried up to
`max_attempts` times: the wait is exponential with full jitter, or what
`Retry-After` asks for, capped at `max_retry_delay`. A stop (cancel,
expiry) ends the retrying early; the last answer is then the result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time

from overnight.backends import UpstreamRequest, UpstreamResult
from overnight.runner.limiter import acquire_unless
from overnight.runner.models import ServedModel
from overnight.runner.wakeups import wait_at_most


async def send_with_retries(
    model: ServedModel, request: UpstreamRequest, stopped: asyncio.Event
) -> UpstreamResult:
    """The caller holds one slot of `model.limiter`; it is released here."""
    settings = model.settings
    attempt = 0
    while True:
        attempt += 1
        epoch = model.epoch
        started = time.monotonic()
        try:
            result = await model.backend.send(request)
        finally:
            model.limiter.release()
        model.observe(result, time.monotonic() - started, epoch)
        if not result.congested or attempt >= settings.max_attempts or stopped.is_set():
            return result if attempt == 1 else dataclasses.replace(result, attempts=attempt)
        if result.retry_after is not None:
            delay = min(result.retry_after, settings.max_retry_delay)
        else:
            ceiling = settings.retry_backoff * 2 ** (attempt - 1)
            delay = random.uniform(0, min(settings.max_retry_delay, ceiling))
        await wait_at_most(stopped, delay)
        if not await acquire_unless(model.limiter, stopped):
            return dataclasses.replace(result, attempts=attempt)
