"""The one contract every backend meets: run one request against a model.

Like an httpx transport, a backend is small and swappable: `send` takes an
`UpstreamRequest` and always returns an `UpstreamResult`; it never raises
for anything the model server did. Foreign errors (aiohttp, llama.cpp) are
translated here, at the edge, into a status code and body or an error code.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any, Protocol

#: The error code of an attempt that never left this process: no connection
#: could be opened because the worker, or the machine, had no file
#: descriptor (or socket buffer) to spare. Not the server's doing, and not a
#: line's result: the dispatcher (runner/dispatch.py) waits and sends again,
#: and lowers the model's concurrency to what the process can hold open.
OUT_OF_FILES = "worker_out_of_files"

#: The errors of a local shortage: EMFILE (this process's limit on open
#: files), ENFILE (the machine's), ENOBUFS (no socket buffers).
_SHORTAGES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS))


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
    `upstream_disconnected`, or `OUT_OF_FILES`, which never becomes a
    line's result)."""

    status_code: int | None
    body: Any = None
    request_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    #: Seconds the server asked us to wait (a `Retry-After` header).
    retry_after: float | None = None
    attempts: int = 1
    #: The server's host refused the connection (nothing listens on the
    #: port: the server is stopped or restarting). Nothing was sent.
    refused: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def congested(self) -> bool:
        """No answer, 408, 429 or 5xx: worth retrying, and a sign to slow down."""
        return self.status_code is None or self.status_code in (408, 429) or self.status_code >= 500

    @property
    def out_of_files(self) -> bool:
        """The attempt never left this process (see `OUT_OF_FILES`)."""
        return self.error_code == OUT_OF_FILES

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


def is_local_shortage(exc: BaseException) -> bool:
    """Whether a failure to connect was this machine's (out of file
    descriptors or socket buffers), not the server's. aiohttp wraps the
    OSError and keeps its errno."""
    return isinstance(exc, OSError) and exc.errno in _SHORTAGES


def is_refused(exc: BaseException) -> bool:
    """Whether a connect was refused: the host is up and nothing listens on
    the port. aiohttp wraps the OSError and keeps its errno. Where a name
    has several addresses (`localhost`: ::1 and 127.0.0.1) and each failed
    differently, Python 3.11's `create_connection` raises one OSError with
    no errno, each address's error written in its message: refused when
    every one of them was."""
    if not isinstance(exc, OSError):
        return False
    if exc.errno == errno.ECONNREFUSED:
        return True
    text = str(exc)
    refused = text.count(f"[Errno {errno.ECONNREFUSED}]")
    return (
        exc.errno is None
        and text.startswith("Multiple exceptions")
        and (0 < refused == text.count("[Errno "))
    )


def out_of_files(exc: BaseException) -> UpstreamResult:
    return UpstreamResult(
        None,
        error_code=OUT_OF_FILES,
        error_message=f"No connection could be opened here: {type(exc).__name__}: {exc}",
    )
