"""`wait_at_most`: the waits of the worker's loops (poll, flush, retry
backoff) end on the event or the timeout, and never swallow a cancel, so a
worker told to stop does stop."""

from __future__ import annotations

import asyncio
import time

import pytest

from overnight.runner.wakeups import wait_at_most


async def test_it_returns_when_the_event_is_set_or_the_time_is_up() -> None:
    event = asyncio.Event()
    started = time.monotonic()
    await wait_at_most(event, 0.05)
    assert 0.04 <= time.monotonic() - started < 1
    asyncio.get_running_loop().call_later(0.01, event.set)
    started = time.monotonic()
    await wait_at_most(event, 10)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("turns", range(5))
async def test_a_cancel_as_the_event_is_set_stops_a_loop_around_it(turns: int) -> None:
    # The worker's loops: wait, then work, for ever, until cancelled. A
    # cancel that lands while the event's own wake-up is on its way (after
    # 0, 1 or 2 turns of the event loop) was lost with asyncio.wait_for on
    # Python 3.11, and the loop went on.
    event = asyncio.Event()

    async def loop_forever() -> None:
        while True:
            await wait_at_most(event, 10)
            event.clear()

    task = asyncio.create_task(loop_forever())
    await asyncio.sleep(0.01)
    event.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=1)
    assert done == {task} and task.cancelled()
