"""`wait_at_most`: the waits of the worker's loops (poll, flush, retry
backoff) end on the event or the timeout, and never swallow a cancel, so a
worker told to stop does stop. `Backoff`: an idle loop polls less often, a
busy or woken one at once at the fast pace again."""

from __future__ import annotations

import asyncio
import time

import pytest

from overnight.runner.wakeups import Backoff, wait_at_most


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


async def test_an_idle_loop_backs_off_to_the_cap_and_work_or_a_wake_up_resets_it() -> None:
    backoff = Backoff(0.01, 0.05)
    event = asyncio.Event()
    delays = []
    for _ in range(4):  # nothing found: 0.02, 0.04, then the cap
        await backoff.wait(event, found=False)
        delays.append(backoff.delay)
    assert delays == [0.02, 0.04, 0.05, 0.05]
    await backoff.wait(event, found=True)
    assert backoff.delay == 0.01
    await backoff.wait(event, found=False)
    assert backoff.delay == 0.02

    slow = Backoff(0.2, 2.0)
    asyncio.get_running_loop().call_later(0.01, event.set)
    started = time.monotonic()
    await slow.wait(event, found=False)  # woken long before its 0.4 s are up
    assert time.monotonic() - started < 0.3
    assert slow.delay == 0.2 and not event.is_set()


def test_a_cap_below_the_poll_interval_never_slows_the_poll() -> None:
    backoff = Backoff(0.5, 0.1)
    backoff.idle()
    assert backoff.delay == 0.5
