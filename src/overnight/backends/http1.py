"""A small HTTP/1.1 client for the dispatch path: keep-alive connections on
the event loop's own transports, responses parsed by httptools.

Why not aiohttp here: against an instant local server aiohttp spends about
65 µs of CPU per request (building a request object, a body payload, a
writer task, a response object, stream readers, a timer), which is two
thirds of the worker's time when a model server is fast. This client spends
about 14 µs (docs/architecture.md, "The upstream client"): one `write` per
request and one parser callback per header. It does exactly what the
dispatch path needs and nothing else: POST a JSON body to a plain-http
server and read the answer whole. `https://` URLs, and models configured
with `http_client = "aiohttp"`, go through aiohttp instead
(`backends/http.py`).

What it handles, because model servers do it: `Content-Length`, chunked
and close-delimited bodies; `Connection: close`; interim `1xx` answers; a
`gzip` or `deflate` body; a keep-alive connection that the server closed
while it sat idle (the request is sent again once, on a new connection,
when nothing at all came back, at once, on the old one). Each request has one
deadline, `timeout` seconds, covering connecting, sending and the whole
answer; a request cancelled or timed out closes its connection, since the
connection's state is then unknown.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from typing import cast

import httptools

#: The headers an answer is read for; every other header is skipped.
_REQUEST_ID = b"x-request-id"
_RETRY_AFTER = b"retry-after"
_CONTENT_ENCODING = b"content-encoding"
_FRAMING = (b"content-length", b"transfer-encoding")
#: A connection closed with no answer this soon after the request went out
#: was most likely closed by the server while idle (its keep-alive timeout
#: crossing our write): the request is sent again on a new connection. Later
#: than this, the server may have worked on it; the dispatcher decides.
STALE_WITHIN = 1.0


class UpstreamClosed(ConnectionError):
    """The server closed the connection before a whole answer came."""

    def __init__(self, message: str, *, nothing_received: bool) -> None:
        super().__init__(message)
        self.nothing_received = nothing_received


class BadAnswer(ConnectionError):
    """What came back is not HTTP/1.x."""


class Answer:
    __slots__ = ("body", "request_id", "retry_after", "status")

    def __init__(
        self, status: int, body: bytes, request_id: str | None, retry_after: str | None
    ) -> None:
        self.status = status
        self.body = body
        self.request_id = request_id
        self.retry_after = retry_after


class OpenConnections:
    """How many connections one model holds open over all its origins, and
    how many of them it keeps once idle. The limiter bounds requests in
    flight, not connections: without a bound on those kept, each replica's
    pool grew to the most ever in flight to it, and a wide model over
    several replicas ran out of file descriptors."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.count = 0


class Origin:
    """Keep-alive connections to one `host:port`, most recently used first
    (a connection used a moment ago is the least likely to have been closed
    by the server). How many are open at once is bounded by the caller (the
    model's limiter bounds requests in flight); how many stay open when idle
    by `connections`, shared with the model's other origins."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        connections: OpenConnections | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.connections = connections or OpenConnections(keep=2**31)
        self._idle: deque[_Connection] = deque()
        self._open: set[_Connection] = set()

    async def post(self, head: bytes, payload: bytes) -> Answer:
        """Send `head` (the request line and headers up to and including
        `Content-Length: `) with `payload`; return the answer.

        Raises TimeoutError past the deadline, ConnectionError (or OSError)
        when the server cannot be reached or breaks off."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        request = b"%s%d\r\n\r\n%s" % (head, len(payload), payload)
        connection = self._take_idle()
        if connection is not None:
            try:
                return await connection.exchange(request, deadline)
            except UpstreamClosed as exc:
                if not exc.nothing_received:
                    raise
                # Closed at once without a byte of answer: the server's
                # keep-alive timeout fired just as we sent (see
                # STALE_WITHIN). Once more, on a new connection: a retry the
                # dispatcher would make anyway, but without counting a
                # failure against the model.
        connection = await self._connect(loop, deadline)
        return await connection.exchange(request, deadline)

    def _take_idle(self) -> _Connection | None:
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.usable:
                return connection
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        async with asyncio.timeout_at(deadline):
            _, connection = await loop.create_connection(
                lambda: _Connection(self), self.host, self.port
            )
        return connection

    def opened(self, connection: _Connection) -> None:
        self._open.add(connection)
        self.connections.count += 1

    def released(self, connection: _Connection) -> None:
        """An exchange ended with the connection fit for another: kept, unless
        the model already holds more open than it may keep."""
        if self.connections.count > self.connections.keep:
            connection.abort()
        else:
            self._idle.append(connection)

    def lost(self, connection: _Connection) -> None:
        if connection in self._open:
            self._open.discard(connection)
            self.connections.count -= 1

    def close(self) -> None:
        for connection in list(self._open):
            connection.abort()
        self._idle.clear()


class _Connection(asyncio.Protocol):
    """One connection, one exchange at a time. httptools calls the `on_*`
    methods from `feed_data`; the connection goes back to its origin only
    after `feed_data` returns, and only if exactly one answer came."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.sent_at = 0.0
        self.received = False
        #: Set when the final answer is complete: keep the connection alive?
        self.finished: bool | None = None
        #: Bytes of another answer came after the final one.
        self.surplus = False
        self._reset()

    def _reset(self) -> None:
        """Forget the message so far (a new exchange, or after a 1xx)."""
        self.headers_done = False
        self.framed = False
        self.body: list[bytes] = []
        self.request_id: str | None = None
        self.retry_after: str | None = None
        self.encoding: bytes | None = None

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    async def exchange(self, request: bytes, deadline: float) -> Answer:
        if self.transport is None or self.transport.is_closing():
            raise UpstreamClosed("the server closed the connection", nothing_received=True)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Answer] = loop.create_future()
        self.waiter = waiter
        self.received = False
        self.finished = None
        self._reset()
        timer = loop.call_at(deadline, self._time_out, waiter)
        self.sent_at = loop.time()
        self.transport.write(request)
        try:
            return await waiter
        except asyncio.CancelledError:
            if self.waiter is waiter:  # still ours: its answer may yet come, so it is spoilt
                self.waiter = None
                self.abort()
            # Otherwise the answer came before the cancel did, and the
            # connection may already carry another request: leave it be.
            raise
        finally:
            timer.cancel()

    def _time_out(self, waiter: asyncio.Future[Answer]) -> None:
        if self.waiter is waiter:
            self._fail(TimeoutError())
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.origin.opened(self)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # nothing was asked: not a server to trust further
            self.abort()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadAnswer("the server switched protocols (101) on a plain POST"))
            self.abort()
            return
        except httptools.HttpParserError as exc:
            self._fail(BadAnswer(f"the server's answer is not valid HTTP/1.1: {exc}"))
            self.abort()
            return
        if self.finished is None:
            return  # more to come
        keep, self.finished = self.finished, None
        if keep and not self.surplus and self.usable:
            self.origin.released(self)
        else:
            self.abort()

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.origin.lost(self)
        if self.waiter is None:
            return
        if exc is None and self.headers_done and not self.framed:
            self._complete()  # a body that ends with the connection, and it ended cleanly
        else:
            loop = asyncio.get_running_loop()
            how = "reset the connection" if exc is not None else "closed the connection"
            if not self.received:
                message = f"{how} before answering"
            elif self.headers_done:
                status = self.parser.get_status_code()
                size = sum(map(len, self.body))
                message = f"{how} after part of its answer (HTTP {status}, {size} bytes of body)"
            else:
                message = f"{how} after part of its answer (in the headers)"
            self._fail(
                UpstreamClosed(
                    message,
                    nothing_received=not self.received
                    and loop.time() - self.sent_at < STALE_WITHIN,
                )
            )

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        if self.waiter is None:  # a second answer to one request
            self.surplus = True

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == _REQUEST_ID:
            self.request_id = value.decode("latin-1")
        elif name == _RETRY_AFTER:
            self.retry_after = value.decode("latin-1")
        elif name in _FRAMING:
            self.framed = True
        elif name == _CONTENT_ENCODING:
            self.encoding = value.strip().lower()

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is None:  # the end of a surplus answer
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # interim (100 Continue, 103 Early Hints): the answer follows
            self._reset()
            return
        self.finished = self.parser.should_keep_alive()
        self._complete()

    def _complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            return
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        if body and self.encoding in _DECODERS:
            try:
                body = _DECODERS[self.encoding](body)
            except zlib.error as exc:
                waiter.set_exception(BadAnswer(f"the server's {self.encoding!r} body: {exc}"))
                return
        status = self.parser.get_status_code()
        waiter.set_result(Answer(status, body, self.request_id, self.retry_after))


def _inflate(body: bytes) -> bytes:
    """`deflate` is zlib-wrapped by the standard, raw by some servers."""
    try:
        return zlib.decompress(body)
    except zlib.error:
        return zlib.decompress(body, -zlib.MAX_WBITS)


_DECODERS = {
    b"gzip": lambda body: zlib.decompress(body, 16 + zlib.MAX_WBITS),
    b"x-gzip": lambda body: zlib.decompress(body, 16 + zlib.MAX_WBITS),
    b"deflate": _inflate,
}
