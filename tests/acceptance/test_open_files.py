"""A worker allowed fewer open files than its model has slots: every line
still runs, none fails for it.

Each request in flight holds a connection, a file descriptor. Measured on
a machine that allowed 20,000 per process: the first of three workers on a
20,000-slot model, alone for a moment with all of its slots, passed that
limit and thousands of lines failed as `upstream_unreachable` ("Too many
open files"). A worker now plans its connections within its limit, and a
connect that still finds no descriptor waits instead of failing a line.
"""

from __future__ import annotations

import openai

from conftest import ServerFactory
from overnight.testing.fake_upstream import FakeUpstream

from helpers import chat_lines, fake_model, jsonl, wait_for_batch

LINES = 3_000
#: Far more slots than the worker may open files.
SLOTS = 2_000
OPEN_FILES = 400


def test_a_worker_with_few_open_files_runs_a_wide_model_without_failing_a_line(
    start_server: ServerFactory,
) -> None:
    with FakeUpstream(latency=0.2, backlog=4096) as upstream:
        server = start_server(
            [fake_model(upstream.url, max_concurrency=SLOTS, adaptive=False, max_attempts=1)],
            chunk_lines=500,
            open_files=OPEN_FILES,
        )
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=2) as sdk:
            file = sdk.files.create(file=("wide.jsonl", jsonl(chat_lines(LINES))), purpose="batch")
            batch = sdk.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            batch = wait_for_batch(sdk, batch.id, timeout=90)
            errors = sdk.files.content(batch.error_file_id).text if batch.error_file_id else ""
        assert batch.status == "completed", server.log()[-3000:]
        assert batch.request_counts is not None
        assert (batch.request_counts.completed, batch.request_counts.failed) == (LINES, 0), errors[
            :500
        ]
        # It ran as wide as its files allowed, not one request at a time.
        assert upstream.stats()["max_in_flight"] > 100
