"""Many batches and tenants on one model: small batches are not stuck behind
big ones, and tenants with equal load get equal throughput."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from overnight.testing.fake_upstream import FakeUpstream

from backends import Backend
from helpers import chat_lines, fake_model, jsonl, wait_for_batch


@pytest.fixture(scope="module")
def backend() -> Backend:
    """SQLite only: the order in which chunks are claimed (fair share,
    urgency) is the store's, and the store contract suite checks it on
    SQLite and PostgreSQL alike (tests/store/test_contract_chunks.py). Its
    "postgres+s3" run here had been on SQLite all along."""
    return Backend("sqlite")


# The servers here run their worker in their own process
# (`worker_processes = 0`): the scheduling is the point, not the process
# split, and each start costs about 1.6 CPU-seconds less.


def create(client: openai.OpenAI, lines: list[dict[str, object]]) -> str:
    file = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    return client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    ).id


def test_a_small_batch_finishes_within_seconds_behind_a_100k_batch(
    start_server,
    upstream: FakeUpstream,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    # 1,600 requests/s at most: the big batch runs for a minute, and the
    # machine is not spent on dispatching it.
    upstream.configure(latency=0.02)
    server = start_server(
        [fake_model(upstream.url, max_concurrency=32, adaptive=False)], worker_processes=0
    )
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0) as client:
        big = create(client, chat_lines(100_000, prefix="big"))
        deadline = time.monotonic() + 60
        while client.batches.retrieve(big).request_counts.completed < 1000:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.1)

        started = time.monotonic()
        small = wait_for_batch(client, create(client, chat_lines(100, prefix="small")), timeout=60)
        took = time.monotonic() - started

        big_batch = client.batches.retrieve(big)
        assert small.status == "completed" and small.request_counts.completed == 100
        assert big_batch.status == "in_progress", "the small batch waited for the big one"
        assert big_batch.request_counts.completed < 100_000  # type: ignore[union-attr]
        print(f"the small batch took {took:.1f} s behind the big one")
        assert took < 10, f"the small batch took {took:.1f} s"
        client.batches.cancel(big)
        assert wait_for_batch(client, big, timeout=60).status == "cancelled"


def test_two_tenants_with_equal_load_get_equal_throughput(
    start_server,
    upstream: FakeUpstream,  # type: ignore[no-untyped-def]
) -> None:
    upstream.configure(latency=0.01)
    server = start_server(
        [fake_model(upstream.url, max_concurrency=8, adaptive=False)],
        chunk_lines=100,
        worker_processes=0,
        env={
            "OVERNIGHT_TENANTS": '[{"name": "alpha", "api_keys": ["key-a"]},'
            ' {"name": "beta", "api_keys": ["key-b"]}]'
        },
    )
    alpha = openai.OpenAI(base_url=f"{server.url}/v1", api_key="key-a", max_retries=0)
    beta = openai.OpenAI(base_url=f"{server.url}/v1", api_key="key-b", max_retries=0)
    with alpha, beta:
        # Alpha's batch starts first and would take every worker slot if it could.
        first = create(alpha, chat_lines(6000, prefix="a"))
        second = create(beta, chat_lines(6000, prefix="b"))
        samples: list[tuple[int, int]] = []
        deadline = time.monotonic() + 60
        while len(samples) < 24 and time.monotonic() < deadline:
            a, b = alpha.batches.retrieve(first), beta.batches.retrieve(second)
            if a.status == "in_progress" and b.status == "in_progress":
                samples.append((a.request_counts.completed, b.request_counts.completed))  # type: ignore[union-attr]
            time.sleep(0.25)
        # Each tenant sees only its own batch.
        assert [x.id for x in alpha.batches.list()] == [first]
        assert [x.id for x in beta.batches.list()] == [second]
        for client, batch_id in ((alpha, first), (beta, second)):
            client.batches.cancel(batch_id)
            assert wait_for_batch(client, batch_id, timeout=60).status == "cancelled"

    # Over the last two thirds of the stretch where both ran (once the first
    # arrival's head start is spent), compare what each tenant got done.
    both = [(a, b) for a, b in samples if a > 0 and b > 0]
    assert len(both) >= 8, samples
    (a0, b0), (a1, b1) = both[len(both) // 3], both[-1]
    rate_a, rate_b = a1 - a0, b1 - b0
    assert rate_a > 0 and rate_b > 0
    print(f"alpha {rate_a}, beta {rate_b}: {samples}")
    assert 0.8 <= rate_a / rate_b <= 1.25, f"alpha {rate_a}, beta {rate_b} ({samples})"
