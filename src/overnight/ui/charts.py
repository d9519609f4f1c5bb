"""Inline SVG, drawn on the server: no chart library, nothing to fetch.

Every number written into the markup is formatted from a float, and every
label is escaped, so the markup is safe to insert as is."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from markupsafe import Markup, escape

from overnight.domain.batch import RequestCounts
from overnight.domain.dashboard import Snapshot


def progress_bar(counts: RequestCounts) -> Markup:
    """A bar out of the batch's total: completed (green), failed (red),
    then stopped by a cancel or an expiry (grey)."""
    total = counts.total
    shares = [
        100.0 * part / total if total > 0 else 0.0
        for part in (counts.completed, counts.failed - counts.stopped, counts.stopped)
    ]
    rects, x = [], 0.0
    for kind, share in zip(("ok", "failed", "stopped"), shares, strict=True):
        rects.append(f'<rect class="bar-{kind}" x="{x:.2f}" width="{share:.2f}" height="8"/>')
        x += share
    return Markup(
        '<svg class="bar" viewBox="0 0 100 8" preserveAspectRatio="none" role="img" '
        f'aria-label="{x:.0f}% done"><rect class="bar-bg" width="100" height="8"/>'
        f"{''.join(rects)}</svg>"
    )


def rates_of(snapshots: Sequence[Snapshot]) -> list[tuple[int, float]]:
    """Lines per second between consecutive snapshots, at the later one's time."""
    rates = []
    for before, after in pairwise(snapshots):
        seconds = after.at - before.at
        if seconds > 0:
            rates.append((after.at, max(0.0, (after.done - before.done) / seconds)))
    return rates


def throughput_chart(
    snapshots: Sequence[Snapshot], *, width: int = 640, height: int = 160
) -> Markup | None:
    """Lines per second over the batch's run, or None with fewer than two
    rates to draw."""
    rates = rates_of(snapshots)
    if len(rates) < 2:
        return None
    start, end = rates[0][0], rates[-1][0]
    span = max(1, end - start)
    peak = max(rate for _, rate in rates) or 1.0
    pad = 4.0
    inner_w, inner_h = width - 2 * pad, height - 2 * pad - 14

    def x(at: int) -> float:
        return pad + inner_w * (at - start) / span

    def y(rate: float) -> float:
        return pad + inner_h * (1 - rate / peak)

    line = " ".join(f"{x(at):.1f},{y(rate):.1f}" for at, rate in rates)
    area = f"{x(start):.1f},{y(0):.1f} {line} {x(end):.1f},{y(0):.1f}"
    label = escape(f"peak {peak:,.1f} lines/s over {_span(span)}")
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{label}">'
        f'<polygon class="chart-area" points="{area}"/>'
        f'<polyline class="chart-line" points="{line}"/>'
        f'<text class="chart-label" x="{pad}" y="{height - 3}">{label}</text>'
        "</svg>"
    )


def _span(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"
