"""Running one chunk (runner/executor.py): every line ends in exactly one
part, counted once; a stop, a resume, a given-up chunk and a lost lease
each end the run as documented. In-process (tests/unit/pipeline.py)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import orjson
import pytest

from overnight.domain.status import StopReason
from overnight.runner.executor import LeaseLost
from overnight.runner.parts import part_key
from overnight.testing.fake_upstream import FakeUpstream
from overnight.types import WorkerId
from unit.pipeline import Pipeline, jsonl, open_pipeline, pipeline_settings, request_line


async def test_a_chunk_sends_its_lines_and_counts_their_results(pipeline: Pipeline) -> None:
    lines = [request_line(f"r-{i}", f"hello {i}") for i in range(3)]
    lines.append(request_line("r-bad", status=400))
    batch = await pipeline.add_batch(lines)
    work = await pipeline.claim()

    outcome = await pipeline.chunk_run(work).run()

    assert outcome.finalizing  # the batch's only chunk
    (chunk,) = await pipeline.chunks(batch.id)
    assert (chunk.tally.completed, chunk.tally.failed) == (3, 1)
    assert chunk.tally.usage.output_tokens > 0
    output = jsonl(await pipeline.blob(part_key(chunk.key, chunk.attempts, "output")))
    answers = {o["custom_id"]: o["response"]["body"] for o in output}
    assert answers.keys() == {"r-0", "r-1", "r-2"}
    assert answers["r-1"]["choices"][0]["message"]["content"] == "echo: hello 1"
    (error,) = jsonl(await pipeline.blob(part_key(chunk.key, chunk.attempts, "error")))
    assert error["custom_id"] == "r-bad" and error["response"]["status_code"] == 400
    stored = await pipeline.batch(batch.id)
    assert (stored.request_counts.completed, stored.request_counts.failed) == (3, 1)


async def test_a_stopped_chunk_writes_its_unrun_lines_as_never_ran(
    pipeline: Pipeline, upstream: FakeUpstream
) -> None:
    batch = await pipeline.add_batch([request_line(f"r-{i}") for i in range(4)])
    run = pipeline.chunk_run(await pipeline.claim())
    upstream.reset_stats()

    run.stop(StopReason.EXPIRED)
    await run.run()

    assert upstream.stats()["requests"] == 0
    (chunk,) = await pipeline.chunks(batch.id)
    errors = jsonl(await pipeline.blob(part_key(chunk.key, chunk.attempts, "error")))
    assert sorted(e["custom_id"] for e in errors) == ["r-0", "r-1", "r-2", "r-3"]
    assert {(e["error"]["code"], e["error"]["message"]) for e in errors} == {
        ("batch_expired", "The batch expired before this request ran.")
    }
    assert (chunk.tally.completed, chunk.tally.failed) == (0, 4)


async def test_a_resumed_chunk_sends_only_what_its_parts_lack(
    pipeline: Pipeline, upstream: FakeUpstream
) -> None:
    batch = await pipeline.add_batch([request_line(f"r-{i}") for i in range(4)])
    work = await pipeline.claim()
    # An earlier attempt wrote two results before its worker died.
    staging = pipeline.settings.data_dir / "staging" / batch.id
    staging.mkdir(parents=True)
    done = b"".join(
        b'{"custom_id": "%s", "response": {"status_code": 200, "body": {}}}\n' % custom_id
        for custom_id in (b"r-0", b"r-2")
    )
    (staging / "000000.output.jsonl").write_bytes(done + b'{"custom_id": "r-3", "resp')
    upstream.reset_stats()

    await pipeline.chunk_run(work).run()

    assert upstream.stats()["requests"] == 2
    (chunk,) = await pipeline.chunks(batch.id)
    output = jsonl(await pipeline.blob(part_key(chunk.key, chunk.attempts, "output")))
    assert sorted(o["custom_id"] for o in output) == ["r-0", "r-1", "r-2", "r-3"]
    assert chunk.tally.completed == 4


async def test_a_chunk_that_keeps_killing_its_worker_is_failed_unsent(
    pipeline: Pipeline, upstream: FakeUpstream
) -> None:
    batch = await pipeline.add_batch([request_line(f"r-{i}") for i in range(3)])
    work = await pipeline.claim()
    crashes = pipeline.settings.max_chunk_attempts
    work = dataclasses.replace(work, chunk=dataclasses.replace(work.chunk, crashes=crashes))
    upstream.reset_stats()

    await pipeline.chunk_run(work).run()

    assert upstream.stats()["requests"] == 0
    (chunk,) = await pipeline.chunks(batch.id)
    errors = jsonl(await pipeline.blob(part_key(chunk.key, chunk.attempts, "error")))
    assert sorted(e["custom_id"] for e in errors) == ["r-0", "r-1", "r-2"]
    assert {e["error"]["code"] for e in errors} == {"chunk_failed"}


async def test_a_line_that_no_longer_reads_fails_under_its_line_number(
    pipeline: Pipeline,
) -> None:
    lines = [request_line(f"r-{i}") for i in range(6)]  # chunks of 4 lines: 1-4, 5-6
    batch = await pipeline.add_batch(lines)
    # The stored input changes under the batch: line 6 breaks, same length.
    key = f"files/{batch.input_file_id}"
    data = await pipeline.blob(key)
    path = pipeline.settings.data_dir / "blobs" / key
    assert path.read_bytes() == data
    path.write_bytes(data[:-2] + b"]\n")

    await pipeline.run_all_chunks()

    last = (await pipeline.chunks(batch.id))[1]
    output = jsonl(await pipeline.blob(part_key(last.key, last.attempts, "output")))
    assert [o["custom_id"] for o in output] == ["r-4"]
    (error,) = jsonl(await pipeline.blob(part_key(last.key, last.attempts, "error")))
    assert error["custom_id"] == "line-6"
    assert error["error"] == {
        "code": "invalid_json_line",
        "message": "Line 6 is not valid JSON (invalid JSON).",
    }


async def test_a_run_whose_chunk_was_taken_over_stops(pipeline: Pipeline) -> None:
    await pipeline.add_batch([request_line(f"r-{i}") for i in range(4)])
    # This worker's lease lapsed long ago; another worker took the chunk.
    stale = await pipeline.claim(now=time.time() - 1000)
    await pipeline.claim(WorkerId("w-other"))
    run = pipeline.chunk_run(stale)

    with pytest.raises(LeaseLost):
        await run.run()
    assert pipeline.flusher.runs == {}


async def test_every_line_validation_accepted_is_sent_whatever_the_configuration(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Validation under this deployment's rules (custom_ids up to 1,024
    characters) and the run's re-reading must agree: a long id, an integer
    past 64 bits and brackets in a string are sent, not refused on re-read."""
    settings = pipeline_settings(tmp_path, upstream.url, max_custom_id_length=1024)
    long_id = "x" * 1000
    odd = orjson.loads(request_line("odd"))
    raw_odd = orjson.dumps(odd)[:-2] + b', "n": 123456789012345678901234567890, "s": "[[[["}}'
    async for pipeline in open_pipeline(settings):
        batch = await pipeline.add_batch([request_line(long_id), raw_odd])
        await pipeline.run_all_chunks()
        (chunk,) = await pipeline.chunks(batch.id)
        assert (chunk.tally.completed, chunk.tally.failed) == (2, 0)
        output = jsonl(await pipeline.blob(part_key(chunk.key, chunk.attempts, "output")))
        assert {o["custom_id"] for o in output} == {long_id, "odd"}
