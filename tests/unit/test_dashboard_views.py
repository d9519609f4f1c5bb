"""What the dashboard computes of a batch without asking anyone: its pace
and ETA, its timeline, its bar and its throughput chart, and how sparse
its snapshots grow."""

from __future__ import annotations

import dataclasses

from overnight.domain.batch import Batch, RequestCounts
from overnight.domain.dashboard import SNAPSHOTS_PER_BATCH, Snapshot, snapshot_interval
from overnight.domain.status import BatchStatus
from overnight.types import BatchId, FileId, TenantId
from overnight.ui import charts, views

RUNNING = Batch(
    id=BatchId("batch_1"),
    tenant=TenantId("t"),
    endpoint="/v1/chat/completions",
    input_file_id=FileId("file-1"),
    completion_window="24h",
    status=BatchStatus.IN_PROGRESS,
    created_at=1000,
    expires_at=90_000,
    in_progress_at=1010,
    request_counts=RequestCounts(total=1000, completed=180, failed=20),
)


def test_the_pace_is_lines_per_second_since_the_batch_began_running() -> None:
    pace = views.pace_of(RUNNING, now=1110)
    assert pace.rate == 2.0  # 200 lines in 100 s
    assert pace.eta == 400.0  # 800 left


def test_lines_a_cancel_wrote_off_are_no_pace_and_an_ended_batch_has_no_eta() -> None:
    cancelled = dataclasses.replace(
        RUNNING,
        status=BatchStatus.CANCELLED,
        request_counts=RequestCounts(total=1000, completed=100, failed=900, stopped=800),
        finalizing_at=1110,
        cancelled_at=1111,
    )
    pace = views.pace_of(cancelled, now=5000)
    assert pace.rate == 2.0 and pace.eta is None
    assert views.pace_of(dataclasses.replace(RUNNING, in_progress_at=None), 2000).rate is None


def test_the_timeline_lists_state_changes_in_order() -> None:
    ended = dataclasses.replace(RUNNING, cancelling_at=1050, finalizing_at=1060, cancelled_at=1061)
    assert [name for name, _ in views.timeline(ended)] == [
        "created",
        "in progress",
        "cancelling",
        "finalizing",
        "cancelled",
    ]


def test_the_bar_splits_completed_failed_and_stopped() -> None:
    bar = charts.progress_bar(RequestCounts(total=200, completed=100, failed=60, stopped=40))
    assert 'class="bar-ok" x="0.00" width="50.00"' in bar
    assert 'class="bar-failed" x="50.00" width="10.00"' in bar
    assert 'class="bar-stopped" x="60.00" width="20.00"' in bar
    assert "0% done" in charts.progress_bar(RequestCounts())


def test_the_chart_draws_rates_between_snapshots() -> None:
    snaps = [Snapshot(0, 0, 0), Snapshot(10, 90, 10), Snapshot(20, 150, 10), Snapshot(30, 300, 20)]
    assert charts.rates_of(snaps) == [(10, 10.0), (20, 6.0), (30, 16.0)]
    chart = charts.throughput_chart(snaps)
    assert chart is not None and "peak 16.0 lines/s over 20 s" in chart
    assert charts.throughput_chart(snaps[:2]) is None


def test_snapshots_grow_sparser_as_a_batch_ages() -> None:
    assert snapshot_interval(10, 5) == 5
    assert snapshot_interval(SNAPSHOTS_PER_BATCH * 60, 5) == 60
