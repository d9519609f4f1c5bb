"""The seed's workflow through the real `together` SDK 3.x, against the
app and its worker in-process (tests/inprocess.py, both backends) and the
fake upstream: upload with purpose `batch-api`, create, poll
to COMPLETED, download, list, cancel. SDK 1.x runs the same flow from its
own virtualenv in test_together1_sdk.py."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import together
from together.lib.resources.files import FileAlreadyExistsError

from overnight.testing.fake_upstream import FakeUpstream

from helpers import chat_lines, jsonl, read_jsonl, wait_for_batch
from inprocess import BackgroundApi

ENDPOINT = "/v1/chat/completions"
TERMINAL = ("COMPLETED", "FAILED", "EXPIRED", "CANCELLED")


def together_lines(n: int, *, model: str = "fake-model", prefix: str = "req") -> list[Any]:
    """Together's input format: no `method`, no `url`."""
    return [
        {"custom_id": line["custom_id"], "body": line["body"]}
        for line in chat_lines(n, model=model, prefix=prefix)
    ]


@pytest.fixture
def server(app_server: BackgroundApi) -> BackgroundApi:
    return app_server


@pytest.fixture
def tclient(server: BackgroundApi) -> Iterator[together.Together]:
    with server.together() as sdk:
        yield sdk


def upload(client: together.Together, path: Path, lines: list[Any]) -> Any:
    path.write_bytes(jsonl(lines))
    return client.files.upload(path, purpose="batch-api")


def poll(client: together.Together, batch_id: str, timeout: float = 60) -> tuple[Any, list[Any]]:
    """Poll like the seed document does; returns the last job and every job seen."""
    seen = []
    deadline = time.monotonic() + timeout
    job = client.batches.retrieve(batch_id)
    while job.status not in TERMINAL:
        assert time.monotonic() < deadline, f"{batch_id} still {job.status}"
        seen.append(job)
        time.sleep(0.05)
        job = client.batches.retrieve(batch_id)
    return job, seen


def content(client: together.Together, file_id: str | None) -> list[dict[str, Any]]:
    return read_jsonl(client.files.content(file_id).read().decode()) if file_id else []


def test_the_seed_workflow_runs_to_completion_with_progress_rising(
    tclient: together.Together, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.configure(latency=0.05)
    lines = together_lines(40, model="fake-small")
    file = upload(tclient, tmp_path / "batch.jsonl", lines)
    assert file.id.startswith("file-")
    assert (file.purpose, file.file_type, file.processing_status) == (
        "batch-api",
        "jsonl",
        "COMPLETED",
    )
    assert file.bytes == (tmp_path / "batch.jsonl").stat().st_size
    stored = tclient.files.retrieve(file.id)
    assert stored.model_extra is not None
    assert (stored.model_extra["LineCount"], stored.model_extra["Processed"]) == (40, True)

    created = tclient.batches.create(input_file_id=file.id, endpoint=ENDPOINT)
    assert created.warning is None
    job = created.job
    assert job is not None and job.id is not None
    assert job.status == "VALIDATING"
    assert job.user_id and job.file_size_bytes == file.bytes
    assert job.input_file_id == file.id and job.endpoint == ENDPOINT
    assert job.created_at is not None and job.job_deadline is not None
    assert (job.job_deadline - job.created_at).total_seconds() == 24 * 3600
    assert job.progress == 0.0 and job.completed_at is None and job.error is None

    done, seen = poll(tclient, job.id)

    assert done.status == "COMPLETED"
    assert done.progress == 100.0
    assert done.x_model_id == "fake-small"  # from the file's lines
    assert done.completed_at is not None and done.error_file_id is None
    running = [j.progress for j in seen if j.status == "IN_PROGRESS"]
    assert running == sorted(running)
    assert len({p for p in running if 0 < p < 100}) >= 3, running
    rows = content(tclient, done.output_file_id)
    assert sorted(r["custom_id"] for r in rows) == sorted(line["custom_id"] for line in lines)
    for row in rows:
        assert set(row) == {"id", "custom_id", "response"}
        assert row["id"].startswith("br_")
        assert row["response"]["status_code"] == 200
        number = row["custom_id"].removeprefix("req-")
        reply = row["response"]["body"]["choices"][0]["message"]["content"]
        assert reply == f"echo: message number {number}"
    output = tclient.files.retrieve(done.output_file_id)
    assert output.purpose == "batch-api"  # stored as batch_output; 1.x knows only four purposes
    assert output.model_extra is not None and output.model_extra["LineCount"] == 40

    listed = tclient.batches.list()
    assert isinstance(listed, list)
    assert done.id in [b.id for b in listed]
    assert {f.id for f in tclient.files.list().data} >= {file.id, done.output_file_id}


def test_cancel_shows_canceling_then_cancelled_and_keeps_partial_output(
    tclient: together.Together, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.configure(latency=0.1)
    lines = together_lines(60, model="fake-small", prefix="cancel")
    file = upload(tclient, tmp_path / "cancel.jsonl", lines)
    job = tclient.batches.create(input_file_id=file.id, endpoint=ENDPOINT).job
    assert job is not None and job.id is not None
    deadline = time.monotonic() + 30
    while (tclient.batches.retrieve(job.id).progress or 0) < 8:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    cancelling = tclient.batches.cancel(job.id)
    assert cancelling.status == "CANCELING"  # not in the SDK's Literal, passed through

    done, seen = poll(tclient, job.id)
    assert done.status == "CANCELLED"
    assert {j.status for j in seen} <= {"CANCELING"}
    ok = content(tclient, done.output_file_id)
    failed = content(tclient, done.error_file_id)
    assert 5 <= len(ok) < 60
    assert Counter(r["custom_id"] for r in ok + failed) == Counter(
        line["custom_id"] for line in lines
    )
    for row in failed:
        assert row["error"]["code"] == "batch_cancelled"
        assert "response" not in row
    assert tclient.batches.cancel(job.id).status == "CANCELLED"  # idempotent


def test_a_repeated_checksum_is_deduplicated_with_409(
    tclient: together.Together, server: BackgroundApi, tmp_path: Path
) -> None:
    path = tmp_path / "same.jsonl"
    first = upload(tclient, path, together_lines(3, prefix="dedupe"))
    again = tclient.files.upload(path, purpose="batch-api")  # the SDK fetches the existing file
    assert again.id == first.id
    with pytest.raises(FileAlreadyExistsError) as caught:
        tclient.files.upload(path, purpose="batch-api", raise_if_already_exists=True)
    assert caught.value.file_id == first.id

    checksum = hashlib.sha256(path.read_bytes()).hexdigest()
    form = {
        "purpose": "batch-api",
        "file_name": "x.jsonl",
        "file_type": "jsonl",
        "checksum": checksum,
    }
    response = server.client().post("/together/v1/files", data=form)
    assert response.status_code == 409
    assert response.headers["x-should-retry"] == "false"  # 3.x would retry a bare 409
    assert response.json()["file_id"] == first.id
    assert response.json()["error"]["code"] == "file_exists"
    # Another purpose is another file.
    form["purpose"] = "fine-tune"
    assert server.client().post("/together/v1/files", data=form).status_code == 302


def test_a_failed_batch_reports_its_lines_in_one_error_string(
    tclient: together.Together, tmp_path: Path
) -> None:
    good = together_lines(1, prefix="bad")[0]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(jsonl([good]) + b"{not json}\n" + jsonl([good]))
    file = tclient.files.upload(path, purpose="batch-api", check=False)
    job = tclient.batches.create(input_file_id=file.id, endpoint=ENDPOINT).job
    assert job is not None and job.id is not None
    done, _ = poll(tclient, job.id)
    assert done.status == "FAILED"
    assert done.error is not None
    assert "line 2:" in done.error and "line 3:" in done.error
    assert done.output_file_id is None and done.completed_at is not None


def test_priority_and_completion_window_are_accepted_and_kept(
    tclient: together.Together, tmp_path: Path
) -> None:
    file = upload(tclient, tmp_path / "p.jsonl", together_lines(2, prefix="prio"))
    job = tclient.batches.create(
        input_file_id=file.id,
        endpoint=ENDPOINT,
        completion_window="2h",
        priority=5,
        model_id="fake-model",
    ).job
    assert job is not None and job.created_at is not None and job.job_deadline is not None
    assert (job.job_deadline - job.created_at).total_seconds() == 2 * 3600
    with pytest.raises(together.BadRequestError) as caught:
        tclient.batches.create(input_file_id=file.id, endpoint=ENDPOINT, completion_window="30d")
    assert caught.value.body["error"]["param"] == "completion_window"  # type: ignore[index]
    with pytest.raises(together.BadRequestError) as unknown:
        tclient.batches.create(input_file_id=file.id, endpoint=ENDPOINT, model_id="nope")
    assert unknown.value.body["error"]["code"] == "model_not_found"  # type: ignore[index]


def test_errors_use_the_envelope_the_sdks_parse(
    tclient: together.Together, server: BackgroundApi
) -> None:
    with pytest.raises(together.NotFoundError) as caught:
        tclient.batches.retrieve("batch_nope")
    assert caught.value.body["error"]["code"] == "batch_not_found"  # type: ignore[index]
    for response in (
        server.client().get("/together/v1/files/file-nope"),
        server.client().post("/together/v1/batches", json={"endpoint": ENDPOINT}),
        server.client().post("/together/v1/files", data={"purpose": "batch-api"}),
        server.client().patch("/together/v1/batches"),
    ):
        assert response.status_code in (400, 404, 405)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(together.BadRequestError):
        tclient.batches.create(input_file_id="file-nope", endpoint="/v1/audio/transcriptions")


def test_files_and_batches_are_shared_with_the_openai_dialect(
    tclient: together.Together, server: BackgroundApi, tmp_path: Path
) -> None:
    with server.openai() as oclient:
        # Uploaded through OpenAI, batched through Together: Together's shapes.
        ofile = oclient.files.create(
            file=("o.jsonl", jsonl(chat_lines(3, prefix="o2t"))), purpose="batch"
        )
        assert tclient.files.retrieve(ofile.id).purpose == "batch-api"
        job = tclient.batches.create(input_file_id=ofile.id, endpoint=ENDPOINT).job
        assert job is not None and job.id is not None
        done, _ = poll(tclient, job.id)
        assert done.status == "COMPLETED"
        assert all(r["id"].startswith("br_") for r in content(tclient, done.output_file_id))
        as_openai = oclient.batches.retrieve(job.id)
        assert as_openai.status == "completed" and as_openai.request_counts is not None
        assert as_openai.request_counts.completed == 3

        # Uploaded through Together, batched through OpenAI: OpenAI's shapes.
        tfile = upload(tclient, tmp_path / "t.jsonl", chat_lines(3, prefix="t2o"))
        assert oclient.files.retrieve(tfile.id).purpose == "batch-api"
        created = oclient.batches.create(
            input_file_id=tfile.id, endpoint=ENDPOINT, completion_window="24h"
        )
        batch = wait_for_batch(oclient, created.id)
        assert batch.status == "completed"
        rows = read_jsonl(oclient.files.content(batch.output_file_id).text)  # type: ignore[arg-type]
        assert all(r["id"].startswith("batch_req_") and r["error"] is None for r in rows)
        assert tclient.batches.retrieve(batch.id).status == "COMPLETED"
        assert oclient.files.content(tfile.id).content == (tmp_path / "t.jsonl").read_bytes()
        with pytest.raises(openai.NotFoundError):
            oclient.files.retrieve(tclient.files.delete(tfile.id).id or "")


def test_input_lines_may_carry_method_and_url_too(
    tclient: together.Together, tmp_path: Path
) -> None:
    lines = chat_lines(2, prefix="full")
    file = upload(tclient, tmp_path / "full.jsonl", lines)
    job = tclient.batches.create(input_file_id=file.id, endpoint=ENDPOINT).job
    assert job is not None and job.id is not None
    assert poll(tclient, job.id)[0].status == "COMPLETED"
