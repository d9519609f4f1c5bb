"""A request that kills its worker every time is given up, not retried for
ever: after `max_chunk_attempts` deaths its chunk's unfinished lines go to
the error file as `chunk_failed`, and the rest of the batch completes.

The worker process kills itself (SIGKILL) on the marked request through the
test-only hook `OVERNIGHT_TEST_CRASH_ON` (overnight/testing/crash.py); the
real `overnight serve` restarts it each time.
"""

from __future__ import annotations

from collections import Counter

import openai

from conftest import ServerFactory
from overnight.testing.crash import CRASH_ENV
from overnight.testing.fake_upstream import FakeUpstream

from backends import Backend
from helpers import chat_lines, fake_model, jsonl, read_jsonl, wait_for_batch

MARKER = "poison-5b2e"
CHUNK_LINES = 5


def test_a_request_that_kills_its_worker_is_given_up(
    start_server: ServerFactory, upstream: FakeUpstream, backend: Backend
) -> None:
    lines = chat_lines(4 * CHUNK_LINES)
    # Chunk 0 runs in order (one request at a time): lines 0-2 are answered
    # and written while line 3 takes a second; then line 4 kills the worker.
    lines[3]["body"]["x_fake"] = {"latency": 1.0}
    poisoned = lines[4]
    poisoned["body"]["messages"][0]["content"] += f" {MARKER}"
    server = start_server(
        [fake_model(upstream.url, max_concurrency=1)],
        env={CRASH_ENV: MARKER},
        chunk_lines=CHUNK_LINES,
        # One chunk at a time: only the poisoned chunk is running when its
        # worker dies, so only it uses up its attempts.
        worker_chunks=1,
        max_chunk_attempts=2,
        **backend.settings(),
    )
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=2) as client:
        file = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        batch = client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        batch = wait_for_batch(client, batch.id, timeout=90)
        assert batch.status == "completed", batch
        output = read_jsonl(client.files.content(batch.output_file_id).text)  # type: ignore[arg-type]
        errors = read_jsonl(client.files.content(batch.error_file_id).text)  # type: ignore[arg-type]

    assert server.process is not None and server.process.poll() is None  # serve lived on
    assert server.log().count("exited with") == 2  # the worker died twice, then gave up

    # Every line in exactly one file, once.
    seen = Counter(line["custom_id"] for line in output + errors)
    assert seen == Counter(line["custom_id"] for line in lines)

    # The poisoned chunk's unfinished lines failed as chunk_failed; what it
    # had written before its worker died is kept; the other chunks ran.
    failed = {line["custom_id"] for line in errors}
    assert poisoned["custom_id"] in failed
    assert failed <= {line["custom_id"] for line in lines[3:CHUNK_LINES]}
    for line in errors:
        assert line["error"]["code"] == "chunk_failed"
        assert "died 2 times" in line["error"]["message"]
    counts = batch.request_counts
    assert counts is not None
    assert (counts.total, counts.completed, counts.failed) == (len(lines), len(output), len(errors))
