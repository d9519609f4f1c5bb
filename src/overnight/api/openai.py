"""The OpenAI dialect, served under `/v1`: Files, Uploads and Batches as the
`openai` SDK sends and expects them (see docs/api-openai.md).

Only translation happens here: parse the wire, call `service`, render.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.responses import StreamingResponse

from overnight.api import results, schemas
from overnight.api.auth import scope_of, tenant_of
from overnight.api.multipart import open_file_form, open_form
from overnight.api.responses import JSONBytes, file_download, ok, ok_bytes, runtime_of
from overnight.domain.batch import Batch
from overnight.domain.dialects import OPENAI
from overnight.domain.files import UPLOADABLE_PURPOSES, FileRecord, Upload, UploadPart
from overnight.errors import InvalidRequest
from overnight.retries import Retries
from overnight.service import Page
from overnight.settings import MAX_EXPIRY_SECONDS

router = APIRouter(
    tags=["openai"], default_response_class=JSONBytes, responses=schemas.error_responses()
)


# ------------------------------------------------------------------ rendering


def file_object(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": record.created_at,
        "filename": record.filename,
        "purpose": record.purpose.value,
        "status": "processed",
        "expires_at": record.expires_at,
        "status_details": None,
    }


def upload_object(upload: Upload, file: FileRecord | None = None) -> dict[str, Any]:
    return {
        "id": upload.id,
        "object": "upload",
        "bytes": upload.bytes,
        "created_at": upload.created_at,
        "expires_at": upload.expires_at,
        "filename": upload.filename,
        "purpose": upload.purpose.value,
        "status": upload.status.value,
        "file": file_object(file) if file is not None else None,
    }


def part_object(part: UploadPart) -> dict[str, Any]:
    return {
        "id": part.id,
        "object": "upload.part",
        "created_at": part.created_at,
        "upload_id": part.upload_id,
    }


def batch_object(batch: Batch) -> dict[str, Any]:
    counts = batch.request_counts
    usage = batch.usage
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": batch.model,
        "errors": {
            "object": "list",
            "data": [
                {"code": e.code, "message": e.message, "param": e.param, "line": e.line}
                for e in batch.errors
            ],
        }
        if batch.errors
        else None,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": OPENAI.status_of(batch),
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": batch.created_at,
        "in_progress_at": batch.in_progress_at,
        "expires_at": batch.expires_at,
        "finalizing_at": batch.finalizing_at,
        "completed_at": batch.completed_at,
        "failed_at": batch.failed_at,
        "expired_at": batch.expired_at,
        "cancelling_at": batch.cancelling_at,
        "cancelled_at": batch.cancelled_at,
        "request_counts": {
            "total": counts.total,
            "completed": counts.completed,
            "failed": counts.failed,
        },
        "usage": {
            "input_tokens": usage.input_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.total_tokens,
        },
        "metadata": batch.metadata,
    }


def list_object(page: Page[Any], render: Any) -> dict[str, Any]:
    data = [render(item) for item in page.items]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": page.has_more,
    }


# ---------------------------------------------------------------------- files


_FILE_FORM = schemas.multipart_body(
    {
        "file": schemas.BINARY,
        "purpose": {"type": "string", "enum": sorted(p.value for p in UPLOADABLE_PURPOSES)},
        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
        "expires_after[seconds]": {"type": "integer"},
    },
    ["file", "purpose"],
)


@router.post("/files", responses=ok(schemas.FileObject), openapi_extra=_FILE_FORM)
async def create_file(request: Request) -> JSONBytes:
    service = runtime_of(request).service
    tenant = tenant_of(request)
    async with open_file_form(request, service.new_file_sink) as form:
        filename, sink = form.files["file"]
        purpose = form.fields.get("purpose")
        if purpose is None:
            raise InvalidRequest(
                "The form has no 'purpose' field.",
                param="purpose",
                code="missing_required_parameter",
            )
        record = await service.create_file(
            tenant,
            sink,
            filename=filename,
            purpose=purpose,
            expires_after=_expires_after(form.fields),
        )
    return JSONBytes(file_object(record))


def _expires_after(fields: dict[str, str]) -> int | None:
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest(
            "expires_after[anchor] must be 'created_at'.",
            param="expires_after[anchor]",
            code="invalid_value",
        )
    try:
        return int(seconds or "", 10)
    except ValueError:
        raise InvalidRequest(
            "expires_after[seconds] must be a whole number of seconds.",
            param="expires_after[seconds]",
            code="invalid_value",
        ) from None


@router.get("/files", responses=ok(schemas.FileList))
async def list_files(
    request: Request,
    purpose: str | None = None,
    limit: Annotated[int, Query()] = 10000,
    order: str = "desc",
    after: str | None = None,
) -> JSONBytes:
    page = await runtime_of(request).service.list_files(
        scope_of(request), purpose=purpose, order=order, after=after, limit=limit
    )
    return JSONBytes(list_object(page, file_object))


@router.get("/files/{file_id}", responses=ok(schemas.FileObject))
async def retrieve_file(request: Request, file_id: str) -> JSONBytes:
    record = await runtime_of(request).service.get_file(scope_of(request), file_id)
    return JSONBytes(file_object(record))


@router.delete("/files/{file_id}", responses=ok(schemas.FileDeleted))
async def delete_file(request: Request, file_id: str) -> JSONBytes:
    record = await runtime_of(request).service.delete_file(scope_of(request), file_id)
    return JSONBytes({"id": record.id, "object": "file", "deleted": True})


@router.get("/files/{file_id}/content", responses=ok_bytes(), response_class=StreamingResponse)
async def file_content(request: Request, file_id: str) -> StreamingResponse:
    record, stream = await runtime_of(request).service.file_content(scope_of(request), file_id)
    return file_download(record, stream)


# -------------------------------------------------------------------- uploads


class ExpiresAfter(BaseModel):
    anchor: Literal["created_at"]
    seconds: StrictInt = Field(ge=1, le=MAX_EXPIRY_SECONDS)


class CreateUploadBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    bytes: StrictInt = Field(ge=0)
    filename: StrictStr
    mime_type: StrictStr
    purpose: StrictStr
    expires_after: ExpiresAfter | None = None


class CompleteUploadBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    part_ids: list[StrictStr]
    md5: StrictStr | None = None


@router.post("/uploads", responses=ok(schemas.UploadObject))
async def create_upload(request: Request, body: CreateUploadBody) -> JSONBytes:
    upload = await runtime_of(request).service.create_upload(
        tenant_of(request),
        filename=body.filename,
        purpose=body.purpose,
        bytes=body.bytes,
        mime_type=body.mime_type,
        file_expires_after=body.expires_after.seconds if body.expires_after else None,
    )
    return JSONBytes(upload_object(upload))


@router.post(
    "/uploads/{upload_id}/parts",
    responses=ok(schemas.UploadPartObject),
    openapi_extra=schemas.multipart_body({"data": schemas.BINARY}, ["data"]),
)
async def add_upload_part(request: Request, upload_id: str) -> JSONBytes:
    service = runtime_of(request).service
    tenant = scope_of(request)
    upload = await service.pending_upload(tenant, upload_id)
    async with open_form(
        request, lambda name: service.new_part_sink(upload) if name == "data" else None
    ) as form:
        if "data" not in form.files:
            raise InvalidRequest(
                "The form has no 'data' part.", param="data", code="missing_required_parameter"
            )
        part = await service.add_upload_part(tenant, upload_id, form.files["data"][1])
    return JSONBytes(part_object(part))


@router.post("/uploads/{upload_id}/complete", responses=ok(schemas.UploadObject))
async def complete_upload(request: Request, upload_id: str, body: CompleteUploadBody) -> JSONBytes:
    service = runtime_of(request).service
    tenant = scope_of(request)
    upload = await service.complete_upload(tenant, upload_id, body.part_ids, body.md5)
    file = await service.get_file(tenant, upload.file_id) if upload.file_id else None
    return JSONBytes(upload_object(upload, file))


@router.post("/uploads/{upload_id}/cancel", responses=ok(schemas.UploadObject))
async def cancel_upload(request: Request, upload_id: str) -> JSONBytes:
    upload = await runtime_of(request).service.cancel_upload(scope_of(request), upload_id)
    return JSONBytes(upload_object(upload))


# -------------------------------------------------------------------- batches


class CreateBatchBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input_file_id: StrictStr
    endpoint: StrictStr
    completion_window: StrictStr | None = None
    metadata: dict[StrictStr, StrictStr] | None = None
    output_expires_after: ExpiresAfter | None = None


@router.post("/batches", responses=ok(schemas.BatchObject))
async def create_batch(request: Request, body: CreateBatchBody) -> JSONBytes:
    expiry = body.output_expires_after
    batch = await runtime_of(request).service.create_batch(
        tenant_of(request),
        input_file_id=body.input_file_id,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        metadata=body.metadata,
        dialect=OPENAI,
        priority=_priority(body.metadata),
        output_expires_after=expiry.seconds if expiry else None,
    )
    return JSONBytes(batch_object(batch))


def _priority(metadata: dict[str, str] | None) -> int:
    """The OpenAI dialect has no priority field; the metadata key `priority`
    (an integer, as a string) stands in for it."""
    value = (metadata or {}).get("priority")
    if value is None:
        return 0
    try:
        return int(value, 10)
    except ValueError:
        raise InvalidRequest(
            'metadata.priority must be an integer, e.g. "5".',
            param="metadata.priority",
            code="invalid_value",
        ) from None


@router.get("/batches", responses=ok(schemas.BatchList))
async def list_batches(
    request: Request, after: str | None = None, limit: Annotated[int, Query()] = 20
) -> JSONBytes:
    page = await runtime_of(request).service.list_batches(
        scope_of(request), after=after, limit=limit
    )
    return JSONBytes(list_object(page, batch_object))


@router.get("/batches/{batch_id}", responses=ok(schemas.BatchObject))
async def retrieve_batch(request: Request, batch_id: str) -> JSONBytes:
    batch = await runtime_of(request).service.get_batch(scope_of(request), batch_id)
    return JSONBytes(batch_object(batch))


@router.post("/batches/{batch_id}/cancel", responses=ok(schemas.BatchObject))
async def cancel_batch(request: Request, batch_id: str) -> JSONBytes:
    batch = await runtime_of(request).service.cancel_batch(scope_of(request), batch_id)
    return JSONBytes(batch_object(batch))


# ------------------------------------------------- results so far, and retry


router.include_router(results.router, tags=["openai"], responses=schemas.error_responses())


class RetryBatchBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    outcomes: list[StrictStr] | None = None
    completion_window: StrictStr | None = None
    metadata: dict[StrictStr, StrictStr] | None = None


@router.post("/batches/{batch_id}/retry", responses=ok(schemas.BatchObject))
async def retry_batch(request: Request, batch_id: str, body: RetryBatchBody) -> JSONBytes:
    batch = await Retries(runtime_of(request).service).retry(
        scope_of(request),
        batch_id,
        outcomes=body.outcomes,
        completion_window=body.completion_window,
        metadata=body.metadata,
    )
    return JSONBytes(batch_object(batch))
