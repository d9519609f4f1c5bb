"""Send one request to its model, retrying what is worth retrying.

Each attempt holds one of the model's slots; between attempts the slot is
given back, so a request waiting out a backoff does not block others. Every
attempt's outcome feeds the model's adaptive limit, with the limit's epoch
when it started (so that attempts sent before a cut cannot cut again).
Connection errors, timeouts, 408, 429 and 5xx are retried up to
`max_attempts` times: the wait is exponential with full jitter, or what
`Retry-After` asks for, capped at `max_retry_delay`. A stop (cancel,
expiry) ends the retrying early; the last answer is then the result.

A connect the server refused while all the model's servers are down (a
restart) is not an attempt either: the request waits for them, up to the
model's `outage_patience`, holding no slot (runner/outage.py).

A connect that found no file descriptor free (`OUT_OF_FILES`) is not an
attempt: the model's limit drops to the requests it has in flight, and the
request waits for a slot and goes again, however often, until it is sent or
the chunk is stopped. Failing it would fail a line for this machine's
limit, which says nothing about the request or the server.
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

#: Seconds a request that found no file descriptor waits before it asks
#: for a slot again (the lowered limit makes it wait longer while the model
#: is above it).
OUT_OF_FILES_PAUSE = 0.05


async def send_with_retries(
    model: ServedModel, request: UpstreamRequest, stopped: asyncio.Event
) -> UpstreamResult:
    """The caller holds one slot of `model.limiter`; it is released here.
    A result that is `out_of_files` comes back only when `stopped` was set
    before the request could be sent."""
    settings = model.settings
    attempt = 0
    last: UpstreamResult | None = None
    while True:
        epoch = model.epoch
        started = time.monotonic()
        try:
            result = await model.backend.send(request)
        finally:
            model.limiter.release()
        took = time.monotonic() - started
        if result.out_of_files:
            # Never sent: this process had no descriptor to connect with.
            # Not an attempt, nor a sign about the server: fewer in flight,
            # and this request waits for a slot under the lowered limit.
            model.out_of_files()
            await wait_at_most(stopped, OUT_OF_FILES_PAUSE)
            not_an_attempt = True
        else:
            # Nothing listened, and the model's servers were all down and
            # are back (runner/outage.py): no attempt either.
            not_an_attempt = result.refused and await model.outage.ride_out(stopped)
        if not_an_attempt:
            if not await acquire_unless(model.limiter, stopped, request.affinity):
                # Stopped: the last answer, or, with none, this (the caller
                # records the line as stopped).
                return result if last is None else dataclasses.replace(last, attempts=attempt)
            continue
        attempt += 1
        last = result
        model.observe(result, took, epoch)
        if not result.congested or attempt >= settings.max_attempts or stopped.is_set():
            return result if attempt == 1 else dataclasses.replace(result, attempts=attempt)
        if result.retry_after is not None:
            delay = min(result.retry_after, settings.max_retry_delay)
        else:
            ceiling = settings.retry_backoff * 2 ** (attempt - 1)
            delay = random.uniform(0, min(settings.max_retry_delay, ceiling))
        await wait_at_most(stopped, delay)
        if not await acquire_unless(model.limiter, stopped, request.affinity):
            return dataclasses.replace(result, attempts=attempt)
