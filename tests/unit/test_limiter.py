from __future__ import annotations

import asyncio

import pytest

from overnight.runner.limiter import Limiter


async def test_at_most_limit_holders_and_fifo_order() -> None:
    limiter = Limiter(2)
    order: list[int] = []
    peak = 0

    async def hold(n: int) -> None:
        nonlocal peak
        await limiter.acquire()
        peak = max(peak, limiter.in_flight)
        order.append(n)
        await asyncio.sleep(0.01)
        limiter.release()

    await asyncio.gather(*(hold(n) for n in range(8)))
    assert peak == 2
    assert order == list(range(8))
    assert limiter.in_flight == 0


async def test_raising_the_limit_wakes_waiters() -> None:
    limiter = Limiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()
    limiter.limit = 2
    await asyncio.wait_for(waiter, 1)
    assert limiter.in_flight == 2


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    limiter = Limiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release()
    assert limiter.in_flight == 0
    assert limiter.try_acquire()


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        Limiter(0)


async def test_a_waiter_cancelled_just_as_a_slot_frees_still_ends_cancelled() -> None:
    """The slot is released between the cancel and the waiter's wake-up, so
    the cancelled waiter has already left the queue: the cancel must still
    arrive as a cancel (a lane stopped by a cancelled batch counts its line
    as not run only on CancelledError)."""
    limiter = Limiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    limiter.release()  # wakes the queue before the cancelled waiter runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (limiter.in_flight, limiter.waiting) == (0, 0)
    assert limiter.try_acquire()
