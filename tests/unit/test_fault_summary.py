"""The model server's faults, summed up in the log at most once a minute."""

from __future__ import annotations

from overnight.backends import UpstreamResult
from overnight.runner.faults import FaultSummary

TIMEOUT = UpstreamResult(None, error_code="upstream_timeout")
RESET = UpstreamResult(None, error_code="upstream_disconnected")
RATE_LIMITED = UpstreamResult(429, {})


def test_the_first_faults_are_logged_at_once_with_counts_by_kind() -> None:
    faults = FaultSummary("flaky", interval=60)
    for result in (TIMEOUT, RESET, TIMEOUT, RATE_LIMITED):
        faults.count(result)
    assert faults.line(now=100.0, limit=12) == (
        "model flaky: 4 failed attempts (2 timeout, 1 disconnected, 1 HTTP 429);"
        " concurrency limit now 12"
    )


def test_then_at_most_one_line_per_interval_summing_what_came_between() -> None:
    faults = FaultSummary("flaky", interval=60)
    faults.count(TIMEOUT)
    assert faults.line(now=100.0, limit=16) is not None
    for second in range(1, 60):
        faults.count(RESET)
        assert faults.line(now=100.0 + second, limit=16) is None
    faults.count(RESET)
    assert faults.line(now=160.0, limit=15) == (
        "model flaky: 60 failed attempts in the last 60 s (60 disconnected);"
        " concurrency limit now 15"
    )


def test_no_faults_no_line() -> None:
    faults = FaultSummary("calm", interval=60)
    assert faults.line(now=100.0, limit=16) is None
    faults.count(TIMEOUT)
    assert faults.line(now=101.0, limit=16) is not None
    assert faults.line(now=500.0, limit=16) is None
