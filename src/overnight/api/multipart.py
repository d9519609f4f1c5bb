"""Streaming multipart/form-data: file parts go straight to a sink as they
arrive, so an upload of any size passes through a few hundred KiB of memory.

Starlette's own form parser spools files to a temporary file first (and
again to storage); this writes once, and lets the sink enforce the size
limit while the body is still arriving. python-multipart does the parsing;
its callbacks only collect events, which are then handled asynchronously.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from overnight.errors import InvalidRequest, PayloadTooLarge
from overnight.service import FileSink

#: A non-file field larger than this is refused.
MAX_FIELD_BYTES = 64 * 1024
#: Parts (file or not) in one form, counted as they arrive, so that a form
#: repeating one name still ends soon.
MAX_FIELDS = 32
#: Longest header line of one part (Content-Disposition with its filename).
MAX_PART_HEADER_BYTES = 16 * 1024


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, FileSink]] = field(default_factory=dict)

    async def abort(self) -> None:
        """Drop every file's bytes not yet committed (committed ones stay)."""
        for _, sink in self.files.values():
            await sink.abort()


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    sink: FileSink | None = None
    value: bytearray = field(default_factory=bytearray)


async def read_form(request: Request, new_sink: Callable[[str], FileSink | None]) -> Form:
    """Parse the request body. `new_sink(field_name)` returns where a file
    field's bytes go, or None to treat the field as an ordinary value."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise InvalidRequest(
            "Expected a multipart/form-data body.", param="file", code="invalid_content_type"
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidRequest(
            "The multipart body has no boundary in its Content-Type.",
            param="file",
            code="invalid_multipart",
        )
    events: list[tuple[str, Any]] = []
    header_field = bytearray()
    header_value = bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])
        _bound_header(header_field)

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])
        _bound_header(header_value)

    def on_header_end() -> None:
        events.append(("header", (bytes(header_field).lower(), bytes(header_value))))
        header_field.clear()
        header_value.clear()

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": lambda: events.append(("begin", None)),
            "on_part_data": lambda data, start, end: events.append(("data", data[start:end])),
            "on_part_end": lambda: events.append(("end", None)),
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": lambda: events.append(("headers", None)),
            "on_end": lambda: events.append(("finish", None)),
        },
    )
    form = Form()
    part = _Part()
    parts = 0
    finished = False
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise InvalidRequest(
                    f"The multipart body is malformed: {exc}",
                    param="file",
                    code="invalid_multipart",
                ) from exc
            for kind, value in events:
                if kind == "begin":
                    parts += 1
                    if parts > MAX_FIELDS:
                        raise InvalidRequest(
                            "The form has too many fields.", code="invalid_multipart"
                        )
                    part = _Part()
                elif kind == "header":
                    part.headers[value[0]] = value[1]
                elif kind == "headers":
                    _start_part(part, form, new_sink)
                elif kind == "data":
                    if part.sink is not None:
                        await part.sink.write(value)
                    else:
                        part.value.extend(value)
                        if len(part.value) > MAX_FIELD_BYTES:
                            raise PayloadTooLarge(
                                f"The form field {part.name!r} is too large.", param=part.name
                            )
                elif kind == "end":
                    if part.sink is None:
                        form.fields[part.name] = part.value.decode("utf-8", "replace")
                elif kind == "finish":
                    finished = True
            events.clear()
        if not finished:
            raise InvalidRequest(
                "The multipart body ended before its closing boundary.",
                param="file",
                code="invalid_multipart",
            )
    except BaseException:
        await form.abort()
        raise
    return form


@asynccontextmanager
async def open_form(
    request: Request, new_sink: Callable[[str], FileSink | None]
) -> AsyncIterator[Form]:
    """`read_form` for a handler that hands the form's files on: when the
    block ends, however it ends, every sink it did not commit is aborted,
    so no error path can leave an upload's bytes behind."""
    form = await read_form(request, new_sink)
    try:
        yield form
    finally:
        await form.abort()


@asynccontextmanager
async def open_file_form(request: Request, new_sink: Callable[[], FileSink]) -> AsyncIterator[Form]:
    """`open_form` for a file upload: its `file` part streams into a sink
    from `new_sink`, and a form without one is refused."""
    async with open_form(request, lambda name: new_sink() if name == "file" else None) as form:
        if "file" not in form.files:
            raise InvalidRequest(
                "The form has no 'file' part.", param="file", code="missing_required_parameter"
            )
        yield form


def _bound_header(text: bytearray) -> None:
    """A part's headers are held in memory until they end: bound them."""
    if len(text) > MAX_PART_HEADER_BYTES:
        raise InvalidRequest(
            f"A multipart part header is longer than {MAX_PART_HEADER_BYTES} bytes.",
            param="file",
            code="invalid_multipart",
        )


def _start_part(part: _Part, form: Form, new_sink: Callable[[str], FileSink | None]) -> None:
    _, options = parse_options_header(part.headers.get(b"content-disposition", b""))
    name = options.get(b"name")
    if name is None:
        raise InvalidRequest(
            "A multipart part has no name in its Content-Disposition.", code="invalid_multipart"
        )
    part.name = name.decode("utf-8", "replace")
    raw_filename = options.get(b"filename")
    if raw_filename is not None:
        part.filename = raw_filename.decode("utf-8", "replace")
        if part.name in form.files:
            raise InvalidRequest(f"The form sends {part.name!r} twice.", param=part.name)
        part.sink = new_sink(part.name)
        if part.sink is not None:
            form.files[part.name] = (part.filename, part.sink)
