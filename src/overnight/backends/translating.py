"""A backend for a server that lacks some request shapes: a request in a
shape the model's `apis` do not list is translated to chat completions,
sent, and its answer translated back (overnight/translate/). Requests in
shapes the server speaks pass through untouched.

What comes back is what a server speaking the shape would have answered:
a Message or a Response on success; on failure the server's status with
its error in the shape's own form. A field that cannot be carried fails
its request at once (400, nothing sent); an answer that cannot be read
back (a tool call whose arguments are not JSON) fails it with 422, which
is not retried: the model answered, the answer is the problem.
"""

from __future__ import annotations

import dataclasses

from overnight.backends.base import Backend, UpstreamRequest, UpstreamResult
from overnight.backends.http1 import OpenConnections
from overnight.backends.replicas import Replicas
from overnight.translate import CHAT_ENDPOINT, Untranslatable, translator_for

#: The status of an answer that could not be translated back.
UNREADABLE_ANSWER = 422


class Translating:
    def __init__(self, inner: Backend, *, model: str, apis: frozenset[str]) -> None:
        self.inner = inner
        self.model = model
        self.apis = apis

    @property
    def replicas(self) -> Replicas | None:
        """The wrapped server's replicas, which the dashboard shows."""
        replicas: Replicas | None = getattr(self.inner, "replicas", None)
        return replicas

    @property
    def connections(self) -> OpenConnections | None:
        """The wrapped server's kept connections, bounded to a worker's share."""
        connections: OpenConnections | None = getattr(self.inner, "connections", None)
        return connections

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def send(self, request: UpstreamRequest) -> UpstreamResult:
        translator = translator_for(request.endpoint)
        if translator is None or translator.api in self.apis:
            return await self.inner.send(request)
        try:
            chat = translator.to_chat(request.body)
        except Untranslatable as exc:
            message = (
                f"{exc} The model {self.model!r} is served over chat completions, so "
                f"{request.endpoint} requests are translated, and this one cannot be."
            )
            return UpstreamResult(400, translator.error_body(400, message))
        result = await self.inner.send(UpstreamRequest(CHAT_ENDPOINT, chat, request.affinity))
        if result.status_code is None:
            return result
        if not result.ok:
            body = translator.upstream_error(result.status_code, result.body)
            return dataclasses.replace(result, body=body)
        try:
            answer = translator.from_chat(result.body, request.body)
        except Untranslatable as exc:
            message = f"The model's answer could not be translated back: {exc}"
            return dataclasses.replace(
                result,
                status_code=UNREADABLE_ANSWER,
                body=translator.error_body(500, message),
            )
        return dataclasses.replace(result, body=answer)
