"""Property tests of whole-file validation, as the runner does it: the file's
bytes are read in pieces of any size (runner/reading.py), split into lines,
and fed to FileValidator, with a second pass for duplicate `custom_id`s.

Whatever the mix of good, bad and blank lines, line ends, a byte-order mark
or the piece boundaries, validation never raises, reports every bad line
with its physical line number (from 1, blank lines included) and the code
for what is wrong with it, and accepts every good line whatever its keys'
order or extra fields.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from overnight.domain.lines import (
    LineError,
    LineRules,
    Request,
    Unreadable,
    check_line,
    read_requests,
)
from overnight.domain.validation import DuplicateFinder, FileValidator, ValidationReport
from overnight.runner.reading import lines_with_offsets

from .strategies import json_values

MAX_LINE = 2048
RULES = LineRules(
    "/v1/chat/completions",
    models={"m", "n"},
    max_custom_id_length=40,
    max_line_bytes=MAX_LINE,
)


class PieceBlobs:
    """Just enough of a BlobStore for `lines_with_offsets`: one blob, read
    back in pieces of the given sizes (cycled)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data = data
        self.sizes = sizes

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        stop = len(self.data) if end is None else end
        position, turn = start, 0
        while position < stop:
            size = self.sizes[turn % len(self.sizes)]
            yield self.data[position : min(stop, position + size)]
            position += size
            turn += 1


async def _lines(blobs: PieceBlobs) -> list[tuple[bytes, int]]:
    found: list[tuple[bytes, int]] = []
    async for lines in lines_with_offsets(blobs, "k", max_line=MAX_LINE):  # type: ignore[arg-type]
        found.extend(lines)
    return found


def validate(data: bytes, sizes: list[int]) -> ValidationReport:
    lines = asyncio.run(_lines(PieceBlobs(data, sizes)))
    validator = FileValidator(RULES, chunk_lines=7)
    for raw, offset in lines:
        validator.feed(raw, offset)
    duplicates = None
    candidates = validator.duplicate_candidates()
    if candidates:
        finder = DuplicateFinder(candidates, RULES)
        for raw, _ in lines:
            finder.feed(raw)
        duplicates = finder.found
    return validator.finish(len(data), duplicates)


# ---------------------------------------------------------------- the lines

extra_keys = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k not in {"custom_id", "method", "url", "body"}),
    json_values,
    max_size=3,
)
body_extra = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k not in {"model", "stream"}), json_values, max_size=3
)


@dataclass(frozen=True)
class Line:
    raw: bytes
    #: The error code this line must get; None for a good or blank line.
    code: str | None
    custom_id: str | None = None


def good_value(custom_id: str, order: list[str], extra: dict[str, Any], body: dict[str, Any]):  # type: ignore[no-untyped-def]
    base = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {**body, "model": "m", "messages": [{"role": "user", "content": "hi"}]},
    }
    return {key: base[key] for key in order} | extra


@st.composite
def good_line(draw: st.DrawFn, custom_id: str) -> Line:
    order = draw(st.permutations(["custom_id", "method", "url", "body"]))
    value = good_value(custom_id, order, draw(extra_keys), draw(body_extra))
    return Line(json.dumps(value).encode(), None, custom_id)


def broken(custom_id: str, change: dict[str, Any], drop: str | None = None) -> bytes:
    value = good_value(custom_id, ["custom_id", "method", "url", "body"], {}, {})
    value.update(change)
    if drop is not None:
        del value[drop]
    return json.dumps(value).encode()


def hostile_body(fragment: bytes) -> Any:
    """A line whose body holds `fragment` (raw JSON text) in a field."""

    def make(cid: str) -> bytes:
        good = broken(cid, {})
        return good[: good.rindex(b"}}")] + b', "x": ' + fragment + b"}}"

    return make


#: Values inside a body that strict JSON decoding refuses: each was once
#: accepted by validation and dropped at execution.
HOSTILE_VALUES = [
    b"1e400",
    b"-1e999",
    b"9" * 5000,
    b'"\xff\xfe"',
    b'"a \xc3"',
    b'"\\ud800"',
    b"[" * 200 + b"]" * 200,
    b"[" * 127 + b"]" * 127,  # 129 deep with the line and the body
    b'{"a": ' * 1000 + b"1" + b"}" * 1000,
]

BAD_LINES: list[tuple[str, Any]] = [
    ("invalid_json_line", lambda cid: b'{"custom_id": "' + cid.encode() + b'", '),
    ("invalid_json_line", lambda cid: b'{"custom_id": "\xff\xfe"}'),
    ("invalid_json_line", lambda cid: b"[1, 2, 3]"),
    ("missing_required_parameter", lambda cid: broken(cid, {}, drop="custom_id")),
    ("invalid_request", lambda cid: broken(cid, {"custom_id": 12})),
    ("custom_id_too_long", lambda cid: broken("x" * 41, {})),
    ("invalid_method", lambda cid: broken(cid, {"method": "GET"})),
    ("invalid_url", lambda cid: broken(cid, {"url": "/v1/embeddings"})),
    ("invalid_request", lambda cid: broken(cid, {"body": "text"})),
    ("model_not_found", lambda cid: broken(cid, {"body": {"model": "nope"}})),
    ("streaming_unsupported", lambda cid: broken(cid, {"body": {"model": "m", "stream": True}})),
    ("line_too_long", lambda cid: broken(cid, {"padding": "p" * (MAX_LINE + 10)})),
    *(
        ("invalid_json_line", hostile_body(fragment))
        for fragment in HOSTILE_VALUES
        if len(fragment) < MAX_LINE - 400
    ),
]


@st.composite
def input_files(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, str]], int]:
    """A file, the (line, code) of every error it must get, and how many
    requests pass the line checks."""
    count = draw(st.integers(1, 40))
    lines: list[Line] = []
    used: list[str] = []
    for index in range(count):
        kind = draw(st.sampled_from(["good", "good", "good", "blank", "bad", "duplicate"]))
        custom_id = f"id-{index}"
        if kind == "blank":
            lines.append(Line(draw(st.sampled_from([b"", b"  ", b"\t"])), None))
        elif kind == "bad":
            code, make = draw(st.sampled_from(BAD_LINES))
            lines.append(Line(make(custom_id), code))
        elif kind == "duplicate" and used:
            again = draw(st.sampled_from(used))
            lines.append(Line(draw(good_line(again)).raw, "duplicate_custom_id", again))
        else:
            lines.append(draw(good_line(custom_id)))
            used.append(custom_id)
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = newline.join(line.raw for line in lines)
    if draw(st.booleans()):
        data += newline
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    expected = [(n, line.code) for n, line in enumerate(lines, 1) if line.code is not None]
    passing = sum(
        1 for line in lines if line.raw.strip() and line.code in (None, "duplicate_custom_id")
    )
    if passing == 0 and not expected:
        expected = [(0, "empty_file")]
    return data, expected, passing


piece_sizes = st.lists(st.integers(1, 700), min_size=1, max_size=4)


@settings(max_examples=80, deadline=None)
@given(input_files(), piece_sizes)
def test_every_bad_line_is_reported_with_its_number_and_code(
    case: tuple[bytes, list[tuple[int, str]], int], sizes: list[int]
) -> None:
    data, expected, passing = case
    report = validate(data, sizes)
    found = [(e.line or 0, e.code) for e in report.errors]
    assert found == expected
    assert report.error_count == len(expected)
    assert report.requests == passing
    for error in report.errors:
        if error.line:
            assert f"{error.line}" in error.message


@settings(max_examples=100, deadline=None)
@given(st.lists(good_line("unused"), min_size=1, max_size=30), piece_sizes)
def test_good_lines_are_accepted_whatever_their_keys_and_chunks_cover_them(
    lines: list[Line], sizes: list[int]
) -> None:
    raws = [
        line.raw.replace(b'"unused"', json.dumps(f"c{i}").encode(), 1)
        for i, line in enumerate(lines)
    ]
    data = b"\n".join(raws) + b"\n"
    report = validate(data, sizes)
    assert report.ok, report.errors
    assert report.requests == len(raws)
    covered = b"".join(data[c.start : c.end] for c in report.chunks)
    assert covered == data


@settings(max_examples=200, deadline=None)
@given(json_values, st.integers(1, 10**9))
def test_the_line_checker_never_raises_on_any_json(value: Any, number: int) -> None:
    result = check_line(json.dumps(value).encode(), number, RULES)
    assert isinstance(result, Request | LineError)
    if isinstance(result, LineError):
        assert result.line == number


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3000), piece_sizes)
def test_validation_never_raises_on_any_bytes(data: bytes, sizes: list[int]) -> None:
    report = validate(data, sizes)
    assert report.error_count >= len(report.errors)
    lines = data.split(b"\n")
    for error in report.errors:
        assert error.line is None or 1 <= error.line <= len(lines)


#: Body values that are unusual but valid: accepted, and sent as they are.
ODD_BUT_VALID = [
    b"1.7e308",
    b"1e-400",
    b"18446744073709551616",
    b"-" + b"9" * 300,
    b'"\\u00e9\\ud83d\\udd25"',
    b'"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["',
    b"[" * 126 + b"]" * 126,  # 128 deep with the line and the body: the limit
]


@st.composite
def files_with_hostile_bodies(draw: st.DrawFn) -> bytes:
    """Files whose lines mix good lines, lines with hostile values in their
    body, and lines with odd but valid values, anywhere in the file."""
    raws = []
    for index in range(draw(st.integers(1, 12))):
        custom_id = f"id-{index}"
        kind = draw(st.sampled_from(["good", "hostile", "odd"]))
        if kind == "good":
            raws.append(draw(good_line(custom_id)).raw)
        else:
            fragment = draw(st.sampled_from(HOSTILE_VALUES if kind == "hostile" else ODD_BUT_VALID))
            raws.append(hostile_body(fragment)(custom_id))
    return b"\n".join(raws) + b"\n"


@settings(max_examples=150, deadline=None)
@given(files_with_hostile_bodies(), piece_sizes)
def test_every_line_validation_accepts_is_read_back_as_a_request_to_send(
    data: bytes, sizes: list[int]
) -> None:
    """What execution and finalisation read from an accepted file's chunks
    is exactly the requests validation counted, each one sendable: no line
    can be accepted and then dropped."""
    report = validate(data, sizes)
    if not report.ok:
        assert {e.code for e in report.errors} <= {"invalid_json_line", "line_too_long"}
        return
    rules = LineRules.rereading("/v1/chat/completions")
    read: list[Request | Unreadable] = []
    for chunk in report.chunks:
        read.extend(
            read_requests(data[chunk.start : chunk.end].split(b"\n"), chunk.first_line, rules)
        )
    assert all(isinstance(r, Request) for r in read), read
    assert len(read) == report.requests
    assert len({r.custom_id for r in read}) == report.requests
    for request in read:
        assert isinstance(request, Request)
        assert msgspec.json.decode(msgspec.json.encode(request.body)) == request.body
