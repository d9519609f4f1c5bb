"""Stored files and the multi-part uploads that build them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from overnight.types import FileId, PartId, TenantId, UploadId


class FilePurpose(StrEnum):
    BATCH = "batch"
    BATCH_OUTPUT = "batch_output"
    FINE_TUNE = "fine-tune"
    USER_DATA = "user_data"
    ASSISTANTS = "assistants"
    VISION = "vision"
    EVALS = "evals"
    # Together's spellings; `batch-api` is its batch input and output purpose.
    BATCH_API = "batch-api"
    EVAL = "eval"
    EVAL_OUTPUT = "eval-output"


#: Purposes a user may upload with (the rest are produced by the service).
UPLOADABLE_PURPOSES = frozenset(p for p in FilePurpose if p is not FilePurpose.BATCH_OUTPUT)
#: Purposes whose files can be the input of a batch.
BATCH_INPUT_PURPOSES = frozenset({FilePurpose.BATCH, FilePurpose.BATCH_API})


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: FileId
    tenant: TenantId
    filename: str
    purpose: FilePurpose
    bytes: int
    created_at: int
    sha256: str
    blob_key: str
    expires_at: int | None = None
    line_count: int | None = None


class UploadStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Upload:
    """An OpenAI Upload: parts added one by one, then completed into a file."""

    id: UploadId
    tenant: TenantId
    filename: str
    purpose: FilePurpose
    bytes: int
    mime_type: str
    created_at: int
    expires_at: int
    status: UploadStatus = UploadStatus.PENDING
    file_id: FileId | None = None


@dataclass(frozen=True, slots=True)
class UploadPart:
    id: PartId
    upload_id: UploadId
    created_at: int
    bytes: int
    blob_key: str
