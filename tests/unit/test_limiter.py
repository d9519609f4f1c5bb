from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

from overnight.runner.limiter import AFFINITY_STREAK, Limiter, acquire_unless


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


async def _take_turns(limiter: Limiter, keys: dict[str, int | None], lines: int) -> list[str]:
    """Chunks (named in `keys`, with their prompt-prefix key) each send
    `lines` requests through `limiter`, as the executor does: lanes, one
    more than the slots, taking the chunk's next line, each releasing its
    slot before it waits again. The order the requests got in."""
    order: list[str] = []

    async def lane(name: str, queue: Iterator[int]) -> None:
        for _ in queue:
            await limiter.acquire(keys[name])
            order.append(name)
            await asyncio.sleep(0)
            limiter.release()

    async def chunk(name: str) -> None:
        queue = iter(range(lines))
        await asyncio.gather(*(lane(name, queue) for _ in range(limiter.limit + 1)))

    await asyncio.gather(*(chunk(name) for name in keys))
    return order


def _runs(order: list[str]) -> list[int]:
    """The lengths of the runs of one chunk in a row."""
    return [len(list(run)) for _, run in itertools.groupby(order)]


async def test_a_one_slot_server_sees_one_prefix_at_a_time_not_alternating() -> None:
    """Two chunks of different prompt prefixes on a one-slot model: each
    freed slot goes to the prefix just served, so the server's prompt cache
    is evicted once per streak instead of at every request (strict turns
    would alternate A, B, A, B)."""
    order = await _take_turns(Limiter(1), {"a": 1, "b": 2}, lines=40)
    assert len(_runs(order)) <= 3
    assert sorted(order) == ["a"] * 40 + ["b"] * 40


async def test_a_long_prefix_streak_still_lets_other_chunks_in() -> None:
    """The preference is bounded: a chunk behind a long one waits at most
    AFFINITY_STREAK requests, then its own prefix runs."""
    order = await _take_turns(Limiter(1), {"long": 1, "short": 2}, lines=3 * AFFINITY_STREAK)
    first_short = order.index("short")
    assert first_short <= AFFINITY_STREAK
    assert max(_runs(order)) <= AFFINITY_STREAK


async def test_requests_without_a_prefix_key_take_turns_in_arrival_order() -> None:
    """With no key (prefix dispatch off, or no shared prefix) the queue is
    first come, first served: the chunks' lanes take turns, and no chunk
    gets two slots in a row beyond the lane that was already waiting."""
    order = await _take_turns(Limiter(1), {"a": None, "b": None}, lines=20)
    assert max(_runs(order)) <= 2
    assert len(_runs(order)) >= 19


async def test_cancelled_waiters_leave_no_queue_behind() -> None:
    limiter = Limiter(1)
    await limiter.acquire(7)
    waiters = [asyncio.create_task(limiter.acquire(n % 3)) for n in range(500)]
    await asyncio.sleep(0)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert limiter.waiting == 0
    assert len(limiter._waiters) < 200  # compacted as they were cancelled
    limiter.release()
    assert limiter.try_acquire(1)


async def test_a_slot_freed_beside_a_cancel_goes_to_the_next_waiter() -> None:
    """A waiter is cancelled and, before its task runs again, a slot is
    released and another lane finds the queue still counted, so it queues.
    When the cancelled waiter leaves, the slot must go on to that lane, not
    wait for a release that may never come."""
    limiter = Limiter(1)
    await limiter.acquire(1)
    leaving = asyncio.create_task(limiter.acquire(2))
    await asyncio.sleep(0)
    leaving.cancel()
    limiter.release()  # the only waiter's future is cancelled: nobody takes it
    late = limiter.acquire(3)
    waiter = late.send(None)  # queues now, before `leaving` runs its cleanup
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert waiter.done(), "the freed slot stayed with nobody"
    assert (limiter.in_flight, limiter.waiting) == (1, 0)
    late.close()


async def test_one_prefix_served_in_arrival_order_leaves_no_queue_behind() -> None:
    """Past the streak, one prefix's waiters are let in through the arrival
    queue; its own queue must not keep them, request after request."""
    limiter = Limiter(4)
    queue = iter(range(5000))

    async def lane() -> None:
        for _ in queue:
            await limiter.acquire(7)
            await asyncio.sleep(0)
            limiter.release()

    async def watch() -> int:
        most = 0
        while not done.is_set():
            most = max(most, sum(len(q) for q in limiter._by_key.values()))
            await asyncio.sleep(0)
        return most

    done = asyncio.Event()
    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(lane() for _ in range(20)))
    done.set()
    assert await watcher <= 40  # about the lanes waiting, not the requests served


async def test_a_caller_cancelled_as_its_slot_arrives_gives_it_back() -> None:
    limiter = Limiter(1)
    await limiter.acquire()
    caller = asyncio.create_task(acquire_unless(limiter, asyncio.Event()))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the caller waits inside acquire_unless
    limiter.release()  # the slot goes to its acquire...
    caller.cancel()  # ...and the caller is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.sleep(0)
    assert limiter.in_flight == 0
    assert limiter.try_acquire()
