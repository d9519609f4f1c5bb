"""Drive a running overnight through the `together` SDK 1.6.0, the last 1.x.

Runs in its own virtualenv (`make together1` builds `.venv-together1`),
because SDK 1.x and 3.x cannot share one. The main suite starts the server
and calls this script per scenario (tests/acceptance/test_together1_sdk.py);
the script prints one JSON object of what it saw, and the main suite checks
it. Anything the SDK refuses to parse raises here and fails that test.

    .venv-together1/bin/python tests/together1/drive_sdk.py SCENARIO \\
        --base-url http://127.0.0.1:PORT/together/v1 --workdir DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import together
from together import Together
from together.types import BatchJob

ENDPOINT = "/v1/chat/completions"
TERMINAL = {"COMPLETED", "FAILED", "EXPIRED", "CANCELLED"}


def write_lines(path: Path, n: int, *, model: str, prefix: str) -> Path:
    """Together's input format: custom_id and body, no method or url."""
    with path.open("w") as handle:
        for i in range(n):
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"message number {i}"}],
            }
            handle.write(json.dumps({"custom_id": f"{prefix}-{i}", "body": body}) + "\n")
    return path


def job_view(job: BatchJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status.value,
        "progress": job.progress,
        "user_id": job.user_id,
        "file_size_bytes": job.file_size_bytes,
        "model_id": job.model_id,
        "deadline_after_s": (job.job_deadline - job.created_at).total_seconds(),
        "completed_at": job.completed_at.isoformat() if job.completed_at else None,
        "output_file_id": job.output_file_id,
        "error_file_id": job.error_file_id,
        "error": job.error,
    }


def poll(
    client: Together, batch_id: str, timeout: float = 60
) -> tuple[BatchJob, list[str], list[float]]:
    statuses: list[str] = []
    progress: list[float] = []
    deadline = time.monotonic() + timeout
    job = client.batches.get_batch(batch_id)
    while job.status.value not in TERMINAL:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{batch_id} still {job.status.value}")
        statuses.append(job.status.value)
        progress.append(job.progress)
        time.sleep(0.05)
        job = client.batches.get_batch(batch_id)
    return job, statuses, progress


def download(client: Together, file_id: str | None, path: Path) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    client.files.retrieve_content(file_id, output=path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def upload(client: Together, path: Path) -> dict[str, Any]:
    file = client.files.upload(path, purpose="batch-api")
    return {
        "id": file.id,
        "bytes": file.bytes,
        "purpose": file.purpose.value if file.purpose else None,
        "line_count": file.line_count,
        "processed": file.processed,
        "filename": file.filename,
    }


def flow(client: Together, workdir: Path, model: str) -> dict[str, Any]:
    """The seed's workflow: upload, create, poll, download, list."""
    file = upload(client, write_lines(workdir / "batch.jsonl", 40, model=model, prefix="req"))
    created = client.batches.create_batch(file["id"], endpoint=ENDPOINT)
    job, statuses, progress = poll(client, created.id)
    rows = download(client, job.output_file_id, workdir / "output.jsonl")
    output = client.files.retrieve(job.output_file_id) if job.output_file_id else None
    return {
        "file": file,
        "created": job_view(created),
        "job": job_view(job),
        "statuses": statuses,
        "progress": progress,
        "rows": rows,
        "output_file": output.model_dump(by_alias=True) if output else None,
        "listed": [b.id for b in client.batches.list_batches()],
        "files": [f.id for f in client.files.list().data or []],
    }


def cancel(client: Together, workdir: Path, model: str) -> dict[str, Any]:
    file = upload(client, write_lines(workdir / "cancel.jsonl", 60, model=model, prefix="cancel"))
    created = client.batches.create_batch(file["id"], endpoint=ENDPOINT)
    deadline = time.monotonic() + 30
    while client.batches.get_batch(created.id).progress < 8:
        if time.monotonic() > deadline:
            raise TimeoutError("the batch made no progress")
        time.sleep(0.05)
    cancelling = client.batches.cancel_batch(created.id)
    job, statuses, _ = poll(client, created.id)
    return {
        "cancel": job_view(cancelling),
        "statuses": statuses,
        "job": job_view(job),
        "ok": download(client, job.output_file_id, workdir / "ok.jsonl"),
        "failed": download(client, job.error_file_id, workdir / "failed.jsonl"),
        "again": job_view(client.batches.cancel_batch(created.id)),
    }


def multipart(client: Together, workdir: Path, model: str, threshold: int) -> dict[str, Any]:
    """SDK 1.x chooses the multipart flow by a module constant (above 5 GiB)
    and sizes parts by two more: lower them here, in this process only."""
    import together.filemanager as filemanager
    import together.resources.files as files

    files.MULTIPART_THRESHOLD_GB = threshold / 2**30
    filemanager.TARGET_PART_SIZE_MB = threshold / 2**20
    filemanager.MIN_PART_SIZE_MB = 0
    path = write_lines(workdir / "big.jsonl", 100, model=model, prefix="big1")
    file = upload(client, path)
    created = client.batches.create_batch(file["id"], endpoint=ENDPOINT)
    job, _, _ = poll(client, created.id)
    client.files.retrieve_content(file["id"], output=workdir / "copy.jsonl")
    return {
        "file": file,
        "size": path.stat().st_size,
        "same": (workdir / "copy.jsonl").read_bytes() == path.read_bytes(),
        "job": job_view(job),
        "rows": len(download(client, job.output_file_id, workdir / "big-out.jsonl")),
    }


def errors(client: Together, workdir: Path, model: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    try:
        client.batches.get_batch("batch_nope")
    except together.error.TogetherException as exc:
        seen["missing"] = {
            "type": type(exc).__name__,
            "status": exc.http_status,
            "message": str(exc),
        }
    bad = workdir / "bad.jsonl"
    bad.write_text(
        write_lines(workdir / "good.jsonl", 1, model=model, prefix="bad").read_text() + "{nope\n"
    )
    created = client.batches.create_batch(upload(client, bad)["id"], endpoint=ENDPOINT)
    seen["failed"] = job_view(poll(client, created.id)[0])
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=["flow", "cancel", "multipart", "errors"])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--model", default="fake-small")
    parser.add_argument("--threshold", type=int, default=4096)
    args = parser.parse_args()
    client = Together(api_key="test-key", base_url=args.base_url, max_retries=0)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.scenario == "multipart":
        result = multipart(client, args.workdir, args.model, args.threshold)
    else:
        result = {"flow": flow, "cancel": cancel, "errors": errors}[args.scenario](
            client, args.workdir, args.model
        )
    print(json.dumps({"sdk": together.version, **result}))


if __name__ == "__main__":
    main()
