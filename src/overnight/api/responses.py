"""Small helpers every dialect uses to answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
            "Content-Disposition": f'attachment; filename="{record.filename}"',
        },
    )
