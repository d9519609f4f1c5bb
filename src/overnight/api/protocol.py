"""The HTTP/1.1 protocol the server runs: uvicorn's httptools protocol with a
bound on the request head (request line and headers).

httptools sets no limit of its own: a client could send headers of any
size, and they would be held in memory before the app ever saw them. Here
the head is counted as it is parsed; past `max_header_bytes` the request is
answered 431 with the usual JSON error body and the connection is closed.
Each complete header is counted exactly (`on_url`, `on_header`); a single
header still arriving is bounded by counting raw bytes, with one socket
read of slack, since the end of the head may share a read with the body.
"""

from __future__ import annotations

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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._raw_head_bytes = 0
        self._in_head = True
        self._refused = False

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

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
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


def bounded_protocol(max_head_bytes: int) -> type[BoundedHttpTools]:
    """The protocol class for uvicorn's `http=` with this limit."""
    return type("BoundedHttpTools", (BoundedHttpTools,), {"max_head_bytes": max_head_bytes})
