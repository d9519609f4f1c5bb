"""Progress a person can watch: a batch's counts, rate and ETA, and bytes
moving over the wire.

The bars draw on stderr and only when it is a terminal; piped or captured,
a batch's progress becomes one plain line per change of status, and bytes
move silently. `BatchView` is what both sources of a batch (the API's JSON,
the in-process service's `Batch`) are reduced to before they are shown."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

ENDED = frozenset({"completed", "failed", "expired", "cancelled"})

#: How far back the rate looks: long enough to smooth the flush-sized steps
#: in which counts move, short enough to follow a change of pace.
RATE_WINDOW = 20.0


@dataclass(frozen=True, slots=True)
class BatchView:
    """One look at a batch: what the progress line and `get` show."""

    id: str
    status: str
    total: int
    completed: int
    failed: int
    total_tokens: int = 0

    @property
    def done(self) -> int:
        return self.completed + self.failed

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @classmethod
    def of_api(cls, batch: dict[str, Any]) -> BatchView:
        counts = batch.get("request_counts") or {}
        usage = batch.get("usage") or {}
        return cls(
            id=str(batch["id"]),
            status=str(batch["status"]),
            total=int(counts.get("total") or 0),
            completed=int(counts.get("completed") or 0),
            failed=int(counts.get("failed") or 0),
            total_tokens=int(usage.get("total_tokens") or 0),
        )


class RateMeter:
    """Requests (and tokens) per second over the last `window` seconds of
    looks, and the time left at that pace."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self.samples: deque[tuple[float, int, int]] = deque()

    def add(self, view: BatchView, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.samples.append((now, view.done, view.total_tokens))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()

    def _span(self) -> tuple[float, int, int] | None:
        if len(self.samples) < 2:
            return None
        (t0, d0, k0), (t1, d1, k1) = self.samples[0], self.samples[-1]
        if t1 - t0 < 0.5:
            return None
        return t1 - t0, d1 - d0, k1 - k0

    @property
    def requests_per_second(self) -> float | None:
        span = self._span()
        return None if span is None else max(span[1], 0) / span[0]

    @property
    def tokens_per_second(self) -> float | None:
        span = self._span()
        return None if span is None else max(span[2], 0) / span[0]

    def eta(self, view: BatchView) -> float | None:
        rate = self.requests_per_second
        if view.ended or not view.total or not rate:
            return None
        return max(view.total - view.done, 0) / rate


def average_rate(batch: dict[str, Any], now: float | None = None) -> float | None:
    """Requests per second since the batch started running: what one look
    (`batches get`) can say, without a second look to compare with."""
    if not batch.get("in_progress_at"):
        return None
    started = float(batch["in_progress_at"])
    ended = batch.get("finalizing_at") or batch.get("completed_at") or batch.get("cancelling_at")
    until = float(ended) if ended else (time.time() if now is None else now)
    view = BatchView.of_api(batch)
    if until - started < 1 or not view.done:
        return None
    return view.done / (until - started)


def eta_from(view: BatchView, rate: float | None) -> float | None:
    if view.ended or not view.total or not rate:
        return None
    return max(view.total - view.done, 0) / rate


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def per_second(rate: float | None, unit: str) -> str:
    if rate is None:
        return f"- {unit}/s"
    return f"{rate:,.1f} {unit}/s" if rate < 100 else f"{rate:,.0f} {unit}/s"


def counts_line(view: BatchView) -> str:
    if not view.total:  # not counted yet, or never (a file refused whole)
        return f"{view.done:,} done, {view.failed:,} failed"
    return f"{view.done:,}/{view.total:,} done, {view.failed:,} failed"


def error_line(line: int | None, code: str | None, message: str | None) -> str:
    """One of a batch's errors: `line N: code: message`, without the line
    for an error of the whole file (`empty_file`)."""
    where = f"line {line}: " if line is not None else ""
    return f"{where}{code}: {message}"


class BatchProgress:
    """A live line for one batch: status, bar, done/total, failed,
    requests/s (and tokens/s), ETA. `update` with each new look."""

    def __init__(self, console: Console, *, tokens: bool = False, enabled: bool = True) -> None:
        self.console = console
        self.tokens = tokens
        self.live = enabled and console.is_terminal
        self.meter = RateMeter()
        self.last_status: str | None = None
        self.progress = Progress(
            TextColumn("[bold]{task.fields[status]:<11}"),
            BarColumn(),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[rates]}"),
            TextColumn("ETA {task.fields[eta]}"),
            console=console,
            transient=False,
            refresh_per_second=4,
        )
        self.task: TaskID | None = None
        self.enabled = enabled

    def __enter__(self) -> BatchProgress:
        if self.live:
            self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.live:
            self.progress.stop()

    def update(self, view: BatchView) -> None:
        self.meter.add(view)
        if not self.enabled:
            return
        if not self.live:
            if view.status != self.last_status:
                self.console.print(
                    f"{view.id}: {view.status}, {counts_line(view)}",
                    soft_wrap=True,
                    highlight=False,
                )
            self.last_status = view.status
            return
        rates = per_second(self.meter.requests_per_second, "req")
        if self.tokens:
            rates += ", " + per_second(self.meter.tokens_per_second, "tok")
        if self.task is None:
            self.task = self.progress.add_task(
                view.id, total=None, status="", counts="", rates="", eta=""
            )
        self.progress.update(
            self.task,
            total=view.total or None,
            completed=view.done,
            status=view.status,
            counts=f"{view.done:,}/{view.total:,}" if view.total else "-/-",
            rates=f"{view.failed:,} failed  {rates}",
            eta=duration(self.meter.eta(view)),
        )


class BytesProgress:
    """A bar of bytes sent or received, drawn only on a terminal."""

    def __init__(self, console: Console, label: str, total: int | None, *, enabled: bool) -> None:
        self.live = enabled and console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task(label, total=total)

    def __enter__(self) -> BytesProgress:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def advance(self, count: int) -> None:
        self.progress.advance(self.task, count)
