"""Batches through the real `openai` SDK, run against the fake upstream.

They run the app and its worker in-process (tests/inprocess.py) on both
storage backends; the two that need servers of their own (many chunks in
flight, model replicas) start them in-process too."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import openai
import pytest

from overnight.testing.fake_upstream import FakeUpstream

from helpers import chat_lines, fake_model, jsonl, read_jsonl, wait_for_batch
from inprocess import AppFactory, BackgroundApi


@pytest.fixture
def server(app_server: BackgroundApi) -> BackgroundApi:
    return app_server


@pytest.fixture
def client(app_server: BackgroundApi) -> openai.OpenAI:
    return app_server.openai()


def submit(client: openai.OpenAI, lines: list[dict[str, Any]], **kwargs: Any) -> Any:
    file = client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    return client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h", **kwargs
    )


def wait_until_completed(client: openai.OpenAI, batch_id: str, n: int, timeout: float = 60) -> None:
    """Until at least `n` of the batch's requests have completed."""
    deadline = time.monotonic() + timeout
    while client.batches.retrieve(batch_id).request_counts.completed < n:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.02)


def results(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    return read_jsonl(client.files.content(file_id).text) if file_id else []


def test_a_batch_runs_to_completion(client: openai.OpenAI) -> None:
    lines = chat_lines(25)
    created = submit(client, lines, metadata={"team": "search"})
    assert created.status == "validating"
    assert created.expires_at == created.created_at + 24 * 3600
    assert created.metadata == {"team": "search"}

    batch = wait_for_batch(client, created.id)

    assert batch.status == "completed"
    assert batch.model == "fake-model"
    assert batch.request_counts.model_dump() == {"total": 25, "completed": 25, "failed": 0}
    assert batch.error_file_id is None
    assert batch.errors is None
    stamps = [batch.created_at, batch.in_progress_at, batch.finalizing_at, batch.completed_at]
    assert all(s is not None for s in stamps) and stamps == sorted(stamps)  # type: ignore[type-var]
    assert batch.failed_at is None and batch.cancelled_at is None and batch.expired_at is None
    # The fake counts words: 3 per prompt, 4 per answer.
    assert batch.usage is not None
    assert batch.usage.input_tokens == 75
    assert batch.usage.output_tokens == 100
    assert batch.usage.total_tokens == 175

    output = client.files.retrieve(batch.output_file_id)
    assert output.purpose == "batch_output"
    rows = results(client, batch.output_file_id)
    assert sorted(r["custom_id"] for r in rows) == sorted(line["custom_id"] for line in lines)
    for row in rows:
        number = row["custom_id"].removeprefix("req-")
        assert row["id"].startswith("batch_req_")
        assert row["error"] is None
        assert row["response"]["status_code"] == 200
        assert row["response"]["request_id"]
        reply = row["response"]["body"]["choices"][0]["message"]["content"]
        assert reply == f"echo: message number {number}"


def test_upstream_errors_go_to_the_error_file_joined_by_custom_id(client: openai.OpenAI) -> None:
    lines = chat_lines(12)
    for line in lines[::3]:
        line["body"]["x_fake"] = {"status": 400}

    batch = wait_for_batch(client, submit(client, lines).id)

    assert batch.status == "completed"
    assert batch.request_counts.model_dump() == {"total": 12, "completed": 8, "failed": 4}
    ok = results(client, batch.output_file_id)
    failed = results(client, batch.error_file_id)
    assert client.files.retrieve(batch.error_file_id).purpose == "batch_output"
    assert Counter(r["custom_id"] for r in ok + failed) == Counter(
        line["custom_id"] for line in lines
    )
    assert {r["custom_id"] for r in failed} == {line["custom_id"] for line in lines[::3]}
    for row in failed:
        assert row["error"] is None
        assert row["response"]["status_code"] == 400
        assert row["response"]["body"]["error"]["type"] == "invalid_request_error"


def test_when_every_line_fails_there_is_no_output_file(client: openai.OpenAI) -> None:
    lines = chat_lines(3, extra={"x_fake": {"status": 422}})
    batch = wait_for_batch(client, submit(client, lines).id)
    assert batch.status == "completed"
    assert batch.output_file_id is None
    assert batch.request_counts.failed == 3
    assert len(results(client, batch.error_file_id)) == 3


def test_request_counts_move_while_the_batch_runs(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    upstream.configure(latency=0.05)
    created = submit(client, chat_lines(40, model="fake-small"))
    seen: list[int] = []
    deadline = time.monotonic() + 60
    batch = client.batches.retrieve(created.id)
    while batch.status != "completed" and time.monotonic() < deadline:
        if batch.status == "in_progress":
            seen.append(batch.request_counts.completed)
        time.sleep(0.1)
        batch = client.batches.retrieve(created.id)
    assert batch.status == "completed"
    partial = [n for n in seen if 0 < n < 40]
    assert len(set(partial)) >= 3, seen
    assert seen == sorted(seen)


def test_cancel_mid_run_keeps_partial_results(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    upstream.configure(latency=0.1)
    lines = chat_lines(60, model="fake-small")
    created = submit(client, lines)
    wait_until_completed(client, created.id, 5)

    cancelling = client.batches.cancel(created.id)
    assert cancelling.status in ("cancelling", "cancelled")
    assert cancelling.cancelling_at is not None

    batch = wait_for_batch(client, created.id)
    assert batch.status == "cancelled"
    assert batch.cancelled_at is not None
    counts = batch.request_counts
    assert counts.total == 60
    assert counts.completed + counts.failed == 60
    assert 5 <= counts.completed < 60
    ok = results(client, batch.output_file_id)
    failed = results(client, batch.error_file_id)
    assert len(ok) == counts.completed and len(failed) == counts.failed
    assert Counter(r["custom_id"] for r in ok + failed) == Counter(
        line["custom_id"] for line in lines
    )
    for row in failed:
        assert row["response"] is None
        assert row["error"]["code"] == "batch_cancelled"

    again = client.batches.cancel(created.id)  # idempotent
    assert again.status == "cancelled"


def test_a_cancel_amid_many_running_chunks_loses_no_line(start_app: AppFactory) -> None:
    """Several chunks' lanes share a model's 32 slots, so at the cancel many
    lanes wait for a slot while answers keep freeing slots: every line still
    ends in exactly one file, once."""
    with FakeUpstream() as upstream:
        model = fake_model(upstream.url, max_concurrency=32, adaptive=False)
        with start_app([model], chunk_lines=2000).openai() as client:
            lines = chat_lines(20_000, prefix="race")
            created = submit(client, lines)
            wait_until_completed(client, created.id, 2000)
            client.batches.cancel(created.id)
            batch = wait_for_batch(client, created.id, timeout=60)
            ok = results(client, batch.output_file_id)
            failed = results(client, batch.error_file_id)

    assert batch.status == "cancelled"
    counts = batch.request_counts
    assert counts.completed + counts.failed == 20_000 and counts.completed < 20_000
    assert Counter(r["custom_id"] for r in ok + failed) == Counter(
        line["custom_id"] for line in lines
    )


def test_cancelling_a_completed_batch_is_a_409_not_to_retry(
    client: openai.OpenAI, server: BackgroundApi
) -> None:
    batch = wait_for_batch(client, submit(client, chat_lines(2)).id)
    with pytest.raises(openai.ConflictError) as caught:
        client.batches.cancel(batch.id)
    assert caught.value.message.endswith("Cannot cancel a batch with status 'completed'.")
    response = server.client().post(f"/v1/batches/{batch.id}/cancel")
    assert response.status_code == 409
    assert response.headers["x-should-retry"] == "false"


def test_an_invalid_file_fails_the_batch_naming_each_line(client: openai.OpenAI) -> None:
    good = chat_lines(1)[0]
    lines = [
        jsonl([good]),
        b"{not json}\n",
        jsonl([{**good, "custom_id": None, "x": 1}]),
        jsonl([{k: v for k, v in good.items() if k != "method"}]),
        jsonl([{**good, "url": "/v1/embeddings"}]),
        jsonl([{**good, "body": {**good["body"], "model": "no-such-model"}}]),
        jsonl([{**good, "body": {**good["body"], "stream": True}}]),
        jsonl([good]),  # the same custom_id again
        b"[1, 2]\n",
    ]
    file = client.files.create(file=("bad.jsonl", b"".join(lines)), purpose="batch")
    created = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    batch = wait_for_batch(client, created.id)

    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.errors is not None
    found = [(e.line, e.code, e.param) for e in batch.errors.data or []]
    assert found == [
        (2, "invalid_json_line", None),
        (3, "missing_required_parameter", "custom_id"),
        (4, "missing_required_parameter", "method"),
        (5, "invalid_url", "url"),
        (6, "model_not_found", "body.model"),
        (7, "streaming_unsupported", "body.stream"),
        (8, "duplicate_custom_id", "custom_id"),
        (9, "invalid_json_line", None),
    ]
    assert batch.output_file_id is None and batch.error_file_id is None


def test_an_empty_file_fails(client: openai.OpenAI) -> None:
    file = client.files.create(file=("empty.jsonl", b"\n\n"), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = wait_for_batch(client, batch.id)
    assert batch.status == "failed"
    assert [e.code for e in batch.errors.data or []] == ["empty_file"]  # type: ignore[union-attr]


def test_unknown_endpoint_is_refused_at_once(client: openai.OpenAI) -> None:
    file = client.files.create(file=("x.jsonl", jsonl(chat_lines(1))), purpose="batch")
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(
            input_file_id=file.id,
            endpoint="/v1/moderations",
            completion_window="24h",  # type: ignore[arg-type]
        )
    assert caught.value.body["param"] == "endpoint"  # type: ignore[index]
    assert caught.value.body["code"] == "invalid_value"  # type: ignore[index]


def test_batch_create_checks_its_file(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.batches.create(
            input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert "file-missing" in missing.value.message
    other = client.files.create(file=("x.txt", b"x"), purpose="user_data")
    with pytest.raises(openai.BadRequestError) as wrong:
        client.batches.create(
            input_file_id=other.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert wrong.value.body["param"] == "input_file_id"  # type: ignore[index]


def test_batches_list_newest_first_with_cursor_pagination(client: openai.OpenAI) -> None:
    ids = [submit(client, chat_lines(1, prefix=f"list{i}")).id for i in range(3)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2]
    assert page.has_more is True
    walked = [b.id for b in client.batches.list(limit=2)]
    assert walked[:3] == ids[::-1]
    assert len(walked) == len(set(walked))
    with pytest.raises(openai.BadRequestError):
        client.batches.list(limit=0)
    with pytest.raises(openai.BadRequestError):
        client.batches.list(limit=101)


def test_retrieving_an_unknown_batch_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_a_bad_create_body_names_the_field(server: BackgroundApi) -> None:
    response = server.client().post(
        "/v1/batches",
        json={"input_file_id": 5, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input_file_id"
    response = server.client().post(
        "/v1/batches", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_requests_spread_over_replicas_and_unreachable_ones_fail_cleanly(
    start_app: AppFactory,
) -> None:
    from helpers import fake_model, free_port

    # Upstreams of its own: requests are counted exactly, and the module's
    # shared upstream may still get stragglers from earlier tests' servers.
    with FakeUpstream() as fast, FakeUpstream(latency=0.05) as slow:
        dead = f"http://127.0.0.1:{free_port()}/v1"
        app = start_app(
            [
                fake_model(fast.url, name="replicated", base_urls=[slow.url]),
                # Nobody listens, and no waiting for it (`outage_patience`,
                # tests/acceptance/test_model_restarts.py waits one out).
                fake_model(dead, name="dead-model", max_attempts=2, outage_patience=0),
                fake_model(fast.url, name="half-dead", base_urls=[dead], eject_after=2),
            ],
            # A lease lapsing on a busy machine (the test default is 5 s)
            # would re-send a chunk's unfinished lines: correct, but not
            # what this counts.
            lease_ttl=120,
        )
        with app.openai() as client:
            # Least outstanding requests: both replicas work, the fast one more.
            batch = wait_for_batch(client, submit(client, chat_lines(60, model="replicated")).id)
            assert batch.request_counts.completed == 60
            fast_count, slow_count = fast.stats()["requests"], slow.stats()["requests"]
            assert fast_count + slow_count == 60
            assert slow_count >= 1 and fast_count > slow_count

            # A model nobody answers for: every line fails cleanly.
            lines = chat_lines(3, model="dead-model", prefix="dead")
            batch = wait_for_batch(client, submit(client, lines).id)
            assert batch.status == "completed"
            assert batch.request_counts.model_dump() == {"total": 3, "completed": 0, "failed": 3}
            rows = results(client, batch.error_file_id)
            assert sorted(r["custom_id"] for r in rows) == ["dead-0", "dead-1", "dead-2"]
            for row in rows:
                assert row["response"] is None
                assert row["error"]["code"] == "upstream_unreachable"

            # One dead replica of two: it is taken out, retries land on the other.
            fast.reset_stats()
            batch = wait_for_batch(client, submit(client, chat_lines(40, model="half-dead")).id)
            assert batch.request_counts.model_dump() == {"total": 40, "completed": 40, "failed": 0}
            assert fast.stats()["requests"] == 40


def test_priority_comes_from_metadata_and_must_be_an_integer(client: openai.OpenAI) -> None:
    batch = submit(client, chat_lines(1, prefix="prio"), metadata={"priority": "5"})
    assert batch.metadata == {"priority": "5"}
    with pytest.raises(openai.BadRequestError) as caught:
        submit(client, chat_lines(1, prefix="prio-bad"), metadata={"priority": "high"})
    assert caught.value.body["param"] == "metadata.priority"  # type: ignore[index]
