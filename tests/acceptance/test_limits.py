"""Limits, quotas and retention, on both storage backends: an upload past
`max_upload_bytes` is cut off while it streams and leaves nothing behind in
storage (S3 multipart uploads included), on a real server's socket; quotas
answer 429; files expire (404 at once, bytes swept soon after), batch
results expire with `output_expires_after`; every limit is a setting. All
but the socket tests run in process: their answers are the point."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from overnight.testing.fake_upstream import FakeUpstream

from backends import Backend
from helpers import ServerProcess, chat_lines, fake_model, jsonl, wait_for_batch, write_config
from inprocess import BackgroundApi, api_settings

MiB = 1024 * 1024
UPLOAD_LIMIT = 6 * MiB
KEY, OTHER = "key-limits", "key-other"


class Storage:
    """What the server's storage holds right now, whatever the backend:
    every blob, and (S3) every multipart upload not completed or aborted."""

    def __init__(self, data_dir: Path, settings: dict[str, Any]) -> None:
        self.root = data_dir / "blobs"
        self.settings = settings

    def listing(self) -> set[str]:
        if "storage_url" not in self.settings:
            return {str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()}
        import boto3

        bucket, _, prefix = self.settings["storage_url"].removeprefix("s3://").partition("/")
        s3 = boto3.client(
            "s3",
            endpoint_url=self.settings["s3_endpoint_url"],
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        objects = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        pending = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return {o["Key"].removeprefix(prefix + "/") for o in objects} | {
            "multipart:" + u["Key"] for u in pending
        }

    def files(self) -> set[str]:
        """Blobs of files, and anything half-written (S3 multipart, temp files)."""
        return {k for k in self.listing() if k.startswith(("files/", "multipart:", "uploads/"))}


TENANTS = [{"name": "lim", "api_keys": [KEY]}, {"name": "other", "api_keys": [OTHER]}]

#: Every limit these tests reach, as settings.
LIMITS: dict[str, Any] = {
    "max_upload_bytes": UPLOAD_LIMIT,
    "max_line_bytes": 4096,
    "max_custom_id_length": 16,
    "max_metadata_pairs": 2,
    "max_enqueued_requests_per_tenant": 50,
    "retention_interval": 0.2,
    "default_output_expires_after": 86400,
    "upload_expiry": 3,
}


def models(upstream: FakeUpstream) -> list[dict[str, Any]]:
    return [
        fake_model(upstream.url),
        fake_model(upstream.url, name="fake-small", max_concurrency=1),
    ]


def storage_settings(backend: Backend) -> dict[str, Any]:
    settings = backend.settings()
    if settings:
        settings["s3_part_size"] = 5 * MiB  # so a cut-off upload has S3 parts to abort
    return settings


@pytest.fixture(scope="class")
def on_a_socket(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream, backend: Backend
) -> Iterator[tuple[ServerProcess, Storage]]:
    """A real server, for what only a socket shows: a body cut off while it
    streams, and a client that hangs up. It runs no worker (so no retention
    sweep): what is cleaned up, the API cleaned up. Class-scoped, so that it
    stops before the in-process tests run."""
    root = tmp_path_factory.mktemp("limits")
    settings = storage_settings(backend)
    config = write_config(root / "config.toml", models(upstream), **LIMITS, **settings)
    server = ServerProcess(
        root / "data",
        config=config,
        env={"OVERNIGHT_TENANTS": json.dumps(TENANTS)},
        args=["--no-worker"],
    ).start()
    yield server, Storage(root / "data", settings)
    server.stop()


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream, backend: Backend
) -> Iterator[tuple[BackgroundApi, Storage]]:
    root = tmp_path_factory.mktemp("limits-app")
    settings = storage_settings(backend)
    app_settings = api_settings(
        root / "data", worker=True, models=models(upstream), tenants=TENANTS, **LIMITS, **settings
    )
    with BackgroundApi(app_settings) as app:
        yield app, Storage(root / "data", settings)


@pytest.fixture
def client(limited: tuple[BackgroundApi, Storage]) -> Iterator[openai.OpenAI]:
    with limited[0].openai(KEY) as sdk:
        yield sdk


def socket_client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


def eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ------------------------------------------------------------------ exposure
#
# First in the file: these need no server, and run before the in-process
# app starts instead of while it idles.


def test_local_mode_refuses_a_public_address(tmp_path: Path) -> None:
    """No tenants, no keys: `serve` will not listen beyond loopback. It
    stops before binding anything."""
    started = time.monotonic()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "overnight", "serve", "--host", "0.0.0.0", "--port", "1"),
            *("--data-dir", str(tmp_path / "data")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    said = " ".join((result.stdout + result.stderr).split())
    assert "refusing to listen on 0.0.0.0 in single-user local mode" in said
    assert "--allow-insecure-public" in said
    assert time.monotonic() - started < 30


def test_exposure_is_allowed_with_keys_or_when_told(tmp_path: Path) -> None:
    from overnight.cli.serve import check_exposure as _check_exposure
    from overnight.settings import load_settings

    digest = hashlib.sha256(b"k").hexdigest()
    public = {"host": "0.0.0.0", "data_dir": tmp_path / "d"}
    assert not _check_exposure(load_settings(None, **public))
    assert _check_exposure(load_settings(None, **public, allow_insecure_public=True))
    assert _check_exposure(load_settings(None, **public, admin_api_key_hashes=[digest]))
    tenants = [{"name": "t", "api_key_hashes": [digest]}]
    assert _check_exposure(load_settings(None, **public, tenants=tenants))
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert _check_exposure(load_settings(None, host=host, data_dir=tmp_path / "d"))


# ------------------------------------------------------------------ uploads


class TestOnASocket:
    """What a real server's socket shows; the rest runs in process."""

    def test_an_oversized_upload_is_cut_off_and_leaves_nothing_behind(
        self, on_a_socket: tuple[ServerProcess, Storage]
    ) -> None:
        server, storage = on_a_socket
        client = socket_client(server)
        before = storage.files()
        too_big = b'{"x": 1}\n' * (UPLOAD_LIMIT // 9 + 100_000)  # about 6.9 MiB

        with pytest.raises(openai.APIStatusError) as caught:
            client.files.create(file=("big.jsonl", too_big), purpose="batch")
        assert caught.value.status_code == 413
        assert caught.value.body["code"] == "file_too_large"  # type: ignore[index]
        assert caught.value.body["param"] == "file"  # type: ignore[index]

        upload = client.uploads.create(
            bytes=UPLOAD_LIMIT, filename="u.jsonl", mime_type="application/jsonl", purpose="batch"
        )
        with pytest.raises(openai.APIStatusError) as part:
            client.uploads.parts.create(upload_id=upload.id, data=too_big)
        assert part.value.status_code == 413

        grant = httpx.post(
            f"{server.url}/together/v1/files",
            data={"purpose": "batch-api", "file_name": "t.jsonl"},
            headers=auth(),
        )
        put = httpx.put(grant.headers["location"], content=too_big, timeout=60)
        assert put.status_code == 413
        assert put.json()["error"]["code"] == "file_too_large"

        assert storage.files() == before
        assert [
            f.filename for f in client.files.list().data if f.filename in ("big.jsonl", "t.jsonl")
        ] == []
        # Just under the limit is fine.
        fits = client.files.create(
            file=("fits.jsonl", too_big[: UPLOAD_LIMIT - 10]), purpose="batch"
        )
        assert fits.bytes == UPLOAD_LIMIT - 10

    def test_a_client_that_hangs_up_mid_upload_leaves_nothing(
        self, on_a_socket: tuple[ServerProcess, Storage]
    ) -> None:
        server, storage = on_a_socket
        client = socket_client(server)
        before = storage.files()
        listed = {f.id for f in client.files.list()}
        head = (
            f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 6000000\r\n\r\n"
            '--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            '--B\r\nContent-Disposition: form-data; name="file"; filename="cut.jsonl"\r\n\r\n'
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head + b'{"x": 1}\n' * 600_000)  # 5.4 MiB: an S3 part went out
        eventually(lambda: storage.files() == before)
        assert {f.id for f in client.files.list()} == listed


def test_a_json_body_over_its_limit_is_refused(limited: tuple[BackgroundApi, Storage]) -> None:
    http = limited[0].client(KEY, timeout=30)
    response = http.post("/v1/batches", content=b" " * (5 * MiB))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert http.get("/v1/files").status_code == 200


# ------------------------------------------------------------------- quotas


def test_enqueued_requests_are_bounded_per_tenant(
    limited: tuple[BackgroundApi, Storage], client: openai.OpenAI
) -> None:
    app, _ = limited
    file = client.files.create(file=("q.jsonl", jsonl(chat_lines(60))), purpose="batch")
    with pytest.raises(openai.RateLimitError) as caught:
        client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    body = caught.value.body
    assert body["code"] == "too_many_enqueued_requests"  # type: ignore[index]
    assert "50" in body["message"]  # type: ignore[index]
    # Other tenants are not affected by this tenant's queue.
    with app.openai(OTHER) as other:
        small = other.files.create(file=("s.jsonl", jsonl(chat_lines(5))), purpose="batch")
        created = other.batches.create(
            input_file_id=small.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert wait_for_batch(other, created.id).status == "completed"


# ------------------------------------------------------------ line limits


def test_line_and_custom_id_limits_are_settings(client: openai.OpenAI) -> None:
    good = chat_lines(1)[0]
    lines = [
        jsonl([{**good, "custom_id": "short"}]),
        jsonl([{**good, "custom_id": "x" * 17}]),
        jsonl([{**good, "custom_id": "padded", "pad": "p" * 5000}]),
    ]
    file = client.files.create(file=("l.jsonl", b"".join(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = wait_for_batch(client, batch.id)
    assert failed.status == "failed"
    found = [(e.line, e.code, e.param) for e in failed.errors.data or []]  # type: ignore[union-attr]
    assert found == [(2, "custom_id_too_long", "custom_id"), (3, "line_too_long", None)]


def test_metadata_limits_are_settings(client: openai.OpenAI) -> None:
    file = client.files.create(file=("m.jsonl", jsonl(chat_lines(1))), purpose="batch")
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(
            input_file_id=file.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"a": "1", "b": "2", "c": "3"},
        )
    assert caught.value.body["param"] == "metadata"  # type: ignore[index]
    assert "at most 2 pairs" in caught.value.body["message"]  # type: ignore[index]


# ---------------------------------------------------------------- retention


def test_an_expired_file_is_gone_at_once_and_swept_from_storage(
    limited: tuple[BackgroundApi, Storage], client: openai.OpenAI
) -> None:
    _, storage = limited
    file = client.files.create(
        file=("e.jsonl", jsonl(chat_lines(2))),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 2},
    )
    assert file.expires_at == file.created_at + 2
    assert client.files.retrieve(file.id).id == file.id
    assert f"files/{file.id}" in storage.listing()

    eventually(lambda: time.time() >= file.created_at + 2.05)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(file.id)
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert file.id not in {f.id for f in client.files.list().data}
    eventually(lambda: f"files/{file.id}" not in storage.listing())


def test_batch_results_expire_as_the_batch_asked(
    limited: tuple[BackgroundApi, Storage], client: openai.OpenAI
) -> None:
    _, storage = limited
    file = client.files.create(file=("r.jsonl", jsonl(chat_lines(3))), purpose="batch")
    short = client.batches.create(
        input_file_id=file.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        output_expires_after={"anchor": "created_at", "seconds": 5},
    )
    default = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    short = wait_for_batch(client, short.id)
    default = wait_for_batch(client, default.id)
    kept = client.files.retrieve(default.output_file_id)  # type: ignore[arg-type]
    assert kept.expires_at == kept.created_at + 86400  # default_output_expires_after
    output = client.files.retrieve(short.output_file_id)  # type: ignore[arg-type]
    assert output.expires_at == output.created_at + 5

    eventually(lambda: f"files/{output.id}" not in storage.listing(), timeout=20)
    with pytest.raises(openai.NotFoundError):
        client.files.content(output.id)
    assert client.batches.retrieve(short.id).output_file_id == output.id  # the batch stays


def test_an_abandoned_upload_expires_and_its_parts_are_dropped(
    limited: tuple[BackgroundApi, Storage], client: openai.OpenAI
) -> None:
    _, storage = limited
    upload = client.uploads.create(
        bytes=6, filename="a.txt", mime_type="text/plain", purpose="user_data"
    )
    client.uploads.parts.create(upload_id=upload.id, data=b"abc")
    assert any(k.startswith(f"uploads/{upload.id}/") for k in storage.listing())
    eventually(lambda: not any(k.startswith(f"uploads/{upload.id}/") for k in storage.listing()))
    with pytest.raises(openai.ConflictError) as caught:
        client.uploads.parts.create(upload_id=upload.id, data=b"def")
    assert "expired" in caught.value.body["message"]  # type: ignore[index]


def test_expiry_values_are_checked(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(
            file=("x.jsonl", b"{}\n"),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 0},
        )
    assert caught.value.body["param"] == "expires_after[seconds]"  # type: ignore[index]
    file = client.files.create(file=("y.jsonl", jsonl(chat_lines(1))), purpose="batch")
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(
            input_file_id=file.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            output_expires_after={"anchor": "created_at", "seconds": 10**12},
        )
    assert caught.value.body["param"] == "output_expires_after.seconds"  # type: ignore[index]
