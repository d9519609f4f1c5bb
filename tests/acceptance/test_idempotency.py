"""`Idempotency-Key` through the real `openai` SDK against the app
in-process (tests/inprocess.py), on both backends: a create repeated under
one key, and the SDK's own retry after an answer that never arrived, each
make one batch."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest

from helpers import chat_lines, jsonl
from inprocess import BASE_URL, BackgroundApi

ENDPOINT = "/v1/chat/completions"


class LoseFirstBatchAnswer(httpx.BaseTransport):
    """The first batch create reaches the server and runs, but its answer is
    lost, as when the client's read timeout fires just as the server
    commits: the SDK sees a timeout and retries."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path == "/v1/batches" and not self.lost:
            self.lost += 1
            response.read()
            response.close()
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


@pytest.fixture
def client(app_server: BackgroundApi) -> openai.OpenAI:
    return app_server.openai()


def batches_of(client: openai.OpenAI, file_id: str) -> list[str]:
    return [b.id for b in client.batches.list(limit=100) if b.input_file_id == file_id]


def test_a_create_repeated_under_one_key_makes_one_batch(client: openai.OpenAI) -> None:
    file = client.files.create(file=("in.jsonl", jsonl(chat_lines(2))), purpose="batch")
    key = {"Idempotency-Key": f"nightly-{uuid.uuid4()}"}

    made = [
        client.batches.create(
            input_file_id=file.id,
            endpoint=ENDPOINT,
            completion_window="24h",
            extra_headers=key,
        )
        for _ in range(3)
    ]

    assert {b.id for b in made} == {made[0].id}
    assert batches_of(client, file.id) == [made[0].id]


def test_the_sdk_retrying_a_lost_answer_makes_one_batch(app_server: BackgroundApi) -> None:
    transport = LoseFirstBatchAnswer(app_server.transport())
    with openai.OpenAI(
        base_url=f"{BASE_URL}/v1",
        api_key="test-key",
        max_retries=2,
        http_client=app_server.client(transport=transport),
    ) as client:
        file = client.files.create(file=("in.jsonl", jsonl(chat_lines(2))), purpose="batch")

        batch = client.batches.create(
            input_file_id=file.id,
            endpoint=ENDPOINT,
            completion_window="24h",
            extra_headers={"Idempotency-Key": f"nightly-{uuid.uuid4()}"},
        )

        assert transport.lost == 1
        assert batches_of(client, file.id) == [batch.id]
