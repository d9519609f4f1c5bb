"""Small helpers every dialect uses to answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from overnight import _json

if TYPE_CHECKING:
    from overnight.runtime import Runtime


class JSONBytes(Response):
    """JSON serialised by orjson (several times faster than the stdlib)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _json.dumps(content)


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
