"""A size limit on every request body that is not a file upload.

FastAPI reads a JSON body whole before the route runs, so without a limit a
single request could make the server hold gigabytes. Bodies of the upload
routes are streamed to storage instead and bounded by `max_upload_bytes`
there; every other body is read here first, up to `max_body_bytes`, and
replayed to the app, or refused with 413 as soon as it passes the limit.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from overnight.api.errors import error_response
from overnight.errors import PayloadTooLarge

#: Routes whose bodies are files (or, for Anthropic's batch create, a file's
#: worth of requests), streamed to storage by the route itself.
STREAMED_PATHS = re.compile(
    r"^/v1/files$|^/v1/uploads/[^/]+/parts$|^/together/v1/files/upload(/[^/]+)?$"
    r"|^/anthropic/v1/messages/batches$"
)


class LimitBodies:
    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or STREAMED_PATHS.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body.extend(message.get("body", b""))
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._refuse(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLarge(
            f"The request body is larger than the limit of {self.limit} bytes.",
            code="request_too_large",
        )
        await error_response(Request(scope), error)(scope, receive, send)
