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


def test_overload_cuts_the_limit_once_per_window() -> None:
    limiter = Limiter(20)
    adaptive = AdaptiveLimit(limiter, maximum=20)
    adaptive.on_overload(adaptive.epoch, 0.1)
    assert limiter.limit == 18
    for _ in range(10):
        adaptive.on_overload(adaptive.epoch, 0.1)  # the same overload, the same window: once
    assert limiter.limit == 18
    for _ in range(8):
        adaptive.on_overload(adaptive.epoch, 0.1)  # a window (18 answers) later: cut again
    assert limiter.limit == 16


def test_requests_sent_before_a_cut_do_not_cut_again() -> None:
    """A burst of 429s (or of timeouts while the server is queueing) from
    requests that were all in flight at one moment is one overload: it cuts
    once, however many answers the burst holds."""
    limiter = Limiter(16)
    adaptive = AdaptiveLimit(limiter, maximum=16)
    sent_in = adaptive.epoch  # 48 requests went out; then the server starts shedding
    for _ in range(48):
        adaptive.on_overload(sent_in)
    assert limiter.limit == 14
    adaptive.on_overload(adaptive.epoch)  # sent after the cut: the overload goes on
    assert limiter.limit == 12


def test_the_limit_never_drops_below_one() -> None:
    limiter = Limiter(3)
    adaptive = AdaptiveLimit(limiter, maximum=3)
    for _ in range(200):
        adaptive.on_overload(adaptive.epoch)
    assert limiter.limit == 1


def test_faults_at_the_usual_latency_hold_the_limit() -> None:
    """Hangs, resets and 500s while the answers that do come are as fast as
    ever are not about load: they neither grow nor cut the limit."""
    limiter = Limiter(16)
    adaptive = AdaptiveLimit(limiter, maximum=64)
    for _ in range(50):
        adaptive.on_answer(0.05)
    grown = limiter.limit
    for _ in range(500):
        adaptive.on_fault(adaptive.epoch)  # timeouts and resets: no latency to read
        adaptive.on_fault(adaptive.epoch, 0.05)  # a 500 at the usual speed
    assert limiter.limit == grown


def test_faults_while_the_server_is_queueing_cut() -> None:
    limiter = Limiter(16)
    adaptive = AdaptiveLimit(limiter, maximum=16)
    for _ in range(50):
        adaptive.on_answer(0.05)
    for _ in range(30):
        adaptive.on_answer(0.5)  # ten times slower: the server is queueing
    assert adaptive.queueing
    adaptive.on_fault(adaptive.epoch)
    assert limiter.limit == 14


def test_steady_overload_signals_settle_the_limit_below_the_maximum() -> None:
    limiter = Limiter(64)
    adaptive = AdaptiveLimit(limiter, maximum=64)
    for n in range(5000):  # one answer in five is a 429, whatever the load
        if n % 5 == 0:
            adaptive.on_overload(adaptive.epoch, 0.05)
        else:
            adaptive.on_answer(0.05)
    assert 6 <= limiter.limit <= 20


def test_a_jittery_server_does_not_look_like_queueing() -> None:
    """The baseline is taken after a warm-up, not from the first answer, which
    may by chance be the fastest the server ever gives."""
    limiter = Limiter(4)
    adaptive = AdaptiveLimit(limiter, maximum=64)
    adaptive.on_answer(0.01)  # the fastest there will be
    for n in range(40):
        adaptive.on_answer(0.01 + 0.03 * ((n * 7) % 10) / 9)  # 10-40 ms, 25 on average
    assert not adaptive.queueing
    assert limiter.limit >= 8  # grown all along


def test_growth_stops_while_latency_is_far_above_its_baseline() -> None:
    limiter = Limiter(5)
    adaptive = AdaptiveLimit(limiter, maximum=50)
    for _ in range(50):
        adaptive.on_answer(0.01)
    grown = limiter.limit
    for _ in range(200):
        adaptive.on_answer(1.0)  # the server is queueing: 100x slower
    assert limiter.limit <= grown + 1
