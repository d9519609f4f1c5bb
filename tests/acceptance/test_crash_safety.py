"""`kill -9` at random moments: nothing lost, nothing reported twice.

A batch of 10,000 lines runs against the fake upstream while the server is
killed with SIGKILL at 12 random moments and restarted on the same data
directory each time. Every request carries its custom_id as a tag, so the
fake upstream counts how often each line was sent.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import openai
import pytest

from overnight.testing.fake_upstream import FakeUpstream

from helpers import ServerProcess, chat_lines, fake_model, jsonl, read_jsonl, write_config

pytestmark = pytest.mark.slow

LINES = 10_000
KILLS = 12
CHUNK_LINES = 500
WORKER_CHUNKS = 4
FLUSH_LINES = 50
CONCURRENCY = 16


def test_kill_9_at_random_moments_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    rng = random.Random(20261125)
    lines = chat_lines(LINES)
    for line in lines:
        line["body"]["x_fake"] = {"tag": line["custom_id"]}

    # At most 800 requests/s (16 in flight, 20 ms each): the batch needs
    # 12.5 s of running, so the 12 kills land before it ends however fast
    # restarts get (as fast as the machine allowed, it once ended after 9).
    # Half the lines at twice the latency of an earlier version: the same
    # running time and the same 16 requests in flight at each kill, for half
    # the CPU.
    with FakeUpstream(latency=0.02) as upstream:
        config = write_config(
            tmp_path / "config.toml",
            [fake_model(upstream.url, max_concurrency=CONCURRENCY, adaptive=False)],
            chunk_lines=CHUNK_LINES,
            worker_chunks=WORKER_CHUNKS,
            flush_lines=FLUSH_LINES,
            # Every kill counts as a crash of the chunks it catches running;
            # these kills are the test's, not a poisoned request's.
            max_chunk_attempts=KILLS + 1,
            # The worker in the server's process, so the SIGKILL lands on it
            # directly (with a worker process, the kernel sends it the same
            # SIGKILL when its parent dies: tests/acceptance/
            # test_webhooks_crash.py and test_embedded_model.py kill that
            # way). 1.6 CPU-seconds less for each of the 13 starts.
            worker_processes=0,
        )
        data = tmp_path / "data"
        server = ServerProcess(data, config=config).start()
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=2)
        file = client.files.create(file=("big.jsonl", jsonl(lines)), purpose="batch")
        batch_id = client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id

        kills = 0
        progress: list[int] = []
        while kills < KILLS:
            time.sleep(rng.uniform(0.2, 0.8))
            batch = client.batches.retrieve(batch_id)
            if batch.status in ("completed", "failed"):
                break
            progress.append(batch.request_counts.completed)  # type: ignore[union-attr]
            server.kill()
            kills += 1
            server = ServerProcess(data, config=config)
            server.port = int(client.base_url.port or 0)
            server.start()

        deadline = time.monotonic() + 180
        batch = client.batches.retrieve(batch_id)
        while batch.status not in ("completed", "failed"):
            assert time.monotonic() < deadline, batch
            time.sleep(0.2)
            batch = client.batches.retrieve(batch_id)
        sends = upstream.stats()["by_tag"]
        output = read_jsonl(client.files.content(batch.output_file_id).text)
        errors = (
            read_jsonl(client.files.content(batch.error_file_id).text)
            if batch.error_file_id
            else []
        )
        client.close()
        server.stop()

    assert kills >= 10, f"the batch finished after {kills} kills; progress {progress}"
    assert batch.status == "completed"
    # Exactly once: every input line is in exactly one file, once.
    seen = Counter(row["custom_id"] for row in output + errors)
    assert len(seen) == LINES and set(seen.values()) == {1}
    assert errors == []
    # Counters equal the files.
    assert batch.request_counts.model_dump() == {"total": LINES, "completed": LINES, "failed": 0}  # type: ignore[union-attr]
    assert batch.usage.input_tokens == 3 * LINES  # type: ignore[union-attr]
    # Every line was sent; the ones sent again are bounded per crash.
    assert set(sends) == {line["custom_id"] for line in lines}
    resent = sum(sends.values()) - LINES
    bound = 2 * FLUSH_LINES + CONCURRENCY  # unwritten results + requests in flight
    print(
        f"{kills} kills, {resent} requests sent again (bound {bound} per kill), progress {progress}"
    )
    assert bound <= CHUNK_LINES  # the bound is under one chunk per worker per crash
    assert resent <= kills * bound
