"""Per-key rate limits on a real server: a client hammering the API gets
429s with Retry-After, in its dialect's error shape, while another key's
client, polling at an ordinary pace, is never refused."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
import together

from overnight.api.app import create_app
from overnight.settings import Settings
from overnight.testing.fake_upstream import FakeUpstream

from helpers import ServerProcess, fake_model, keyed_server

HAMMER, CALM = "key-hammer", "key-calm"
TENANTS = [{"name": "hammer", "api_keys": [HAMMER]}, {"name": "calm", "api_keys": [CALM]}]
RATE, BURST = 20, 20


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[str]:
    server: ServerProcess = keyed_server(
        tmp_path_factory.mktemp("rate"),
        [fake_model(upstream.url)],
        TENANTS,
        rate_limit_per_second=RATE,
        rate_limit_burst=BURST,
        worker_processes=0,  # the API's limits are the point, not the worker's process
    )
    yield server.url
    server.stop()


def hammer(url: str, requests: int, threads: int = 4) -> Counter[int]:
    """`requests` GETs with the hammering key, as fast as `threads` allow."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def run(n: int) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {HAMMER}"}) as client:
            for _ in range(n):
                response = client.get(f"{url}/v1/models")
                with lock:
                    statuses[response.status_code] += 1

    workers = [threading.Thread(target=run, args=(requests // threads,)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return statuses


def test_a_hammering_key_is_refused_while_another_key_is_served(limited: str) -> None:
    calm_statuses: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        # max_retries=0: a 429 would surface here instead of being retried.
        with openai.OpenAI(base_url=f"{limited}/v1", api_key=CALM, max_retries=0) as sdk:
            while not stop.is_set():
                calm_statuses.append(sdk.batches.with_raw_response.list(limit=1).status_code)
                time.sleep(0.1)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        statuses = hammer(limited, 400)
    finally:
        stop.set()
        poller.join()
    assert statuses[429] >= 100, statuses
    assert statuses[200] >= BURST
    assert set(statuses) == {200, 429}
    assert calm_statuses and set(calm_statuses) == {200}


def until_refused(send: Callable[[], httpx.Response], most: int = 1000) -> list[httpx.Response]:
    """Send until a 429 comes (the bucket holds BURST, so it comes after
    about that many on a machine answering faster than RATE a second; on a
    loaded one it takes a few more), at most `most` times."""
    answers = []
    for _ in range(most):
        answers.append(send())
        if answers[-1].status_code == 429:
            break
    return answers


def test_the_429_says_when_to_retry_in_each_dialect(limited: str) -> None:
    headers = {"Authorization": f"Bearer {HAMMER}"}
    with httpx.Client(headers=headers) as client:
        for path in ("/v1/batches", "/together/v1/batches"):
            answers = until_refused(lambda path=path: client.get(f"{limited}{path}"))
            refused = [r for r in answers if r.status_code == 429]
            assert refused, path
            error = refused[0].json()["error"]
            assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
            assert int(refused[0].headers["retry-after"]) >= 1
            assert 0 < int(refused[0].headers["retry-after-ms"]) <= 1000 // RATE + 1
            assert "x-should-retry" not in refused[0].headers
            time.sleep(BURST / RATE)  # refill for the next dialect


def test_the_sdks_wait_and_retry_on_their_own(limited: str) -> None:
    with (
        openai.OpenAI(base_url=f"{limited}/v1", api_key=HAMMER, max_retries=0) as strict,
        pytest.raises(openai.RateLimitError),
    ):
        for _ in range(1000):  # about BURST, a few more on a loaded machine
            strict.models.list()
    with openai.OpenAI(base_url=f"{limited}/v1", api_key=HAMMER, max_retries=5) as patient:
        for _ in range(BURST + 5):
            patient.models.list()
    time.sleep(BURST / RATE)
    with together.Together(base_url=f"{limited}/together", api_key=HAMMER, max_retries=5) as tsdk:
        for _ in range(BURST + 5):
            tsdk.batches.list()


def test_health_and_unknown_keys_are_not_counted(limited: str) -> None:
    with httpx.Client() as client:
        assert {client.get(f"{limited}/health").status_code for _ in range(BURST * 2)} == {200}
        wrong = {
            client.get(f"{limited}/v1/models", headers={"Authorization": "Bearer x"}).status_code
            for _ in range(BURST * 2)
        }
        assert wrong == {401}


async def test_single_user_local_mode_has_no_limit(tmp_path: Path) -> None:
    """With no keys configured there is one user and no one to protect:
    a script polling as fast as it can is never refused."""
    app = create_app(
        Settings(data_dir=tmp_path, worker=False, rate_limit_per_second=5, rate_limit_burst=5)
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        answers = Counter([(await client.get("/v1/batches")).status_code for _ in range(50)])
    assert answers == Counter({200: 50})
