"""Prometheus metrics, served at /metrics.

One registry for the process (not the library's global one), so that
importing overnight never adds collectors to someone else's registry. When
`serve` runs worker processes it sets PROMETHEUS_MULTIPROC_DIR before this
module is imported: every process then writes its values to files there,
and the API process serves their sum (gauges: the sum over live processes).

Three kinds of series (docs/operations.md, "Metrics", lists them all):

- the runner's, counted per model in plain numbers on the dispatch path and
  published every poll interval (`runner/models.py`): a metric update per
  request would cost more than the request's own bookkeeping;
- the API's request durations, observed per request (`api/timing.py`);
- the store's state (batches by status, lines queued, chunks leased, live
  workers), read from the database when /metrics is scraped (`observe_store`),
  so that every API replica reports the same numbers without a worker's help.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from overnight.store.contracts import DashboardStore

REGISTRY = CollectorRegistry(auto_describe=True)

#: Upstream attempt latency buckets, seconds: a cached answer to a long generation.
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
#: API request duration buckets, seconds.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

concurrency_limit = Gauge(
    "overnight_model_concurrency_limit",
    "Requests the adaptive limiter currently lets in flight to a model.",
    ["model"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
in_flight = Gauge(
    "overnight_model_in_flight",
    "Requests in flight to a model.",
    ["model"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
upstream_attempts = Counter(
    "overnight_upstream_attempts",
    "Attempts sent to model servers, by outcome (ok, client_error, congested).",
    ["model", "outcome"],
    registry=REGISTRY,
)
upstream_latency = Gauge(
    "overnight_upstream_latency_seconds",
    "Mean seconds an attempt took, over the last poll interval.",
    ["model"],
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
attempt_duration = Histogram(
    "overnight_upstream_attempt_duration_seconds",
    "Seconds each attempt to a model server took, answered or not.",
    ["model"],
    buckets=ATTEMPT_BUCKETS,
    registry=REGISTRY,
)
lines_finished = Counter(
    "overnight_lines_finished",
    "Batch lines that got their final result, by model and outcome (completed, failed).",
    ["model", "outcome"],
    registry=REGISTRY,
)
tokens = Counter(
    "overnight_tokens",
    "Tokens of successful answers, by model, tenant and direction (input, output).",
    ["model", "tenant", "direction"],
    registry=REGISTRY,
)
request_duration = Histogram(
    "overnight_api_request_duration_seconds",
    "Seconds the API took to answer, by route template, method and status class.",
    ["route", "method", "status"],
    buckets=REQUEST_BUCKETS,
    registry=REGISTRY,
)
batches = Gauge(
    "overnight_batches",
    "Batches stored, by status.",
    ["status"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
lines_queued = Gauge(
    "overnight_lines_queued",
    "Lines of running batches not yet run, by the batch's model ('' when each line names its own).",
    ["model"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
chunks_leased = Gauge(
    "overnight_chunks_leased",
    "Chunks some worker is running right now.",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
workers_live = Gauge(
    "overnight_workers_live",
    "Workers whose heartbeat is fresh.",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
worker_heartbeat_age = Gauge(
    "overnight_worker_heartbeat_age_seconds",
    "Seconds since each live worker's last heartbeat.",
    ["worker"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)


def observe_many(histogram: Histogram, counts: list[int], total: float) -> None:
    """Add pre-counted observations to a histogram child: `counts[i]` fell
    in bucket i (non-cumulative, the last one +Inf) and summed to `total`.
    The runner counts attempts in plain ints and publishes them here every
    poll interval. prometheus-client has no public call for this, so it adds
    to the child's bucket and sum values, which it has kept for years
    (tests/unit/test_metrics.py scrapes the result)."""
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)
    histogram._sum.inc(total)


async def observe_store(store: DashboardStore, ttl: float) -> None:
    """Read the store's state into the gauges, once per scrape: four small
    aggregate queries."""
    now = time.time()
    batches.clear()
    for status, count in (await store.count_batches_by_status()).items():
        batches.labels(status).set(count)
    lines_queued.clear()
    for model, count in (await store.queued_by_model()).items():
        lines_queued.labels(model or "").set(count)
    chunks_leased.set(await store.chunks_leased())
    views = await store.worker_views(now, ttl)
    workers_live.set(len(views))
    worker_heartbeat_age.clear()
    for view in views:
        worker_heartbeat_age.labels(view.id).set(max(0.0, now - view.heartbeat_at))


def worker_figures() -> dict[str, dict[str, float]]:
    """Per model, what worker processes last published: `limit` and
    `in_flight` (summed over live processes), `latency` (the mean of the
    last interval) and `error_rate` (of every attempt since they started).
    Empty without worker processes: then the API process's own models are
    the ones that run."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return {}
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    figures: dict[str, dict[str, float]] = {}
    attempts: dict[str, dict[str, float]] = {}
    named = {
        "overnight_model_concurrency_limit": "limit",
        "overnight_model_in_flight": "in_flight",
        "overnight_upstream_latency_seconds": "latency",
    }
    for family in registry.collect():
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            if sample.name in named:
                figures.setdefault(model, {})[named[sample.name]] = sample.value
            elif sample.name == "overnight_upstream_attempts_total":
                by_outcome = attempts.setdefault(model, {})
                by_outcome[sample.labels["outcome"]] = sample.value
    for model, by_outcome in attempts.items():
        total = sum(by_outcome.values())
        if total:
            failed = total - by_outcome.get("ok", 0.0)
            figures.setdefault(model, {})["error_rate"] = failed / total
    return figures


def scrape() -> bytes:
    """The text exposition of every metric, from all processes."""
    from prometheus_client import generate_latest

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
