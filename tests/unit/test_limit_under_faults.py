"""The adaptive limit on the live path, against a model server on a virtual
clock: requests go through `send_with_retries` and `ServedModel`, as the
executor sends them, while a seeded server decides each attempt's fate and
when its answer lands. Hanging requests all time out `timeout` seconds after
they went out, so timeouts land in bursts, as they do against a real server;
no test here waits on the wall clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import statistics
import types
from collections.abc import Iterator

import pytest

from overnight.backends import UpstreamRequest, UpstreamResult
from overnight.runner import dispatch
from overnight.runner.limiter import AdaptiveLimit, Limiter
from overnight.runner.models import ServedModel
from overnight.settings import ModelSettings

REQUEST = UpstreamRequest("/v1/chat/completions", {"model": "m"})


class VirtualServer:
    """Each attempt draws one fate: 5% each of a 500, a 429, a reset and a
    hang (answered with a timeout `timeout` seconds later), the rest a 200;
    answers take 10-40 ms of virtual time."""

    def __init__(self, seed: int, *, timeout: float, fault_rate: float = 0.05) -> None:
        self.now = 0.0
        self.timeout = timeout
        self.fault_rate = fault_rate
        self._rng = random.Random(seed)
        self._landing: list[tuple[float, int, asyncio.Future[UpstreamResult], UpstreamResult]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self.now

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def send(self, request: UpstreamRequest) -> UpstreamResult:
        latency = 0.01 + self._rng.uniform(0, 0.03)
        draw, p = self._rng.random(), self.fault_rate
        if draw < p:
            result = UpstreamResult(500, {})
        elif draw < 2 * p:
            result = UpstreamResult(429, {}, retry_after=0.05)
        elif draw < 3 * p:
            result = UpstreamResult(None, error_code="upstream_disconnected")
        elif draw < 4 * p:
            latency = self.timeout
            result = UpstreamResult(None, error_code="upstream_timeout")
        else:
            result = UpstreamResult(200, {})
        answer: asyncio.Future[UpstreamResult] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._landing, (self.now + latency, next(self._order), answer, result))
        return await answer

    async def land_next(self) -> None:
        """Let every sender reach its `send`, then deliver the next answer."""
        for _ in range(8):
            await asyncio.sleep(0)
        at, _, answer, result = heapq.heappop(self._landing)
        self.now = at
        answer.set_result(result)


def served_model(server: VirtualServer) -> ServedModel:
    """A model as `ServedModel.build` makes it, sending to `server`. One
    attempt per request: a retry is one more request to the limiter, and
    its backoff would wait on the wall clock."""
    settings = ModelSettings(
        name="m", base_url="http://x/v1", max_concurrency=16, initial_concurrency=16, max_attempts=1
    )
    limiter = Limiter(settings.starting_concurrency)
    return ServedModel(settings, server, limiter, AdaptiveLimit(limiter, maximum=16))


def limit_path(seed: int, *, timeout: float, seconds: float) -> Iterator[tuple[float, int]]:
    """(virtual time, limit) after each answer, over `seconds` of a batch
    that always has more lines waiting than the model has slots."""
    server = VirtualServer(seed, timeout=timeout)
    model = served_model(server)
    path: list[tuple[float, int]] = []

    async def lane(stopped: asyncio.Event) -> None:
        while not stopped.is_set():
            await model.limiter.acquire()
            await dispatch.send_with_retries(model, REQUEST, stopped)

    async def run() -> None:
        stopped = asyncio.Event()
        lanes = [asyncio.ensure_future(lane(stopped)) for _ in range(64)]
        while server.now < seconds:
            await server.land_next()
            path.append((server.now, model.limiter.limit))
        stopped.set()
        for task in lanes:
            task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dispatch, "time", types.SimpleNamespace(monotonic=server.monotonic))
        asyncio.run(run())
    return iter(path)


@pytest.mark.parametrize("seed", range(4))
def test_a_20_percent_fault_mix_with_hangs_does_not_collapse_the_limit(seed: int) -> None:
    path = list(limit_path(seed, timeout=5.0, seconds=60.0))
    limits = [limit for _, limit in path]
    settled = [limit for at, limit in path if at >= 10.0]
    assert min(limits) >= 8, limits[::25]
    assert statistics.median(settled) >= 12, settled[::25]
