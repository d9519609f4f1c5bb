"""Prefix-aware dispatch, seen from the model servers: a shuffled batch over
a few system prompts, sent through the openai SDK to four replicas of the
fake upstream, each modelling a prefix cache (an LRU of two prefixes). With
`prefix_dispatch` (the default) a prefix's lines run together and go to one
replica, so the caches hit; turned off, file order and least-outstanding
replicas mostly miss. Either way every line is answered exactly once.

Across chunks: a shuffled batch of many small chunks over 4 prompts, run a
chunk at a time, one request at a time, by one upstream that caches one
prefix. Validation writes a grouped copy and cuts one prefix a chunk, so
the upstream misses once a prefix; with `prefix_regroup` off every chunk
holds every prefix and misses each of them again.

In-process (the app and its worker in this event loop), the upstreams on
threads: the replicas' caches are the point, not a process.
"""

from __future__ import annotations

import asyncio
import itertools
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
    batch = await ended(client, batch)
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


async def ended(client: Any, batch: Any) -> Any:
    """The batch (openai SDK) once it has ended, polled every 50 ms."""
    deadline = time.monotonic() + 60
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        await asyncio.sleep(0.05)
        batch = await client.batches.retrieve(batch.id)
    return batch


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


REGROUP_LINES = 200
REGROUP_SYSTEMS = SYSTEMS[:4]


def regroup_lines() -> list[dict[str, Any]]:
    rng = random.Random(23)
    return [
        {
            "custom_id": f"r-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "fake-model",
                "messages": [
                    {"role": "system", "content": rng.choice(REGROUP_SYSTEMS)},
                    {"role": "user", "content": f"question {n}"},
                ],
            },
        }
        for n in range(REGROUP_LINES)
    ]


async def run_in_small_chunks(
    start_api: ApiFactory, **settings: Any
) -> tuple[int, list[dict[str, Any]]]:
    """The batch in chunks of 20 lines, one request at a time (and, unless
    `settings` say otherwise, one chunk at a time): the misses of an
    upstream caching one prefix, and the output."""
    with FakeUpstream(prefix_cache=1) as upstream:
        model = fake_model(upstream.url, max_concurrency=1, adaptive=False)
        api = await start_api(
            worker=True, models=[model], chunk_lines=20, **{"worker_chunks": 1, **settings}
        )
        client = api.openai()
        lines = regroup_lines()
        upload = await client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        batch = await client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        batch = await ended(client, batch)
        assert batch.status == "completed", batch
        assert batch.request_counts is not None and batch.request_counts.completed == 200
        assert batch.output_file_id is not None and batch.error_file_id is None
        output = await client.files.content(batch.output_file_id)
        stats = upstream.stats()
    assert stats["requests"] == REGROUP_LINES  # each line sent once
    results = [json.loads(line) for line in output.text.splitlines()]
    ids = [result["custom_id"] for result in results]
    assert sorted(ids) == sorted(line["custom_id"] for line in lines)
    by_id = {line["custom_id"]: line for line in lines}
    for result in results:  # joined to its own line
        question = by_id[result["custom_id"]]["body"]["messages"][1]["content"]
        assert result["response"]["body"]["choices"][0]["message"]["content"] == (
            f"echo: {question}"
        )
    return int(stats["prefix_misses"]), results


def prefix_runs(results: list[dict[str, Any]]) -> int:
    """Runs of one system prompt in the output (chunk order: each chunk's
    lines together, in the order it ran them)."""
    systems = {
        line["custom_id"]: line["body"]["messages"][0]["content"] for line in regroup_lines()
    }
    order = [systems[result["custom_id"]] for result in results]
    return 1 + sum(a != b for a, b in itertools.pairwise(order))


async def test_lines_are_grouped_across_chunks_at_validation(start_api: ApiFactory) -> None:
    misses, results = await run_in_small_chunks(start_api)
    # Each chunk holds one prompt's lines, the chunks one prompt after another.
    assert prefix_runs(results) == len(REGROUP_SYSTEMS)
    assert misses == len(REGROUP_SYSTEMS)


async def test_grouping_across_chunks_has_its_own_setting(start_api: ApiFactory) -> None:
    misses, results = await run_in_small_chunks(start_api, prefix_regroup=False)
    # Grouped within each chunk only: about 4 prompts a chunk, 10 chunks.
    assert prefix_runs(results) >= 30
    assert misses >= 30


async def test_chunks_running_at_once_do_not_take_turns_at_a_one_slot_cache(
    start_api: ApiFactory,
) -> None:
    """The worker runs several chunks at once (`worker_chunks`, 4 by
    default), each one prefix after regrouping. Strict turns at the one
    slot would alternate their prefixes and miss the one-prompt cache at
    nearly every request; turns that follow the prefix miss about once per
    chunk."""
    misses, results = await run_in_small_chunks(start_api, worker_chunks=4)
    chunks = REGROUP_LINES // 20
    assert misses <= chunks, f"{misses} misses in {REGROUP_LINES} requests"
    assert prefix_runs(results) <= chunks
