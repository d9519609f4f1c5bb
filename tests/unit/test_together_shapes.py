"""Pure pieces of the Together dialect: statuses, purposes, times, the
error string, line counting and upload-grant refusals."""

from __future__ import annotations

import dataclasses

import pytest

from overnight.api.together import (
    batch_error,
    batch_job,
    file_type,
    iso,
    together_purpose,
)
from overnight.domain.batch import Batch, RequestCounts
from overnight.domain.dialects import TOGETHER
from overnight.domain.files import FilePurpose, LineCounter
from overnight.domain.grants import UploadGrant, hash_token, new_token, refusal
from overnight.domain.lines import LineError
from overnight.domain.status import BatchStatus, StopReason
from overnight.types import BatchId, FileId, TenantId

#: Every status SDK 1.x's BatchJobStatus enum accepts.
SDK1_STATUSES = {
    "VALIDATING",
    "IN_PROGRESS",
    "COMPLETED",
    "FAILED",
    "EXPIRED",
    "CANCELLED",
    "CANCELING",
}
#: Every purpose SDK 1.x's FilePurpose enum accepts.
SDK1_PURPOSES = {"fine-tune", "batch-api", "eval", "eval-output"}


def batch(status: BatchStatus, **changes: object) -> Batch:
    fields: dict[str, object] = {
        "id": BatchId("batch_1"),
        "tenant": TenantId("default"),
        "endpoint": "/v1/chat/completions",
        "input_file_id": FileId("file-1"),
        "completion_window": "24h",
        "status": status,
        "created_at": 1_800_000_000,
        "expires_at": 1_800_086_400,
        "dialect": TOGETHER,
        **changes,
    }
    return Batch(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", list(BatchStatus))
def test_every_status_is_one_sdk1_knows(status: BatchStatus) -> None:
    assert TOGETHER.status_of(batch(status)) in SDK1_STATUSES


def test_finalizing_shows_as_in_progress_unless_a_cancel_is_draining() -> None:
    assert TOGETHER.status_of(batch(BatchStatus.FINALIZING)) == "IN_PROGRESS"
    expiring = batch(BatchStatus.FINALIZING, stop_reason=StopReason.EXPIRED)
    assert TOGETHER.status_of(expiring) == "IN_PROGRESS"
    cancelling = batch(BatchStatus.FINALIZING, stop_reason=StopReason.CANCELLED)
    assert TOGETHER.status_of(cancelling) == "CANCELING"
    assert TOGETHER.status_of(batch(BatchStatus.CANCELLING)) == "CANCELING"


@pytest.mark.parametrize("purpose", list(FilePurpose))
def test_every_purpose_is_one_sdk1_knows(purpose: FilePurpose) -> None:
    assert together_purpose(purpose) in SDK1_PURPOSES


def test_result_files_and_openai_inputs_show_as_batch_api() -> None:
    assert together_purpose(FilePurpose.BATCH_OUTPUT) == "batch-api"
    assert together_purpose(FilePurpose.BATCH) == "batch-api"
    assert together_purpose(FilePurpose.FINE_TUNE) == "fine-tune"


def test_the_batch_job_has_every_field_sdk1_requires() -> None:
    job = batch(
        BatchStatus.IN_PROGRESS,
        request_counts=RequestCounts(total=8, completed=2, failed=1),
        input_bytes=123,
    )
    shown = batch_job(job)
    required = ["id", "user_id", "input_file_id", "file_size_bytes", "status"]
    assert all(shown[name] is not None for name in required)
    assert shown["job_deadline"] == "2027-01-16T08:00:00Z"
    assert shown["created_at"] == "2027-01-15T08:00:00Z"
    assert shown["progress"] == 37.5 and shown["file_size_bytes"] == 123
    assert shown["completed_at"] is None and shown["error"] is None


def test_iso_times_are_utc_with_a_z() -> None:
    assert iso(0) == "1970-01-01T00:00:00Z"
    assert iso(None) is None


def test_validation_errors_become_one_string() -> None:
    errors = tuple(LineError("invalid_json_line", f"bad {n}", line=n) for n in range(1, 9))
    text = batch_error(batch(BatchStatus.FAILED, errors=errors))
    assert (
        text
        == "line 1: bad 1; line 2: bad 2; line 3: bad 3; line 4: bad 4; line 5: bad 5 (and 3 more)"
    )
    only = batch_error(batch(BatchStatus.FAILED, errors=(LineError("empty_file", "Empty."),)))
    assert only == "Empty."
    assert batch_error(batch(BatchStatus.FAILED)) == "The batch failed."
    assert batch_error(batch(BatchStatus.COMPLETED)) is None


def test_file_types_come_from_the_name() -> None:
    assert [file_type(n) for n in ("a.jsonl", "b.CSV", "c.parquet", "upload", "d.txt")] == [
        "jsonl",
        "csv",
        "parquet",
        "jsonl",
        "jsonl",
    ]


@pytest.mark.parametrize(
    ("pieces", "lines"),
    [
        ([], 0),
        ([b""], 0),
        ([b"a\n"], 1),
        ([b"a\nb"], 2),
        ([b"a", b"\n", b"b\n", b"\n"], 3),
        ([b"a\nb", b""], 2),
    ],
)
def test_lines_are_counted_across_pieces(pieces: list[bytes], lines: int) -> None:
    counter = LineCounter()
    for piece in pieces:
        counter.feed(piece)
    assert counter.lines == lines


def test_tokens_are_long_random_and_stored_only_as_hashes() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) >= 43 for t in tokens)
    token = tokens.pop()
    assert hash_token(token) == hash_token(token) != token
    assert len(hash_token(token)) == 64


def test_a_grant_is_refused_when_unknown_used_or_expired() -> None:
    grant = UploadGrant(
        token_hash="h",
        tenant=TenantId("default"),
        file_id=FileId("file-1"),
        filename="in.jsonl",
        purpose=FilePurpose.BATCH_API,
        created_at=100,
        expires_at=200,
    )
    assert refusal(grant, 199) is None
    assert "expired" in (refusal(grant, 200) or "")
    assert "already used" in (refusal(dataclasses.replace(grant, used_at=150), 160) or "")
    assert "not valid" in (refusal(None, 0) or "")
