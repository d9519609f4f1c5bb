"""A chunk's result parts (runner/parts.py): what they hold survives a
reopen, a torn last line is cut, a finished chunk's parts move to its
attempt's key, and a takeover without local staging resumes from the best
copy in the blob store. Real files, local blobs."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest

from overnight.blobs.local import LocalBlobs
from overnight.domain.batch import Usage
from overnight.domain.chunk import ZERO_TALLY, ChunkKey, Tally
from overnight.domain.dialects import ANTHROPIC, OPENAI, TOGETHER, Dialect
from overnight.domain.results import Outcome
from overnight.domain.status import StopReason
from overnight.runner.parts import ChunkParts, part_key, snapshot_key, write_parts
from overnight.types import BatchId

KEY = ChunkKey(BatchId("batch-1"), 0)


def result(custom_id: str, output_tokens: int = 0) -> bytes:
    body = {"usage": {"prompt_tokens": 1, "completion_tokens": output_tokens}}
    return orjson.dumps(
        {"custom_id": custom_id, "response": {"status_code": 200, "body": body}}
    ) + (b"\n")


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobs:
    return LocalBlobs(tmp_path / "blobs")


def parts_of(tmp_path: Path, blobs: LocalBlobs, attempt: int = 1) -> ChunkParts:
    return ChunkParts(tmp_path / "staging", blobs, KEY, attempt)


async def put(blobs: LocalBlobs, key: str, data: bytes) -> None:
    writer = blobs.writer(key)
    await writer.write(data)
    await writer.commit()


async def test_a_reopened_part_reports_what_it_holds_and_cuts_a_torn_line(
    tmp_path: Path, blobs: LocalBlobs
) -> None:
    parts = parts_of(tmp_path, blobs)
    assert await parts.open() == (set(), ZERO_TALLY)
    parts.add(result("a", 3), succeeded=True)
    parts.add(result("b", 4), succeeded=True)
    parts.add(b'{"custom_id": "c", "error": {}}\n', succeeded=False)
    await parts.flush()
    parts.close()
    output = parts.paths["output"]
    whole = output.read_bytes()
    output.write_bytes(whole + b'{"custom_id": "d", "resp')  # died mid-write

    again = parts_of(tmp_path, blobs)
    ids, tally = await again.open()
    again.close()

    assert ids == {"a", "b", "c"}
    assert tally == Tally(2, 1, Usage(input_tokens=2, output_tokens=7))
    assert output.read_bytes() == whole


async def test_a_finished_chunk_hands_its_non_empty_parts_to_the_blob_store(
    tmp_path: Path, blobs: LocalBlobs
) -> None:
    parts = parts_of(tmp_path, blobs, attempt=2)
    await parts.open()
    parts.add(result("a"), succeeded=True)

    await parts.hand_over()

    assert await blobs.exists(part_key(KEY, 2, "output"))
    assert not await blobs.exists(part_key(KEY, 2, "error"))
    assert not any(path.exists() for path in parts.paths.values())
    assert orjson.loads(blobs.path(part_key(KEY, 2, "output")).read_bytes())["custom_id"] == "a"


async def test_a_takeover_resumes_from_the_newest_finished_attempt(
    tmp_path: Path, blobs: LocalBlobs
) -> None:
    await put(blobs, part_key(KEY, 1, "output"), result("from-attempt-1"))
    await put(blobs, snapshot_key(KEY, "output"), result("from-snapshot"))

    parts = parts_of(tmp_path, blobs, attempt=3)
    ids, tally = await parts.open()
    parts.close()

    assert ids == {"from-attempt-1"} and tally.completed == 1


async def test_a_takeover_without_a_finished_attempt_resumes_from_the_snapshot(
    tmp_path: Path, blobs: LocalBlobs
) -> None:
    await put(blobs, snapshot_key(KEY, "output"), result("a"))
    await put(blobs, snapshot_key(KEY, "error"), b'{"custom_id": "b"}\n')

    parts = parts_of(tmp_path, blobs, attempt=2)
    ids, tally = await parts.open()
    parts.close()

    assert ids == {"a", "b"} and tally == Tally(1, 1, Usage(input_tokens=1))


@pytest.mark.parametrize("dialect", [OPENAI, TOGETHER, ANTHROPIC], ids=lambda d: d.name)
async def test_a_reopened_part_counts_again_what_a_stop_kept_from_running(
    tmp_path: Path, blobs: LocalBlobs, dialect: Dialect
) -> None:
    """In every dialect's shape: the lines a cancel or an expiry cut off,
    apart from those that ran and failed; and the usage of the successes
    (Anthropic's under `result.message`)."""
    message = {"type": "message", "usage": {"input_tokens": 5, "output_tokens": 2}}
    parts = parts_of(tmp_path, blobs)
    await parts.open()
    parts.add(dialect.render(Outcome("ok", 200, message)), succeeded=True)
    parts.add(dialect.render(Outcome("bad", 400, {"error": {"message": "no"}})), succeeded=False)
    for custom_id, reason in (("c", StopReason.CANCELLED), ("e", StopReason.EXPIRED)):
        parts.add(dialect.render(Outcome.stopped(custom_id, reason)), succeeded=False)
    await parts.flush()
    parts.close()

    again = parts_of(tmp_path, blobs)
    ids, tally = await again.open()
    again.close()
    assert ids == {"ok", "bad", "c", "e"}
    assert (tally.completed, tally.failed, tally.stopped) == (1, 3, 2)
    assert (tally.usage.input_tokens, tally.usage.output_tokens) == (5, 2)


async def test_a_chunk_closing_while_a_flush_writes_on_a_thread_waits_for_it(
    tmp_path: Path, blobs: LocalBlobs
) -> None:
    """A chunk whose lease is lost closes its parts on the loop while the
    Flusher may be writing them on a worker thread: the close waits for the
    write, and a later write is dropped, instead of `ValueError: I/O
    operation on closed file` stopping the worker."""
    parts = parts_of(tmp_path, blobs)
    await parts.open()
    real = parts._handles["output"]
    writing, release = threading.Event(), threading.Event()

    class SlowHandle:
        def write(self, data: bytes) -> int:
            writing.set()
            release.wait(10)
            return real.write(data)

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    parts._handles["output"] = SlowHandle()  # type: ignore[assignment]
    writer = threading.Thread(target=write_parts, args=([(parts, {"output": result("a")})],))
    writer.start()
    assert writing.wait(10)
    closer = threading.Thread(target=parts.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive(), "the close did not wait for the write in progress"
    release.set()
    writer.join(10)
    closer.join(10)
    write_parts([(parts, {"output": result("b")})])  # after the close: dropped, no error
    assert parts.paths["output"].read_bytes() == result("a")
