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
    #: After this (unix seconds) the file is gone for its owner at once; the
    #: retention sweep deletes its bytes and record soon after.
    expires_at: int | None = None
    line_count: int | None = None

    def live_at(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now


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
    #: Set when the upload is created if its file id is promised up front
    #: (Together's multipart flow), else when it completes.
    file_id: FileId | None = None
    #: SHA-256 (hex) the caller promised for the whole file, checked on completion.
    checksum: str | None = None
    #: The completed file expires this many seconds after it is made.
    file_expires_after: int | None = None


@dataclass(frozen=True, slots=True)
class UploadPart:
    id: PartId
    upload_id: UploadId
    created_at: int
    bytes: int
    blob_key: str
    #: Together's multipart flow numbers its parts (from 1) and checks each by
    #: its ETag (the part's SHA-256); OpenAI's parts are ordered by id instead.
    part_number: int | None = None
    etag: str | None = None


class LineCounter:
    """Counts the lines of a file as its bytes stream past, so that a file's
    line count (Together's `LineCount`) costs no second read: every newline,
    plus a last line that lacks one. `bytes.count` runs at memory speed."""

    __slots__ = ("_last", "newlines")

    def __init__(self) -> None:
        self.newlines = 0
        self._last = b"\n"

    def feed(self, data: bytes) -> None:
        if data:
            self.newlines += data.count(b"\n")
            self._last = data[-1:]

    @property
    def lines(self) -> int:
        return self.newlines + (0 if self._last == b"\n" else 1)
