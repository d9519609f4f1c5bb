"""A form's uploaded bytes never outlive the handler that did not keep them:
`open_form` aborts every sink the block did not commit, however the block
ends. In-process, on a real Starlette request and local blobs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.types import Message

from overnight.api.multipart import open_form
from overnight.blobs.local import LocalBlobs
from overnight.errors import InvalidRequest
from overnight.service import FileSink

BOUNDARY = "test-boundary"


def form_request(fields: dict[str, str], files: dict[str, bytes]) -> Request:
    body = b""
    for name, value in fields.items():
        body += (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    for name, data in files.items():
        body += (
            (
                f"--{BOUNDARY}\r\nContent-Disposition: form-data; "
                f'name="{name}"; filename="{name}.jsonl"\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    body += f"--{BOUNDARY}--\r\n".encode()
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/files",
        "headers": [
            (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return Request(scope, receive)


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobs:
    return LocalBlobs(tmp_path / "blobs")


def sink_factory(blobs: LocalBlobs) -> tuple[list[FileSink], Callable[[str], FileSink | None]]:
    made: list[FileSink] = []

    def new_sink(name: str) -> FileSink | None:
        if name != "file":
            return None
        sink = FileSink(blobs.writer(f"files/{name}"), f"files/{name}", 1 << 24)
        made.append(sink)
        return sink

    return made, new_sink


async def test_an_error_in_the_block_drops_the_uploaded_bytes(blobs: LocalBlobs) -> None:
    made, new_sink = sink_factory(blobs)
    # Over the writer's 1 MiB buffer, so its temporary file is on disk.
    request = form_request({"purpose": "batch"}, {"file": b'{"a": 1}\n' * 200_000})
    with pytest.raises(InvalidRequest):
        async with open_form(request, new_sink) as form:
            assert form.files["file"][1].size > 0
            assert files_under(blobs.root) != []
            raise InvalidRequest("no good", param="purpose")
    assert [sink.closed for sink in made] == [True]
    assert files_under(blobs.root) == []


async def test_a_block_that_keeps_nothing_leaves_nothing(blobs: LocalBlobs) -> None:
    made, new_sink = sink_factory(blobs)
    async with open_form(form_request({}, {"file": b"data\n"}), new_sink) as form:
        assert "file" in form.files
    assert [sink.closed for sink in made] == [True]
    assert files_under(blobs.root) == []


async def test_committed_bytes_stay(blobs: LocalBlobs) -> None:
    _, new_sink = sink_factory(blobs)
    async with open_form(form_request({}, {"file": b"data\n"}), new_sink) as form:
        await form.files["file"][1].commit()
    assert files_under(blobs.root) == [blobs.root / "files" / "file"]
    assert (blobs.root / "files" / "file").read_bytes() == b"data\n"
