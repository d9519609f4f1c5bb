"""The embedded default: a real (small) model, no model server, no config
(so SQLite and a local data directory, the defaults, only)."""

from __future__ import annotations

import openai
import pytest

from backends import Backend
from helpers import jsonl, read_jsonl, wait_for_batch

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
