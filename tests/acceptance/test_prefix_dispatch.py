"""Prefix-aware dispatch, seen from the model servers: a shuffled batch over
a few system prompts, sent through the openai SDK to four replicas of the
fake upstream, each modelling a prefix cache (an LRU of two prefixes). With
`prefix_dispatch` (the default) a prefix's lines run together and go to one
replica, so the caches hit; turned off, file order and least-outstanding
replicas mostly miss. Either way every line is answered exactly once.

In-process (the app and its worker in this event loop), the upstreams on
threads: the replicas' caches are the point, not a process.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from overnight.testing.fake_upstream import FakeUpstream

from helpers import fake_model, jsonl
from inprocess import ApiFactory

LINES = 320
SYSTEMS = [f"You are assistant {n}. " + "Answer in one short sentence. " * 30 for n in range(8)]


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[FakeUpstream]]:
    upstreams = [FakeUpstream(prefix_cache=2) for _ in range(4)]
    for upstream in upstreams:
        upstream.start()
    try:
        yield upstreams
    finally:
        for upstream in upstreams:
            upstream.close()


def shuffled_lines() -> list[dict[str, Any]]:
    rng = random.Random(19)
    lines = []
    for n in range(LINES):
        system = SYSTEMS[rng.randrange(len(SYSTEMS))]
        body = {
            "model": "fake-model",
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": f"question {n}"},
            ],
        }
        lines.append(
            {"custom_id": f"q-{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        )
    return lines


async def run_batch(
    start_api: ApiFactory, replicas: list[FakeUpstream], **settings: Any
) -> tuple[float, list[dict[str, Any]]]:
    """Run the shuffled batch; the replicas' prefix hit rate, and the output."""
    for upstream in replicas:
        upstream.reset_stats()  # empties its prefix cache too
    model = fake_model(
        replicas[0].url,
        base_urls=[upstream.url for upstream in replicas[1:]],
        max_concurrency=8,
        adaptive=False,
    )
    api = await start_api(worker=True, models=[model], **settings)
    client = api.openai()
    upload = await client.files.create(file=("in.jsonl", jsonl(shuffled_lines())), purpose="batch")
    batch = await client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 60
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        await asyncio.sleep(0.05)
        batch = await client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch
    assert batch.error_file_id is None
    assert batch.output_file_id is not None
    output = await client.files.content(batch.output_file_id)
    results = [json.loads(line) for line in output.text.splitlines()]
    stats = [upstream.stats() for upstream in replicas]
    hits = sum(s["prefix_hits"] for s in stats)
    misses = sum(s["prefix_misses"] for s in stats)
    assert sum(s["requests"] for s in stats) == LINES  # each line sent once
    assert hits + misses == LINES
    return hits / LINES, results


def assert_answered_once(results: list[dict[str, Any]]) -> None:
    ids = [result["custom_id"] for result in results]
    assert len(ids) == LINES and set(ids) == {f"q-{n}" for n in range(LINES)}
    for result in results:
        n = result["custom_id"].removeprefix("q-")
        content = result["response"]["body"]["choices"][0]["message"]["content"]
        assert content == f"echo: question {n}"  # joined to its own line


async def test_grouped_dispatch_hits_the_replicas_prefix_caches(
    start_api: ApiFactory, replicas: list[FakeUpstream]
) -> None:
    hit_rate, results = await run_batch(start_api, replicas)
    assert_answered_once(results)
    # 8 prefixes, each at worst spread over the 4 replicas: at most 32 misses.
    assert hit_rate >= 0.85


async def test_the_setting_turns_it_off(
    start_api: ApiFactory, replicas: list[FakeUpstream]
) -> None:
    hit_rate, results = await run_batch(start_api, replicas, prefix_dispatch=False)
    assert_answered_once(results)
    # File order over 8 prefixes, any replica: an LRU of 2 hits about 1 in 4.
    assert hit_rate <= 0.5
