"""Conformance with Together's published OpenAPI spec and tools: batch ids
in UUID form (either form accepted, in both dialects), the one-request
`POST /files/upload`, the model lists, and Together's own CLI (`tg`,
shipped with SDK 3.x), which asks `GET /v3/whoami` before every command.
The CLI runs as its own process against a real server on SQLite (the
conversation is the point, not the storage); the rest run the app
in-process (tests/inprocess.py) on both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import together

from conftest import openai_client
from overnight.testing.fake_upstream import FakeUpstream

from helpers import (
    ServerProcess,
    chat_lines,
    fake_model,
    jsonl,
    read_jsonl,
    wait_for_batch,
    write_config,
)
from inprocess import BackgroundApi

ENDPOINT = "/v1/chat/completions"
TG = Path(sys.executable).parent / "tg"


@pytest.fixture
def tclient(app_server: BackgroundApi) -> Iterator[together.Together]:
    with app_server.together() as sdk:
        yield sdk


def is_uuid(text: str | None) -> bool:
    return text is not None and str(uuid.UUID(text)) == text


def test_together_shows_batch_ids_as_uuids_and_both_dialects_take_either_form(
    tclient: together.Together, app_server: BackgroundApi, upstream: FakeUpstream
) -> None:
    with app_server.openai() as oclient:
        file = oclient.files.create(file=("u.jsonl", jsonl(chat_lines(2))), purpose="batch")
        job = tclient.batches.create(input_file_id=file.id, endpoint=ENDPOINT).job
        assert job is not None and is_uuid(job.id)
        assert job.id is not None
        stored = oclient.batches.retrieve(job.id)  # the OpenAI dialect takes the UUID...
        assert stored.id == f"batch_{uuid.UUID(job.id).hex}"  # ...and shows its own form
        assert tclient.batches.retrieve(stored.id).id == job.id  # and Together takes that
        assert tclient.batches.retrieve(job.id.upper()).id == job.id
        assert job.id in [b.id for b in tclient.batches.list()]
        assert all(is_uuid(b.id) for b in tclient.batches.list())
        assert wait_for_batch(oclient, job.id).status == "completed"

        other = oclient.batches.create(
            input_file_id=file.id, endpoint=ENDPOINT, completion_window="24h"
        )
        cancelled = tclient.batches.cancel(other.id)
        assert cancelled.id == str(uuid.UUID(other.id.removeprefix("batch_")))
        assert oclient.batches.cancel(cancelled.id or "").id == other.id
        with pytest.raises(openai.NotFoundError):
            oclient.batches.retrieve(str(uuid.uuid4()))
        with pytest.raises(together.NotFoundError):
            tclient.batches.retrieve(str(uuid.uuid4()))


def test_files_upload_takes_the_whole_file_in_one_multipart_request(
    app_server: BackgroundApi, tclient: together.Together
) -> None:
    body = jsonl([{"custom_id": c["custom_id"], "body": c["body"]} for c in chat_lines(3)])
    response = app_server.client().post(
        "/together/v1/files/upload",
        headers={"Authorization": "Bearer test-key"},
        data={"purpose": "batch-api", "file_name": "direct.jsonl", "file_type": "jsonl"},
        files={"file": ("ignored.jsonl", body, "application/octet-stream")},
    )
    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["id"].startswith("file-")
    assert (shown["filename"], shown["bytes"], shown["purpose"]) == (
        "direct.jsonl",
        len(body),
        "batch-api",
    )
    assert (shown["FileType"], shown["LineCount"], shown["processing_status"]) == (
        "jsonl",
        3,
        "COMPLETED",
    )
    assert tclient.files.content(shown["id"]).read() == body
    job = tclient.batches.create(input_file_id=shown["id"], endpoint=ENDPOINT).job
    assert job is not None and job.id is not None

    missing = app_server.client().post(
        "/together/v1/files/upload",
        headers={"Authorization": "Bearer test-key"},
        data={"file_name": "x.jsonl", "purpose": "batch-api"},
        files={"nofile": ("x", b"{}\n")},
    )
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "missing_required_parameter"
    bad_type = app_server.client().post(
        "/together/v1/files/upload",
        headers={"Authorization": "Bearer test-key"},
        data={"file_name": "x.jsonl", "purpose": "batch-api", "file_type": "exe"},
        files={"file": ("x", b"{}\n")},
    )
    assert bad_type.status_code == 400 and bad_type.json()["error"]["param"] == "file_type"


def test_both_dialects_list_the_served_models(app_server: BackgroundApi) -> None:
    with app_server.openai() as oclient:
        listed = oclient.models.list()
        assert sorted(m.id for m in listed) == ["fake-model", "fake-small"]
        assert {(m.object, m.owned_by) for m in listed} == {("model", "overnight")}
    response = app_server.client().get(
        "/together/v1/models", headers={"Authorization": "Bearer test-key"}
    )
    assert response.status_code == 200
    models = response.json()
    assert [m["id"] for m in models] == ["fake-model", "fake-small"]
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in models)


def test_whoami_answers_with_the_tenant(tclient: together.Together) -> None:
    me: Any = tclient.whoami()
    assert me.type == "user_org_project_jwt"
    assert (me.user.id, me.project.id, me.project.slug, me.organization.id) == ("default",) * 4


# ---------------------------------------------------------------- the CLI


@pytest.fixture
def cli_server(tmp_path: Path, upstream: FakeUpstream) -> Iterator[ServerProcess]:
    config = write_config(
        tmp_path / "config.toml",
        [fake_model(upstream.url)],
        chunk_lines=10,
        worker_processes=0,  # Together's CLI is the point, not the worker's process
    )
    server = ServerProcess(tmp_path / "data", config=config).start()
    yield server
    server.stop()


def tg(server: ServerProcess, home: Path, *args: str) -> Any:
    """Run Together's CLI as a user would, with only its environment pointed
    here; JSON output. No telemetry, no version check (no network)."""
    env = {
        **os.environ,
        "TOGETHER_API_KEY": "test-key",
        "TOGETHER_BASE_URL": f"{server.url}/together",
        "TOGETHER_TELEMETRY_DISABLED": "1",
        "TOGETHER_DISABLE_VERSION_CHECK": "1",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "NO_COLOR": "1",
    }
    env.pop("TOGETHER_PROJECT_ID", None)
    done = subprocess.run(
        [str(TG), "--json", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"tg {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


@pytest.mark.skipif(not TG.exists(), reason="the together SDK 3.x's `tg` is not installed")
def test_the_together_cli_uploads_submits_lists_gets_and_downloads(
    cli_server: ServerProcess, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    path = tmp_path / "cli.jsonl"
    path.write_bytes(
        jsonl([{"custom_id": c["custom_id"], "body": c["body"]} for c in chat_lines(4)])
    )
    me = tg(cli_server, home, "whoami")
    assert me["project"]["id"] == "default"

    uploaded = tg(cli_server, home, "files", "upload", str(path), "--purpose", "batch-api")
    assert uploaded["id"].startswith("file-") and uploaded["purpose"] == "batch-api"

    submitted = tg(cli_server, home, "batches", "submit", uploaded["id"], "chat.completions")
    batch_id = submitted["job"]["id"]
    assert is_uuid(batch_id)
    assert batch_id in [job["id"] for job in tg(cli_server, home, "batches", "list")]

    with openai_client(cli_server) as oclient:
        wait_for_batch(oclient, batch_id)
    got = tg(cli_server, home, "batches", "get", batch_id)
    assert (got["id"], got["status"]) == (batch_id, "COMPLETED")

    out = tmp_path / "results"
    out.mkdir()
    saved = tg(cli_server, home, "batches", "download", batch_id, "--output", str(out))
    [output] = [f for f in saved["files"] if f["kind"] == "output"]
    rows = read_jsonl(Path(output["path"]).read_text())
    assert sorted(r["custom_id"] for r in rows) == [f"req-{i}" for i in range(4)]

    # Submitting a local path uploads it first, as the CLI's help says.
    from_path = tg(cli_server, home, "batches", "submit", str(path), "chat.completions")
    assert is_uuid(from_path["job"]["id"])
