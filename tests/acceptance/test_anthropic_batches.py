"""Message Batches through the real `anthropic` SDK, unchanged but for its
transport, against the app and its worker in-process (tests/inprocess.py)
on both storage backends and the fake upstream: create, poll, list with
pagination both ways, results, delete; and bodies the create refuses,
after which nothing is left behind."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from overnight.settings import Settings
from overnight.testing.fake_upstream import FakeUpstream

from backends import Backend
from helpers import fake_model, message_requests, wait_for_message_batch
from inprocess import InProcess, api_settings, in_process

# `anthropic` is imported in the tests that use it: every pytest worker
# collects this file, and the import costs 2.2 CPU-s.

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: Small limits, so that going past them is cheap.
MAX_REQUESTS = 20
MAX_BYTES = 64 * 1024
#: A model whose server speaks Messages: its requests pass through.
NATIVE = "native-model"
#: One whose server speaks chat only: its requests are translated.
TRANSLATED = "fake-model"


@pytest.fixture(scope="module")
def settings(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream, backend: Backend
) -> Settings:
    """Made outside the event loop: a PostgreSQL database is created here."""
    return api_settings(
        tmp_path_factory.mktemp("anthropic") / "data",
        worker=True,
        models=[
            fake_model(upstream.url),
            fake_model(upstream.url, name=NATIVE, apis=["chat", "messages"]),
        ],
        chunk_lines=4,
        max_message_batch_requests=MAX_REQUESTS,
        max_message_batch_bytes=MAX_BYTES,
        # Shorter than Anthropic's 64: the create must refuse what validation would.
        max_custom_id_length=8,
        **backend.settings(),
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(settings: Settings) -> AsyncIterator[InProcess]:
    async with in_process(settings) as app:
        yield app


async def created_objects(api: InProcess) -> tuple[int, int]:
    """How many files and batches exist (through the OpenAI routes, which
    show every dialect's)."""
    client = api.http("k")
    files = (await client.get("/v1/files")).json()["data"]
    batches = (await client.get("/v1/batches", params={"limit": 100})).json()["data"]
    return len(files), len(batches)


async def test_the_sdk_creates_polls_lists_reads_results_and_deletes(api: InProcess) -> None:
    import anthropic

    sdk = api.anthropic()
    translated = await sdk.messages.batches.create(requests=message_requests(3, TRANSLATED, "t"))
    native = await sdk.messages.batches.create(requests=message_requests(2, NATIVE, "n"))
    third = await sdk.messages.batches.create(requests=message_requests(1, TRANSLATED, "x"))
    assert translated.id.startswith("msgbatch_") and translated.type == "message_batch"
    assert translated.processing_status == "in_progress"
    assert translated.request_counts.processing == 3 and translated.results_url is None
    assert translated.expires_at > translated.created_at

    finished = await asyncio.gather(
        *(wait_for_message_batch(sdk, b.id) for b in (translated, native, third))
    )
    for done, n in zip(finished, (3, 2, 1), strict=True):
        assert done.request_counts.model_dump() == {
            "processing": 0,
            "succeeded": n,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        }
        assert done.ended_at is not None and done.results_url is not None
        assert done.results_url.endswith(f"/anthropic/v1/messages/batches/{done.id}/results")

    results = {
        r.custom_id: r.result async for r in await sdk.messages.batches.results(translated.id)
    }
    assert sorted(results) == ["t0", "t1", "t2"]
    for custom_id, result in results.items():
        assert result.type == "succeeded"
        message = result.message
        assert message.content[0].type == "text"
        assert message.content[0].text == f"echo: t number {custom_id[1:]}"
        assert (message.stop_reason, message.model) == ("end_turn", TRANSLATED)
        assert message.usage.input_tokens == 3 and message.usage.output_tokens == 4
        # Translated: the chat answer was turned into a Message here.
        assert message.id.startswith("msg_") and message.usage.cache_creation_input_tokens == 0
    passed = [r.result async for r in await sdk.messages.batches.results(native.id)]
    assert [r.type for r in passed] == ["succeeded", "succeeded"]
    # Passed through: the server's own Message, as it sent it.
    assert all(r.message.usage.cache_creation_input_tokens is None for r in passed)  # type: ignore[union-attr]

    # Newest first; the SDK pages with after_id, and before_id pages back.
    newest = [third.id, native.id, translated.id]
    page = await sdk.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest[:2] and page.has_more
    assert (page.first_id, page.last_id) == (newest[0], newest[1])
    listed = [b.id async for b in sdk.messages.batches.list(limit=2)]
    assert listed[:3] == newest
    back = await sdk.messages.batches.list(limit=5, before_id=translated.id)
    assert [b.id for b in back.data] == newest[:2] and not back.has_more

    files_before, batches_before = await created_objects(api)
    deleted = await sdk.messages.batches.delete(translated.id)
    assert (deleted.id, deleted.type) == (translated.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        await sdk.messages.batches.retrieve(translated.id)
    # Its input and its results went with it.
    assert await created_objects(api) == (files_before - 2, batches_before - 1)


async def test_bad_bodies_are_refused_naming_the_request_and_leave_nothing(
    api: InProcess,
) -> None:
    import anthropic

    sdk = api.anthropic()
    before = await created_objects(api)
    missing = message_requests(3, TRANSLATED)
    del missing[1]["params"]["max_tokens"]
    duplicate = message_requests(3, TRANSLATED)
    duplicate[2]["custom_id"] = "q0"
    unknown_model = message_requests(2, "no-such-model")
    long_id = message_requests(1, TRANSLATED, "long-id-")
    cases = [
        (missing, "requests[1].params.max_tokens"),
        (duplicate, "requests[2].custom_id"),
        (unknown_model, "requests[0].params.model"),
        (long_id, "requests[0].custom_id"),
        (message_requests(MAX_REQUESTS + 1, TRANSLATED), f"requests[{MAX_REQUESTS}]"),
        ([], "requests"),
    ]
    for body, named in cases:
        with pytest.raises(anthropic.BadRequestError) as refused:
            await sdk.messages.batches.create(requests=body)  # type: ignore[arg-type]
        error = refused.value.body["error"]  # type: ignore[index]
        assert error["type"] == "invalid_request_error"
        assert error["message"].startswith(named), error
        assert refused.value.response.headers["request-id"].startswith("req_")

    raw = api.http(headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    whole = json.dumps({"requests": message_requests(3, TRANSLATED)}).encode()
    cut = await raw.post("/anthropic/v1/messages/batches", content=whole[:-30])
    assert cut.status_code == 400, cut.text
    message = cut.json()["error"]["message"]
    assert message.startswith("The request body is not valid JSON")
    assert "\n" not in message and "right here" not in message, message
    for shape in (b"[]", b'{"requests": {}}', b'{"requests": [[]]}'):
        wrong = await raw.post("/anthropic/v1/messages/batches", content=shape)
        assert wrong.status_code == 400, wrong.text
        said = wrong.json()["error"]["message"]  # what the body should have been
        assert '"custom_id"' in said or "custom_id and params" in said, said

    padding = "p" * 4000
    big = json.dumps(
        {"requests": message_requests(MAX_REQUESTS, TRANSLATED, system=padding)}
    ).encode()
    assert len(big) > MAX_BYTES
    declared = await raw.post("/anthropic/v1/messages/batches", content=big)
    assert declared.status_code == 413
    assert declared.json()["error"]["type"] == "request_too_large"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: cut off as it arrives
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    streamed = await raw.post("/anthropic/v1/messages/batches", content=chunked())
    assert streamed.status_code == 413
    assert await created_objects(api) == before
