"""The token bucket behind the API's rate limits, on a clock the test moves."""

from __future__ import annotations

import pytest

from overnight.api.ratelimit import MAX_IDLE_BUCKETS, RateLimits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_the_rate_applies() -> None:
    clock = Clock()
    limits = RateLimits(per_second=10, burst=5, clock=clock)
    assert [limits.take("a") for _ in range(5)] == [0.0] * 5
    assert limits.take("a") == pytest.approx(0.1)
    clock.now += 0.1
    assert limits.take("a") == 0.0
    assert limits.take("a") > 0


def test_one_callers_bucket_never_drains_anothers() -> None:
    clock = Clock()
    limits = RateLimits(per_second=1, burst=2, clock=clock)
    refused = sum(limits.take("hammer") > 0 for _ in range(1000))
    assert refused == 998
    assert [limits.take("other") for _ in range(2)] == [0.0, 0.0]


def test_a_bucket_refills_only_up_to_the_burst() -> None:
    clock = Clock()
    limits = RateLimits(per_second=100, burst=3, clock=clock)
    limits.take("a")
    clock.now += 3600
    assert [limits.take("a") == 0.0 for _ in range(4)] == [True, True, True, False]


def test_idle_buckets_are_forgotten_when_the_table_is_full() -> None:
    clock = Clock()
    limits = RateLimits(per_second=10, burst=10, clock=clock)
    for n in range(MAX_IDLE_BUCKETS):
        limits.take(f"caller-{n}")
    limits.take("busy")
    clock.now += 1.5  # everyone refilled, and a new caller arrives
    limits.take("new")
    assert len(limits._buckets) == 1
