"""Retrying only what failed, through the openai SDK's own `post`/`get`
(the routes are overnight's, so the SDK has no method for them): a retry
runs exactly the original lines that ended as asked, and the merged
download holds every line once. On SQLite only: the retry reads files
through the same blob interface as the tail (test_results_while_running.py
runs both backends). A fake upstream whose knobs make some lines fail
(status 400: not retried by the runner)."""

from __future__ import annotations

import time

import openai
import pytest

from overnight.testing.fake_upstream import FakeUpstream

from backends import Backend
from helpers import (
    chat_lines,
    fake_model,
    jsonl,
    message_requests,
    read_jsonl,
    wait_for_batch,
    wait_for_message_batch,
)
from inprocess import ApiFactory, AppFactory
from results_api import INCOMPLETE, file_lines, ids_of, read, retry, submit


@pytest.fixture(scope="module")
def backend() -> Backend:
    return Backend("sqlite")


def test_retrying_what_failed_until_every_line_succeeded(start_app: AppFactory) -> None:
    lines = chat_lines(120, prefix="retry")
    with FakeUpstream(error_rate=0.3, error_status=400, seed=11) as upstream:
        client = start_app([fake_model(upstream.url)], chunk_lines=16).openai()
        first = wait_for_batch(client, submit(client, lines).id)
        failed_ids = ids_of(file_lines(client, first.error_file_id))
        # A retry while the upstream still fails some: a chain of two retries.
        second = retry(client, first.id, outcomes=["failed"])
        retry_input = client.files.content(second.input_file_id).content
        second = wait_for_batch(client, second.id)
        merged_once = read(client, second.id, "output", merged="true").text.splitlines()
        merged_once += read(client, second.id, "errors", merged="true").text.splitlines()
        upstream.configure(error_rate=0)
        third = wait_for_batch(client, retry(client, second.id, completion_window="1h").id)
        merged = read(client, third.id, "output", merged="true")
        merged_errors = read(client, third.id, "errors", merged="true")
        with pytest.raises(openai.BadRequestError) as nothing_left:
            retry(client, third.id)
        with pytest.raises(openai.BadRequestError) as not_a_retry:
            read(client, first.id, "output", merged="true")

    assert first.request_counts.failed == len(failed_ids) > 0
    assert second.metadata == {"retry_of": first.id, "retry_outcomes": "failed"}
    assert third.metadata == {"retry_of": second.id, "retry_outcomes": "cancelled,expired,failed"}
    assert third.completion_window == "1h"
    # The retry's input is the original lines of the failed ids, unchanged, in file order.
    wanted = set(failed_ids)
    assert retry_input == jsonl([line for line in lines if line["custom_id"] in wanted])
    assert 0 < second.request_counts.failed < len(failed_ids)
    # Merged, each retry's results replace the lines it ran: every line once.
    assert sorted(ids_of(merged_once)) == sorted(line["custom_id"] for line in lines)
    assert third.status == "completed" and third.request_counts.failed == 0
    rows = read_jsonl(merged.text)
    assert sorted(r["custom_id"] for r in rows) == sorted(line["custom_id"] for line in lines)
    assert all(r["response"]["status_code"] == 200 for r in rows)
    assert merged.headers[INCOMPLETE] == "false"
    assert merged_errors.content == b""
    assert nothing_left.value.code == "nothing_to_retry"
    assert not_a_retry.value.code == "not_a_retry"


def test_retrying_the_lines_a_cancel_kept_from_running(start_app: AppFactory) -> None:
    lines = chat_lines(200, prefix="cut")
    with FakeUpstream(latency=0.05) as upstream:
        model = fake_model(upstream.url, max_concurrency=2, adaptive=False)
        client = start_app([model], chunk_lines=10).openai()
        batch = submit(client, lines)
        with pytest.raises(openai.ConflictError) as running:
            retry(client, batch.id)
        deadline = time.monotonic() + 30
        while client.batches.retrieve(batch.id).request_counts.completed < 10:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        client.batches.cancel(batch.id)
        cancelled = wait_for_batch(client, batch.id)
        stopped_ids = ids_of(file_lines(client, cancelled.error_file_id))
        with pytest.raises(openai.BadRequestError) as none_expired:
            retry(client, batch.id, outcomes=["expired"])
        with pytest.raises(openai.BadRequestError) as unknown:
            retry(client, batch.id, outcomes=["lost"])
        files_before = len(client.files.list().data)
        with pytest.raises(openai.BadRequestError) as bad_window:
            retry(client, batch.id, completion_window="3 fortnights")
        assert len(client.files.list().data) == files_before  # no input file left behind
        upstream.configure(latency=0)
        again = retry(client, batch.id, outcomes=["cancelled"])
        again_input = ids_of(client.files.content(again.input_file_id).text.splitlines())
        again = wait_for_batch(client, again.id)
        merged = read(client, again.id, "output", merged="true").text.splitlines()
        merged += read(client, again.id, "errors", merged="true").text.splitlines()

    assert running.value.code == "batch_not_ended"
    assert running.value.status_code == 409
    assert cancelled.status == "cancelled" and len(stopped_ids) > 0
    assert again_input == stopped_ids or sorted(again_input) == sorted(stopped_ids)
    assert none_expired.value.code == "nothing_to_retry"
    assert unknown.value.code == "invalid_value"
    assert bad_window.value.param == "completion_window"
    assert again.status == "completed" and again.request_counts.completed == len(stopped_ids)
    assert sorted(ids_of(merged)) == sorted(line["custom_id"] for line in lines)


def test_together_batches_have_the_same_routes(start_app: AppFactory) -> None:
    with FakeUpstream(error_rate=0.5, error_status=400, seed=5) as upstream:
        app = start_app([fake_model(upstream.url)])
        client = app.openai()
        file = client.files.create(file=("in.jsonl", jsonl(chat_lines(20))), purpose="batch")
        http = app.client("test-key")
        created = http.post(
            "/together/v1/batches",
            json={"input_file_id": file.id, "endpoint": "/v1/chat/completions"},
        ).json()["job"]
        uuid = created["id"]
        wait_for_batch(client, uuid)
        errors = http.get(f"/together/v1/batches/{uuid}/errors")
        again = http.post(f"/together/v1/batches/{uuid}/retry", json={"outcomes": ["failed"]})
        missing = http.post(
            "/together/v1/batches/batch_0123456789abcdef0123456789abcdef/retry", json={}
        )

    assert errors.status_code == 200 and errors.headers[INCOMPLETE] == "false"
    failed = read_jsonl(errors.text)
    assert failed and all(row["error"]["code"] == 400 for row in failed)
    assert again.status_code == 201
    assert again.json()["job"]["id"] != uuid
    assert missing.status_code == 404


async def test_a_message_batch_tailed_and_retried_through_the_anthropic_sdk(
    start_api: ApiFactory,
) -> None:
    """The Anthropic SDK creates, follows and reads both batches; the
    overnight routes (the retry under /anthropic, results so far under /v1)
    take the `msgbatch_` ids."""
    with FakeUpstream(error_rate=0.4, error_status=400, seed=2) as upstream:
        api = await start_api(worker=True, models=[fake_model(upstream.url)])
        sdk = api.anthropic()
        raw = api.http("test-key")
        created = await sdk.messages.batches.create(requests=message_requests(30))  # type: ignore[arg-type]
        first = await wait_for_message_batch(sdk, created.id)
        errors = await raw.get(f"/v1/batches/{created.id}/errors")
        upstream.configure(error_rate=0)
        answer = await raw.post(f"/anthropic/v1/messages/batches/{created.id}/retry", json={})
        again = await wait_for_message_batch(sdk, answer.json()["id"])
        results = [r async for r in await sdk.messages.batches.results(again.id)]
        merged = await raw.get(f"/v1/batches/{again.id}/output", params={"merged": "true"})

    errored = [row["custom_id"] for row in read_jsonl(errors.text)]
    assert first.request_counts.errored == len(errored) > 0
    assert all(row["result"]["type"] == "errored" for row in read_jsonl(errors.text))
    assert errors.headers[INCOMPLETE] == "false"
    assert answer.status_code == 200 and answer.json()["id"].startswith("msgbatch_")
    assert sorted(r.custom_id for r in results) == sorted(errored)
    assert all(r.result.type == "succeeded" for r in results)
    assert again.request_counts.succeeded == len(errored)
    rows = read_jsonl(merged.text)
    assert sorted(row["custom_id"] for row in rows) == sorted(f"q{i}" for i in range(30))
    assert all(row["result"]["type"] == "succeeded" for row in rows)
