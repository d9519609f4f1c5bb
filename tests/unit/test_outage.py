"""A model server that stops listening for a while (a restart): its
requests wait for it and go again, instead of failing their lines; past
`outage_patience`, or with another replica answering, a refusal counts as
an attempt as before. Real sockets on loopback: the probes connect."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from overnight.backends import UpstreamRequest, UpstreamResult
from overnight.backends.base import is_refused
from overnight.backends.http import HttpBackend
from overnight.runner import outage
from overnight.runner.dispatch import send_with_retries
from overnight.runner.limiter import Limiter
from overnight.runner.models import ServedModel
from overnight.runner.outage import Outage
from overnight.settings import ModelSettings

from helpers import free_port

REQUEST = UpstreamRequest("/v1/chat/completions", {"model": "m", "messages": []})


@pytest.fixture(autouse=True)
def quick_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outage, "FIRST_PROBE", 0.05)
    monkeypatch.setattr(outage, "LAST_PROBE", 0.1)


async def answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A model server in a few lines: reads one request, answers 200."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)
    body = b'{"choices": []}'
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )
    await writer.drain()
    writer.close()


def served(port: int, **settings: Any) -> ServedModel:
    config = ModelSettings(
        name="m", base_url=f"http://127.0.0.1:{port}/v1", retry_backoff=0.01, **settings
    )
    return ServedModel(config, HttpBackend(config), Limiter(4), None)


async def send(model: ServedModel, stopped: asyncio.Event | None = None) -> UpstreamResult:
    assert model.limiter.try_acquire()
    try:
        return await send_with_retries(model, REQUEST, stopped or asyncio.Event())
    finally:
        await model.backend.close()
        await model.outage.close()


async def test_a_request_waits_out_a_restart_and_is_sent_once_it_is_back() -> None:
    port = free_port()
    model = served(port, max_attempts=2)

    async def restart_later() -> asyncio.Server:
        await asyncio.sleep(0.5)
        return await asyncio.start_server(answer_ok, "127.0.0.1", port)

    comeback = asyncio.create_task(restart_later())
    started = time.monotonic()
    result = await send(model)
    server = await comeback
    server.close()
    await server.wait_closed()
    assert result.status_code == 200
    assert result.attempts == 1  # the refused connects were no attempt
    assert time.monotonic() - started >= 0.45
    assert model.limiter.in_flight == 0


async def test_past_its_patience_a_refusal_fails_the_line_as_before() -> None:
    model = served(free_port(), max_attempts=2, outage_patience=0.3)
    started = time.monotonic()
    result = await send(model)
    assert (result.error_code, result.refused, result.attempts) == (
        "upstream_unreachable",
        True,
        2,
    )
    assert 0.25 <= time.monotonic() - started < 5
    assert model.outage.given_up


async def test_no_patience_means_no_wait() -> None:
    model = served(free_port(), max_attempts=3, outage_patience=0)
    started = time.monotonic()
    result = await send(model)
    assert (result.error_code, result.attempts) == ("upstream_unreachable", 3)
    assert time.monotonic() - started < 1


async def test_a_stop_ends_the_wait() -> None:
    model = served(free_port(), max_attempts=2)
    stopped = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stopped.set)
    started = time.monotonic()
    result = await send(model, stopped)
    assert result.error_code == "upstream_unreachable"
    assert time.monotonic() - started < 2


async def test_one_refusing_replica_while_another_answers_is_an_attempt() -> None:
    """The refusal is that replica's, not an outage: counted, so the usual
    retries and replica ejection deal with it (no wait for it)."""
    listening = await asyncio.start_server(answer_ok, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        watch = Outage(
            "m", [f"http://127.0.0.1:{free_port()}/v1", f"http://127.0.0.1:{port}/v1"], 60
        )
        assert await watch.ride_out(asyncio.Event()) is False
        assert not watch.given_up
    finally:
        listening.close()
        await listening.wait_closed()


async def test_many_waiting_requests_share_one_watcher() -> None:
    probes: list[str] = []
    up = asyncio.Event()

    async def probe(url: str) -> str | None:
        probes.append(url)
        return None if up.is_set() else "connection refused"

    watch = Outage("m", ["http://127.0.0.1:1/v1"], 60, probe=probe)
    waiting = [asyncio.create_task(watch.ride_out(asyncio.Event())) for _ in range(200)]
    await asyncio.sleep(0.2)
    up.set()
    assert await asyncio.gather(*waiting) == [True] * 200
    assert len(probes) < 20  # one watcher probing, not one per request


async def test_an_answer_after_giving_up_restores_the_patience() -> None:
    watch = Outage("m", ["http://127.0.0.1:1/v1"], 0.1, probe=lambda url: _refused())
    assert await watch.ride_out(asyncio.Event()) is False
    assert watch.given_up
    assert await watch.ride_out(asyncio.Event()) is False  # at once now
    watch.answered()
    assert not watch.given_up


async def _refused() -> str:
    return "connection refused"


async def test_patience_counts_from_the_first_refusal_across_flaps() -> None:
    """A server in a crash loop accepts a probe now and then and refuses
    again: each flap starts a new wait, but the patience is not renewed
    until the model answers a request."""
    flaps = itertools.cycle(["connection refused", None])  # down, then up again

    async def probe(url: str) -> str | None:
        return next(flaps)

    watch = Outage("m", ["http://127.0.0.1:1/v1"], 0.6, probe=probe)
    started = time.monotonic()
    outcomes = []
    while not watch.given_up:
        outcomes.append(await watch.ride_out(asyncio.Event()))
        assert time.monotonic() - started < 3, outcomes
    assert True in outcomes  # it came back in between...
    assert time.monotonic() - started < 1.5  # ...and yet gave up on time


def test_a_name_whose_addresses_all_refused_is_a_refusal() -> None:
    """`localhost` is ::1 and 127.0.0.1: Python 3.11 then raises one
    OSError without an errno, the addresses' errors in its message."""
    both = OSError(
        "Multiple exceptions: [Errno 111] Connect call failed ('::1', 9, 0, 0), "
        "[Errno 111] Connect call failed ('127.0.0.1', 9)"
    )
    mixed = OSError(
        "Multiple exceptions: [Errno 111] Connect call failed ('::1', 9, 0, 0), "
        "[Errno 101] Network is unreachable"
    )
    assert is_refused(both)
    assert not is_refused(mixed)
    assert is_refused(ConnectionRefusedError(111, "Connection refused"))
    assert not is_refused(TimeoutError())


async def test_a_refused_localhost_is_a_refusal() -> None:
    """Through the native client, by name: whatever `localhost` resolves
    to here, a closed port reads as refused."""
    port = free_port()
    config = ModelSettings(name="m", base_url=f"http://localhost:{port}/v1")
    backend = HttpBackend(config)
    try:
        result = await backend.send(REQUEST)
    finally:
        await backend.close()
    assert (result.error_code, result.refused) == ("upstream_unreachable", True)
