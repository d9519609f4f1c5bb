"""Whole-file validation and chunk planning."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from overnight.domain.lines import LineRules
from overnight.domain.validation import DuplicateFinder, FileValidator, ValidationReport
from overnight.runner.hash_spill import SpilledHashes

RULES = LineRules("/v1/chat/completions", models={"m", "n"})


def request(custom_id: str, model: str = "m") -> bytes:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model},
        }
    ).encode()


def run(data: bytes, **options: Any) -> tuple[FileValidator, ValidationReport]:
    validator = FileValidator(RULES, **options)
    offset = 0
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    for raw in parts:
        validator.feed(raw, offset)
        offset += len(raw) + 1
    duplicates = None
    candidates = validator.duplicate_candidates()
    if candidates:
        finder = DuplicateFinder(candidates, RULES)
        for raw in parts:
            finder.feed(raw)
        duplicates = finder.found
    return validator, validator.finish(len(data), duplicates)


def test_chunks_cover_every_request_exactly_once() -> None:
    lines = [request(f"r{i}") for i in range(23)]
    data = b"\n".join(lines) + b"\n"
    _, report = run(data, chunk_lines=5)
    assert report.ok
    chunks = report.chunks
    assert [c.requests for c in chunks] == [5, 5, 5, 5, 3]
    assert chunks[0].start == 0 and chunks[-1].end == len(data)
    for before, after in itertools.pairwise(chunks):
        assert before.end == after.start
    seen = []
    for chunk in chunks:
        body = data[chunk.start : chunk.end]
        seen += [json.loads(row)["custom_id"] for row in body.split(b"\n") if row.strip()]
        first = body.split(b"\n")[0]
        assert first == lines[chunk.first_line - 1]
    assert seen == [f"r{i}" for i in range(23)]


def test_chunks_are_cut_by_bytes_too() -> None:
    data = b"\n".join(request(f"r{i}") for i in range(10)) + b"\n"
    line_length = len(request("r0")) + 1
    _, report = run(data, chunk_lines=1000, chunk_bytes=max(1024, line_length * 3))
    assert all(c.end - c.start <= max(1024, line_length * 3) for c in report.chunks)
    assert sum(c.requests for c in report.chunks) == 10


def test_blank_lines_bom_and_crlf_are_tolerated_and_numbered() -> None:
    data = b"\xef\xbb\xbf" + request("a") + b"\r\n\r\n" + request("b") + b"\r\n" + b"oops\r\n"
    _, report = run(data)
    assert report.requests == 2
    assert [(e.line, e.code) for e in report.errors] == [(4, "invalid_json_line")]


def test_a_last_line_without_newline_counts() -> None:
    data = request("a") + b"\n" + request("b")
    _, report = run(data)
    assert report.ok and report.requests == 2
    assert report.chunks[-1].end == len(data)


def test_duplicates_are_found_with_both_line_numbers() -> None:
    data = (
        b"\n".join([request("a"), request("b"), request("a"), request("c"), request("b")]) + b"\n"
    )
    _, report = run(data)
    assert [(e.line, e.code) for e in report.errors] == [
        (3, "duplicate_custom_id"),
        (5, "duplicate_custom_id"),
    ]
    assert "line 1" in report.errors[0].message
    assert report.chunks == ()


def test_duplicates_are_found_across_hashes_spilled_to_disk(tmp_path: Path) -> None:
    # 3,000 ids, handed to the disk sink every 100: the repeats of "r-7"
    # (line 2,001) and "r-2999" (line 3,002) sit in other blocks than their
    # first appearance.
    ids = [f"r-{i}" for i in range(3000)]
    ids.insert(2000, "r-7")
    ids.append("r-2999")
    data = b"\n".join(request(i) for i in ids) + b"\n"
    sink = SpilledHashes(tmp_path / "hashes")
    _, report = run(data, hash_sink=sink, spill_every=100)
    sink.close()
    assert [(e.line, e.code) for e in report.errors] == [
        (2001, "duplicate_custom_id"),
        (3002, "duplicate_custom_id"),
    ]
    assert not (tmp_path / "hashes").exists()


def test_hashes_leave_memory_for_disk_as_they_pile_up(tmp_path: Path) -> None:
    sink = SpilledHashes(tmp_path / "hashes")
    validator = FileValidator(RULES, hash_sink=sink, spill_every=64)
    offset = 0
    for i in range(5000):
        raw = request(f"r-{i}")
        validator.feed(raw, offset)
        offset += len(raw) + 1
    on_disk = sum(path.stat().st_size for path in (tmp_path / "hashes").iterdir())
    assert on_disk == 8 * (5000 - 5000 % 64)  # every full block of 64 went to disk
    assert validator.duplicate_candidates() == frozenset()
    sink.close()
    assert validator.finish(offset).ok


def test_an_empty_file_is_an_error() -> None:
    _, report = run(b"\n \n")
    assert [e.code for e in report.errors] == ["empty_file"]


def test_at_most_100_errors_are_reported_but_all_are_counted() -> None:
    data = b"x\n" * 250
    _, report = run(data)
    assert len(report.errors) == 100
    assert report.error_count == 250
    assert [e.line for e in report.errors] == list(range(1, 101))


def test_too_many_requests() -> None:
    data = b"\n".join(request(f"r{i}") for i in range(5)) + b"\n"
    _, report = run(data, max_requests=3)
    assert [(e.line, e.code) for e in report.errors] == [(4, "too_many_requests_in_file")]


def test_one_model_per_batch_when_required() -> None:
    data = b"\n".join([request("a", "m"), request("b", "n")]) + b"\n"
    _, mixed = run(data)
    assert mixed.ok and mixed.model == "m"
    _, single = run(data, require_single_model=True)
    assert [(e.line, e.code) for e in single.errors] == [(2, "model_mismatch")]


def test_a_file_smaller_than_one_block_opens_no_spill_file(tmp_path: Path) -> None:
    sink = SpilledHashes(tmp_path / "hashes")
    _, report = run(b"\n".join(request(f"r-{i}") for i in range(50)) + b"\n", hash_sink=sink)
    assert report.ok
    assert not (tmp_path / "hashes").exists()
    assert sink.repeated() == frozenset()
    sink.close()


def test_requests_are_shown_only_once_a_second_chunk_begins() -> None:
    """The prefix grouping's hook: a file of one chunk shows no request (it
    has nothing to group across chunks, and keying costs); a file of
    several shows every request, the first chunk's included, in order."""
    ids = [f"r{i}" for i in range(12)]
    data = b"\n".join(request(i) for i in ids) + b"\n"

    shown: list[str] = []
    _, report = run(data, chunk_lines=12, on_request=lambda r: shown.append(r.custom_id))
    assert report.ok and len(report.chunks) == 1
    assert shown == []

    # A byte-order mark on the first line: held, and shown, all the same.
    with_mark = b"\xef\xbb\xbf" + data
    _, report = run(with_mark, chunk_lines=5, on_request=lambda r: shown.append(r.custom_id))
    assert report.ok and len(report.chunks) == 3
    assert shown == ids
