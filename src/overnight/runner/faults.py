"""A rate-limited summary of a model server's faults, for the log.

A flaky model server fails thousands of attempts an hour; one log line each
would bury everything else, and no line at all leaves an operator guessing
why a batch is slow. So failed attempts are counted by kind, and the counts
go to the log as one line per model at most every `interval` seconds. The
first faults after a quiet spell are logged at the next report, so the start
of trouble shows at once.
"""

from __future__ import annotations

from collections import Counter

from overnight.backends import UpstreamResult

#: Seconds between two summary lines of one model.
FAULT_LOG_INTERVAL = 60.0


def fault_kind(result: UpstreamResult) -> str:
    """`HTTP 429`, `HTTP 500`, ... or the error code without its prefix
    (`timeout`, `disconnected`, `unreachable`)."""
    if result.status_code is not None:
        return f"HTTP {result.status_code}"
    return (result.error_code or "unknown").removeprefix("upstream_")


class FaultSummary:
    def __init__(self, model: str, interval: float = FAULT_LOG_INTERVAL) -> None:
        self.model = model
        self.interval = interval
        self.counts: Counter[str] = Counter()
        self._last_line: float | None = None

    def count(self, result: UpstreamResult) -> None:
        self.counts[fault_kind(result)] += 1

    def line(self, now: float, limit: int) -> str | None:
        """The summary due at `now` (counts since the last one), or None
        when nothing failed or the last line is less than `interval` old."""
        if self._last_line is not None and now - self._last_line < self.interval:
            return None
        if not self.counts:
            return None
        counts = ", ".join(f"{n} {kind}" for kind, n in self.counts.most_common())
        total = self.counts.total()
        span = "" if self._last_line is None else f" in the last {now - self._last_line:.0f} s"
        self.counts.clear()
        self._last_line = now
        return (
            f"model {self.model}: {total} failed attempt{'s' if total != 1 else ''}{span}"
            f" ({counts}); concurrency limit now {limit}"
        )
