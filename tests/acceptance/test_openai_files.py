"""Files and Uploads through the real `openai` SDK, against the app
in-process (tests/inprocess.py) on both storage backends: the answers and
the stored bytes are the point, not the process."""

from __future__ import annotations

import hashlib
from pathlib import Path

import openai
import pytest

from helpers import chat_lines, jsonl
from inprocess import BackgroundApi


@pytest.fixture
def server(app_server: BackgroundApi) -> BackgroundApi:
    return app_server


@pytest.fixture
def client(app_server: BackgroundApi) -> openai.OpenAI:
    return app_server.openai()


def test_upload_a_file_and_read_it_back(client: openai.OpenAI, tmp_path: Path) -> None:
    data = jsonl(chat_lines(3))
    path = tmp_path / "requests.jsonl"
    path.write_bytes(data)

    with path.open("rb") as handle:
        created = client.files.create(file=handle, purpose="batch")

    assert created.id.startswith("file-")
    assert created.object == "file"
    assert created.bytes == len(data)
    assert created.filename == "requests.jsonl"
    assert created.purpose == "batch"
    assert created.status == "processed"
    retrieved = client.files.retrieve(created.id)
    assert retrieved.model_dump() == created.model_dump()
    assert client.files.content(created.id).content == data


def test_raw_bytes_upload_is_named_upload(client: openai.OpenAI) -> None:
    data = jsonl(chat_lines(2))
    created = client.files.create(file=data, purpose="batch")
    assert created.filename == "upload"
    assert created.bytes == len(data)
    assert client.files.content(created.id).content == data


def test_other_purposes_are_accepted_and_unknown_ones_refused(client: openai.OpenAI) -> None:
    for purpose in ("fine-tune", "user_data", "assistants", "vision", "evals"):
        assert client.files.create(file=("x.txt", b"hello"), purpose=purpose).purpose == purpose  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("x.txt", b"hello"), purpose="nonsense")  # type: ignore[arg-type]
    assert caught.value.body["param"] == "purpose"  # type: ignore[index]
    assert caught.value.body["code"] == "invalid_value"  # type: ignore[index]


def test_file_expiry_is_reported(client: openai.OpenAI) -> None:
    created = client.files.create(
        file=("e.jsonl", b"{}\n"),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert created.expires_at == created.created_at + 3600


def test_list_pages_with_after_and_has_more(client: openai.OpenAI) -> None:
    ids = [client.files.create(file=(f"p{i}.txt", b"x"), purpose="user_data").id for i in range(5)]

    first = client.files.list(purpose="user_data", limit=2)
    assert [f.id for f in first.data] == ids[::-1][:2]  # newest first
    assert first.has_more is True

    everything = [f.id for f in client.files.list(purpose="user_data", limit=2)]  # auto-paging
    assert everything[:5] == ids[::-1]
    assert len(everything) == len(set(everything))

    oldest_first = client.files.list(purpose="user_data", order="asc", limit=100)
    listed = [f.id for f in oldest_first.data]
    assert [i for i in listed if i in ids] == ids
    assert oldest_first.has_more is False


def test_delete_removes_the_file_and_its_bytes(client: openai.OpenAI) -> None:
    created = client.files.create(file=("d.jsonl", b"{}\n"), purpose="batch")
    deleted = client.files.delete(created.id)
    assert deleted.id == created.id
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(created.id)


def test_chunked_upload_through_the_uploads_api(client: openai.OpenAI, tmp_path: Path) -> None:
    data = jsonl(chat_lines(200))
    path = tmp_path / "big.jsonl"
    path.write_bytes(data)

    upload = client.uploads.upload_file_chunked(
        file=path,
        mime_type="application/jsonl",
        purpose="batch",
        part_size=len(data) // 4 + 1,
        md5=hashlib.md5(data).hexdigest(),
    )

    assert upload.status == "completed"
    assert upload.bytes == len(data)
    assert upload.file is not None
    assert upload.file.bytes == len(data)
    assert upload.file.filename == "big.jsonl"
    assert client.files.content(upload.file.id).content == data


def test_upload_complete_checks_total_bytes_and_part_order(client: openai.OpenAI) -> None:
    upload = client.uploads.create(
        bytes=6, filename="o.txt", mime_type="text/plain", purpose="user_data"
    )
    second = client.uploads.parts.create(upload_id=upload.id, data=b"def")
    first = client.uploads.parts.create(upload_id=upload.id, data=b"abc")

    with pytest.raises(openai.BadRequestError) as caught:
        client.uploads.complete(upload_id=upload.id, part_ids=[first.id])
    assert caught.value.body["param"] == "bytes"  # type: ignore[index]

    done = client.uploads.complete(upload_id=upload.id, part_ids=[first.id, second.id])
    assert done.file is not None
    assert client.files.content(done.file.id).content == b"abcdef"

    with pytest.raises(openai.ConflictError):
        client.uploads.parts.create(upload_id=upload.id, data=b"more")


def test_upload_with_a_wrong_md5_is_refused(client: openai.OpenAI) -> None:
    upload = client.uploads.create(
        bytes=3, filename="m.txt", mime_type="text/plain", purpose="user_data"
    )
    part = client.uploads.parts.create(upload_id=upload.id, data=b"abc")
    with pytest.raises(openai.BadRequestError) as caught:
        client.uploads.complete(upload_id=upload.id, part_ids=[part.id], md5="0" * 32)
    assert caught.value.body["code"] == "checksum_mismatch"  # type: ignore[index]


def test_cancelled_upload_takes_no_more_parts(client: openai.OpenAI) -> None:
    upload = client.uploads.create(
        bytes=3, filename="c.txt", mime_type="text/plain", purpose="user_data"
    )
    client.uploads.parts.create(upload_id=upload.id, data=b"abc")
    cancelled = client.uploads.cancel(upload.id)
    assert cancelled.status == "cancelled"
    assert cancelled.file is None
    with pytest.raises(openai.ConflictError):
        client.uploads.complete(upload_id=upload.id, part_ids=[])


def test_errors_use_the_openai_envelope_with_request_ids(server: BackgroundApi) -> None:
    response = server.client().get("/v1/files/file-nope")
    assert response.status_code == 404
    assert response.headers["x-request-id"].startswith("req_")
    assert response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "file_not_found"


def test_a_multipart_body_without_a_boundary_is_refused(server: BackgroundApi) -> None:
    response = server.client().post(
        "/v1/files",
        content=b"purpose=batch",
        headers={"content-type": "multipart/form-data"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_multipart"


def test_a_truncated_multipart_body_leaves_no_file(
    server: BackgroundApi, client: openai.OpenAI
) -> None:
    before = {f.id for f in client.files.list()}
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n'
        b'{"custom_id": "a"}\n'
    )
    response = server.client().post(
        "/v1/files",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_multipart"
    assert {f.id for f in client.files.list()} == before
