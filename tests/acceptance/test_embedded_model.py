"""The embedded default: a real (small) model, no model server, no config
(so SQLite and a local data directory, the defaults, only)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import openai
import psutil
import pytest

from backends import Backend
from helpers import (
    ServerProcess,
    jsonl,
    read_jsonl,
    wait_for_batch,
    wait_for_message_batch,
    write_config,
)
from inprocess import api_settings, in_process

pytestmark = pytest.mark.embedded


@pytest.fixture(scope="module")
def backend() -> Backend:
    return Backend("sqlite")


MODEL = "smollm2-135m-instruct"


def test_chat_and_embeddings_on_the_embedded_model(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server()  # no config at all: the embedded model is served
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="local", max_retries=0) as client:
        chat = [
            {
                "custom_id": f"chat-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": question}],
                    "max_tokens": 8,
                    "temperature": 0,
                },
            }
            for i, question in enumerate(
                ["Say hello.", "Name a colour.", "What is 2+2?", "Name a fruit.", "Say goodbye."]
            )
        ]
        file = client.files.create(file=("chat.jsonl", jsonl(chat)), purpose="batch")
        batch = client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        batch = wait_for_batch(client, batch.id, timeout=120)
        assert batch.status == "completed"
        assert batch.model == MODEL
        assert batch.request_counts.completed == 5
        assert batch.usage is not None and 0 < batch.usage.output_tokens <= 40
        rows = read_jsonl(client.files.content(batch.output_file_id).text)
        assert sorted(r["custom_id"] for r in rows) == [f"chat-{i}" for i in range(5)]
        for row in rows:
            body = row["response"]["body"]
            assert body["model"] == MODEL
            assert body["object"] == "chat.completion"
            assert body["choices"][0]["message"]["content"].strip()
            assert 0 < body["usage"]["completion_tokens"] <= 8

        texts = ["the cat sat", "a dog ran", "hello world"]
        embed = [
            {
                "custom_id": f"emb-{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": MODEL, "input": text},
            }
            for i, text in enumerate(texts)
        ]
        file = client.files.create(file=("emb.jsonl", jsonl(embed)), purpose="batch")
        batch = client.batches.create(
            input_file_id=file.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        batch = wait_for_batch(client, batch.id, timeout=120)
        assert batch.status == "completed"
        rows = read_jsonl(client.files.content(batch.output_file_id).text)
        vectors = {r["custom_id"]: r["response"]["body"]["data"][0]["embedding"] for r in rows}
        assert set(vectors) == {"emb-0", "emb-1", "emb-2"}
        assert {len(v) for v in vectors.values()} == {576}
        assert vectors["emb-0"] != vectors["emb-1"]
        assert all(any(x != 0 for x in v) for v in vectors.values())


async def test_message_batches_on_the_embedded_model(tmp_path: Path) -> None:
    """The embedded model speaks chat only: Messages requests are translated
    there and back, stop sequences included (the backend names the one that
    ended the text). In-process: the answers are the point, not the server."""
    async with in_process(api_settings(tmp_path / "data", worker=True)) as api:
        sdk = api.anthropic()
        count = "Count from one to ten in words, separated by spaces."  # it answers 1234...
        batch = await sdk.messages.batches.create(
            requests=[
                {
                    "custom_id": "hello",
                    "params": {
                        "model": MODEL,
                        "max_tokens": 5,
                        "system": "Answer in one word.",
                        "messages": [{"role": "user", "content": "Say hello."}],
                        "temperature": 0,
                    },
                },
                {
                    "custom_id": "count",
                    "params": {
                        "model": MODEL,
                        "max_tokens": 12,
                        "messages": [{"role": "user", "content": count}],
                        "stop_sequences": ["5"],
                        "temperature": 0,
                    },
                },
            ]
        )
        done = await wait_for_message_batch(sdk, batch.id, within=120)
        assert done.request_counts.succeeded == 2, done.request_counts
        results = {
            r.custom_id: r.result async for r in await sdk.messages.batches.results(batch.id)
        }
    hello = results["hello"].message
    assert hello.model == MODEL and hello.content[0].text.strip()
    assert hello.stop_reason in ("end_turn", "max_tokens")
    assert 0 < hello.usage.output_tokens <= 5 and hello.usage.input_tokens > 0
    counted = results["count"].message
    assert (counted.stop_reason, counted.stop_sequence) == ("stop_sequence", "5")
    assert counted.content[0].text and "5" not in counted.content[0].text


def test_kill_9_while_sequences_decode_loses_nothing_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    """The embedded engine decodes several lines at once (16); a `kill -9`
    while it does loses none of them and reports none twice: the restarted
    server picks the chunk up where its last flush left it. 40 lines: the
    kill lands after the first wave, with the rest still to come."""
    lines = [
        {
            "custom_id": f"line-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"Name an animal ({i})."}],
                "max_tokens": 5,
                "temperature": 0,
            },
        }
        for i in range(40)
    ]
    config = write_config(tmp_path / "config.toml", [], flush_lines=2, max_chunk_attempts=5)
    data = tmp_path / "data"
    server = ServerProcess(data, config=config).start()
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="local", max_retries=3)
        file = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        batch = client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        deadline = time.monotonic() + 120
        while (done := client.batches.retrieve(batch.id).request_counts.completed) < 2:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no line finished in time"
            time.sleep(0.05)
        assert done < len(lines), "the batch ended before the kill"
        # The worker process decodes: it dies first, then the server.
        for worker in psutil.Process(server.pid).children(recursive=True):
            worker.kill()
        server.kill()
        restarted = ServerProcess(data, config=config)
        restarted.port = server.port
        server = restarted.start()
        ended = wait_for_batch(client, batch.id, timeout=180)
        assert ended.status == "completed", ended
        assert ended.request_counts.completed == len(lines)
        rows = read_jsonl(client.files.content(ended.output_file_id).text)
    finally:
        server.stop()
    seen = Counter(row["custom_id"] for row in rows)
    assert seen == Counter(line["custom_id"] for line in lines)
    for row in rows:
        assert row["response"]["status_code"] == 200
        assert row["response"]["body"]["choices"][0]["message"]["content"].strip()
