"""Retrying one request: what is retried, how long it waits, when it stops."""

from __future__ import annotations

import asyncio
import time

from overnight.backends import UpstreamRequest, UpstreamResult
from overnight.backends import base as backends_base
from overnight.runner.dispatch import send_with_retries
from overnight.runner.limiter import Limiter
from overnight.runner.models import ServedModel
from overnight.settings import ModelSettings


class ScriptedBackend:
    """Answers from a script, one entry per attempt."""

    def __init__(self, *answers: UpstreamResult) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def send(self, request: UpstreamRequest) -> UpstreamResult:
        self.calls += 1
        return self.answers.pop(0)


def model(backend: ScriptedBackend, **settings: object) -> ServedModel:
    options: dict[str, object] = {"retry_backoff": 0.001, "max_retry_delay": 1, **settings}
    config = ModelSettings(name="m", base_url="http://x/v1", **options)  # type: ignore[arg-type]
    return ServedModel(config, backend, Limiter(4), None)


REQUEST = UpstreamRequest("/v1/chat/completions", {"model": "m"})


async def send(served: ServedModel, stopped: asyncio.Event | None = None) -> UpstreamResult:
    assert served.limiter.try_acquire()
    result = await send_with_retries(served, REQUEST, stopped or asyncio.Event())
    assert served.limiter.in_flight == 0  # every slot given back
    return result


async def test_5xx_429_and_no_answer_are_retried_until_an_answer() -> None:
    backend = ScriptedBackend(
        UpstreamResult(503, {}),
        UpstreamResult(429, {}),
        UpstreamResult(None, error_code="upstream_unreachable"),
        UpstreamResult(200, {"ok": True}),
    )
    result = await send(model(backend, max_attempts=5))
    assert (result.status_code, result.attempts, backend.calls) == (200, 4, 4)


async def test_client_errors_are_not_retried() -> None:
    backend = ScriptedBackend(UpstreamResult(400, {"error": {}}))
    result = await send(model(backend))
    assert (result.status_code, backend.calls) == (400, 1)


async def test_the_last_answer_is_kept_when_attempts_run_out() -> None:
    backend = ScriptedBackend(UpstreamResult(500, {"n": 1}), UpstreamResult(502, {"n": 2}))
    result = await send(model(backend, max_attempts=2))
    assert (result.status_code, result.body, result.attempts) == (502, {"n": 2}, 2)


async def test_retry_after_is_honoured() -> None:
    backend = ScriptedBackend(UpstreamResult(429, {}, retry_after=0.3), UpstreamResult(200, {}))
    started = time.monotonic()
    result = await send(model(backend))
    assert result.status_code == 200
    assert time.monotonic() - started >= 0.29


async def test_a_stop_ends_the_retrying() -> None:
    backend = ScriptedBackend(UpstreamResult(429, {}, retry_after=30), UpstreamResult(200, {}))
    stopped = asyncio.Event()
    task = asyncio.create_task(send(model(backend, max_retry_delay=60), stopped))
    await asyncio.sleep(0.05)
    stopped.set()
    result = await asyncio.wait_for(task, 2)
    assert (result.status_code, backend.calls) == (429, 1)


OUT_OF_FILES = UpstreamResult(None, error_code=backends_base.OUT_OF_FILES)


async def test_no_file_descriptor_to_connect_with_is_waited_out_not_an_attempt() -> None:
    """A worker out of file descriptors could not send the request: the line
    must not fail for it (it was a line's `upstream_unreachable` before),
    nor spend its attempts; the model is held to what it had in flight."""
    backend = ScriptedBackend(OUT_OF_FILES, OUT_OF_FILES, UpstreamResult(200, {"ok": True}))
    served = model(backend, max_attempts=1)
    assert served.limiter.try_acquire()  # another request, in flight meanwhile
    task = asyncio.create_task(send(served))
    await asyncio.sleep(0.2)
    assert not task.done()  # waiting for the other one to give its slot back
    assert served.limiter.limit == 1  # what it could hold open: the other request
    served.limiter.release()
    result = await asyncio.wait_for(task, 2)
    assert (result.status_code, result.attempts, backend.calls) == (200, 1, 3)
    assert not served.faults.counts  # no fault of the server's was seen


async def test_a_stop_ends_the_wait_for_a_file_descriptor() -> None:
    backend = ScriptedBackend(*[OUT_OF_FILES] * 1000)
    served = model(backend)
    stopped = asyncio.Event()
    task = asyncio.create_task(send(served, stopped))
    await asyncio.sleep(0.2)
    stopped.set()
    result = await asyncio.wait_for(task, 2)
    assert result.out_of_files  # which the chunk records as a line stopped
