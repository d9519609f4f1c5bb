"""Retrying one request: what is retried, how long it waits, when it stops."""

from __future__ import annotations

import asyncio
import time

from overnight.backends import UpstreamRequest, UpstreamResult
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
