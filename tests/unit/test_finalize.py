"""Finalising a batch (runner/finalize.py): the result files are the done
chunks' parts in chunk order, the lines of skipped chunks are written as
never-ran with the stop's code and message, read by the same chunk reader
as execution, and the parts are cleaned up. In-process
(tests/unit/pipeline.py)."""

from __future__ import annotations

import time

import pytest

from overnight.domain.status import BatchStatus, StopReason
from unit.pipeline import TENANT, Pipeline, request_line


async def test_done_chunks_parts_become_the_result_files(pipeline: Pipeline) -> None:
    lines = [request_line(f"r-{i}") for i in range(6)]
    lines[4] = request_line("r-4", status=500)
    batch = await pipeline.add_batch(lines)
    await pipeline.run_all_chunks()

    final = await pipeline.finalize(batch.id)

    assert final.status is BatchStatus.COMPLETED
    counts = final.request_counts
    assert (counts.total, counts.completed, counts.failed) == (6, 5, 1)
    output = await pipeline.file_lines(final.output_file_id)
    # Chunk order (lines 1-4, then 5-6); within a chunk, the order they ran.
    assert {o["custom_id"] for o in output[:4]} == {"r-0", "r-1", "r-2", "r-3"}
    assert [o["custom_id"] for o in output[4:]] == ["r-5"]
    (error,) = await pipeline.file_lines(final.error_file_id)
    assert error["custom_id"] == "r-4" and error["response"]["status_code"] == 500
    blob_root = pipeline.settings.data_dir / "blobs"
    assert [p for p in (blob_root / "parts").rglob("*") if p.is_file()] == []
    assert not (pipeline.settings.data_dir / "staging" / batch.id).exists()


@pytest.mark.parametrize("reason", list(StopReason))
async def test_a_skipped_chunks_lines_are_written_as_never_ran(
    pipeline: Pipeline, reason: StopReason
) -> None:
    lines = [request_line(f"r-{i}") for i in range(6)]
    batch = await pipeline.add_batch(lines)
    await pipeline.chunk_run(await pipeline.claim()).run()  # the first chunk runs
    if reason is StopReason.CANCELLED:  # ...then the rest is skipped
        await pipeline.store.request_cancel(TENANT, batch.id, int(time.time()))
    else:
        await pipeline.store.expire_due(batch.expires_at)

    final = await pipeline.finalize(batch.id)

    assert final.status is reason.final_status
    assert len(await pipeline.file_lines(final.output_file_id)) == 4
    errors = await pipeline.file_lines(final.error_file_id)
    assert [e["custom_id"] for e in errors] == ["r-4", "r-5"]
    assert {(e["error"]["code"], e["error"]["message"]) for e in errors} == {
        (reason.error_code, reason.never_ran_message)
    }
    counts = final.request_counts
    assert (counts.completed, counts.failed) == (4, 2)


async def test_a_skipped_line_that_no_longer_reads_fails_under_its_line_number(
    pipeline: Pipeline,
) -> None:
    batch = await pipeline.add_batch([request_line(f"r-{i}") for i in range(6)])
    path = pipeline.settings.data_dir / "blobs" / "files" / batch.input_file_id
    data = path.read_bytes()
    path.write_bytes(data[:-2] + b"]\n")  # line 6 breaks, same length
    await pipeline.store.request_cancel(TENANT, batch.id, int(time.time()))

    final = await pipeline.finalize(batch.id)

    errors = await pipeline.file_lines(final.error_file_id)
    assert [e["custom_id"] for e in errors] == ["r-0", "r-1", "r-2", "r-3", "r-4", "line-6"]
    assert errors[-1]["error"] == {
        "code": "invalid_json_line",
        "message": "Line 6 is not valid JSON (invalid JSON).",
    }
