"""Completion windows: the grammar, and a batch that runs out of time; the
app and its worker in-process (tests/inprocess.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import openai
import pytest

from overnight.testing.fake_upstream import FakeUpstream

from helpers import chat_lines, fake_model, jsonl, read_jsonl, wait_for_batch
from inprocess import BackgroundApi, api_settings


@pytest.fixture(scope="module")
def short_windows(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[BackgroundApi]:
    settings = api_settings(
        tmp_path_factory.mktemp("windows") / "data",
        worker=True,
        models=[fake_model(upstream.url, name="slow", max_concurrency=1, adaptive=False)],
        min_completion_window="1s",
        max_completion_window="2d",
        stop_grace=1,
    )
    with BackgroundApi(settings) as app:
        yield app


def test_a_batch_that_runs_out_of_time_expires_with_partial_results(
    short_windows: BackgroundApi, upstream: FakeUpstream
) -> None:
    upstream.configure(latency=0.05)
    lines = chat_lines(200, model="slow")
    with short_windows.openai("k") as client:
        file = client.files.create(file=("w.jsonl", jsonl(lines)), purpose="batch")
        created = client.batches.create(
            input_file_id=file.id,
            endpoint="/v1/chat/completions",
            completion_window="3s",  # type: ignore[arg-type]
        )
        assert created.completion_window == "3s"
        assert created.expires_at == created.created_at + 3

        batch = wait_for_batch(client, created.id, timeout=30)

        assert batch.status == "expired"
        assert batch.expired_at is not None and batch.expired_at >= created.expires_at
        counts = batch.request_counts
        assert counts.total == 200
        assert 0 < counts.completed < 200
        assert counts.completed + counts.failed == 200
        ok = read_jsonl(client.files.content(batch.output_file_id).text)
        failed = read_jsonl(client.files.content(batch.error_file_id).text)
    assert len(ok) == counts.completed
    assert Counter(r["custom_id"] for r in ok + failed) == Counter(
        line["custom_id"] for line in lines
    )
    assert {r["error"]["code"] for r in failed} == {"batch_expired"}
    assert all(r["response"] is None for r in failed)


@pytest.mark.parametrize("window", ["0h", "24", "1w", "3d", "1.5h", "0s"])
def test_windows_outside_the_grammar_or_range_are_refused(
    short_windows: BackgroundApi, window: str
) -> None:
    with short_windows.openai("k") as client:
        file = client.files.create(
            file=("w.jsonl", jsonl(chat_lines(1, model="slow"))), purpose="batch"
        )
        with pytest.raises(openai.BadRequestError) as caught:
            client.batches.create(
                input_file_id=file.id,
                endpoint="/v1/chat/completions",
                completion_window=window,  # type: ignore[arg-type]
            )
    assert caught.value.body["param"] == "completion_window"  # type: ignore[index]


def test_the_default_window_is_24h(short_windows: BackgroundApi) -> None:
    with short_windows.openai("k") as client:
        file = client.files.create(
            file=("w.jsonl", jsonl(chat_lines(1, model="slow"))), purpose="batch"
        )
    response = short_windows.client().post(
        "/v1/batches",
        json={"input_file_id": file.id, "endpoint": "/v1/chat/completions"},
    )
    batch = response.json()
    assert batch["completion_window"] == "24h"
    assert batch["expires_at"] == batch["created_at"] + 86400
