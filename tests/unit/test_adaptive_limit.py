"""AIMD on a model's in-flight limit."""

from __future__ import annotations

from overnight.runner.limiter import AdaptiveLimit, Limiter


def test_healthy_answers_grow_the_limit_up_to_the_maximum() -> None:
    limiter = Limiter(4)
    adaptive = AdaptiveLimit(limiter, maximum=10)
    for _ in range(200):
        adaptive.on_answer(0.05)
    assert limiter.limit == 10


def test_growth_is_additive_about_one_per_round() -> None:
    limiter = Limiter(4)
    adaptive = AdaptiveLimit(limiter, maximum=100)
    for _ in range(4):
        adaptive.on_answer(0.05)
    assert limiter.limit == 4  # one round of 4 answers adds about one
    for _ in range(5):
        adaptive.on_answer(0.05)
    assert limiter.limit == 5


def test_congestion_cuts_the_limit_once_per_window() -> None:
    limiter = Limiter(20)
    adaptive = AdaptiveLimit(limiter, maximum=20)
    adaptive.on_congestion(0.1)
    assert limiter.limit == 18
    for _ in range(10):
        adaptive.on_congestion(0.1)  # the same overload, the same window: counted once
    assert limiter.limit == 18
    for _ in range(8):
        adaptive.on_congestion(0.1)  # a window (18 answers) later: cut again
    assert limiter.limit == 16


def test_the_limit_never_drops_below_one() -> None:
    limiter = Limiter(3)
    adaptive = AdaptiveLimit(limiter, maximum=3)
    for _ in range(200):
        adaptive.on_congestion()
    assert limiter.limit == 1


def test_steady_unrelated_failures_do_not_collapse_the_limit() -> None:
    limiter = Limiter(16)
    adaptive = AdaptiveLimit(limiter, maximum=64)
    for n in range(5000):  # one answer in five fails, whatever the load
        if n % 5 == 0:
            adaptive.on_congestion(0.05)
        else:
            adaptive.on_answer(0.05)
    assert 6 <= limiter.limit <= 20


def test_growth_stops_while_latency_is_far_above_its_baseline() -> None:
    limiter = Limiter(5)
    adaptive = AdaptiveLimit(limiter, maximum=50)
    for _ in range(50):
        adaptive.on_answer(0.01)
    grown = limiter.limit
    for _ in range(200):
        adaptive.on_answer(1.0)  # the server is queueing: 100x slower
    assert limiter.limit <= grown + 1
