"""The seed's workflow through the `together` SDK 1.6.0 (the last 1.x).

SDK 1.x cannot be installed beside 3.x, so it lives in `.venv-together1`
(built by `make together1`, which `make test` runs first). Each test here
starts `tests/together1/drive_sdk.py` in that virtualenv against a server of
this suite and checks the JSON it prints. Point `TOGETHER1_PYTHON` at
another interpreter to use a virtualenv elsewhere.

On SQLite only: the old SDK is the point, not the storage (both backends
run the same flows in test_together_sdk.py and the multipart parts in
test_together_uploads.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerFactory
from overnight.testing.fake_upstream import FakeUpstream

from backends import Backend
from helpers import ROOT, ServerProcess, fake_model

PYTHON = Path(os.environ.get("TOGETHER1_PYTHON") or ROOT / ".venv-together1" / "bin" / "python")
DRIVER = ROOT / "tests" / "together1" / "drive_sdk.py"
THRESHOLD = 4096


@pytest.fixture(scope="module")
def backend() -> Backend:
    return Backend("sqlite")


def drive(server: ServerProcess, scenario: str, workdir: Path, *args: str) -> dict[str, Any]:
    if not PYTHON.exists():
        pytest.fail(f"{PYTHON} is missing: run `make together1` (`make test` does it first)")
    done = subprocess.run(
        [
            str(PYTHON),
            str(DRIVER),
            scenario,
            "--base-url",
            f"{server.url}/together/v1",  # SDK 1.x does not append /v1 itself
            "--workdir",
            str(workdir),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, (
        f"{done.stderr[-6000:]}\n--- server log ---\n{server.log()[-3000:]}"
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["sdk"] == "1.6.0"
    return result


def test_sdk1_runs_the_seed_workflow(
    server: ServerProcess, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.configure(latency=0.05)
    seen = drive(server, "flow", tmp_path)

    file = seen["file"]
    assert file["id"].startswith("file-") and file["filename"] == "batch.jsonl"
    assert (file["purpose"], file["line_count"], file["processed"]) == ("batch-api", 40, True)
    created = seen["created"]
    assert created["status"] == "VALIDATING" and created["progress"] == 0.0
    assert created["deadline_after_s"] == 24 * 3600
    assert created["user_id"] and created["file_size_bytes"] == file["bytes"]

    job = seen["job"]
    assert job["status"] == "COMPLETED" and job["progress"] == 100.0
    assert job["model_id"] == "fake-small" and job["completed_at"] is not None
    assert job["error"] is None and job["error_file_id"] is None
    assert set(seen["statuses"]) <= {"VALIDATING", "IN_PROGRESS"}
    rising = [
        p for s, p in zip(seen["statuses"], seen["progress"], strict=True) if s == "IN_PROGRESS"
    ]
    assert rising == sorted(rising)
    assert len({p for p in rising if 0 < p < 100}) >= 3, rising

    rows = seen["rows"]
    assert sorted(r["custom_id"] for r in rows) == sorted(f"req-{i}" for i in range(40))
    for row in rows:
        assert row["id"].startswith("br_") and row["response"]["status_code"] == 200
    output = seen["output_file"]
    assert (output["purpose"], output["LineCount"], output["FileType"]) == (
        "batch-api",
        40,
        "jsonl",
    )
    assert job["id"] in seen["listed"]
    assert {file["id"], job["output_file_id"]} <= set(seen["files"])


def test_sdk1_cancel_drains_then_keeps_partial_output(
    server: ServerProcess, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.configure(latency=0.1)
    seen = drive(server, "cancel", tmp_path)

    assert seen["cancel"]["status"] == "CANCELING"  # a member of SDK 1.x's enum
    assert set(seen["statuses"]) <= {"CANCELING"}
    assert seen["job"]["status"] == "CANCELLED"
    assert seen["again"]["status"] == "CANCELLED"
    ok, failed = seen["ok"], seen["failed"]
    assert 5 <= len(ok) < 60
    assert Counter(r["custom_id"] for r in ok + failed) == Counter(f"cancel-{i}" for i in range(60))
    assert {r["error"]["code"] for r in failed} == {"batch_cancelled"}


def test_sdk1_multipart_upload_over_a_lowered_threshold(
    start_server: ServerFactory, upstream: FakeUpstream, tmp_path: Path
) -> None:
    server = start_server(
        [fake_model(upstream.url, name="fake-small")],
        multipart_threshold=THRESHOLD,
        worker_processes=0,  # the SDK is the point, not the worker's process
    )
    seen = drive(server, "multipart", tmp_path, "--threshold", str(THRESHOLD))
    assert seen["size"] > 2 * THRESHOLD
    assert seen["file"]["bytes"] == seen["size"] and seen["file"]["line_count"] == 100
    assert seen["same"] is True
    assert seen["job"]["status"] == "COMPLETED" and seen["rows"] == 100


def test_sdk1_reads_errors_and_failed_jobs(server: ServerProcess, tmp_path: Path) -> None:
    seen = drive(server, "errors", tmp_path, "--model", "fake-model")
    missing = seen["missing"]
    assert (missing["type"], missing["status"]) == ("InvalidRequestError", 404)
    assert "batch_not_found" in missing["message"]
    failed = seen["failed"]
    assert failed["status"] == "FAILED"
    assert "line 2:" in failed["error"]
