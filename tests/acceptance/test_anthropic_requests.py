"""What a Message Batch's requests come back as, through the real
`anthropic` and `openai` SDKs against the app and its worker in-process,
on SQLite (the requests and their translation are the point, not the
storage): a cancel mid-run keeps what ran, a tool-use round trip through
translation, stop sequences, errored results in Anthropic's types, a
window that closes, and `/v1/messages` and `/v1/responses` lines in
OpenAI-dialect files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from overnight.settings import Settings
from overnight.testing.fake_upstream import FakeUpstream

from backends import Backend
from helpers import fake_model, jsonl, message_requests, read_jsonl, wait_for_message_batch
from inprocess import InProcess, api_settings, in_process

if TYPE_CHECKING:
    # Imported where used at run time: every pytest worker collects this
    # file, and `import anthropic` costs 2.2 CPU-s.
    import anthropic

pytestmark = pytest.mark.asyncio(loop_scope="module")

TRANSLATED = "fake-model"
NATIVE = "native-model"
#: Speaks every shape, one request at a time.
SLOW = "slow-model"


@pytest.fixture(scope="module")
def backend() -> Backend:
    return Backend("sqlite")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Settings:
    every_shape = ["chat", "messages", "responses"]
    return api_settings(
        tmp_path_factory.mktemp("anthropic-requests") / "data",
        worker=True,
        models=[
            fake_model(upstream.url),
            fake_model(upstream.url, name=NATIVE, apis=every_shape),
            fake_model(
                upstream.url, name=SLOW, apis=every_shape, max_concurrency=1, adaptive=False
            ),
        ],
        chunk_lines=5,
        stop_grace=1,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(settings: Settings) -> AsyncIterator[InProcess]:
    async with in_process(settings) as app:
        yield app


async def results_of(sdk: anthropic.AsyncAnthropic, batch_id: str) -> dict[str, Any]:
    return {r.custom_id: r.result async for r in await sdk.messages.batches.results(batch_id)}


async def test_a_cancel_mid_run_keeps_what_ran_and_cancels_the_rest(api: InProcess) -> None:
    import anthropic

    sdk = api.anthropic()
    slow = message_requests(30, SLOW, "c", x_fake={"latency": 0.05})
    batch = await sdk.messages.batches.create(requests=slow)
    # Still running; the refusal names the batch as this dialect shows it.
    with pytest.raises(anthropic.BadRequestError, match=f"Batch {batch.id} .*cancel it"):
        await sdk.messages.batches.delete(batch.id)
    running = await sdk.messages.batches.retrieve(batch.id)
    while running.request_counts.succeeded < 3:
        await asyncio.sleep(0.05)
        running = await sdk.messages.batches.retrieve(batch.id)
    cancelling = await sdk.messages.batches.cancel(batch.id)
    assert cancelling.processing_status == "canceling"
    assert cancelling.cancel_initiated_at is not None

    done = await wait_for_message_batch(sdk, batch.id)
    counts = done.request_counts
    assert counts.processing == counts.errored == counts.expired == 0
    assert counts.succeeded >= 3 and counts.canceled > 0
    assert counts.succeeded + counts.canceled == 30
    results = await results_of(sdk, batch.id)
    assert sorted(results) == sorted(r["custom_id"] for r in slow)
    kinds = [r.type for r in results.values()]
    assert kinds.count("succeeded") == counts.succeeded
    assert kinds.count("canceled") == counts.canceled
    assert (await sdk.messages.batches.delete(batch.id)).type == "message_batch_deleted"


async def test_a_tool_use_round_trip_through_translation(api: InProcess) -> None:
    sdk = api.anthropic()
    tools = [
        {
            "name": "get_weather",
            "description": "Today's weather in a city.",
            "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
        }
    ]
    question = {"role": "user", "content": "Weather in Paris?"}
    asked = await sdk.messages.batches.create(
        requests=[
            {
                "custom_id": "ask",
                "params": {
                    "model": TRANSLATED,
                    "max_tokens": 64,
                    "messages": [question],
                    "tools": tools,
                    "tool_choice": {"type": "tool", "name": "get_weather"},
                },
            }
        ]
    )
    await wait_for_message_batch(sdk, asked.id)
    call = (await results_of(sdk, asked.id))["ask"].message
    assert call.stop_reason == "tool_use"
    (tool_use,) = call.content
    assert tool_use.type == "tool_use" and tool_use.name == "get_weather"
    assert tool_use.input == {"text": "Weather in Paris?"}

    answered = await sdk.messages.batches.create(
        requests=[
            {
                "custom_id": "answer",
                "params": {
                    "model": TRANSLATED,
                    "max_tokens": 64,
                    "tools": tools,
                    "messages": [
                        question,
                        {"role": "assistant", "content": [tool_use.model_dump()]},
                        {
                            "role": "user",
                            "content": [
                                {
                                    "type": "tool_result",
                                    "tool_use_id": tool_use.id,
                                    "content": "sunny, 21C",
                                }
                            ],
                        },
                    ],
                },
            }
        ]
    )
    await wait_for_message_batch(sdk, answered.id)
    reply = (await results_of(sdk, answered.id))["answer"].message
    assert reply.stop_reason == "end_turn"
    assert reply.content[0].text == "echo: sunny, 21C"


async def test_stop_sequences_and_errors_come_back_in_anthropic_shapes(api: InProcess) -> None:
    sdk = api.anthropic()
    batch = await sdk.messages.batches.create(
        requests=[
            *message_requests(1, TRANSLATED, "stop", stop_sequences=["number"]),
            *message_requests(1, TRANSLATED, "thinks", thinking={"type": "enabled"}),
            *message_requests(1, NATIVE, "missing", x_fake={"status": 404}),
            *message_requests(1, NATIVE, "overloaded", x_fake={"status": 529}),
        ]
    )
    done = await wait_for_message_batch(sdk, batch.id)
    assert (done.request_counts.succeeded, done.request_counts.errored) == (1, 3)
    results = await results_of(sdk, batch.id)

    stopped = results["stop0"].message
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "number")
    assert stopped.content[0].text == "echo: stop "

    def error_of(custom_id: str) -> Any:
        result = results[custom_id]
        assert result.type == "errored"
        return result.error.error

    refused = error_of("thinks0")
    assert refused.type == "invalid_request_error"
    assert refused.message.startswith("thinking: ") and "fake-model" in refused.message
    assert error_of("missing0").type == "not_found_error"
    assert error_of("overloaded0").type == "overloaded_error"  # after its retries


async def test_a_window_that_closes_leaves_the_rest_expired(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    short = api_settings(
        tmp_path / "data",
        worker=True,
        models=[
            fake_model(
                upstream.url,
                name=SLOW,
                max_concurrency=1,
                adaptive=False,
                apis=["chat", "messages"],
            )
        ],
        default_completion_window="2s",
        min_completion_window="1s",
        stop_grace=1,
    )
    async with in_process(short) as api:
        sdk = api.anthropic()
        batch = await sdk.messages.batches.create(
            requests=message_requests(40, SLOW, "w", x_fake={"latency": 0.1})
        )
        assert (batch.expires_at - batch.created_at).total_seconds() == 2
        done = await wait_for_message_batch(sdk, batch.id)
        results = await results_of(sdk, batch.id)
    counts = done.request_counts
    assert counts.canceled == counts.errored == 0
    assert counts.succeeded > 0 and counts.expired > 0
    assert counts.succeeded + counts.expired == 40
    kinds = [r.type for r in results.values()]
    assert kinds.count("expired") == counts.expired and len(kinds) == 40


@pytest.mark.parametrize("model", [TRANSLATED, NATIVE])
async def test_openai_files_may_hold_messages_and_responses_lines(
    api: InProcess, model: str
) -> None:
    client = api.openai()
    bodies = {
        "/v1/messages": {
            "model": model,
            "max_tokens": 16,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "Hello there"}],
        },
        "/v1/responses": {"model": model, "instructions": "Be brief.", "input": "Hello there"},
    }
    for endpoint, body in bodies.items():
        line = {"custom_id": "one", "method": "POST", "url": endpoint, "body": body}
        file = await client.files.create(file=("m.jsonl", jsonl([line])), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id,
            endpoint=endpoint,  # type: ignore[arg-type]
            completion_window="24h",
        )
        while batch.status not in ("completed", "failed"):
            await asyncio.sleep(0.05)
            batch = await client.batches.retrieve(batch.id)
        assert batch.status == "completed" and batch.output_file_id, batch
        (row,) = read_jsonl((await client.files.content(batch.output_file_id)).text)
        answer = row["response"]["body"]
        if endpoint == "/v1/messages":
            assert answer["type"] == "message"
            assert answer["content"] == [{"type": "text", "text": "echo: Hello there"}]
        else:
            assert answer["object"] == "response" and answer["status"] == "completed"
            assert answer["output"][0]["content"][0]["text"] == "echo: Hello there"
            assert answer["usage"]["input_tokens"] > 0
        assert batch.request_counts is not None
        assert batch.request_counts.completed == 1


async def test_results_are_refused_until_the_batch_ends(api: InProcess) -> None:
    sdk = api.anthropic()
    raw = api.http(headers={"x-api-key": "k"})
    batch = await sdk.messages.batches.create(
        requests=message_requests(2, NATIVE, "r", x_fake={"latency": 0.3})
    )
    early = await raw.get(f"/anthropic/v1/messages/batches/{batch.id}/results")
    assert early.status_code == 404 and "still in_progress" in early.json()["error"]["message"]
    await wait_for_message_batch(sdk, batch.id)
    shown = await raw.get(f"/anthropic/v1/messages/batches/{batch.id}/results")
    assert shown.headers["content-type"].startswith("application/x-jsonl")
    assert len(shown.text.splitlines()) == 2


async def test_answers_carry_anthropic_errors_and_request_ids(api: InProcess) -> None:
    raw = api.http(headers={"x-api-key": "k"})
    unknown = await raw.get("/anthropic/v1/messages/batches/msgbatch_" + "0" * 32)
    assert unknown.status_code == 404
    assert unknown.json() == {
        "type": "error",
        "error": {"type": "not_found_error", "message": unknown.json()["error"]["message"]},
    }
    assert unknown.headers["request-id"] == unknown.headers["x-request-id"]
    bad_limit = await raw.get("/anthropic/v1/messages/batches", params={"limit": 1001})
    assert bad_limit.status_code == 400
    assert bad_limit.json()["error"]["type"] == "invalid_request_error"
    no_route = await raw.get("/anthropic/v1/nothing")
    assert no_route.status_code == 404 and no_route.json()["type"] == "error"


async def test_every_dialect_takes_every_form_of_the_id(api: InProcess) -> None:
    sdk = api.anthropic()
    batch = await sdk.messages.batches.create(requests=message_requests(1, TRANSLATED, "i"))
    stored = "batch_" + batch.id.removeprefix("msgbatch_")
    shown = (await api.http("k").get(f"/v1/batches/{batch.id}")).json()
    assert shown["id"] == stored and shown["endpoint"] == "/v1/messages"
    assert (await sdk.messages.batches.retrieve(stored)).id == batch.id
