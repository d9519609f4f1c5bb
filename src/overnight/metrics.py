"""Prometheus metrics, served at /metrics.

One registry for the process (not the library's global one), so that
importing overnight never adds collectors to someone else's registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

concurrency_limit = Gauge(
    "overnight_model_concurrency_limit",
    "Requests the adaptive limiter currently lets in flight to a model.",
    ["model"],
    registry=REGISTRY,
)
in_flight = Gauge(
    "overnight_model_in_flight",
    "Requests in flight to a model.",
    ["model"],
    registry=REGISTRY,
)
upstream_attempts = Counter(
    "overnight_upstream_attempts",
    "Attempts sent to model servers, by outcome (ok, client_error, congested).",
    ["model", "outcome"],
    registry=REGISTRY,
)
upstream_latency = Histogram(
    "overnight_upstream_latency_seconds",
    "Seconds one attempt took.",
    ["model"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
results_written = Counter(
    "overnight_results",
    "Result lines written, by file (output, error).",
    ["kind"],
    registry=REGISTRY,
)
