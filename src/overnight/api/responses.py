"""Small helpers every dialect uses to answer."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from email.utils import encode_rfc2231
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from overnight import _json
from overnight.domain.files import FileRecord

if TYPE_CHECKING:
    from overnight.runtime import Runtime


class JSONBytes(JSONResponse):
    """JSON serialised by orjson (several times faster than the stdlib)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _json.dumps(content)


def ok(model: type[BaseModel], status: int = 200) -> dict[int | str, dict[str, Any]]:
    """A route's success response, for the OpenAPI schema (routes render
    their own JSON, so FastAPI never sees the model at run time)."""
    return {status: {"model": model, "description": "Success."}}


def ok_bytes(media_type: str = "application/octet-stream") -> dict[int | str, dict[str, Any]]:
    """A route that answers raw bytes."""
    return {
        200: {
            "description": "The bytes.",
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
        }
    }


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def file_download(record: FileRecord, stream: AsyncIterator[bytes]) -> StreamingResponse:
    """A file's bytes, streamed, with the Content-Length that SDKs use to
    size their downloads (Together's check the byte count against it)."""
    return StreamingResponse(
        stream,
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(record.bytes),
            "Content-Disposition": attachment(record.filename),
        },
    )


def attachment(filename: str) -> str:
    """A `Content-Disposition` that names the download `filename`, whatever
    the name holds (RFC 6266). Header values are Latin-1 and a quoted string
    ends at a quote, so the name goes in twice: `filename*` carries it
    exactly, UTF-8 and percent-encoded (RFC 5987), for every current
    browser; `filename` is an ASCII stand-in for older clients, with each
    character that is unsafe in it replaced by `_`. The name can therefore
    neither break the header (a 500) nor add parameters of its own."""
    fallback = _UNSAFE_IN_QUOTES.sub("_", filename)
    return f'attachment; filename="{fallback}"; filename*={encode_rfc2231(filename, "utf-8")}'


#: Anything but printable ASCII, what ends or escapes a quoted string (`"`,
#: `\\`) and what naive parsers misread (`;` as a new parameter, `%` as an
#: escape).
_UNSAFE_IN_QUOTES = re.compile(r"[^ !#$&-:<-\[\]-~]")
