"""Results so far and retries, the pure and file-level parts: the `after`
cursor (domain/result_cursor.py) hands out every line of a batch once
however its chunks interleave and whether it ends between two reads;
`select_lines` cuts exact line ranges from a stream; error lines read as
the right outcome in every dialect; the disk-backed id set answers like a
set. The HTTP side is tests/acceptance/test_results_and_retry.py."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from overnight.blobs.local import LocalBlobs
from overnight.domain.chunk import Chunk, ChunkStatus, Tally
from overnight.domain.dialects import ANTHROPIC, OPENAI, TOGETHER
from overnight.domain.result_cursor import (
    MAX_LISTED,
    BadCursor,
    ResultCursor,
    ResultKind,
    Take,
    ended_cursor,
    plan_ended,
    plan_running,
)
from overnight.domain.results import Outcome
from overnight.domain.retries import RetryOutcome, outcome_of
from overnight.domain.status import StopReason
from overnight.runner.id_set import SpilledIdSet
from overnight.runner.parts import part_key, snapshot_key
from overnight.runner.results_so_far import ShortSource, running_lines, select_lines
from overnight.types import BatchId

BATCH = BatchId("batch_abc")


def chunk(
    index: int, status: ChunkStatus, completed: int, failed: int = 0, requests: int = 10
) -> Chunk:
    return Chunk(
        BATCH, index, 0, 0, 0, requests, status, attempts=1, tally=Tally(completed, failed)
    )


async def pieces_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def selected(data: bytes, runs: list[tuple[int, int]], size: int = 7) -> bytes:
    return b"".join([lines async for lines in select_lines(pieces_of(data, size), runs)])


LINES = b"".join(b'{"n": %d}\n' % n for n in range(50))


def lines(first: int, last: int) -> bytes:
    return b"".join(b'{"n": %d}\n' % n for n in range(first, last))


@pytest.mark.parametrize("size", [1, 3, 9, 64, 10_000])
async def test_select_lines_cuts_exact_ranges_whatever_the_piece_size(size: int) -> None:
    assert await selected(LINES, [(0, 50)], size) == LINES
    assert await selected(LINES, [(5, 3)], size) == lines(5, 8)
    assert await selected(LINES, [(0, 2), (10, 0), (3, 4)], size) == lines(0, 2) + lines(15, 19)
    assert await selected(LINES, [(50, 0)], size) == b""
    with pytest.raises(ShortSource):
        await selected(LINES, [(45, 10)], size)


def test_a_cursor_round_trips_and_belongs_to_one_batch_and_kind() -> None:
    cursor = ResultCursor(7, {9: 3, 12: 40, 300: 1})
    text = cursor.encode(BATCH, ResultKind.OUTPUT)
    assert ResultCursor.decode(text, BATCH, ResultKind.OUTPUT) == cursor
    for batch, kind in ((BATCH, ResultKind.ERRORS), ("batch_other", ResultKind.OUTPUT)):
        with pytest.raises(BadCursor):
            ResultCursor.decode(text, batch, kind)
    for junk in ("", "!!", "AAAA", text[:-2], text + "AA"):
        with pytest.raises(BadCursor):
            ResultCursor.decode(junk, BATCH, ResultKind.OUTPUT)


def test_the_frontier_moves_over_done_chunks_only() -> None:
    chunks = [
        chunk(0, ChunkStatus.DONE, 10),
        chunk(1, ChunkStatus.RUNNING, 4),
        chunk(2, ChunkStatus.DONE, 10),
        chunk(3, ChunkStatus.PENDING, 0),
    ]
    takes, after = plan_running(chunks, ResultCursor(), ResultKind.OUTPUT)
    assert [(t.chunk.index, t.skip, t.upto) for t in takes] == [(0, 0, 10), (1, 0, 4), (2, 0, 10)]
    assert after == ResultCursor(1, {1: 4, 2: 10})
    chunks[1] = chunk(1, ChunkStatus.DONE, 10)
    takes, after = plan_running(chunks, after, ResultKind.OUTPUT)
    assert [(t.chunk.index, t.skip, t.upto) for t in takes] == [(1, 4, 10)]
    assert after == ResultCursor(3, {})


def test_a_cursor_lists_a_bounded_number_of_chunks() -> None:
    chunks = [chunk(0, ChunkStatus.RUNNING, 1)]
    chunks += [chunk(i, ChunkStatus.DONE, 2) for i in range(1, MAX_LISTED + 50)]
    takes, after = plan_running(chunks, ResultCursor(), ResultKind.OUTPUT)
    assert len(after.read) == MAX_LISTED
    assert len(takes) == MAX_LISTED
    assert len(after.encode(BATCH, ResultKind.OUTPUT)) < 4096


def simulate(seed: int, kind: ResultKind) -> tuple[list[int], list[int]]:
    """A batch of random chunks running in random order, read with a cursor
    at random moments, then ended (some chunks skipped): the lines read,
    as (chunk, line) numbers, and the final file's lines."""
    rng = random.Random(seed)
    count = 12
    sizes = [(rng.randint(0, 6), rng.randint(0, 3)) for _ in range(count)]  # (completed, failed)
    progress = [(0, 0)] * count
    statuses = [ChunkStatus.PENDING] * count
    got: list[int] = []
    cursor = ResultCursor()

    def rows(ended: bool) -> list[Chunk]:
        return [chunk(i, statuses[i], *progress[i], requests=sum(sizes[i])) for i in range(count)]

    def line_id(index: int, line: int) -> int:
        return index * 100 + line

    stop_at = rng.randint(count // 2, 3 * count)
    for step in range(stop_at):
        i = rng.randrange(count)
        if statuses[i] in (ChunkStatus.PENDING, ChunkStatus.RUNNING):
            statuses[i] = ChunkStatus.RUNNING
            done, failed = progress[i]
            progress[i] = (min(done + rng.randint(0, 3), sizes[i][0]), failed)
            progress[i] = (progress[i][0], min(failed + rng.randint(0, 2), sizes[i][1]))
            if progress[i] == sizes[i] and rng.random() < 0.5:
                statuses[i] = ChunkStatus.DONE
        if step % 3 == 0:
            takes, cursor = plan_running(rows(False), cursor, kind)
            for take in takes:
                got += [line_id(take.chunk.index, n) for n in range(take.skip, take.upto)]
    # The batch stops: running chunks finish (cut off), pending ones are skipped.
    final: list[int] = []
    for i in range(count):
        if statuses[i] is ChunkStatus.PENDING:
            statuses[i] = ChunkStatus.SKIPPED
        else:
            statuses[i] = ChunkStatus.DONE
            # the cut-off lines of a running chunk join its error part
            progress[i] = (progress[i][0], progress[i][1] + (sum(sizes[i]) - sum(progress[i])))
    ended = rows(True)
    for row in ended:
        n = row.tally.completed if kind is ResultKind.OUTPUT else row.tally.failed
        if kind is ResultKind.ERRORS and row.status is ChunkStatus.SKIPPED:
            n = row.requests
        final += [line_id(row.index, line) for line in range(n)]
    position = 0
    for skip, keep in plan_ended(ended, cursor, kind):
        got += final[position + skip : position + skip + keep]
        position += skip + keep
    assert position == len(final)
    whole = plan_ended(ended, ResultCursor(), kind)
    assert plan_ended(ended, ended_cursor(ended), kind) == [(keep, 0) for _, keep in whole]
    return got, final


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("kind", list(ResultKind))
def test_tailing_to_the_end_reads_every_final_line_once(seed: int, kind: ResultKind) -> None:
    got, final = simulate(seed, kind)
    assert sorted(got) == sorted(final)
    assert len(set(got)) == len(got)


def test_error_lines_read_as_their_outcome_in_every_dialect() -> None:
    outcomes = {
        RetryOutcome.FAILED: [
            Outcome("a", status_code=500, body={"error": {"message": "boom"}}),
            Outcome.never_ran("a", "model_not_found", "gone"),
            Outcome.never_ran("a", "upstream_timeout", "slow"),
        ],
        RetryOutcome.EXPIRED: [Outcome.stopped("a", StopReason.EXPIRED)],
        RetryOutcome.CANCELLED: [Outcome.stopped("a", StopReason.CANCELLED)],
    }
    for dialect in (OPENAI, TOGETHER, ANTHROPIC):
        for expected, cases in outcomes.items():
            for case in cases:
                line = orjson.loads(dialect.render(case))
                assert outcome_of(line) is expected, (dialect.name, line)


def test_the_spilled_id_set_answers_like_a_set(tmp_path: Path) -> None:
    members = [f"id-{n}" for n in range(0, 300_000, 3)]
    with SpilledIdSet(tmp_path / "ids") as ids:
        ids.add_many(members)
        ids.freeze()
        asked = [f"id-{n}" for n in range(0, 3_000)] + ["", "id-299997", "id-299998"]
        expected = set(members)
        assert ids.contains_many(asked) == [a in expected for a in asked]
        assert ids.contains_many([]) == []
    assert not (tmp_path / "ids").exists()
    with SpilledIdSet(tmp_path / "none") as empty:
        empty.freeze()
        assert empty.contains_many(["x"]) == [False]


async def test_parts_are_read_where_they_are_and_a_vanished_one_from_the_fallback(
    tmp_path: Path,
) -> None:
    blobs = LocalBlobs(tmp_path / "blobs")
    staging = tmp_path / "staging"
    running = chunk(0, ChunkStatus.RUNNING, 3)
    done = chunk(1, ChunkStatus.DONE, 4)
    gone = chunk(2, ChunkStatus.DONE, 5)
    (staging / BATCH).mkdir(parents=True)
    # A running chunk's staging part holds more than its row counts yet, and a torn line.
    (staging / BATCH / "000000.output.jsonl").write_bytes(lines(0, 4) + b'{"n": 9')
    writer = blobs.writer(part_key(done.key, done.attempts, "output"))
    await writer.write(lines(10, 14))
    await writer.commit()
    asked: list[tuple[int, int]] = []

    async def fallback(take: Take, first: int) -> AsyncIterator[bytes] | None:
        asked.append((take.chunk.index, first))
        return pieces_of(lines(100 + first, 100 + take.upto), 5) if take.chunk.index == 2 else None

    takes = [Take(running, 1, 3), Take(done, 0, 4), Take(gone, 2, 5)]
    got = b"".join(
        [x async for x in running_lines(blobs, staging, takes, ResultKind.OUTPUT, fallback)]
    )
    assert got == lines(1, 3) + lines(10, 14) + lines(102, 105)
    assert asked == [(2, 2)]
    # Run on another machine: its staging is not here, its snapshot is.
    elsewhere = chunk(4, ChunkStatus.RUNNING, 2)
    writer = blobs.writer(snapshot_key(elsewhere.key, "output"))
    await writer.write(lines(40, 43))
    await writer.commit()
    snapshot = [Take(elsewhere, 0, 2)]
    read = [x async for x in running_lines(blobs, staging, snapshot, ResultKind.OUTPUT, fallback)]
    assert b"".join(read) == lines(40, 42)
    with pytest.raises(ShortSource):
        async for _ in running_lines(
            blobs,
            staging,
            [Take(chunk(3, ChunkStatus.RUNNING, 1), 0, 1)],
            ResultKind.OUTPUT,
            fallback,
        ):
            pass
