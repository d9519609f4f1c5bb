"""The HTTP/1.1 protocol the server runs: uvicorn's httptools protocol with
bounds on the request head (request line and headers), in size and in time.

httptools sets no limit of its own: a client could send headers of any
size, and they would be held in memory before the app ever saw them. Here
the head is counted as it is parsed; past `max_header_bytes` the request is
answered 431 with the usual JSON error body and the connection is closed.
Each complete header is counted exactly (`on_url`, `on_header`); a single
header still arriving is bounded by counting raw bytes, with one socket
read of slack, since the end of the head may share a read with the body.

uvicorn does not time the head either: a client that opens a connection and
sends its headers a byte at a time (slowloris) holds the connection for
ever, and enough of them exhaust the server's sockets. Here the head must be
complete within `header_timeout` seconds of the connection opening (or of
the first byte of a later request on it), or the connection is closed.
Between requests, uvicorn's own keep-alive timeout closes idle connections.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from overnight import _json
from overnight.api.errors import openai_error_body
from overnight.errors import HeadersTooLarge

#: Bytes one socket read may hold beyond the head (asyncio and uvloop read
#: at most 256 KiB at once).
READ_SLACK = 256 * 1024


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing."""


class BoundedHttpTools(HttpToolsProtocol):
    max_head_bytes = 64 * 1024
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._raw_head_bytes = 0
        self._in_head = True
        self._refused = False
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._raw_head_bytes += len(data)
            if self._raw_head_bytes > self.max_head_bytes + READ_SLACK:
                self._refuse()
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._in_head = True
        if self._head_deadline is None:  # a later request on this connection
            self._start_head_clock()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head_clock()
        self._in_head = False
        self._raw_head_bytes = 0
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """httptools reports a callback's exception as a parse error; the
        one raised by `_count` is answered 431 instead of 400."""
        if self._refused:
            self._refuse()
        else:
            super().send_400_response(msg)

    def _start_head_clock(self) -> None:
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _stop_head_clock(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        """No answer is owed to a client that has not finished asking:
        the connection is closed, as nginx does on `client_header_timeout`."""
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_head_bytes:
            self._refused = True
            raise _HeadTooLarge

    def _refuse(self) -> None:
        self._refused = True
        if self.transport.is_closing():
            return
        error = HeadersTooLarge(
            f"The request line and headers are larger than the limit of "
            f"{self.max_head_bytes} bytes.",
        )
        body = _json.dumps(openai_error_body(error))
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"x-request-id: req_" + secrets.token_hex(12).encode() + b"\r\n"
            b"x-should-retry: false\r\n"
            b"connection: close\r\n\r\n"
        )
        self.transport.write(head + body)
        self.transport.close()


def bounded_protocol(max_head_bytes: int, header_timeout: float) -> type[BoundedHttpTools]:
    """The protocol class for uvicorn's `http=` with these limits."""
    return type(
        "BoundedHttpTools",
        (BoundedHttpTools,),
        {"max_head_bytes": max_head_bytes, "header_timeout": header_timeout},
    )
