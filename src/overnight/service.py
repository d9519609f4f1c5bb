"""The use cases every dialect and the CLI call: files, uploads, batches.

Dialect-neutral: domain objects in, domain objects out, errors from
`overnight.errors`. Nothing here knows about HTTP or wire shapes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from overnight import _ids
from overnight.blobs import BlobStore, BlobWriter
from overnight.domain.batch import Batch
from overnight.domain.dialects import OPENAI, Dialect
from overnight.domain.files import (
    BATCH_INPUT_PURPOSES,
    UPLOADABLE_PURPOSES,
    FilePurpose,
    FileRecord,
    LineCounter,
    Upload,
    UploadPart,
    UploadStatus,
)
from overnight.domain.status import BatchStatus
from overnight.domain.windows import window_seconds
from overnight.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from overnight.runner.wakeups import Wakeups
from overnight.settings import MAX_EXPIRY_SECONDS, Settings
from overnight.store.contracts import ApiStore
from overnight.types import FileId, TenantId, TenantScope

T = TypeVar("T")

SUPPORTED_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/responses",
)
MAX_PAGE = 100
#: Longest MIME type an upload may declare (the column's size).
MAX_MIME_TYPE = 255
_PURPOSES = frozenset(p.value for p in FilePurpose)
#: Priorities are stored in a 32-bit column.
MIN_PRIORITY, MAX_PRIORITY = -(2**31), 2**31 - 1


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool


class FileSink:
    """Receives the bytes of one upload as they stream in, in bounded
    memory, cutting it off as soon as it passes the size limit. Lines are
    counted on the way, so a file's line count costs no second read."""

    def __init__(self, writer: BlobWriter, key: str, limit: int) -> None:
        self.writer = writer
        self.key = key
        self.limit = limit
        self.closed = False
        self.counter = LineCounter()

    @property
    def size(self) -> int:
        return self.writer.size

    @property
    def lines(self) -> int:
        return self.counter.lines

    async def write(self, data: bytes) -> None:
        if self.writer.size + len(data) > self.limit:
            await self.abort()
            raise PayloadTooLarge(
                f"The file is larger than the limit of {self.limit} bytes.",
                param="file",
                code="file_too_large",
            )
        self.counter.feed(data)
        await self.writer.write(data)

    async def commit(self) -> None:
        self.closed = True
        await self.writer.commit()

    async def abort(self) -> None:
        if not self.closed:
            self.closed = True
            await self.writer.abort()


class Service:
    def __init__(
        self,
        *,
        store: ApiStore,
        blobs: BlobStore,
        settings: Settings,
        model_names: frozenset[str],
        wakeups: Wakeups | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.settings = settings
        self.model_names = model_names
        self.wakeups = wakeups or Wakeups()
        self.clock = clock

    # ------------------------------------------------------------------ files

    def new_file_sink(self, file_id: FileId | None = None, limit: int | None = None) -> FileSink:
        """Where a new file's bytes go: under a fresh id, or under an id
        promised earlier (Together announces the id before the bytes come)."""
        key = f"files/{file_id or _ids.new_file_id()}"
        cap = (
            min(limit, self.settings.max_upload_bytes) if limit else self.settings.max_upload_bytes
        )
        return FileSink(self.blobs.writer(key), key, cap)

    async def create_file(
        self,
        tenant: TenantId,
        sink: FileSink,
        *,
        filename: str,
        purpose: str,
        expires_after: int | None = None,
        checksum: str | None = None,
    ) -> FileRecord:
        """Commit a streamed upload as a file. On any error the bytes are
        dropped; so are bytes whose SHA-256 is not the promised `checksum`."""
        try:
            checked_purpose = uploadable_purpose(purpose)
            check_expiry(expires_after, "expires_after[seconds]")
            await sink.commit()
        except BaseException:
            await sink.abort()
            raise
        if checksum is not None and checksum.lower() != sink.writer.sha256:
            await self.blobs.delete(sink.key)
            raise _checksum_mismatch("checksum")
        now = self.clock()
        record = FileRecord(
            id=_file_id_of(sink.key),
            tenant=tenant,
            filename=clean_filename(filename),
            purpose=checked_purpose,
            bytes=sink.size,
            created_at=int(now),
            sha256=sink.writer.sha256,
            blob_key=sink.key,
            expires_at=int(now) + expires_after if expires_after else None,
            line_count=sink.lines,
        )
        await self.store.insert_file(record, _micros(now))
        return record

    async def get_file(
        self, tenant: TenantScope, file_id: str, *, param: str = "file_id"
    ) -> FileRecord:
        """A live file the caller may see; another tenant's, an expired or a
        deleted file are all answered the same 404."""
        record = None
        if _plausible_id(file_id):
            record = await self.store.get_file(tenant, file_id, live_at=self._now())
        if record is None:
            raise NotFound(f"No such file: {file_id}", param=param, code="file_not_found")
        return record

    async def list_files(
        self,
        tenant: TenantScope,
        *,
        purpose: str | None = None,
        order: str = "desc",
        after: str | None = None,
        limit: int = 10000,
        max_limit: int = 10000,
    ) -> Page[FileRecord]:
        if order not in ("asc", "desc"):
            raise InvalidRequest(
                "order must be 'asc' or 'desc'.", param="order", code="invalid_value"
            )
        _check_limit(limit, max_limit)
        if purpose is not None and purpose not in _PURPOSES:
            allowed = ", ".join(p.value for p in FilePurpose)
            raise InvalidRequest(
                f"Unknown purpose {purpose!r}; expected one of: {allowed}.",
                param="purpose",
                code="invalid_value",
            )
        items = None
        if after is None or _plausible_id(after):
            items = await self.store.list_files(
                tenant,
                purpose=purpose,
                newest_first=order == "desc",
                after=after,
                limit=limit + 1,
                live_at=self._now(),
            )
        if items is None:
            raise _bad_cursor("file", after)
        return Page(items[:limit], len(items) > limit)

    async def delete_file(self, tenant: TenantScope, file_id: str) -> FileRecord:
        record = None
        if _plausible_id(file_id):
            record = await self.store.delete_file(tenant, file_id, live_at=self._now())
        if record is None:
            raise NotFound(f"No such file: {file_id}", param="file_id", code="file_not_found")
        await self.blobs.delete(record.blob_key)
        return record

    async def file_content(
        self, tenant: TenantScope, file_id: str
    ) -> tuple[FileRecord, AsyncIterator[bytes]]:
        record = await self.get_file(tenant, file_id)
        return record, self.blobs.read(record.blob_key)

    # ---------------------------------------------------------------- uploads

    async def create_upload(
        self,
        tenant: TenantId,
        *,
        filename: str,
        purpose: str,
        bytes: int,
        mime_type: str,
        file_expires_after: int | None = None,
    ) -> Upload:
        checked_purpose = uploadable_purpose(purpose)
        if bytes < 0 or bytes > self.settings.max_upload_bytes:
            raise InvalidRequest(
                f"bytes must be between 0 and {self.settings.max_upload_bytes}.",
                param="bytes",
                code="invalid_value",
            )
        if len(mime_type) > MAX_MIME_TYPE or not mime_type.isprintable():
            raise InvalidRequest(
                f"mime_type must be at most {MAX_MIME_TYPE} printable characters.",
                param="mime_type",
                code="invalid_value",
            )
        check_expiry(file_expires_after, "expires_after.seconds")
        now = int(self.clock())
        upload = Upload(
            id=_ids.new_upload_id(),
            tenant=tenant,
            filename=clean_filename(filename),
            purpose=checked_purpose,
            bytes=bytes,
            mime_type=mime_type,
            created_at=now,
            expires_at=now + self.settings.upload_expiry,
            file_expires_after=file_expires_after,
        )
        await self.store.insert_upload(upload)
        return upload

    async def get_upload(self, tenant: TenantScope, upload_id: str) -> Upload:
        upload = (
            await self.store.get_upload(tenant, upload_id) if _plausible_id(upload_id) else None
        )
        if upload is None:
            raise NotFound(
                f"No such upload: {upload_id}", param="upload_id", code="upload_not_found"
            )
        if upload.status is UploadStatus.PENDING and upload.expires_at <= self.clock():
            await self.store.set_upload_status(
                upload.id, UploadStatus.EXPIRED, expected=UploadStatus.PENDING
            )
            await self._drop_parts(upload)
            upload = await self.store.get_upload(tenant, upload_id)
            assert upload is not None
        return upload

    def new_part_sink(self, upload: Upload) -> FileSink:
        key = f"uploads/{upload.id}/{_ids.new_part_id()}"
        return FileSink(self.blobs.writer(key), key, self.settings.max_upload_bytes)

    async def add_upload_part(
        self, tenant: TenantScope, upload_id: str, sink: FileSink, part_number: int | None = None
    ) -> UploadPart:
        try:
            upload = await self.pending_upload(tenant, upload_id)
            await sink.commit()
        except BaseException:
            await sink.abort()
            raise
        part = UploadPart(
            id=_ids.new_part_id(),
            upload_id=upload.id,
            created_at=int(self.clock()),
            bytes=sink.size,
            blob_key=sink.key,
            part_number=part_number,
            etag=sink.writer.sha256,
        )
        try:
            await self.store.insert_part(part)
        except BaseException:
            await self.blobs.delete(sink.key)
            raise
        return part

    async def complete_upload(
        self, tenant: TenantScope, upload_id: str, part_ids: Sequence[str], md5: str | None = None
    ) -> Upload:
        upload = await self.pending_upload(tenant, upload_id)
        parts: dict[str, UploadPart] = {p.id: p for p in await self.store.list_parts(upload.id)}
        if len(set(part_ids)) != len(part_ids):
            raise InvalidRequest(
                "part_ids lists a part twice.", param="part_ids", code="invalid_value"
            )
        missing = [p for p in part_ids if p not in parts]
        if missing:
            raise InvalidRequest(
                f"Unknown part ids for this upload: {', '.join(missing[:5])}.",
                param="part_ids",
                code="invalid_value",
            )
        await self.finish_upload(upload, [parts[p] for p in part_ids], md5=md5)
        return await self.get_upload(tenant, upload.id)

    async def finish_upload(
        self, upload: Upload, ordered: Sequence[UploadPart], *, md5: str | None = None
    ) -> FileRecord:
        """Concatenate a pending upload's parts, in the order given, into its
        file: under the id it promised, or a new one. The byte count, the
        optional `md5` and the upload's own `checksum` (SHA-256) must match."""
        total = sum(p.bytes for p in ordered)
        if total != upload.bytes:
            raise InvalidRequest(
                f"The parts hold {total} bytes, but the upload was created for {upload.bytes}.",
                param="bytes",
                code="invalid_value",
            )
        sink = self.new_file_sink(upload.file_id)
        digest = hashlib.md5(usedforsecurity=False)
        try:
            for part in ordered:
                async for piece in self.blobs.read(part.blob_key):
                    digest.update(piece)
                    await sink.write(piece)
            if md5 and md5.lower() != digest.hexdigest():
                raise _checksum_mismatch("md5")
            await sink.commit()
        except BaseException:
            await sink.abort()
            raise
        if upload.checksum and upload.checksum.lower() != sink.writer.sha256:
            await self.blobs.delete(sink.key)
            raise _checksum_mismatch("checksum")
        now = self.clock()
        record = FileRecord(
            id=_file_id_of(sink.key),
            tenant=upload.tenant,
            filename=upload.filename,
            purpose=upload.purpose,
            bytes=sink.size,
            created_at=int(now),
            sha256=sink.writer.sha256,
            blob_key=sink.key,
            line_count=sink.lines,
            expires_at=int(now) + upload.file_expires_after if upload.file_expires_after else None,
        )
        try:
            await self.store.complete_upload(upload.id, record, _micros(now))
        except BaseException:
            await self.blobs.delete(record.blob_key)
            raise
        await self._drop_parts(upload)
        return record

    async def cancel_upload(self, tenant: TenantScope, upload_id: str) -> Upload:
        upload = await self.pending_upload(tenant, upload_id)
        if not await self.store.set_upload_status(
            upload.id, UploadStatus.CANCELLED, expected=UploadStatus.PENDING
        ):
            raise Conflict(f"Upload {upload_id} is no longer pending.", code="upload_not_pending")
        await self._drop_parts(upload)
        return await self.get_upload(tenant, upload.id)

    async def pending_upload(self, tenant: TenantScope, upload_id: str) -> Upload:
        upload = await self.get_upload(tenant, upload_id)
        if upload.status is not UploadStatus.PENDING:
            raise Conflict(
                f"Upload {upload_id} is {upload.status.value}; it can no longer be changed.",
                code="upload_not_pending",
            )
        return upload

    async def _drop_parts(self, upload: Upload) -> None:
        await self.blobs.delete_prefix(f"uploads/{upload.id}")
        await self.store.delete_parts(upload.id)

    # ---------------------------------------------------------------- batches

    async def create_batch(
        self,
        tenant: TenantId,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str | None = None,
        metadata: dict[str, str] | None = None,
        dialect: Dialect = OPENAI,
        priority: int = 0,
        model: str | None = None,
        output_expires_after: int | None = None,
    ) -> Batch:
        """`model`, when given, must be a served model; the lines' own
        `body.model` still decide what each request runs on. The tenant
        must stay within its quotas (429 otherwise)."""
        if endpoint not in SUPPORTED_ENDPOINTS:
            raise InvalidRequest(
                f"Unsupported endpoint {endpoint!r}; use one of {', '.join(SUPPORTED_ENDPOINTS)}.",
                param="endpoint",
                code="invalid_value",
            )
        if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise InvalidRequest(
                "priority must fit in a 32-bit signed integer.",
                param="priority",
                code="invalid_value",
            )
        if model is not None and model not in self.model_names:
            raise InvalidRequest(
                f"The model {model!r} is not served here; served: {', '.join(sorted(self.model_names))}.",
                param="model",
                code="model_not_found",
            )
        window = completion_window or self.settings.default_completion_window
        seconds = self._window(window)
        self._check_metadata(metadata)
        check_expiry(output_expires_after, "output_expires_after.seconds")
        if output_expires_after is None:
            output_expires_after = self.settings.default_output_expires_after
        record = await self.get_file(tenant, input_file_id, param="input_file_id")
        if record.purpose not in BATCH_INPUT_PURPOSES:
            raise InvalidRequest(
                f"File {input_file_id} has purpose {record.purpose.value!r}; a batch needs a "
                "file uploaded with purpose 'batch' (or 'batch-api').",
                param="input_file_id",
                code="invalid_value",
            )
        now = self.clock()
        batch = Batch(
            id=_ids.new_batch_id(),
            tenant=tenant,
            endpoint=endpoint,
            input_file_id=record.id,
            completion_window=window,
            status=BatchStatus.VALIDATING,
            created_at=int(now),
            expires_at=int(now) + seconds,
            dialect=dialect,
            priority=priority,
            metadata=metadata,
            input_bytes=record.bytes,
            output_expires_after=output_expires_after,
        )
        await self.store.insert_batch(
            batch,
            _micros(now),
            default_quotas=self.settings.default_quotas,
            adding=record.line_count or 0,
        )
        self.wakeups.notify()
        return batch

    def check_batch_options(
        self, completion_window: str | None, metadata: dict[str, str] | None
    ) -> None:
        """What `create_batch` would refuse in these, refused now: for a
        caller that has work to do before it creates the batch (a retry)."""
        if completion_window is not None:
            self._window(completion_window)
        self._check_metadata(metadata)

    def _window(self, window: str) -> int:
        try:
            seconds = window_seconds(window)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="completion_window", code="invalid_value") from exc
        low, high = self.settings.min_window_seconds, self.settings.max_window_seconds
        if not low <= seconds <= high:
            raise InvalidRequest(
                f"completion_window must be between {self.settings.min_completion_window} and "
                f"{self.settings.max_completion_window}.",
                param="completion_window",
                code="invalid_value",
            )
        return seconds

    async def get_batch(self, tenant: TenantScope, batch_id: str) -> Batch:
        """`batch_id` in either form: `batch_<hex>` or Together's UUID form."""
        stored_id = _ids.batch_id_from(batch_id)
        batch = await self.store.get_batch(tenant, stored_id) if _plausible_id(stored_id) else None
        if batch is None:
            raise NotFound(f"No such batch: {batch_id}", param="batch_id", code="batch_not_found")
        return batch

    async def list_batches(
        self,
        tenant: TenantScope,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = 20,
        max_limit: int = MAX_PAGE,
        status: str | None = None,
        model: str | None = None,
        dialect: str | None = None,
    ) -> Page[Batch]:
        """Newest first: the page after the batch `after` (older ones), or
        the one just before the batch `before` (newer ones), still newest
        first; `has_more` says whether more lie beyond it that way. `status`,
        `model` and `dialect`, when given, keep only the batches matching."""
        _check_limit(limit, max_limit)
        if after is not None and before is not None:
            raise InvalidRequest(
                "Page with after or before, not both.", param="before", code="invalid_value"
            )
        cursor = after if before is None else before
        items = None
        if cursor is not None:
            cursor = _ids.batch_id_from(cursor)
        if cursor is None or _plausible_id(cursor):
            items = await self.store.list_batches(
                tenant,
                after=cursor,
                limit=limit + 1,
                newest_first=before is None,
                status=status,
                model=model,
                dialect=dialect,
            )
        if items is None:
            raise _bad_cursor("batch", cursor, param="after" if before is None else "before")
        page = items[:limit]
        if before is not None:
            page.reverse()
        return Page(page, len(items) > limit)

    async def cancel_batch(self, tenant: TenantScope, batch_id: str) -> Batch:
        batch = None
        stored_id = _ids.batch_id_from(batch_id)
        if _plausible_id(stored_id):
            batch = await self.store.request_cancel(tenant, stored_id, self._now())
        if batch is None:
            raise NotFound(f"No such batch: {batch_id}", param="batch_id", code="batch_not_found")
        self.wakeups.notify()
        return batch

    async def delete_batch(
        self, tenant: TenantScope, batch_id: str, *, with_input: bool = False
    ) -> Batch:
        """Delete an ended batch and its result files (and, `with_input`,
        its input file: one made only for it). A batch still running is
        refused: cancel it first."""
        batch = await self.get_batch(tenant, batch_id)
        if not batch.status.is_terminal:
            raise InvalidRequest(
                f"Batch {batch_id} has not ended; cancel it, then delete it once it has.",
                param="batch_id",
                code="batch_not_ended",
            )
        file_ids = [f for f in (batch.output_file_id, batch.error_file_id) if f is not None]
        if with_input:
            file_ids.append(batch.input_file_id)
        deleted = await self.store.delete_batch(tenant, batch.id, file_ids)
        if deleted is None:  # deleted meanwhile by another request
            raise NotFound(f"No such batch: {batch_id}", param="batch_id", code="batch_not_found")
        for record in deleted:
            await self.blobs.delete(record.blob_key)
        if batch.grouped_blob_key is not None:  # finalisation's delete, if a crash kept it
            await self.blobs.delete(batch.grouped_blob_key)
        return batch

    # ---------------------------------------------------------------- helpers

    def _now(self) -> int:
        return int(self.clock())

    def _check_metadata(self, metadata: dict[str, str] | None) -> None:
        if metadata is None:
            return
        settings = self.settings
        if len(metadata) > settings.max_metadata_pairs:
            raise InvalidRequest(
                f"metadata holds at most {settings.max_metadata_pairs} pairs.",
                param="metadata",
                code="invalid_value",
            )
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidRequest(
                    "metadata keys and values must be strings.",
                    param="metadata",
                    code="invalid_value",
                )
            if not (_encodable(key) and _encodable(value)):
                raise InvalidRequest(
                    "metadata keys and values must be valid Unicode text.",
                    param="metadata",
                    code="invalid_value",
                )
            if (
                len(key) > settings.max_metadata_key_length
                or len(value) > settings.max_metadata_value_length
            ):
                raise InvalidRequest(
                    f"metadata keys are at most {settings.max_metadata_key_length} characters "
                    f"and values at most {settings.max_metadata_value_length}.",
                    param=f"metadata.{key[:64]}",
                    code="invalid_value",
                )


# ---------------------------------------------------------------- helpers


def _micros(now: float) -> int:
    return int(now * 1_000_000)


def _file_id_of(key: str) -> FileId:
    return FileId(key.removeprefix("files/"))


def _checksum_mismatch(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"The {param} checksum does not match the uploaded bytes.",
        param=param,
        code="checksum_mismatch",
    )


def uploadable_purpose(purpose: str) -> FilePurpose:
    try:
        checked = FilePurpose(purpose)
    except ValueError:
        checked = None
    if checked is None or checked not in UPLOADABLE_PURPOSES:
        allowed = ", ".join(sorted(p.value for p in UPLOADABLE_PURPOSES))
        raise InvalidRequest(
            f"Invalid purpose {purpose!r}; expected one of: {allowed}.",
            param="purpose",
            code="invalid_value",
        )
    return checked


def clean_filename(name: str) -> str:
    """Keep only the last path component: a filename is a label, never a path."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    base = "".join(ch for ch in base if ch.isprintable())
    return base[:255] or "upload"


def _check_limit(limit: int, max_limit: int) -> None:
    if not 1 <= limit <= max_limit:
        raise InvalidRequest(
            f"limit must be between 1 and {max_limit}.", param="limit", code="invalid_value"
        )


def check_expiry(seconds: int | None, param: str) -> None:
    """An `expires_after` / `output_expires_after` in seconds, if given,
    must be positive and at most ten years."""
    if seconds is not None and not 1 <= seconds <= MAX_EXPIRY_SECONDS:
        raise InvalidRequest(
            f"{param} must be between 1 and {MAX_EXPIRY_SECONDS} seconds.",
            param=param,
            code="invalid_value",
        )


def _plausible_id(value: str) -> bool:
    """Whether `value` could be an id at all. Ids are short printable ASCII;
    anything else (a NUL byte, a lone surrogate) is answered as unknown
    before the database sees it, which PostgreSQL would refuse."""
    return len(value) <= 128 and value.isascii() and value.isprintable()


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bad_cursor(kind: str, cursor: str | None, *, param: str = "after") -> InvalidRequest:
    which = "last" if param == "after" else "first"
    return InvalidRequest(
        f"{param}={cursor!r} names no {kind} in this list; pass the id of the {which} {kind} "
        "of the page you have.",
        param=param,
        code="invalid_cursor",
    )
