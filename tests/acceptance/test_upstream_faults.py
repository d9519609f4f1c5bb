"""A model server that misbehaves: every line still ends in exactly one
file, the API stays quick, and the concurrency limit follows the server's
health."""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections import Counter

import httpx
import openai

from overnight.testing.fake_upstream import FakeUpstream

from helpers import chat_lines, fake_model, jsonl, read_jsonl, wait_for_batch


def limit_gauge(server_url: str) -> float:
    text = httpx.get(f"{server_url}/metrics").text
    match = re.search(r'overnight_model_concurrency_limit\{model="flaky"\} ([0-9.]+)', text)
    assert match, text
    return float(match.group(1))


class Watcher(threading.Thread):
    """Polls the API while a batch runs: response times and the limit."""

    def __init__(self, server_url: str, batch_id: str) -> None:
        super().__init__(daemon=True)
        self.url = server_url
        self.batch_id = batch_id
        self.latencies: list[float] = []
        self.limits: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client() as http:
            while not self.done.is_set():
                started = time.monotonic()
                status = http.get(f"{self.url}/v1/batches/{self.batch_id}").json()["status"]
                self.latencies.append(time.monotonic() - started)
                self.limits.append(limit_gauge(self.url))
                if status in ("completed", "failed", "cancelled", "expired"):
                    return
                time.sleep(0.05)


def run_watched(
    client: openai.OpenAI, server_url: str, lines: list[dict[str, object]]
) -> tuple[object, Watcher]:
    file = client.files.create(file=("f.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    watcher = Watcher(server_url, batch.id)
    watcher.start()
    batch = wait_for_batch(client, batch.id, timeout=120)
    watcher.done.set()
    watcher.join(10)
    return batch, watcher


def test_a_20_percent_fault_mix(start_server) -> None:  # type: ignore[no-untyped-def]
    with FakeUpstream(latency=0.02) as flaky:
        server = start_server(
            [
                fake_model(
                    flaky.url,
                    name="flaky",
                    max_concurrency=32,
                    initial_concurrency=4,
                    timeout=0.5,
                    max_attempts=4,
                    eject_after=1000,
                )
            ]
        )
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0) as client:
            # Healthy: the limit grows from where it started.
            healthy, watcher = run_watched(
                client, server.url, chat_lines(1500, model="flaky", prefix="h")
            )
            assert healthy.request_counts.completed == 1500  # type: ignore[attr-defined]
            grown = max(watcher.limits)
            assert grown >= 8, watcher.limits

            # 20% of answers go wrong: 5% each of 500s, 429s, resets and hangs.
            flaky.configure(
                latency=0.01,
                latency_jitter=0.03,
                error_rate=0.05,
                rate_limit_rate=0.05,
                retry_after=0.05,
                reset_rate=0.05,
                hang_rate=0.05,
            )
            lines = chat_lines(1000, model="flaky", prefix="f")
            batch, watcher = run_watched(client, server.url, lines)

    counts = batch.request_counts  # type: ignore[attr-defined]
    assert batch.status == "completed"  # type: ignore[attr-defined]
    assert counts.total == 1000 and counts.completed + counts.failed == 1000
    assert counts.completed >= 980  # four attempts make a lost line rare
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0) as client:
        ok = read_jsonl(client.files.content(batch.output_file_id).text)  # type: ignore[attr-defined]
        failed = (
            read_jsonl(client.files.content(batch.error_file_id).text)  # type: ignore[attr-defined]
            if batch.error_file_id  # type: ignore[attr-defined]
            else []
        )
    assert len(ok) == counts.completed and len(failed) == counts.failed
    assert Counter(r["custom_id"] for r in ok + failed) == Counter(
        line["custom_id"] for line in lines
    )
    for row in failed:
        assert (row["response"] or {}).get("status_code") in (429, 500) or row["error"]["code"] in (
            "upstream_timeout",
            "upstream_unreachable",
        )

    # The limit fell under faults, below what it had grown to.
    assert min(watcher.limits) < grown, watcher.limits
    # The API answered quickly throughout.
    assert statistics.median(watcher.latencies) < 0.2, watcher.latencies
    assert max(watcher.latencies) < 2.0, max(watcher.latencies)
