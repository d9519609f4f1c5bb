"""How long the API takes to answer: a histogram per route template (so a
batch id in the path never becomes a label), method and status class.

The time is from the request's arrival to the response's first byte, which
is what a client waits on; a download's streaming body is not counted."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from overnight import metrics


class TimeRequests:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                metrics.request_duration.labels(
                    route_of(scope), scope["method"], f"{status // 100}xx"
                ).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, timed_send)


def route_of(scope: Scope) -> str:
    """The matched route's template (`/v1/batches/{batch_id}`): the path
    with each path parameter's value put back as its name (routers nested
    with a prefix keep only their own part of the template), the
    dashboard's `/ui`, or `other` for a path no route matched."""
    path: str = scope["path"]
    if path.startswith("/ui/") or path == "/ui":
        return "/ui"
    if scope.get("route") is None:
        return "other"
    for name, value in (scope.get("path_params") or {}).items():
        path = path.replace(f"/{value}", f"/{{{name}}}", 1)
    return path
