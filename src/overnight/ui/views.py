"""What a page shows of a batch beyond its record: its rate, its ETA, and
its timeline. Pure: a batch and the time in, plain values out."""

from __future__ import annotations

from dataclasses import dataclass

from overnight.domain.batch import Batch
from overnight.domain.status import BatchStatus

#: Statuses whose counts still move (the pages refresh these).
LIVE = frozenset(
    {
        BatchStatus.VALIDATING,
        BatchStatus.IN_PROGRESS,
        BatchStatus.FINALIZING,
        BatchStatus.CANCELLING,
    }
)


@dataclass(frozen=True, slots=True)
class Pace:
    #: Lines per second since the batch began running (None before).
    rate: float | None
    #: Seconds left at that rate (None when unknown or ended).
    eta: float | None


def pace_of(batch: Batch, now: float) -> Pace:
    """The mean rate since the batch began to run: one division, no query,
    so the list can show it for every row."""
    counts = batch.request_counts
    if batch.in_progress_at is None:
        return Pace(None, None)
    end = batch.finalizing_at or batch.ended_at or now
    seconds = max(1.0, end - batch.in_progress_at)
    # Lines a cancel or an expiry wrote off never ran: they are no pace.
    rate = (counts.done - counts.stopped) / seconds
    left = counts.total - counts.done
    eta = left / rate if rate > 0 and batch.status is BatchStatus.IN_PROGRESS else None
    return Pace(rate, eta)


def timeline(batch: Batch) -> list[tuple[str, int]]:
    """The batch's state changes, oldest first, from its timestamps."""
    moments = [
        ("created", batch.created_at),
        ("in progress", batch.in_progress_at),
        ("cancelling", batch.cancelling_at),
        ("finalizing", batch.finalizing_at),
        ("completed", batch.completed_at),
        ("failed", batch.failed_at),
        ("expired", batch.expired_at),
        ("cancelled", batch.cancelled_at),
    ]
    return sorted(((name, at) for name, at in moments if at is not None), key=lambda m: m[1])


def duration(seconds: float | None) -> str:
    """`1 h 05 min`, `3 min 20 s`, `12 s`; a dash for unknown."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def size(count: int) -> str:
    """Bytes, in the largest unit that keeps the number above 1."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
