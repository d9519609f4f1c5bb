"""Rows to domain records and back.

Each `to_*` turns a row of one table into its domain record, and each
`*_values` turns a record into the column values to insert, so the
operations never spell out a table's columns themselves.
"""

from __future__ import annotations

from typing import Any

from overnight import _json
from overnight.domain.batch import Batch, RequestCounts, Usage
from overnight.domain.chunk import Chunk, ChunkStatus, Tally
from overnight.domain.dialects import dialect_named
from overnight.domain.files import FilePurpose, FileRecord, Upload, UploadStatus
from overnight.domain.grants import UploadGrant
from overnight.domain.keys import ApiKey, KeyRole
from overnight.domain.lines import LineError
from overnight.domain.status import BatchStatus, StopReason
from overnight.types import BatchId, FileId, TenantId, UploadId


def api_key_values(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "digest": key.digest,
        "shown": key.shown,
        "role": key.role.value,
        "tenant": key.tenant,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


def to_api_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        digest=row.digest,
        shown=row.shown,
        role=KeyRole(row.role),
        tenant=TenantId(row.tenant) if row.tenant is not None else None,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def file_values(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "tenant": record.tenant,
        "filename": record.filename,
        "purpose": record.purpose.value,
        "bytes": record.bytes,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "sha256": record.sha256,
        "blob_key": record.blob_key,
        "line_count": record.line_count,
    }


def to_file(row: Any) -> FileRecord:
    return FileRecord(
        id=FileId(row.id),
        tenant=TenantId(row.tenant),
        filename=row.filename,
        purpose=FilePurpose(row.purpose),
        bytes=row.bytes,
        created_at=row.created_at,
        sha256=row.sha256,
        blob_key=row.blob_key,
        expires_at=row.expires_at,
        line_count=row.line_count,
    )


def upload_values(upload: Upload) -> dict[str, Any]:
    return {
        "id": upload.id,
        "tenant": upload.tenant,
        "filename": upload.filename,
        "purpose": upload.purpose.value,
        "bytes": upload.bytes,
        "mime_type": upload.mime_type,
        "created_at": upload.created_at,
        "expires_at": upload.expires_at,
        "status": upload.status.value,
        "file_id": upload.file_id,
        "checksum": upload.checksum,
        "file_expires_after": upload.file_expires_after,
    }


def to_upload(row: Any) -> Upload:
    return Upload(
        id=UploadId(row.id),
        tenant=TenantId(row.tenant),
        filename=row.filename,
        purpose=FilePurpose(row.purpose),
        bytes=row.bytes,
        mime_type=row.mime_type,
        created_at=row.created_at,
        expires_at=row.expires_at,
        status=UploadStatus(row.status),
        file_id=FileId(row.file_id) if row.file_id else None,
        checksum=row.checksum,
        file_expires_after=row.file_expires_after,
    )


def line_error_dict(error: LineError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message, "line": error.line, "param": error.param}


def to_batch(row: Any) -> Batch:
    errors: tuple[LineError, ...] = ()
    if row.errors_json:
        errors = tuple(
            LineError(e["code"], e["message"], e.get("line"), e.get("param"))
            for e in _json.loads(row.errors_json)
        )
    return Batch(
        id=BatchId(row.id),
        tenant=TenantId(row.tenant),
        endpoint=row.endpoint,
        input_file_id=FileId(row.input_file_id),
        completion_window=row.completion_window,
        status=BatchStatus(row.status),
        created_at=row.created_at,
        expires_at=row.expires_at,
        dialect=dialect_named(row.dialect),
        model=row.model,
        priority=row.priority,
        metadata=_json.loads(row.metadata_json) if row.metadata_json else None,
        errors=errors,
        request_counts=RequestCounts(row.total, row.completed, row.failed, row.stopped),
        usage=Usage(row.input_tokens, row.cached_tokens, row.output_tokens, row.reasoning_tokens),
        output_file_id=FileId(row.output_file_id) if row.output_file_id else None,
        error_file_id=FileId(row.error_file_id) if row.error_file_id else None,
        input_bytes=row.input_bytes,
        stop_reason=StopReason(row.stop_reason) if row.stop_reason else None,
        in_progress_at=row.in_progress_at,
        finalizing_at=row.finalizing_at,
        completed_at=row.completed_at,
        failed_at=row.failed_at,
        expired_at=row.expired_at,
        cancelling_at=row.cancelling_at,
        cancelled_at=row.cancelled_at,
        output_expires_after=row.output_expires_after,
        grouped_blob_key=row.grouped_blob_key,
        crashes=row.crashes,
    )


def to_chunk(row: Any) -> Chunk:
    return Chunk(
        batch_id=BatchId(row.batch_id),
        index=row.idx,
        start=row.start,
        end=row.end,
        first_line=row.first_line,
        requests=row.requests,
        status=ChunkStatus(row.status),
        attempts=row.attempts,
        tally=Tally(
            row.completed,
            row.failed,
            Usage(row.input_tokens, row.cached_tokens, row.output_tokens, row.reasoning_tokens),
            row.stopped,
        ),
        crashes=row.crashes,
    )


def grant_values(grant: UploadGrant) -> dict[str, Any]:
    return {
        "token_hash": grant.token_hash,
        "tenant": grant.tenant,
        "file_id": grant.file_id,
        "filename": grant.filename,
        "purpose": grant.purpose.value,
        "checksum": grant.checksum,
        "upload_id": grant.upload_id,
        "part_number": grant.part_number,
        "created_at": grant.created_at,
        "expires_at": grant.expires_at,
        "used_at": grant.used_at,
    }


def to_grant(row: Any) -> UploadGrant:
    return UploadGrant(
        token_hash=row.token_hash,
        tenant=TenantId(row.tenant),
        file_id=FileId(row.file_id),
        filename=row.filename,
        purpose=FilePurpose(row.purpose),
        created_at=row.created_at,
        expires_at=row.expires_at,
        checksum=row.checksum,
        upload_id=UploadId(row.upload_id) if row.upload_id else None,
        part_number=row.part_number,
        used_at=row.used_at,
    )
