"""The one contract every backend meets: run one request against a model.

Like an httpx transport, a backend is small and swappable: `send` takes an
`UpstreamRequest` and always returns an `UpstreamResult`; it never raises
for anything the model server did. Foreign errors (aiohttp, llama.cpp) are
translated here, at the edge, into a status code and body or an error code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    endpoint: str
    """The batch endpoint, e.g. `/v1/chat/completions`."""
    body: dict[str, Any]
    #: The request's prompt-prefix key (domain/prefixes.py), or None: a
    #: backend with replicas sends one key to one replica, whose prefix
    #: cache then holds it.
    affinity: int | None = None


@dataclass(frozen=True, slots=True)
class UpstreamResult:
    """The model server's answer (`status_code`, `body`), or, when none came,
    `error_code` (`upstream_unreachable`, `upstream_timeout`,
    `upstream_disconnected`)."""

    status_code: int | None
    body: Any = None
    request_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    #: Seconds the server asked us to wait (a `Retry-After` header).
    retry_after: float | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def congested(self) -> bool:
        """No answer, 408, 429 or 5xx: worth retrying, and a sign to slow down."""
        return self.status_code is None or self.status_code in (408, 429) or self.status_code >= 500

    @property
    def overloaded(self) -> bool:
        """The server says it is overloaded: 429 Too Many Requests, 503
        Service Unavailable, or a gateway's 504 (the server behind it is too
        slow). Other failures are faults, not by themselves about load."""
        return self.status_code in (429, 503, 504)


class Backend(Protocol):
    async def start(self) -> None: ...
    async def send(self, request: UpstreamRequest) -> UpstreamResult: ...
    async def close(self) -> None: ...


def error_body(
    message: str, *, type: str = "invalid_request_error", code: str | None = None
) -> dict[str, Any]:
    """An OpenAI-style error body, for backends that produce their own errors."""
    return {"error": {"message": message, "type": type, "param": None, "code": code}}
