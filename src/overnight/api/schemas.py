"""What the responses look like, for the OpenAPI schema at /openapi.json.

The routes render their answers themselves (orjson, no validation on the
way out), so these models only document them; schemathesis checks
(tests/acceptance/test_schema_fuzzing.py) that every real response matches.
Fields are optional only where the server may leave them null.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# ------------------------------------------------------------------ errors


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """Every error, in the OpenAI and Together dialects alike."""

    error: ErrorDetail


class DuplicateFileBody(ErrorBody):
    """Together's 409: these bytes were already uploaded as `file_id`."""

    file_id: str


def error_responses() -> dict[int | str, dict[str, Any]]:
    """The errors every authenticated route may answer."""
    described: dict[int | str, str] = {
        400: "The request is malformed or names a bad value.",
        401: "Missing or unknown API key.",
        403: "The key is valid but not for this (admin routes, or an admin creating objects).",
        404: "No such object for this caller (another tenant's ids look the same).",
        409: "The object is in the wrong state for this.",
        413: "The body or file is over a configured limit.",
        429: "A tenant quota is exhausted, or the key sent requests too fast (see Retry-After).",
        431: "The request line and headers are too large.",
        "default": "Any other error, in the same shape.",
    }
    return {status: {"model": ErrorBody, "description": text} for status, text in described.items()}


# ------------------------------------------------------------------ OpenAI


class FileObject(BaseModel):
    id: str
    object: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    expires_at: int | None
    status_details: str | None


class FileList(BaseModel):
    object: str
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: str
    deleted: bool


class UploadObject(BaseModel):
    id: str
    object: str
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: str
    status: str
    file: FileObject | None


class UploadPartObject(BaseModel):
    id: str
    object: str
    created_at: int
    upload_id: str


class BatchError(BaseModel):
    code: str
    message: str
    param: str | None
    line: int | None


class BatchErrors(BaseModel):
    object: str
    data: list[BatchError]


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class InputTokensDetails(BaseModel):
    cached_tokens: int


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int


class BatchUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class BatchObject(BaseModel):
    id: str
    object: str
    endpoint: str
    model: str | None
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    usage: BatchUsage
    metadata: dict[str, str] | None


class BatchList(BaseModel):
    object: str
    data: list[BatchObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class ModelObject(BaseModel):
    id: str
    object: str
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: str
    data: list[ModelObject]


# ---------------------------------------------------------------- Together


class TogetherFile(BaseModel):
    """Together's SDKs read the capitalised keys (`FileType`, `LineCount`)."""

    id: str
    object: str
    created_at: int
    filename: str
    bytes: int
    purpose: str
    FileType: str
    LineCount: int | None
    Processed: bool
    processing_status: str


class TogetherFileList(BaseModel):
    object: str
    data: list[TogetherFile]


class BatchJob(BaseModel):
    id: str = Field(json_schema_extra={"format": "uuid"})
    user_id: str
    input_file_id: str
    file_size_bytes: int
    status: str
    job_deadline: str | None
    created_at: str | None
    endpoint: str
    progress: float
    model_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    error: str | None
    completed_at: str | None


class BatchJobCreated(BaseModel):
    job: BatchJob
    warning: str | None


class MultipartPart(BaseModel):
    PartNumber: int
    URL: str
    Headers: dict[str, str]


class MultipartInitiated(BaseModel):
    upload_id: str
    file_id: str
    parts: list[MultipartPart]


class MultipartCompleted(BaseModel):
    file: TogetherFile


class MultipartAborted(BaseModel):
    upload_id: str
    file_id: str | None
    status: str


class TogetherModel(BaseModel):
    id: str
    object: str
    created: int
    type: str
    display_name: str
    organization: str
    context_length: int | None


class WhoamiUser(BaseModel):
    id: str


class WhoamiOrganization(BaseModel):
    id: str
    name: str


class WhoamiProject(BaseModel):
    id: str
    name: str
    slug: str


class Whoami(BaseModel):
    """Together's WhoamiResponse, variant `user_org_project_jwt`."""

    type: str
    user: WhoamiUser
    organization: WhoamiOrganization
    project: WhoamiProject


# --------------------------------------------------- admin and operations


class Health(BaseModel):
    status: str
    version: str
    workers: list[str]
    models: list[str]


class TenantQuotas(BaseModel):
    max_pending_batches: int
    max_enqueued_requests: int


class TenantQuotaOverrides(BaseModel):
    max_pending_batches: int | None
    max_enqueued_requests: int | None


class TenantUsageObject(BaseModel):
    pending_batches: int
    enqueued_requests: int


class TenantObject(BaseModel):
    object: str
    name: str
    quotas: TenantQuotas
    overrides: TenantQuotaOverrides
    usage: TenantUsageObject
    active_keys: int


class TenantList(BaseModel):
    object: str
    data: list[TenantObject]


class WebhookEndpointObject(BaseModel):
    object: str
    id: str
    tenant: str
    url: str
    event_types: list[str]
    status: str
    source: str
    created_at: int
    rotating_until: int | None
    failing_since: int | None
    disabled_at: int | None
    disabled_reason: str | None


class WebhookEndpointWithSecret(WebhookEndpointObject):
    """Only the answers that make a secret (add, rotate) carry it."""

    secret: str


class WebhookEndpointList(BaseModel):
    object: str
    data: list[WebhookEndpointObject]


class WebhookEndpointDeleted(BaseModel):
    id: str
    object: str
    deleted: bool


class WebhookAttemptObject(BaseModel):
    object: str
    id: int
    event_id: str
    event_type: str
    batch_id: str
    attempt: int
    at: float
    status_code: int | None
    latency_ms: int
    succeeded: bool
    error: str | None


class WebhookAttemptList(BaseModel):
    object: str
    data: list[WebhookAttemptObject]
    has_more: bool


# ---------------------------------------------------------------- Anthropic


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorBody(BaseModel):
    """Every error under /anthropic, in Anthropic's shape."""

    type: str
    error: AnthropicErrorDetail


def anthropic_error_responses() -> dict[int | str, dict[str, Any]]:
    """`error_responses`, in Anthropic's error shape."""
    return {
        status: {**response, "model": AnthropicErrorBody}
        for status, response in error_responses().items()
    }


class MessageBatchRequestCounts(BaseModel):
    processing: int
    succeeded: int
    errored: int
    canceled: int
    expired: int


class MessageBatch(BaseModel):
    id: str
    type: str
    processing_status: str
    request_counts: MessageBatchRequestCounts
    created_at: str
    ended_at: str | None
    expires_at: str
    archived_at: str | None
    cancel_initiated_at: str | None
    results_url: str | None


class MessageBatchList(BaseModel):
    data: list[MessageBatch]
    has_more: bool
    first_id: str | None
    last_id: str | None


class MessageBatchDeleted(BaseModel):
    id: str
    type: str


# -------------------------------------------------- request bodies by hand
# Routes that stream their bodies (uploads) read them without FastAPI; their
# bodies are described here for the schema.


def multipart_body(properties: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": properties, "required": required}
                }
            },
        }
    }


BINARY = {"type": "string", "format": "binary"}
