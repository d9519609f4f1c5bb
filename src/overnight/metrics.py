"""Prometheus metrics, served at /metrics.

One registry for the process (not the library's global one), so that
importing overnight never adds collectors to someone else's registry. When
`serve` runs worker processes it sets PROMETHEUS_MULTIPROC_DIR before this
module is imported: every process then writes its values to files there,
and the API process serves their sum (gauges: the sum over live processes).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

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


def scrape() -> bytes:
    """The text exposition of every metric, from all processes."""
    from prometheus_client import generate_latest

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
