"""The two clients a model is reached through (backends/http.py): overnight's
own HTTP/1.1 client (`native`, the default for http:// servers) and aiohttp.

Both are driven through `HttpBackend`, as the worker drives them, against
the fake upstream and against raw loopback servers that answer the way
real servers sometimes do (chunked, close-delimited, gzip, `100 Continue`,
a keep-alive connection closed under us, garbage). Every test that is about
behaviour both must share runs on both clients, and on both event loops the
service may run on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import inspect
import os
import resource
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import uvloop

from overnight.backends import http1
from overnight.backends.base import UpstreamRequest, UpstreamResult
from overnight.backends.http import HttpBackend
from overnight.backends.http1 import Answer, Origin
from overnight.runner.dispatch import send_with_retries
from overnight.runner.models import Models, ServedModel
from overnight.runner.open_files import open_now
from overnight.settings import ModelSettings
from overnight.testing.fake_upstream import FakeUpstream

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}
CHAT_PATH = "/v1/chat/completions"
CLIENTS = ["native", "aiohttp"]


pytestmark = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])


def on_each_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on the event loop named by the `loop` parameter:
    the service runs on uvloop, and on asyncio's own loop where uvloop is
    not installed, and their transports differ in small ways."""

    def run(loop: str, **kwargs: Any) -> None:
        (uvloop.run if loop == "uvloop" else asyncio.run)(test(**kwargs))

    signature = inspect.signature(test)
    run.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[
            inspect.Parameter("loop", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            *signature.parameters.values(),
        ]
    )
    run.__name__ = test.__name__
    run.__doc__ = test.__doc__
    return run


@contextlib.asynccontextmanager
async def backend_for(url: str, client: str, **settings: object) -> AsyncIterator[HttpBackend]:
    model = ModelSettings(name="m", base_url=url, http_client=client, **settings)  # type: ignore[arg-type]
    backend = HttpBackend(model)
    try:
        yield backend
    finally:
        await backend.close()


async def chat(backend: HttpBackend, content: str = "hello there") -> UpstreamResult:
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    return await backend.send(UpstreamRequest("/v1/chat/completions", body))


# -- a raw server, to answer byte for byte


@dataclass
class Seen:
    """What a raw server received."""

    connections: int = 0
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)  # (head, body)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Seen], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, Seen]]:
    seen = Seen()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        try:
            await handler(reader, writer, seen)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1", seen
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def backend_on(
    handler: Handler, client: str, **settings: object
) -> AsyncIterator[tuple[HttpBackend, Seen]]:
    """A backend for a model served by a raw server running `handler`."""
    async with raw_server(handler) as (url, seen), backend_for(url, client, **settings) as backend:
        yield backend, seen


def answer(body: bytes, *, status: bytes = b"200 OK", headers: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: application/json\r\n"
        + headers
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def serve_each(respond: Callable[[bytes], bytes]) -> Handler:
    """Answer every request on the connection with `respond(request body)`."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen
    ) -> None:
        while (request := await read_request(reader)) is not None:
            seen.requests.append(request)
            writer.write(respond(request[1]))
            await writer.drain()

    return handler


# -- against the fake upstream: answers, headers, faults


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_an_answer_comes_back_whole(client: str) -> None:
    with FakeUpstream() as up:
        async with backend_for(up.url, client) as backend:
            result = await chat(backend, "the quick brown fox")
    assert result.status_code == 200 and result.error_code is None
    assert result.body["choices"][0]["message"]["content"] == "echo: the quick brown fox"
    # The x-request-id header: the fake puts the same id in the body.
    assert result.body["id"] == f"chatcmpl-{result.request_id}"


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_concurrent_requests_each_get_their_own_answer(client: str) -> None:
    with FakeUpstream(latency=0.005, latency_jitter=0.01) as up:
        async with backend_for(up.url, client) as backend:
            results = await asyncio.gather(*(chat(backend, f"line {i}") for i in range(200)))
    replies = [r.body["choices"][0]["message"]["content"] for r in results]
    assert replies == [f"echo: line {i}" for i in range(200)]


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_429_carries_its_retry_after(client: str) -> None:
    with FakeUpstream(rate_limit_rate=1.0, retry_after=0.25) as up:
        async with backend_for(up.url, client) as backend:
            result = await chat(backend)
    assert (result.status_code, result.retry_after, result.congested) == (429, 0.25, True)
    assert result.body["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_a_server_error_is_an_answer_not_a_transport_failure(client: str) -> None:
    with FakeUpstream(error_rate=1.0, error_status=503) as up:
        async with backend_for(up.url, client) as backend:
            result = await chat(backend)
    assert result.status_code == 503 and result.error_code is None
    assert "error" in result.body


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_a_hung_server_times_out_after_the_model_timeout(client: str) -> None:
    with FakeUpstream(hang_rate=1.0) as up:
        async with backend_for(up.url, client, timeout=0.3) as backend:
            started = asyncio.get_running_loop().time()
            result = await chat(backend)
            waited = asyncio.get_running_loop().time() - started
    assert result.error_code == "upstream_timeout"
    assert result.error_message == "The model server did not answer within 0.3 s."
    assert 0.25 <= waited < 2


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_a_reset_connection_is_a_disconnect_and_the_next_request_works(client: str) -> None:
    with FakeUpstream() as up:
        async with backend_for(up.url, client) as backend:
            assert (await chat(backend)).status_code == 200
            up.configure(reset_rate=1.0)
            reset = await chat(backend)
            up.configure(reset_rate=0.0)
            after = await chat(backend)
    assert reset.error_code == "upstream_disconnected" and reset.status_code is None
    assert reset.error_message and "Could not reach" not in reset.error_message
    assert after.status_code == 200


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_nobody_listening_is_unreachable(client: str) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with backend_for(f"http://127.0.0.1:{port}/v1", client) as backend:
        result = await chat(backend)
    assert result.error_code == "upstream_unreachable"
    assert result.error_message and result.error_message.startswith(
        "Could not reach the model server"
    )


# -- against raw servers: the shapes of HTTP/1.1 real servers send


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_the_request_names_path_host_key_and_body(client: str) -> None:
    handler = serve_each(lambda body: answer(b"{}"))
    async with (
        raw_server(handler) as (url, seen),
        backend_for(url, client, api_key="sk-test") as backend,
    ):
        await chat(backend, "exact bytes")
    head, body = seen.requests[0]
    lines = head.decode().split("\r\n")
    host = url.removeprefix("http://").split("/")[0]
    assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
    headers = {
        k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    assert headers["host"] == host
    assert headers["authorization"] == "Bearer sk-test"
    assert headers["content-type"] == "application/json"
    assert orjson.loads(body)["messages"][0]["content"] == "exact bytes"


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_keep_alive_reuses_one_connection(client: str) -> None:
    async with backend_on(serve_each(lambda body: answer(b'{"ok": true}')), client) as (
        backend,
        seen,
    ):
        for _ in range(20):
            assert (await chat(backend)).body == {"ok": True}
    assert (seen.connections, len(seen.requests)) == (1, 20)


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_a_chunked_answer_is_joined(client: str) -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen
    ) -> None:
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in (b'{"text": ', b'"split ', b'in three"}'):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\n\r\n")

    async with backend_on(handler, client) as (backend, seen):
        first, second = await chat(backend), await chat(backend)
    assert first.body == second.body == {"text": "split in three"}
    assert seen.connections == 1


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_an_answer_that_ends_with_the_connection(client: str) -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen
    ) -> None:
        if await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            writer.write(b'{"no": "length"}')
            await writer.drain()

    async with backend_on(handler, client) as (backend, seen):
        results = [await chat(backend) for _ in range(3)]
    assert [r.body for r in results] == [{"no": "length"}] * 3
    assert seen.connections == 3  # a closed connection is never reused


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_a_gzip_answer_is_decoded(client: str) -> None:
    packed = gzip.compress(b'{"packed": true}')
    response = answer(packed, headers=b"Content-Encoding: gzip\r\n")
    async with backend_on(serve_each(lambda body: response), client) as (backend, _):
        result = await chat(backend)
    assert result.body == {"packed": True}


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_an_interim_100_continue_is_skipped(client: str) -> None:
    response = b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b'{"final": 1}')
    async with backend_on(serve_each(lambda body: response), client) as (backend, _):
        result = await chat(backend)
    assert (result.status_code, result.body) == (200, {"final": 1})


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_an_answer_dribbled_a_byte_at_a_time(client: str) -> None:
    response = answer(b'{"slow": "but whole"}', headers=b"X-Request-Id: rid-7\r\n")

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen
    ) -> None:
        while await read_request(reader) is not None:
            for i in range(len(response)):
                writer.write(response[i : i + 1])
                await writer.drain()

    async with backend_on(handler, client) as (backend, _):
        result = await chat(backend)
    assert (result.body, result.request_id) == ({"slow": "but whole"}, "rid-7")


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_a_large_answer(client: str) -> None:
    big = orjson.dumps({"data": "x" * 3_000_000})
    async with backend_on(serve_each(lambda body: answer(big)), client) as (backend, _):
        result = await chat(backend)
    assert len(result.body["data"]) == 3_000_000


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_garbage_is_unreachable_not_a_crash(client: str) -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen
    ) -> None:
        if await read_request(reader) is not None:
            writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.5)

    async with backend_on(handler, client, timeout=5) as (backend, _):
        result = await chat(backend)
    assert result.error_code == "upstream_unreachable"


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_a_non_json_body_is_kept_as_text(client: str) -> None:
    response = answer(b"<html>bad gateway</html>", status=b"502 Bad Gateway")
    async with backend_on(serve_each(lambda body: response), client) as (backend, _):
        result = await chat(backend)
    assert (result.status_code, result.body) == (502, "<html>bad gateway</html>")


# -- the native client's own promises


@on_each_loop
async def test_a_keep_alive_connection_closed_while_idle_is_replaced() -> None:
    """The server's keep-alive timeout fires just as a request is sent: the
    request is sent again on a new connection, once."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen
    ) -> None:
        first_connection = seen.connections == 1
        while (request := await read_request(reader)) is not None:
            seen.requests.append(request)
            if first_connection and len(seen.requests) == 2:
                return  # read the second request, close without a word
            writer.write(answer(b'{"n": %d}' % len(seen.requests)))
            await writer.drain()

    async with backend_on(handler, "native") as (backend, seen):
        first, second = await chat(backend), await chat(backend)
    assert (first.body, second.body) == ({"n": 1}, {"n": 3})
    assert seen.connections == 2


@on_each_loop
async def test_a_connection_that_breaks_mid_answer_is_not_retried() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen
    ) -> None:
        while (request := await read_request(reader)) is not None:
            seen.requests.append(request)
            writer.write(answer(b'{"cut": "off here, no more"}')[:-10])
            await writer.drain()
            return

    async with backend_on(handler, "native") as (backend, seen):
        result = await chat(backend)
    assert result.error_code == "upstream_disconnected"
    assert len(seen.requests) == 1  # the server had started answering: not sent again


@on_each_loop
async def test_a_cancelled_request_closes_its_connection() -> None:
    """A stop's grace period can cut a request off: its connection is closed,
    so the model server can stop generating (vLLM aborts a request whose
    client hung up), and its late answer is never read as another's."""
    hung_up = asyncio.Event()

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen
    ) -> None:
        while (request := await read_request(reader)) is not None:
            seen.requests.append(request)
            if len(seen.requests) == 1:  # never answered: wait for the client to go
                if await reader.read() == b"":
                    hung_up.set()
                return
            writer.write(answer(b'{"fresh": true}'))
            await writer.drain()

    async with backend_on(handler, "native") as (backend, seen):
        slow = asyncio.create_task(chat(backend))
        await asyncio.sleep(0.1)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        await asyncio.wait_for(hung_up.wait(), 2)
        result = await chat(backend)
    assert result.body == {"fresh": True}
    assert seen.connections == 2


@on_each_loop
async def test_https_urls_go_through_aiohttp() -> None:
    model = ModelSettings(
        name="m", base_urls=["https://api.example.com/v1", "http://gpu-1:8000/v1"]
    )
    backend = HttpBackend(model)
    kinds = {url: type(t).__name__ for url, t in backend._transports.items()}
    assert kinds == {
        "https://api.example.com/v1": "AiohttpTransport",
        "http://gpu-1:8000/v1": "NativeTransport",
    }
    await backend.close()


@on_each_loop
async def test_a_cancel_landing_after_the_answer_spares_the_next_request() -> None:
    """A's answer comes, its connection goes back to the pool and B takes
    it; only then does A's cancel land. B's exchange must go on: closing
    the connection under B would send B's request to the server twice."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen
    ) -> None:
        while (request := await read_request(reader)) is not None:
            seen.requests.append(request)
            if request[1] == b"second":  # "first" is answered by the test itself
                writer.write(answer(b'{"second": true}'))
                await writer.drain()

    async with raw_server(handler) as (url, seen):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        origin = Origin("127.0.0.1", port, timeout=5)
        head = b"POST /v1/x HTTP/1.1\r\nHost: test\r\nContent-Length: "
        first = asyncio.create_task(origin.post(head, b"first"))
        for _ in range(500):  # until the server holds it, unanswered
            if seen.requests:
                break
            await asyncio.sleep(0.01)
        (connection,) = origin._open
        gate = asyncio.Event()

        async def second_after_gate() -> Answer:
            await gate.wait()
            return await origin.post(head, b"second")

        second = asyncio.create_task(second_after_gate())
        await asyncio.sleep(0)
        gate.set()  # B runs next...
        connection.data_received(answer(b'{"first": true}'))  # ...then A, with its answer
        first.cancel()  # which lands as a cancel
        answered = await asyncio.wait_for(second, 5)
        with pytest.raises(asyncio.CancelledError):
            await first
        origin.close()
    assert answered.body == b'{"second": true}'
    assert [body for _, body in seen.requests] == [b"first", b"second"]
    assert seen.connections == 1


@on_each_loop
async def test_a_second_answer_to_one_request_retires_the_connection() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen
    ) -> None:
        first_connection = seen.connections == 1
        while (request := await read_request(reader)) is not None:
            seen.requests.append(request)
            writer.write(answer(b'{"n": %d}' % len(seen.requests)))
            if first_connection:
                writer.write(answer(b'{"surplus": true}'))
            await writer.drain()

    async with backend_on(handler, "native") as (backend, seen):
        first, second, third = [await chat(backend) for _ in range(3)]
    assert [first.body, second.body, third.body] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert seen.connections == 2  # the first, spoilt by its surplus, was not reused


def reset(writer: asyncio.StreamWriter) -> None:
    """Drop the connection with a TCP RST, as a crashing server does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@on_each_loop
async def test_a_body_that_ends_with_a_reset_is_not_an_answer() -> None:
    """(aiohttp takes such a body as whole.)"""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen
    ) -> None:
        if await read_request(reader) is not None:
            writer.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"cut": "of')
            await writer.drain()
            await asyncio.sleep(0.05)
            reset(writer)

    async with backend_on(handler, "native") as (backend, _):
        result = await chat(backend)
    assert result.error_code == "upstream_disconnected" and result.status_code is None
    assert result.error_message == (
        "The model server reset the connection after part of its answer"
        " (HTTP 200, 11 bytes of body)."
    )


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_an_http_1_0_server_gets_a_connection_per_request(client: str) -> None:
    response = b'HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\n{"v": 1.0}\n'
    async with backend_on(serve_each(lambda body: response), client) as (backend, seen):
        results = [await chat(backend) for _ in range(3)]
    assert [r.body for r in results] == [{"v": 1.0}] * 3
    assert seen.connections == 3


@pytest.mark.parametrize("client", CLIENTS)
@on_each_loop
async def test_204_is_an_answer_with_an_empty_body(client: str) -> None:
    response = b"HTTP/1.1 204 No Content\r\nContent-Encoding: gzip\r\n\r\n"
    async with backend_on(serve_each(lambda body: response), client) as (backend, seen):
        results = [await chat(backend) for _ in range(2)]
    assert [(r.status_code, r.body) for r in results] == [(204, "")] * 2
    assert seen.connections == 1


@on_each_loop
async def test_switching_protocols_is_unreachable() -> None:
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    async with backend_on(serve_each(lambda body: response), "native") as (backend, _):
        result = await chat(backend)
    assert result.error_code == "upstream_unreachable"
    assert result.error_message and "101" in result.error_message


@on_each_loop
async def test_a_close_after_an_interim_answer_is_not_sent_again() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen
    ) -> None:
        while (request := await read_request(reader)) is not None:
            seen.requests.append(request)
            if len(seen.requests) == 1:
                writer.write(answer(b"{}"))
            else:  # the second request: "100 Continue", then a hang-up
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await writer.drain()
                return
            await writer.drain()

    async with backend_on(handler, "native") as (backend, seen):
        first, second = await chat(backend), await chat(backend)
    assert first.status_code == 200 and second.error_code == "upstream_disconnected"
    assert len(seen.requests) == 2  # the server had begun to answer: not sent again


@on_each_loop
async def test_a_close_long_after_the_request_is_not_sent_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that worked on a request for a while and then hung up may
    have done the work: the client does not send it again on its own (the
    dispatcher decides, counting the attempt)."""
    monkeypatch.setattr(http1, "STALE_WITHIN", 0.2)

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen
    ) -> None:
        while (request := await read_request(reader)) is not None:
            seen.requests.append(request)
            if len(seen.requests) == 2:
                await asyncio.sleep(0.4)
                return  # hang up without a word
            writer.write(answer(b"{}"))
            await writer.drain()

    async with backend_on(handler, "native") as (backend, seen):
        first, second = await chat(backend), await chat(backend)
    assert first.status_code == 200 and second.error_code == "upstream_disconnected"
    assert second.error_message == "The model server closed the connection before answering."
    assert len(seen.requests) == 2


@on_each_loop
async def test_a_model_keeps_no_more_connections_open_than_its_max_concurrency() -> None:
    """A burst spread over replicas opens a connection per request in
    flight; once it is over, the model keeps at most max_concurrency of them
    over all its replicas (each replica's pool kept every one before, and a
    wide model over several replicas ran out of file descriptors)."""
    alive, peak = [0], [0]

    async def counted(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: Seen
    ) -> None:
        alive[0] += 1
        peak[0] = max(peak[0], alive[0])
        try:
            await serve_each(lambda body: answer(b'{"ok": true}'))(reader, writer, seen)
        finally:
            alive[0] -= 1

    async with raw_server(counted) as (first, _), raw_server(counted) as (second, _):
        model = ModelSettings(
            name="m", base_urls=[first, second], max_concurrency=2, http_client="native"
        )
        backend = HttpBackend(model)
        try:
            answers = await asyncio.gather(*(chat(backend) for _ in range(12)))
            assert all(a.body == {"ok": True} for a in answers)
            for _ in range(100):
                if alive[0] <= 2:
                    break
                await asyncio.sleep(0.02)
            assert peak[0] > 2, "the burst never opened more connections than are kept"
            assert alive[0] <= 2
            assert (await chat(backend)).body == {"ok": True}  # and the kept ones still serve
        finally:
            await backend.close()


def test_a_worker_keeps_connections_to_its_share_of_max_concurrency(loop: str) -> None:
    """With three workers each keeps at most a third of max_concurrency
    open; alone again, all of it. (Three wide workers that each kept the
    whole of it ran out of file descriptors.)"""
    model = ServedModel.build(
        ModelSettings(
            name="m",
            base_urls=["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"],
            max_concurrency=300,
            adaptive=False,
        )
    )
    connections = model.backend.connections  # type: ignore[attr-defined]
    assert connections.keep == 300
    model.share_between(3)
    assert connections.keep == 100 == model.limiter.limit
    model.share_between(1)
    assert connections.keep == 300


@contextlib.contextmanager
def upstream_in_a_process(latency: float) -> Iterator[str]:
    """The fake upstream in its own process: its connections must not count
    against this process's open files."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "overnight.testing.fake_upstream", "--port", "0"]
    command += ["--latency", str(latency)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            yield proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        finally:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("client", CLIENTS)
def test_a_worker_out_of_file_descriptors_sends_every_request_in_the_end(
    loop: str, client: str
) -> None:
    """40 slots, and descriptors for about 10 connections: the connects past
    them fail with EMFILE. Each such request waits and goes again, without
    spending its one attempt, and the model is held to what it could open.
    (Each was a failed line, `upstream_unreachable`, before: three wide
    workers on PostgreSQL lost thousands of lines so.)"""
    with upstream_in_a_process(latency=0.2) as url:
        settings = ModelSettings(
            name="m",
            base_url=url,
            http_client=client,  # type: ignore[arg-type]
            max_concurrency=40,
            adaptive=False,
            max_attempts=1,
        )

        async def run() -> tuple[list[UpstreamResult], int]:
            model = ServedModel.build(settings)
            stopped = asyncio.Event()

            async def one() -> UpstreamResult:
                await model.limiter.acquire()
                return await send_with_retries(model, UpstreamRequest(CHAT_PATH, CHAT), stopped)

            try:
                assert (await one()).ok  # the client is set up before files run short
                soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_now() + 10, hard))
                try:
                    results = await asyncio.gather(*(one() for _ in range(40)))
                finally:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
                return results, model.limiter.limit
            finally:
                await model.backend.close()

        results, limit = (uvloop.run if loop == "uvloop" else asyncio.run)(run())
    assert [(r.status_code, r.attempts) for r in results] == [(200, 1)] * 40
    assert limit < 40  # held to the connections it could open


def test_models_are_held_within_the_connections_a_worker_can_open(loop: str) -> None:
    """Slots past what the process may open only made connects fail: with
    room for 3,000 connections, models of 4,000 and 2,000 slots get 2,000
    and 1,000, in proportion; with room for all, each keeps its share."""
    models = Models(
        [
            ModelSettings(name=name, base_url="http://127.0.0.1:9/v1", max_concurrency=slots)
            for name, slots in (("wide", 4000), ("narrow", 2000))
        ]
    )
    wide, narrow = models.get("wide"), models.get("narrow")
    assert wide is not None and narrow is not None
    models.fit_open_files(3000)
    models.share_between(1)
    assert (wide.adaptive.maximum, narrow.adaptive.maximum) == (2000, 1000)  # type: ignore[union-attr]
    assert wide.backend.connections.keep == 2000  # type: ignore[attr-defined]
    models.fit_open_files(10_000)
    assert (wide.adaptive.maximum, narrow.adaptive.maximum) == (4000, 2000)  # type: ignore[union-attr]
