"""The fake upstream answers like an OpenAI server and misbehaves on demand.

Everything goes through real HTTP, as overnight's backends will talk to it.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from overnight.testing.fake_upstream import FakeUpstream, Knobs

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, **kwargs: Any
) -> tuple[int, Mapping[str, str], Any]:
    """POST `body` as JSON: (status, headers, parsed answer); headers ignore case."""
    async with http.post(url, json=body, **kwargs) as resp:
        return resp.status, resp.headers.copy(), await resp.json()


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


def assert_error_body(body: Any) -> None:
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert error["param"] is None or isinstance(error["param"], str)
    assert "code" in error


# ---- shapes -------------------------------------------------------------------------


async def test_chat_completion_shape(fake: FakeUpstream, http: aiohttp.ClientSession) -> None:
    body = {
        "model": "some-model",
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "one two"}, {"type": "text", "text": "three"}],
            },
        ],
    }
    status, headers, data = await post(http, f"{fake.url}/chat/completions", body)
    assert status == 200
    assert headers["x-request-id"]
    assert headers["Content-Type"].startswith("application/json")
    assert data["id"].startswith("chatcmpl-")
    assert data["object"] == "chat.completion"
    assert isinstance(data["created"], int)
    assert data["model"] == "some-model"
    (choice,) = data["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": "echo: one two three"}
    # 2 words of system prompt + 3 of user prompt; reply "echo: one two three" is 4.
    assert data["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


async def test_empty_prompt_still_counts_one_token(
    fake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": ""}]}
    _, _, data = await post(http, f"{fake.url}/chat/completions", body)
    assert data["choices"][0]["message"]["content"] == "echo: "
    assert data["usage"]["prompt_tokens"] == 1
    assert data["usage"]["total_tokens"] == 1 + data["usage"]["completion_tokens"]


async def test_completion_shape(fake: FakeUpstream, http: aiohttp.ClientSession) -> None:
    body = {"model": "m", "prompt": "say it back"}
    status, headers, data = await post(http, f"{fake.url}/completions", body)
    assert status == 200
    assert headers["x-request-id"]
    assert data["id"].startswith("cmpl-")
    assert data["object"] == "text_completion"
    assert data["model"] == "m"
    (choice,) = data["choices"]
    assert choice["index"] == 0
    assert choice["text"] == "echo: say it back"
    assert choice["finish_reason"] == "stop"
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


async def test_embeddings_shape_and_determinism(
    fake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    url = f"{fake.url}/embeddings"
    status, headers, data = await post(http, url, {"model": "e", "input": ["a b", "c"]})
    assert status == 200
    assert headers["x-request-id"]
    assert data["object"] == "list"
    assert data["model"] == "e"
    assert [item["index"] for item in data["data"]] == [0, 1]
    for item in data["data"]:
        assert item["object"] == "embedding"
        assert len(item["embedding"]) == 8
        assert all(isinstance(x, float) and -1.0 <= x <= 1.0 for x in item["embedding"])
    assert data["data"][0]["embedding"] != data["data"][1]["embedding"]
    assert data["usage"] == {"prompt_tokens": 3, "total_tokens": 3}

    _, _, again = await post(http, url, {"model": "e", "input": "a b"})
    assert again["data"][0]["embedding"] == data["data"][0]["embedding"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat/completions", b"{not json"),
        ("/chat/completions", b"[1, 2]"),
        ("/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}]}'),
        ("/chat/completions", b'{"model": "m"}'),
        ("/completions", b'{"model": "m"}'),
        ("/embeddings", b'{"input": "x"}'),
    ],
)
async def test_malformed_body_is_400(
    fake: FakeUpstream, http: aiohttp.ClientSession, path: str, body: bytes
) -> None:
    async with http.post(f"{fake.url}{path}", data=body) as resp:
        assert resp.status == 400
        assert resp.headers["x-request-id"]
        data = await resp.json()
    assert_error_body(data)
    assert data["error"]["type"] == "invalid_request_error"


# ---- faults ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 429, 500, 503])
async def test_directive_status(
    fake: FakeUpstream, http: aiohttp.ClientSession, status: int
) -> None:
    body = {**CHAT, "x_fake": {"status": status}}
    got, headers, data = await post(http, f"{fake.url}/chat/completions", body)
    assert got == status
    assert headers["x-request-id"]
    assert_error_body(data)


async def test_directive_status_200_overrides_error_rate(
    fake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    fake.configure(error_rate=1.0)
    status, _, _ = await post(
        http, f"{fake.url}/chat/completions", {**CHAT, "x_fake": {"status": 200}}
    )
    assert status == 200


async def test_error_rate_one_fails_everything(
    fake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    # Through the HTTP control endpoint, as a benchmark would.
    async with http.post(
        f"{fake.root}/_control", json={"error_rate": 1.0, "error_status": 503}
    ) as r:
        assert r.status == 200
        assert (await r.json())["error_rate"] == 1.0
    statuses = []
    for _ in range(5):
        status, _, data = await post(http, f"{fake.url}/chat/completions", CHAT)
        statuses.append(status)
        assert_error_body(data)
        assert data["error"]["type"] == "server_error"
    assert statuses == [503] * 5
    assert fake.stats()["by_status"] == {"503": 5}


async def test_rate_limit_has_retry_after(fake: FakeUpstream, http: aiohttp.ClientSession) -> None:
    fake.configure(rate_limit_rate=1.0, retry_after=2)
    status, headers, data = await post(
        http, f"{fake.url}/completions", {"model": "m", "prompt": "x"}
    )
    assert status == 429
    assert headers["Retry-After"] == "2"
    assert_error_body(data)


async def test_reset_drops_the_connection(fake: FakeUpstream, http: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, f"{fake.url}/chat/completions", {**CHAT, "x_fake": {"reset": True}})
    fake.configure(reset_rate=1.0)
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, f"{fake.url}/embeddings", {"model": "m", "input": "x"})
    assert fake.stats()["resets"] == 2
    # The server itself is fine afterwards.
    fake.configure(reset_rate=0.0)
    status, _, _ = await post(http, f"{fake.url}/chat/completions", CHAT)
    assert status == 200


async def test_hang_times_out_the_client(fake: FakeUpstream, http: aiohttp.ClientSession) -> None:
    timeout = aiohttp.ClientTimeout(total=0.3)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await post(
            http,
            f"{fake.url}/chat/completions",
            {**CHAT, "x_fake": {"hang": True}},
            timeout=timeout,
        )
    assert time.monotonic() - started >= 0.25
    fake.configure(hang_rate=1.0)
    with pytest.raises(TimeoutError):
        await post(http, f"{fake.url}/chat/completions", CHAT, timeout=timeout)
    stats = fake.stats()
    assert stats["hangs"] == 2
    assert stats["by_status"] == {}
    # The client left, so the hanging handlers are cancelled and stop being in flight.
    await wait_until(lambda: fake.stats()["in_flight"] == 0)


async def test_close_ends_pending_hangs(http: aiohttp.ClientSession) -> None:
    threads_before = threading.active_count()
    up = FakeUpstream().start()
    pending = asyncio.create_task(
        post(http, f"{up.url}/chat/completions", {**CHAT, "x_fake": {"hang": True}})
    )
    await wait_until(lambda: up.stats()["hangs"] == 1)
    started = time.monotonic()
    up.close()
    assert time.monotonic() - started < 2
    with pytest.raises(aiohttp.ClientConnectionError):
        await pending
    assert threading.active_count() == threads_before
    up.close()  # idempotent


async def test_seed_makes_faults_reproducible(
    fake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    async def run() -> list[int]:
        return [(await post(http, f"{fake.url}/chat/completions", CHAT))[0] for _ in range(20)]

    fake.configure(seed=7, error_rate=0.5)
    first = await run()
    fake.configure(seed=7)
    assert await run() == first
    assert set(first) == {200, 500}


# ---- latency and stats ----------------------------------------------------------


async def test_latency_is_honoured(fake: FakeUpstream, http: aiohttp.ClientSession) -> None:
    fake.configure(latency=0.1)
    started = time.monotonic()
    status, _, _ = await post(http, f"{fake.url}/chat/completions", CHAT)
    assert status == 200
    assert time.monotonic() - started >= 0.09

    fake.configure(latency=0.0)
    started = time.monotonic()
    await post(http, f"{fake.url}/chat/completions", {**CHAT, "x_fake": {"latency": 0.1}})
    assert time.monotonic() - started >= 0.09


async def test_stats_count_requests_tags_and_concurrency(
    fake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    fake.configure(latency=0.2)
    bodies = [{**CHAT, "x_fake": {"tag": "a" if i < 7 else "b"}} for i in range(10)]
    results = await asyncio.gather(
        *(post(http, f"{fake.url}/chat/completions", body) for body in bodies)
    )
    assert [status for status, _, _ in results] == [200] * 10
    assert len({headers["x-request-id"] for _, headers, _ in results}) == 10

    async with http.get(f"{fake.root}/_stats") as resp:
        stats = await resp.json()
    assert stats["requests"] == 10
    assert stats["in_flight"] == 0
    assert stats["max_in_flight"] >= 5
    assert stats["by_status"] == {"200": 10}
    assert stats["by_tag"] == {"a": 7, "b": 3}
    assert stats["resets"] == 0 and stats["hangs"] == 0
    assert fake.stats() == stats

    async with http.post(f"{fake.root}/_stats/reset") as resp:
        assert resp.status == 200
    assert fake.stats()["requests"] == 0
    await post(http, f"{fake.url}/chat/completions", {**CHAT, "x_fake": {"status": 502}})
    fake.reset_stats()
    assert fake.stats() == {
        "requests": 0,
        "in_flight": 0,
        "max_in_flight": 0,
        "by_status": {},
        "resets": 0,
        "hangs": 0,
        "by_tag": {},
        "prefix_hits": 0,
        "prefix_misses": 0,
    }


async def test_control_endpoint(fake: FakeUpstream, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{fake.root}/_control") as resp:
        assert await resp.json() == Knobs().to_dict()
    async with http.post(f"{fake.root}/_control", json={"latency": 0.01, "seed": 3}) as resp:
        knobs = await resp.json()
    assert knobs["latency"] == 0.01 and knobs["seed"] == 3
    assert fake.knobs.latency == 0.01
    for bad in ({"no_such_knob": 1}, {"error_rate": 2}, {"latency": "slow"}, [1]):
        async with http.post(f"{fake.root}/_control", json=bad) as resp:
            assert resp.status == 400
            assert_error_body(await resp.json())
    with pytest.raises(ValueError):
        fake.configure(error_rate=-1)
    with pytest.raises(ValueError):
        FakeUpstream(hang_rate=5)


async def test_prefix_cache_is_an_lru_of_prompt_prefixes(
    fake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    fake.configure(prefix_cache=2, prefix_miss_latency=0.3)

    def chat(system: str, user: str = "q") -> dict[str, Any]:
        turns = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return {"model": "m", "messages": turns}

    async def cache_of(body: dict[str, Any]) -> tuple[str | None, float]:
        started = time.monotonic()
        status, headers, _ = await post(http, f"{fake.url}/chat/completions", body)
        assert status == 200
        return headers.get("x-prefix-cache"), time.monotonic() - started

    assert (await cache_of(chat("A", "one")))[0] == "miss"
    header, seconds = await cache_of(chat("A", "two"))  # another question, same prefix
    assert header == "hit" and seconds < 0.3
    assert (await cache_of(chat("B")))[0] == "miss"
    assert (await cache_of(chat("C")))[0] == "miss"  # evicts A, the least recent
    header, seconds = await cache_of(chat("A"))
    assert header == "miss" and seconds >= 0.3
    assert (await cache_of(CHAT))[0] is None  # nothing before the last turn
    stats = fake.stats()
    assert (stats["prefix_hits"], stats["prefix_misses"]) == (1, 4)
    fake.reset_stats()  # empties the cache too
    assert (await cache_of(chat("A")))[0] == "miss"
    with pytest.raises(ValueError):
        fake.configure(prefix_cache=-1)


# ---- command line ---------------------------------------------------------------


def test_command_line_serves_until_sigterm() -> None:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "overnight.testing.fake_upstream", "--port", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 15)
            assert ready, "the fake upstream did not announce itself"
            line = proc.stdout.readline().strip()
            prefix = "fake upstream listening on "
            assert line.startswith(prefix), line
            url = line.removeprefix(prefix)
            assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")

            # No proxies: the environment's must not catch a loopback request.
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            request = urllib.request.Request(
                f"{url}/chat/completions",
                data=json.dumps(CHAT).encode(),
                headers={"Content-Type": "application/json"},
            )
            with opener.open(request, timeout=10) as resp:
                assert resp.status == 200
                assert resp.headers["x-request-id"]
                assert json.load(resp)["choices"][0]["message"]["content"] == "echo: hello there"

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
