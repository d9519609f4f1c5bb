"""/metrics after a batch ran: the series a Grafana dashboard graphs
(docs/grafana-dashboard.json) are there, under the names it queries, with
the counts the batch produced. In-process, worker in the same loop."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from overnight.testing.fake_upstream import FakeUpstream

from helpers import chat_lines, fake_model, jsonl
from inprocess import api_settings, in_process

DOCS = Path(__file__).resolve().parents[2] / "docs"


#: A model name of this test's own: the registry is the process's, and
#: other tests in it run `fake-model`.
MODEL = "metrics-model"


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name` with exactly these labels (in any order)."""
    found = sample_of(text, name, **labels)
    if found is None:
        raise AssertionError(f"{name}{labels} not in /metrics")
    return found


def sample_of(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


async def test_a_finished_batch_shows_in_every_series(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = api_settings(tmp_path, worker=True, models=[fake_model(upstream.url, name=MODEL)])
    async with in_process(settings) as api:
        client = api.http("any")
        lines = chat_lines(20, model=MODEL)
        lines += chat_lines(2, model=MODEL, prefix="bad", extra={"x_fake": {"status": 400}})
        uploaded = await client.post(
            "/v1/files", files={"file": ("in.jsonl", jsonl(lines))}, data={"purpose": "batch"}
        )
        created = await client.post(
            "/v1/batches",
            json={"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions"},
        )
        batch_id = created.json()["id"]
        for _ in range(600):
            batch = (await client.get(f"/v1/batches/{batch_id}")).json()
            if batch["status"] == "completed":
                break
            await asyncio.sleep(0.05)
        assert batch["status"] == "completed"
        usage = batch["usage"]
        # The runner publishes its counts every poll interval: wait for them.
        finished = "overnight_lines_finished_total"
        for _ in range(200):
            text = (await client.get("/metrics")).text
            if sample_of(text, finished, model=MODEL, outcome="failed") == 2:
                break
            await asyncio.sleep(0.05)

    model = MODEL
    assert value(text, finished, model=model, outcome="completed") == 20
    assert value(text, finished, model=model, outcome="failed") == 2
    attempts = "overnight_upstream_attempt_duration_seconds"
    assert value(text, f"{attempts}_count", model=model) == 22
    assert value(text, f"{attempts}_bucket", model=model, le="+Inf") == 22
    assert value(text, f"{attempts}_bucket", model=model, le="0.005") <= 22
    tokens = value(text, "overnight_tokens_total", model=model, tenant="default", direction="input")
    assert tokens == usage["input_tokens"] > 0
    assert value(text, "overnight_batches", status="completed") == 1
    assert value(text, "overnight_workers_live") == 1
    # The series kept from before the dashboard still answer.
    assert value(text, "overnight_upstream_attempts_total", model=model, outcome="ok") == 20


def test_the_grafana_dashboard_queries_only_series_that_exist() -> None:
    from overnight import metrics

    known = {m.name for m in metrics.REGISTRY.collect()}
    dashboard = (DOCS / "grafana-dashboard.json").read_text()
    used = set(re.findall(r"overnight_[a-z_]+", dashboard))
    suffixes = ("_bucket", "_count", "_sum", "_total", "_created")
    unknown = {
        name
        for name in used
        if name not in known and not any(name.removesuffix(s) in known for s in suffixes)
    }
    assert used and unknown == set()


def test_the_models_page_reads_what_worker_processes_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With worker processes (`serve`'s default), the requests run there:
    the dashboard reads the limits, requests in flight, latency and error
    rate they write to the shared metrics folder."""
    worker = (
        "from overnight import metrics\n"
        "metrics.concurrency_limit.labels('m').set(7)\n"
        "metrics.in_flight.labels('m').set(3)\n"
        "metrics.upstream_latency.labels('m').set(0.25)\n"
        "metrics.upstream_attempts.labels('m', 'ok').inc(9)\n"
        "metrics.upstream_attempts.labels('m', 'congested').inc(1)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", worker], env=env, check=True, timeout=60)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    from overnight import metrics

    assert metrics.worker_figures() == {
        "m": {"limit": 7.0, "in_flight": 3.0, "latency": 0.25, "error_rate": 0.1}
    }
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    assert metrics.worker_figures() == {}
