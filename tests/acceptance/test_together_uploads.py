"""Together's signed-URL upload, step by step over raw HTTP (in process:
the answers are the point), and its multipart flow through the real SDK
3.x with the threshold lowered, against a real server: the SDK PUTs each
part with an `httpx.Client` of its own, so this is also the Together SDK's
end-to-end run over real HTTP."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import together
from together.lib.resources import files as sdk_files

from overnight.testing.fake_upstream import FakeUpstream

from helpers import ServerProcess, chat_lines, fake_model, jsonl, read_jsonl
from inprocess import BASE_URL, AppFactory, BackgroundApi

#: A single PUT may carry at most this much on the multipart server below.
THRESHOLD = 4096


def announce(app: BackgroundApi, **fields: str) -> httpx.Response:
    """Step 1, as SDK 1.x sends it: form-urlencoded metadata only."""
    form = {"purpose": "batch-api", "file_name": "in.jsonl", "file_type": "jsonl", **fields}
    return app.client("k").post("/together/v1/files", data=form)


def test_the_three_steps_and_a_url_that_cannot_be_replayed(app_server: BackgroundApi) -> None:
    anonymous = app_server.client()
    data = jsonl(chat_lines(3)) + b'{"custom_id": "no-newline", "body": {}}'
    step1 = announce(app_server)
    assert step1.status_code == 302
    url, file_id = step1.headers["location"], step1.headers["x-together-file-id"]
    assert url.startswith(f"{BASE_URL}/together/v1/files/upload/")
    assert len(url.rsplit("/", 1)[1]) >= 43  # 256 random bits, base64url
    assert file_id.startswith("file-")

    step2 = anonymous.put(url, content=data)  # no Authorization header at all
    assert step2.status_code == 200
    assert step2.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'

    step3 = anonymous.post(f"/together/v1/files/{file_id}/preprocess")
    assert step3.status_code == 200
    body = step3.json()
    assert body["id"] == file_id and body["bytes"] == len(data)
    assert (body["FileType"], body["LineCount"], body["Processed"]) == ("jsonl", 4, True)
    assert (body["purpose"], body["processing_status"], body["filename"]) == (
        "batch-api",
        "COMPLETED",
        "in.jsonl",
    )
    assert anonymous.get(f"/together/v1/files/{file_id}/content").content == data

    replay = anonymous.put(url, content=b"something else")
    assert replay.status_code == 403
    error = replay.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "upload_url_rejected"
    assert "already used" in error["message"]
    assert anonymous.get(f"/together/v1/files/{file_id}/content").content == data

    forged = anonymous.put(url[:-4] + "AAAA", content=data)
    assert forged.status_code == 403
    assert "not valid" in forged.json()["error"]["message"]


def test_an_upload_url_expires(start_app: AppFactory, upstream: FakeUpstream) -> None:
    app = start_app([fake_model(upstream.url)], upload_url_expiry=1)
    anonymous = app.client()
    url = announce(app).headers["location"]
    time.sleep(2.1)  # expiry is kept in whole seconds
    late = anonymous.put(url, content=b"{}\n")
    assert late.status_code == 403
    assert "expired" in late.json()["error"]["message"]
    # A fresh URL works, the expired one stays refused.
    assert anonymous.put(announce(app).headers["location"], content=b"{}\n").status_code == 200
    assert anonymous.put(url, content=b"{}\n").status_code == 403


def test_the_keyless_put_stores_the_file_for_the_tenant_that_asked(
    start_app: AppFactory, upstream: FakeUpstream
) -> None:
    tenants = [{"name": "alpha", "api_keys": ["key-a"]}, {"name": "beta", "api_keys": ["key-b"]}]
    app = start_app([fake_model(upstream.url)], tenants=tenants)
    anonymous, as_a, as_b = app.client(), app.client("key-a"), app.client("key-b")
    files = "/together/v1/files"
    data = b'{"custom_id": "a", "body": {}}\n'
    form = {
        "purpose": "batch-api",
        "file_name": "t.jsonl",
        "checksum": hashlib.sha256(data).hexdigest(),
    }
    assert anonymous.post(files, data=form).status_code == 401
    step1 = as_a.post(files, data=form)
    assert step1.status_code == 302
    assert anonymous.put(step1.headers["location"], content=data).status_code == 200
    file_id = step1.headers["x-together-file-id"]
    assert as_b.post(f"{files}/{file_id}/preprocess").status_code == 404
    assert as_a.post(f"{files}/{file_id}/preprocess").status_code == 200
    # Dedupe looks only at the asking tenant's files.
    assert as_a.post(files, data=form).status_code == 409
    assert as_b.post(files, data=form).status_code == 302


def test_bytes_that_do_not_match_the_checksum_are_not_kept(app_server: BackgroundApi) -> None:
    anonymous = app_server.client()
    step1 = announce(app_server, checksum=hashlib.sha256(b"promised").hexdigest())
    refused = anonymous.put(step1.headers["location"], content=b"delivered")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "checksum_mismatch"
    file_id = step1.headers["x-together-file-id"]
    assert anonymous.post(f"/together/v1/files/{file_id}/preprocess").status_code == 404


def test_announcements_are_checked(app_server: BackgroundApi) -> None:
    missing = app_server.client().post("/together/v1/files", data={"purpose": "batch-api"})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "file_name"
    for field, value in (("purpose", "nonsense"), ("file_type", "xml"), ("checksum", "abc")):
        refused = announce(app_server, **{field: value})
        assert refused.status_code == 400, field
        assert refused.json()["error"]["param"] == field


# ------------------------------------------------------------------ multipart


@pytest.fixture(scope="module")
def multipart_server(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[ServerProcess]:
    from helpers import write_config

    root = tmp_path_factory.mktemp("multipart")
    config = write_config(
        root / "config.toml",
        [fake_model(upstream.url)],
        multipart_threshold=THRESHOLD,
        worker_processes=0,  # uploads are the point, not the worker's process
    )
    process = ServerProcess(root / "data", config=config).start()
    yield process
    process.stop()


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """SDK 3.x picks the multipart flow by a module constant (above 5 GiB)
    and sizes parts by two more; lower them in this process so that a 10 KB
    file goes up in three parts."""
    monkeypatch.setattr(sdk_files, "MULTIPART_THRESHOLD_GB", THRESHOLD / 2**30)
    monkeypatch.setattr(sdk_files, "TARGET_PART_SIZE_MB", THRESHOLD / 2**20)
    monkeypatch.setattr(sdk_files, "MIN_PART_SIZE_MB", 0)


def big_file(path: Path, n: int = 100) -> bytes:
    """Together-format lines (no method or url), named after the file so
    that no two tests upload the same bytes (which would be deduplicated)."""
    lines = [
        {"custom_id": line["custom_id"], "body": line["body"]}
        for line in chat_lines(n, prefix=path.stem)
    ]
    data = jsonl(lines)
    assert len(data) > 2 * THRESHOLD
    path.write_bytes(data)
    return data


def test_a_file_over_the_threshold_goes_up_in_parts_and_runs(
    multipart_server: ServerProcess, small_parts: None, tmp_path: Path
) -> None:
    data = big_file(tmp_path / "big.jsonl")
    with together.Together(
        base_url=f"{multipart_server.url}/together", api_key="k", max_retries=0
    ) as client:
        file = client.files.upload(tmp_path / "big.jsonl", purpose="batch-api")
        assert file.bytes == len(data)
        assert client.files.content(file.id).read() == data
        assert client.files.retrieve(file.id).model_extra["LineCount"] == 100  # type: ignore[index]
        # The same bytes again: the initiate step answers 409 with the file id.
        assert client.files.upload(tmp_path / "big.jsonl", purpose="batch-api").id == file.id

        job = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions").job
        assert job is not None and job.id is not None
        deadline = time.monotonic() + 60
        while (job := client.batches.retrieve(job.id or "")).status != "COMPLETED":
            assert time.monotonic() < deadline and job.status in ("VALIDATING", "IN_PROGRESS")
            time.sleep(0.05)
        rows = read_jsonl(client.files.content(job.output_file_id or "").read().decode())
        assert len(rows) == 100


def test_a_single_put_over_the_threshold_is_refused(
    multipart_server: ServerProcess, tmp_path: Path
) -> None:
    big_file(tmp_path / "single.jsonl")
    with (
        together.Together(
            base_url=f"{multipart_server.url}/together", api_key="k", max_retries=0
        ) as client,
        pytest.raises(together.APIStatusError) as caught,
    ):
        client.files.upload(tmp_path / "single.jsonl", purpose="batch-api")
    assert caught.value.status_code == 413
    assert "multipart/initiate" in caught.value.response.text


def initiate(http: httpx.Client, data: bytes, num_parts: int) -> dict[str, object]:
    response = http.post(
        "/together/v1/files/multipart/initiate",
        json={
            "file_name": "raw.jsonl",
            "file_size": len(data),
            "num_parts": num_parts,
            "purpose": "batch-api",
            "file_type": "jsonl",
        },
    )
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


def test_complete_checks_part_order_and_etags_and_abort_ends_it(
    start_app: AppFactory, upstream: FakeUpstream
) -> None:
    """Raw HTTP, in process, on both backends: the parts and the file they
    make are kept by each backend's storage."""
    http = start_app([fake_model(upstream.url)], multipart_threshold=THRESHOLD).client()
    base = "/together/v1/files/multipart"
    data = b"".join(f'{{"n": {i}}}\n'.encode() for i in range(30))
    info = initiate(http, data, 2)
    parts = info["parts"]
    assert isinstance(parts, list) and [p["PartNumber"] for p in parts] == [1, 2]
    halves = [data[: len(data) // 2], data[len(data) // 2 :]]
    etags = []
    for part, piece in zip(parts, halves, strict=True):
        put = http.put(part["URL"], content=piece, headers=part["Headers"])
        assert put.status_code == 200
        etags.append(put.headers["etag"].strip('"'))
    assert http.put(parts[0]["URL"], content=halves[0]).status_code == 403  # one use each

    ids = {"upload_id": info["upload_id"], "file_id": info["file_id"]}
    wrong = http.post(
        f"{base}/complete",
        json={
            **ids,
            "parts": [{"part_number": 1, "etag": etags[1]}, {"part_number": 2, "etag": etags[1]}],
        },
    )
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "etag_mismatch"
    backwards = http.post(
        f"{base}/complete",
        json={
            **ids,
            "parts": [{"part_number": 2, "etag": etags[1]}, {"part_number": 1, "etag": etags[0]}],
        },
    )
    assert backwards.status_code == 400 and backwards.json()["error"]["param"] == "parts"
    short = http.post(
        f"{base}/complete", json={**ids, "parts": [{"part_number": 1, "etag": etags[0]}]}
    )
    assert short.status_code == 400 and short.json()["error"]["param"] == "bytes"

    done = http.post(
        f"{base}/complete",
        json={**ids, "parts": [{"part_number": n + 1, "etag": e} for n, e in enumerate(etags)]},
    )
    assert done.status_code == 200
    file = done.json()["file"]
    assert file["id"] == info["file_id"] and file["bytes"] == len(data)
    assert file["LineCount"] == 30
    content = http.get(f"/together/v1/files/{file['id']}/content")
    assert content.content == data

    other = initiate(http, data, 3)
    ids = {"upload_id": other["upload_id"], "file_id": other["file_id"]}
    aborted = http.post(f"{base}/abort", json=ids)
    assert aborted.status_code == 200 and aborted.json()["status"] == "cancelled"
    late = http.put(other["parts"][0]["URL"], content=b"x")  # type: ignore[index]
    assert late.status_code == 409
    assert http.post(f"{base}/complete", json={**ids, "parts": []}).status_code == 409
