"""Grouping a batch's lines by prompt prefix across chunks at validation
(runner/regroup.py): the chunks are cut from a grouped copy of the input,
each holding one prefix; every line still runs once and is joined to its
own result; lines of chunks that never ran are read from the copy; the copy
is gone once the batch has ended; a validation that crashed after writing
it runs again cleanly. In-process (tests/unit/pipeline.py)."""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from overnight.domain.status import BatchStatus
from overnight.runner.wakeups import Wakeups
from overnight.service import Service
from overnight.testing.fake_upstream import FakeUpstream
from overnight.types import BatchId
from unit.pipeline import ENDPOINT, MODEL, TENANT, TTL, Pipeline, open_pipeline, pipeline_settings

PREFIXES = 3


def line(n: int, prefix: int) -> bytes:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": f"You are helper {prefix}. " * 20},
            {"role": "user", "content": f"question {n}"},
        ],
    }
    return orjson.dumps({"custom_id": f"q-{n}", "method": "POST", "url": ENDPOINT, "body": body})


def shuffled(count: int) -> tuple[list[bytes], dict[str, int]]:
    """`count` lines over `PREFIXES` system prompts in random order, and
    each line's prefix by custom_id."""
    rng = random.Random(7)
    prefixes = [rng.randrange(PREFIXES) for _ in range(count)]
    return [line(n, p) for n, p in enumerate(prefixes)], {
        f"q-{n}": p for n, p in enumerate(prefixes)
    }


def prefix_of(raw: bytes) -> str:
    return str(orjson.loads(raw)["body"]["messages"][0]["content"])


def blob_files(pipeline: Pipeline, prefix: str) -> list[Path]:
    root = pipeline.settings.data_dir / "blobs" / prefix
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def chunk_lines(pipeline: Pipeline, key: str, start: int, end: int) -> list[bytes]:
    return (await pipeline.blobs.read_bytes(key, start, end)).splitlines()


async def test_each_chunk_holds_one_prefix_and_every_line_runs_once(pipeline: Pipeline) -> None:
    lines, prefixes = shuffled(30)
    batch = await pipeline.add_batch(lines)

    assert batch.grouped_blob_key is not None
    grouped = await pipeline.blob(batch.grouped_blob_key)
    assert sorted(grouped.splitlines()) == sorted(lines)  # the input's lines, byte for byte
    chunks = await pipeline.chunks(batch.id)
    assert sum(c.requests for c in chunks) == 30
    for chunk in chunks:
        held = await chunk_lines(pipeline, batch.grouped_blob_key, chunk.start, chunk.end)
        assert len(held) == chunk.requests
        assert len({prefix_of(raw) for raw in held}) == 1

    await pipeline.run_all_chunks()
    final = await pipeline.finalize(batch.id)

    assert final.status is BatchStatus.COMPLETED
    assert final.request_counts.completed == 30
    output = await pipeline.file_lines(final.output_file_id)
    assert sorted(o["custom_id"] for o in output) == sorted(prefixes)
    for result in output:  # joined to its own line
        n = result["custom_id"].removeprefix("q-")
        assert result["response"]["body"]["choices"][0]["message"]["content"].endswith(
            f"question {n}"
        )
    # The output is in chunk order: one run of lines per prefix.
    runs = [prefixes[o["custom_id"]] for o in output]
    assert sum(a != b for a, b in itertools.pairwise(runs)) == PREFIXES - 1
    assert blob_files(pipeline, "grouped") == []  # deleted with the batch's end


@pytest.mark.parametrize(
    "case", ["one chunk", "already grouped", "one prefix", "turned off", "prefix_dispatch off"]
)
async def test_no_copy_is_written_where_it_cannot_help(
    tmp_path: Path, upstream: FakeUpstream, case: str
) -> None:
    overrides: dict[str, Any] = {}
    lines, _ = shuffled(12)
    if case == "one chunk":
        overrides["chunk_lines"] = 12
    elif case == "already grouped":
        lines.sort(key=prefix_of)
    elif case == "one prefix":
        lines = [line(n, 0) for n in range(12)]
    elif case == "turned off":
        overrides["prefix_regroup"] = False
    else:
        overrides["prefix_dispatch"] = False
    settings = pipeline_settings(tmp_path, upstream.url, **overrides)
    async for pipeline in open_pipeline(settings):
        batch = await pipeline.add_batch(lines)
        assert batch.grouped_blob_key is None
        assert blob_files(pipeline, "grouped") == []
        # The chunks are runs of the input's lines, one after another.
        chunks = await pipeline.chunks(batch.id)
        ends = [0, *(c.end for c in chunks)]
        assert [c.start for c in chunks] == ends[:-1]
        assert ends[-1] == sum(len(raw) + 1 for raw in lines)


async def test_lines_that_never_ran_are_read_from_the_grouped_copy(pipeline: Pipeline) -> None:
    lines, prefixes = shuffled(20)
    batch = await pipeline.add_batch(lines)
    await pipeline.chunk_run(await pipeline.claim()).run()  # one chunk runs, then a cancel
    await pipeline.store.request_cancel(TENANT, batch.id, int(time.time()))

    final = await pipeline.finalize(batch.id)

    assert final.status is BatchStatus.CANCELLED
    output = await pipeline.file_lines(final.output_file_id)
    errors = await pipeline.file_lines(final.error_file_id)
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    ids = [r["custom_id"] for r in output + errors]
    assert sorted(ids) == sorted(prefixes)  # every line once: answered or cancelled
    assert blob_files(pipeline, "grouped") == []


async def test_a_validation_that_crashed_after_writing_the_copy_runs_again(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines, prefixes = shuffled(20)
    with monkeypatch.context() as patched:

        async def crash(*args: object, **kwargs: object) -> None:
            raise RuntimeError("the worker dies before the chunks are stored")

        patched.setattr(pipeline.store, "start_batch", crash)
        with pytest.raises(RuntimeError):
            await pipeline.add_batch(lines)
    assert len(blob_files(pipeline, "grouped")) == 1
    batch_id = BatchId("batch-1")
    assert list(await pipeline.store.chunks_of(batch_id)) == []

    # The lease lapses; the next worker validates again, over the same copy.
    claimed = await pipeline.store.claim_validation(pipeline.worker, time.time() + TTL + 1, TTL)
    assert claimed is not None and claimed.id == batch_id
    assert await pipeline.validate(claimed) is BatchStatus.IN_PROGRESS
    assert len(blob_files(pipeline, "grouped")) == 1
    assert not list((pipeline.settings.data_dir / "staging").glob("grouped-*"))
    await pipeline.run_all_chunks()
    final = await pipeline.finalize(claimed.id)
    output = await pipeline.file_lines(final.output_file_id)
    assert sorted(o["custom_id"] for o in output) == sorted(prefixes)
    assert blob_files(pipeline, "grouped") == []


async def test_deleting_the_batch_deletes_a_copy_a_crash_left_behind(pipeline: Pipeline) -> None:
    lines, _ = shuffled(12)
    batch = await pipeline.add_batch(lines)
    assert batch.grouped_blob_key is not None
    copy = await pipeline.blob(batch.grouped_blob_key)
    await pipeline.run_all_chunks()
    await pipeline.finalize(batch.id)
    # As if the worker died between ending the batch and deleting the copy.
    writer = pipeline.blobs.writer(batch.grouped_blob_key)
    await writer.write(copy)
    await writer.commit()
    service = Service(
        store=pipeline.store,
        blobs=pipeline.blobs,
        settings=pipeline.settings,
        model_names=pipeline.models.names,
        wakeups=Wakeups(),
    )

    await service.delete_batch(TENANT, batch.id)

    assert blob_files(pipeline, "grouped") == []


def hostile(raw: bytes, n: int) -> bytes:
    """Line `n` with something hostile that validation accepts: an integer
    past 64 bits and 123-deep nesting in its system message (the prompt
    prefix validation renders to group by), or escaped and raw multi-byte
    text in its question."""
    fragment = [
        b"123456789012345678901234567890",
        b"[" * 123 + b"]" * 123,
        '"\\ud83d\\ude00 \u00e9\u6f22 \U0001f600"'.encode(),
    ][n % 3]
    if n % 3 == 2:
        return raw.replace(f'"question {n}"'.encode(), f'"question {n} '.encode() + fragment[1:])
    return raw.replace(b'"role":"system",', b'"role":"system","x":' + fragment + b",", 1)


async def test_hostile_lines_in_a_grouped_batch_each_end_in_one_result(pipeline: Pipeline) -> None:
    lines, prefixes = shuffled(30)
    lines = [hostile(raw, n) if n % 4 == 0 else raw for n, raw in enumerate(lines)]
    lines[0] = b"\xef\xbb\xbf" + lines[0]  # a byte-order mark on line 1
    batch = await pipeline.add_batch(lines)

    assert batch.grouped_blob_key is not None
    grouped = await pipeline.blob(batch.grouped_blob_key)
    # The input's lines byte for byte, less the byte-order mark.
    assert sorted(grouped.splitlines()) == sorted([lines[0][3:], *lines[1:]])
    await pipeline.run_all_chunks()
    final = await pipeline.finalize(batch.id)

    assert final.status is BatchStatus.COMPLETED
    output = await pipeline.file_lines(final.output_file_id)
    errors = await pipeline.file_lines(final.error_file_id)
    assert sorted(r["custom_id"] for r in [*output, *errors]) == sorted(prefixes)
