"""The Together dialect, served under `/together/v1`: Files (with the
three-step signed-URL upload and the multipart flow) and Batches as the
`together` SDK, 1.x and 3.x, sends and expects them (see docs/api-together.md).

Only translation happens here: parse the wire, call `service` (and its
`SignedUploads`), render. Files and batches are the same ones the OpenAI
dialect serves; only their shapes differ.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr
from starlette.responses import Response, StreamingResponse

from overnight.api import results, schemas
from overnight.api.auth import scope_of, tenant_of
from overnight.api.errors import openai_error_body
from overnight.api.multipart import MAX_FIELD_BYTES, open_file_form, read_form
from overnight.api.responses import JSONBytes, file_download, ok, ok_bytes, runtime_of
from overnight.domain.batch import Batch
from overnight.domain.dialects import TOGETHER
from overnight.domain.files import UPLOADABLE_PURPOSES, FilePurpose, FileRecord
from overnight.domain.status import BatchStatus
from overnight.errors import InvalidRequest, PayloadTooLarge
from overnight.retries import Retries
from overnight.signed_uploads import DuplicateFile, SignedUploads

router = APIRouter(
    tags=["together"], default_response_class=JSONBytes, responses=schemas.error_responses()
)

#: Together's file types, and the MIME type each is stored with.
FILE_TYPES = {
    "jsonl": "application/jsonl",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}
#: Most batches `GET /batches` returns (newest first); Together has no paging.
MAX_LISTED_BATCHES = 10_000
#: Validation errors quoted in a failed batch's `error` string.
QUOTED_ERRORS = 5


# ------------------------------------------------------------------ rendering

#: SDK 1.x accepts only these four purposes; every other purpose (OpenAI's
#: `batch`, the results' `batch_output`, `user_data`...) shows as `batch-api`.
_PURPOSES = {
    FilePurpose.FINE_TUNE: "fine-tune",
    FilePurpose.BATCH_API: "batch-api",
    FilePurpose.EVAL: "eval",
    FilePurpose.EVALS: "eval",
    FilePurpose.EVAL_OUTPUT: "eval-output",
}


def together_purpose(purpose: FilePurpose) -> str:
    return _PURPOSES.get(purpose, "batch-api")


def file_type(filename: str) -> str:
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return suffix if suffix in FILE_TYPES else "jsonl"


def iso(timestamp: int | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def batch_error(batch: Batch) -> str | None:
    """Together reports a job's problem as one string (a bare string error
    is what SDK 1.x expects here, unlike in an error response)."""
    if not batch.errors:
        return "The batch failed." if batch.status is BatchStatus.FAILED else None
    quoted = [
        f"line {e.line}: {e.message}" if e.line is not None else e.message
        for e in batch.errors[:QUOTED_ERRORS]
    ]
    more = len(batch.errors) - QUOTED_ERRORS
    return "; ".join(quoted) + (f" (and {more} more)" if more > 0 else "")


def batch_job(batch: Batch) -> dict[str, Any]:
    return {
        "id": TOGETHER.show_batch_id(batch.id),
        "user_id": batch.tenant,
        "input_file_id": batch.input_file_id,
        "file_size_bytes": batch.input_bytes,
        "status": TOGETHER.status_of(batch),
        "job_deadline": iso(batch.expires_at),
        "created_at": iso(batch.created_at),
        "endpoint": batch.endpoint,
        "progress": batch.progress,
        "model_id": batch.model,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "error": batch_error(batch),
        "completed_at": iso(batch.ended_at),
    }


def file_response(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "created_at": record.created_at,
        "filename": record.filename,
        "bytes": record.bytes,
        "purpose": together_purpose(record.purpose),
        "FileType": file_type(record.filename),
        "LineCount": record.line_count,
        "Processed": True,
        "processing_status": "COMPLETED",
    }


def duplicate_response(error: DuplicateFile) -> Response:
    """SDK 3.x reads `file_id` from a 409 and fetches that file instead."""
    body = {"file_id": error.file_id, **openai_error_body(error)}
    return JSONBytes(body, status_code=409, headers={"x-should-retry": "false"})


def uploads_of(request: Request) -> SignedUploads:
    return SignedUploads(runtime_of(request).service)


# ---------------------------------------------------------------------- files


async def _read_fields(request: Request) -> dict[str, str]:
    """A small form: multipart from SDK 3.x, form-urlencoded from SDK 1.x."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return (await read_form(request, lambda _: None)).fields
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_FIELD_BYTES:
            raise PayloadTooLarge("The form is too large.", code="payload_too_large")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _upload_url(request: Request, token: str) -> str:
    """The one-time URL to PUT a file (or part) to: under `public_url` when
    the operator set it, since behind a proxy the `Host` a request arrived
    with may be an internal name, or whatever the caller chose to send."""
    base = runtime_of(request).settings.public_url or request.base_url
    path = request.app.url_path_for("together_upload", token=token)
    return str(path.make_absolute_url(base))


def _required(fields: dict[str, str], name: str) -> str:
    value = fields.get(name)
    if not value:
        raise InvalidRequest(
            f"The form has no {name!r} field.", param=name, code="missing_required_parameter"
        )
    return value


def _file_type(value: str | None) -> str:
    if value is None or value == "":
        return "jsonl"
    if value not in FILE_TYPES:
        raise InvalidRequest(
            f"file_type must be one of {', '.join(FILE_TYPES)}.",
            param="file_type",
            code="invalid_value",
        )
    return value


_ANNOUNCEMENT: dict[str, dict[str, Any]] = {
    "purpose": {"type": "string", "enum": sorted(p.value for p in UPLOADABLE_PURPOSES)},
    "file_name": {"type": "string"},
    "file_type": {"type": "string", "enum": sorted(FILE_TYPES)},
    "checksum": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
}
_ANNOUNCEMENT_SCHEMA = {
    "type": "object",
    "properties": _ANNOUNCEMENT,
    "required": ["purpose", "file_name"],
}


@router.post(
    "/files",
    status_code=302,
    response_class=Response,
    responses={
        302: {
            "description": "Upload the bytes with a PUT to the Location, without an API key.",
            "headers": {
                "Location": {"schema": {"type": "string"}},
                "X-Together-File-Id": {"schema": {"type": "string"}},
            },
        },
        409: {"model": schemas.DuplicateFileBody, "description": "Already uploaded."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": _ANNOUNCEMENT_SCHEMA},
                "application/x-www-form-urlencoded": {"schema": _ANNOUNCEMENT_SCHEMA},
            },
        }
    },
)
async def create_file(request: Request) -> Response:
    """Step 1 of 3: announce a file; answer 302 to its one-time upload URL."""
    tenant = tenant_of(request)
    fields = await _read_fields(request)
    _file_type(fields.get("file_type"))
    try:
        granted = await uploads_of(request).grant(
            tenant,
            filename=_required(fields, "file_name"),
            purpose=_required(fields, "purpose"),
            checksum=fields.get("checksum"),
        )
    except DuplicateFile as exc:
        return duplicate_response(exc)
    location = _upload_url(request, granted.token)
    return Response(
        status_code=302,
        headers={"Location": location, "X-Together-File-Id": granted.file_id},
    )


_UPLOAD_FORM = schemas.multipart_body(
    {
        "file": schemas.BINARY,
        "purpose": _ANNOUNCEMENT["purpose"],
        "file_name": {"type": "string"},
        "file_type": _ANNOUNCEMENT["file_type"],
    },
    ["file", "purpose", "file_name"],
)


@router.post("/files/upload", responses=ok(schemas.TogetherFile), openapi_extra=_UPLOAD_FORM)
async def upload_file(request: Request) -> JSONBytes:
    """The one-request upload of Together's OpenAPI spec: the bytes in a
    multipart `file` part, streamed to storage like OpenAI's `POST /files`."""
    service = runtime_of(request).service
    tenant = tenant_of(request)
    async with open_file_form(request, service.new_file_sink) as form:
        _file_type(form.fields.get("file_type"))
        purpose = _required(form.fields, "purpose")
        filename = form.fields.get("file_name") or form.files["file"][0]
        record = await service.create_file(
            tenant, form.files["file"][1], filename=filename, purpose=purpose
        )
    return JSONBytes(file_response(record))


@router.put(
    "/files/upload/{token}",
    name="together_upload",
    response_class=Response,
    responses={
        200: {
            "description": "Stored.",
            "headers": {"ETag": {"schema": {"type": "string"}}},
        },
        403: {"model": schemas.ErrorBody, "description": "The URL is unknown, used or expired."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": schemas.BINARY}},
        }
    },
)
async def upload(request: Request, token: str) -> Response:
    """Step 2 of 3 (and each part of a multipart upload): the raw bytes.
    No API key: the URL's one-time token is the credential."""
    received = await uploads_of(request).receive(token, request.stream())
    return Response(status_code=200, headers={"ETag": f'"{received.etag}"'})


@router.post("/files/{file_id}/preprocess", responses=ok(schemas.TogetherFile))
async def preprocess(request: Request, file_id: str) -> JSONBytes:
    """Step 3 of 3: the stored file, with its line count."""
    record = await uploads_of(request).preprocess(scope_of(request), file_id)
    return JSONBytes(file_response(record))


@router.get("/files", responses=ok(schemas.TogetherFileList))
async def list_files(request: Request, purpose: str | None = None) -> JSONBytes:
    page = await runtime_of(request).service.list_files(scope_of(request), purpose=purpose)
    return JSONBytes({"object": "list", "data": [file_response(r) for r in page.items]})


@router.get("/files/{file_id}", responses=ok(schemas.TogetherFile))
async def retrieve_file(request: Request, file_id: str) -> JSONBytes:
    uploads = uploads_of(request)
    record = await uploads.service.get_file(scope_of(request), file_id)
    return JSONBytes(file_response(await uploads.counted(record)))


@router.get("/files/{file_id}/content", responses=ok_bytes(), response_class=StreamingResponse)
async def file_content(request: Request, file_id: str) -> StreamingResponse:
    record, stream = await runtime_of(request).service.file_content(scope_of(request), file_id)
    return file_download(record, stream)


@router.delete("/files/{file_id}", responses=ok(schemas.FileDeleted))
async def delete_file(request: Request, file_id: str) -> JSONBytes:
    record = await runtime_of(request).service.delete_file(scope_of(request), file_id)
    return JSONBytes({"id": record.id, "object": "file", "deleted": True})


# ------------------------------------------------------------------ multipart


class InitiateBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    file_name: StrictStr
    file_size: StrictInt
    num_parts: StrictInt
    purpose: StrictStr
    file_type: StrictStr | None = None
    checksum: StrictStr | None = None


class PartBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    part_number: StrictInt
    etag: StrictStr


class CompleteBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    upload_id: StrictStr
    file_id: StrictStr
    parts: list[PartBody]


class AbortBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    upload_id: StrictStr
    file_id: StrictStr


@router.post(
    "/files/multipart/initiate",
    response_model=None,
    responses={
        **ok(schemas.MultipartInitiated),
        409: {"model": schemas.DuplicateFileBody, "description": "Already uploaded."},
    },
)
async def initiate_multipart(request: Request, body: InitiateBody) -> Response:
    try:
        granted = await uploads_of(request).initiate(
            tenant_of(request),
            filename=body.file_name,
            purpose=body.purpose,
            file_size=body.file_size,
            num_parts=body.num_parts,
            mime_type=FILE_TYPES[_file_type(body.file_type)],
            checksum=body.checksum,
        )
    except DuplicateFile as exc:
        return duplicate_response(exc)
    parts = [
        {
            "PartNumber": number,
            "URL": _upload_url(request, token),
            "Headers": {},
        }
        for number, token in granted.parts
    ]
    return JSONBytes(
        {"upload_id": granted.upload.id, "file_id": granted.upload.file_id, "parts": parts}
    )


@router.post("/files/multipart/complete", responses=ok(schemas.MultipartCompleted))
async def complete_multipart(request: Request, body: CompleteBody) -> JSONBytes:
    record = await uploads_of(request).complete(
        scope_of(request),
        body.upload_id,
        body.file_id,
        [(p.part_number, p.etag) for p in body.parts],
    )
    return JSONBytes({"file": file_response(record)})


@router.post("/files/multipart/abort", responses=ok(schemas.MultipartAborted))
async def abort_multipart(request: Request, body: AbortBody) -> JSONBytes:
    upload = await uploads_of(request).abort(scope_of(request), body.upload_id, body.file_id)
    return JSONBytes(
        {"upload_id": upload.id, "file_id": upload.file_id, "status": upload.status.value}
    )


# -------------------------------------------------------------------- batches


class CreateBatchBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input_file_id: StrictStr
    endpoint: StrictStr
    completion_window: StrictStr | None = None
    model_id: StrictStr | None = None
    priority: StrictInt | None = None


@router.post("/batches", status_code=201, responses=ok(schemas.BatchJobCreated, 201))
async def create_batch(request: Request, body: CreateBatchBody) -> JSONBytes:
    batch = await runtime_of(request).service.create_batch(
        tenant_of(request),
        input_file_id=body.input_file_id,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        dialect=TOGETHER,
        priority=body.priority or 0,
        model=body.model_id,
    )
    return JSONBytes({"job": batch_job(batch), "warning": None}, status_code=201)


@router.get(
    "/batches",
    responses={200: {"model": list[schemas.BatchJob], "description": "Newest first."}},
)
async def list_batches(
    request: Request, limit: Annotated[int, Query()] = MAX_LISTED_BATCHES
) -> JSONBytes:
    page = await runtime_of(request).service.list_batches(
        scope_of(request), limit=limit, max_limit=MAX_LISTED_BATCHES
    )
    return JSONBytes([batch_job(b) for b in page.items])


@router.get("/batches/{batch_id}", responses=ok(schemas.BatchJob))
async def retrieve_batch(request: Request, batch_id: str) -> JSONBytes:
    batch = await runtime_of(request).service.get_batch(scope_of(request), batch_id)
    return JSONBytes(batch_job(batch))


@router.post("/batches/{batch_id}/cancel", responses=ok(schemas.BatchJob))
async def cancel_batch(request: Request, batch_id: str) -> JSONBytes:
    batch = await runtime_of(request).service.cancel_batch(scope_of(request), batch_id)
    return JSONBytes(batch_job(batch))


# ------------------------------------------------- results so far, and retry
# Overnight's own routes, the same as the OpenAI dialect's (docs/api-together.md).


router.include_router(results.router, tags=["together"], responses=schemas.error_responses())


class RetryBatchBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    outcomes: list[StrictStr] | None = None
    completion_window: StrictStr | None = None


@router.post("/batches/{batch_id}/retry", status_code=201, responses=ok(schemas.BatchJob, 201))
async def retry_batch(request: Request, batch_id: str, body: RetryBatchBody) -> JSONBytes:
    batch = await Retries(runtime_of(request).service).retry(
        scope_of(request),
        batch_id,
        outcomes=body.outcomes,
        completion_window=body.completion_window,
    )
    return JSONBytes({"job": batch_job(batch), "warning": None}, status_code=201)
