"""The model server restarts in the middle of a batch: for a second and a
half nothing listens on its port. Its lines wait for it and then run;
none fails, and each is in the output once (openai SDK, in-process app and
worker, the fake upstream on a thread, stopped and started on one port).

With the patience set short, the same restart fails the lines that met
it, as every refused connect used to: the setting is the difference.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from overnight.testing.fake_upstream import FakeUpstream

from helpers import chat_lines, fake_model, free_port, jsonl
from inprocess import ApiFactory

LINES = 300
DOWN_FOR = 1.5


async def run_through_a_restart(start_api: ApiFactory, **model: Any) -> tuple[Any, list[str]]:
    """The batch's end state, and the custom_ids in its output, with the
    upstream stopped for DOWN_FOR seconds once a sixth of the lines are done."""
    upstream = FakeUpstream(port=free_port(), latency=0.01).start()
    try:
        api = await start_api(
            worker=True,
            models=[fake_model(upstream.url, max_concurrency=4, adaptive=False, **model)],
        )
        client = api.openai()
        upload = await client.files.create(
            file=("in.jsonl", jsonl(chat_lines(LINES))), purpose="batch"
        )
        batch = await client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        deadline = time.monotonic() + 60
        while (await client.batches.retrieve(batch.id)).request_counts.completed < LINES // 6:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await asyncio.to_thread(upstream.close)
        await asyncio.sleep(DOWN_FOR)
        await asyncio.to_thread(upstream.start)  # the same port again
        while (batch := await client.batches.retrieve(batch.id)).status not in (
            "completed",
            "failed",
        ):
            assert time.monotonic() < deadline, batch
            await asyncio.sleep(0.05)
        ids: list[str] = []
        if batch.output_file_id is not None:
            output = await client.files.content(batch.output_file_id)
            ids = [json.loads(line)["custom_id"] for line in output.text.splitlines()]
        return batch, ids
    finally:
        upstream.close()


async def test_lines_wait_out_a_model_server_restart(start_api: ApiFactory) -> None:
    batch, ids = await run_through_a_restart(start_api)
    assert batch.status == "completed"
    assert batch.request_counts.completed == LINES
    assert batch.request_counts.failed == 0
    assert batch.error_file_id is None
    assert sorted(ids) == sorted(f"req-{n}" for n in range(LINES))  # each once


async def test_with_no_patience_the_restart_fails_the_lines_it_meets(
    start_api: ApiFactory,
) -> None:
    batch, ids = await run_through_a_restart(start_api, outage_patience=0)
    assert batch.status == "completed"
    assert batch.request_counts.failed > 0
    assert batch.request_counts.completed + batch.request_counts.failed == LINES
    assert len(ids) == len(set(ids)) == batch.request_counts.completed
