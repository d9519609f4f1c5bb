"""Signed-URL uploads, Together's way of receiving files, as use cases over
`Service`.

A client announces a file (`grant`) and gets a one-time URL on this server;
it PUTs the raw bytes there without an API key (`receive`), then asks for the
file to be processed (`preprocess`). Files over the multipart threshold come
in numbered parts instead, each with its own one-time URL (`initiate`), and
are assembled in part order once every part's ETag checks out (`complete`).
Dialect-neutral like `service.py`: nothing here knows about HTTP.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from overnight import _ids
from overnight.domain.files import FilePurpose, FileRecord, LineCounter, Upload
from overnight.domain.grants import UploadGrant, hash_token, new_token, refusal
from overnight.errors import Conflict, Forbidden, InvalidRequest, PayloadTooLarge
from overnight.service import FileSink, Service, clean_filename, uploadable_purpose
from overnight.types import FileId, TenantId, TenantScope

#: Most parts in one multipart upload (S3's limit; the SDKs stay under 250).
MAX_PARTS = 10_000
#: Grants are forgotten this long after they expire; until then a late PUT
#: is told "expired" rather than "not valid".
GRANT_MEMORY = 24 * 3600

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class DuplicateFile(Conflict):
    """The tenant already holds a file with these bytes and this purpose.
    Together's SDK 3.x answers this 409 by fetching `file_id` instead."""

    default_code = "file_exists"

    def __init__(self, file_id: FileId) -> None:
        super().__init__(
            f"A file with this checksum was already uploaded: {file_id}.", param="checksum"
        )
        self.file_id = file_id


@dataclass(frozen=True, slots=True)
class Granted:
    """A file id promised up front, and the token of its one-time upload URL."""

    file_id: FileId
    token: str


@dataclass(frozen=True, slots=True)
class MultipartGranted:
    upload: Upload
    #: (part number, token) for every part, in order.
    parts: list[tuple[int, str]]


@dataclass(frozen=True, slots=True)
class Received:
    """What one PUT stored: a whole file, or one part (`file` is None)."""

    etag: str
    file: FileRecord | None


class SignedUploads:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.store = service.store
        self.settings = service.settings

    def _now(self) -> int:
        return int(self.service.clock())

    def _expiry(self, now: int) -> int:
        """When a URL issued in second `now` stops working. Times are whole
        seconds, so it gets one more: a URL issued at 12:00:00.999 with a
        1 s expiry must still work at 12:00:01.5."""
        return now + self.settings.upload_url_expiry + 1

    # ------------------------------------------------------------ one file

    async def grant(
        self, tenant: TenantId, *, filename: str, purpose: str, checksum: str | None = None
    ) -> Granted:
        """Promise a file id and issue the one-time URL its bytes go to."""
        checked = uploadable_purpose(purpose)
        digest = _checksum(checksum)
        await self._refuse_duplicate(tenant, digest, checked)
        now = self._now()
        token = new_token()
        grant = UploadGrant(
            token_hash=hash_token(token),
            tenant=tenant,
            file_id=_ids.new_file_id(),
            filename=clean_filename(filename),
            purpose=checked,
            created_at=now,
            expires_at=self._expiry(now),
            checksum=digest,
        )
        await self.store.insert_grants([grant], forget_before=now - GRANT_MEMORY)
        return Granted(grant.file_id, token)

    async def receive(self, token: str, body: AsyncIterator[bytes]) -> Received:
        """Store the bytes PUT to a one-time URL. The URL is spent before the
        first byte is read, so a second PUT with it fails even mid-upload."""
        now = self._now()
        used, grant = await self.store.use_grant(hash_token(token), now)
        if not used or grant is None:
            reason = refusal(grant, now) or "This upload URL cannot be used."
            raise Forbidden(reason, code="upload_url_rejected")
        if grant.upload_id is None:
            threshold = self.settings.multipart_threshold
            sink = self.service.new_file_sink(grant.file_id, limit=threshold)
            await _drain(body, sink, hint=threshold < self.settings.max_upload_bytes)
            record = await self.service.create_file(
                grant.tenant,
                sink,
                filename=grant.filename,
                purpose=grant.purpose.value,
                checksum=grant.checksum,
            )
            return Received(record.sha256, record)
        upload = await self.service.pending_upload(grant.tenant, grant.upload_id)
        sink = self.service.new_part_sink(upload)
        await _drain(body, sink)
        part = await self.service.add_upload_part(
            grant.tenant, upload.id, sink, part_number=grant.part_number
        )
        assert part.etag is not None
        return Received(part.etag, None)

    async def preprocess(self, tenant: TenantScope, file_id: str) -> FileRecord:
        """The last step of an upload: the file with its line count."""
        return await self.counted(await self.service.get_file(tenant, file_id))

    async def counted(self, record: FileRecord) -> FileRecord:
        """The record with `line_count` known. Uploads count their lines as
        they arrive; files made otherwise (batch results) are counted once,
        on first demand, and the count is kept."""
        if record.line_count is not None:
            return record
        counter = LineCounter()
        async for piece in self.service.blobs.read(record.blob_key):
            counter.feed(piece)
        await self.store.set_line_count(record.id, counter.lines)
        return dataclasses.replace(record, line_count=counter.lines)

    # ----------------------------------------------------------- multipart

    async def initiate(
        self,
        tenant: TenantId,
        *,
        filename: str,
        purpose: str,
        file_size: int,
        num_parts: int,
        mime_type: str,
        checksum: str | None = None,
    ) -> MultipartGranted:
        """Open a multipart upload whose file id is promised now, with one
        one-time URL per part."""
        checked = uploadable_purpose(purpose)
        digest = _checksum(checksum)
        limit = self.settings.max_upload_bytes
        if not 0 <= file_size <= limit:
            raise InvalidRequest(
                f"file_size must be between 0 and {limit}.", param="file_size", code="invalid_value"
            )
        if not 1 <= num_parts <= min(MAX_PARTS, max(file_size, 1)):
            raise InvalidRequest(
                f"num_parts must be between 1 and {min(MAX_PARTS, max(file_size, 1))}.",
                param="num_parts",
                code="invalid_value",
            )
        await self._refuse_duplicate(tenant, digest, checked)
        now = self._now()
        upload = Upload(
            id=_ids.new_upload_id(),
            tenant=tenant,
            filename=clean_filename(filename),
            purpose=checked,
            bytes=file_size,
            mime_type=mime_type,
            created_at=now,
            expires_at=now + self.settings.upload_expiry,
            file_id=_ids.new_file_id(),
            checksum=digest,
        )
        assert upload.file_id is not None
        tokens = [(n, new_token()) for n in range(1, num_parts + 1)]
        grants = [
            UploadGrant(
                token_hash=hash_token(token),
                tenant=tenant,
                file_id=upload.file_id,
                filename=upload.filename,
                purpose=checked,
                created_at=now,
                expires_at=self._expiry(now),
                checksum=digest,
                upload_id=upload.id,
                part_number=n,
            )
            for n, token in tokens
        ]
        await self.store.insert_grants(grants, forget_before=now - GRANT_MEMORY, upload=upload)
        return MultipartGranted(upload, tokens)

    async def complete(
        self, tenant: TenantScope, upload_id: str, file_id: str, parts: Sequence[tuple[int, str]]
    ) -> FileRecord:
        """Assemble the listed parts, in ascending part number, into the
        promised file; each part's ETag must be the one its PUT returned."""
        upload = await self._multipart(tenant, upload_id, file_id)
        numbers = [n for n, _ in parts]
        if not numbers or numbers != sorted(set(numbers)):
            raise InvalidRequest(
                "parts must list each part once, in ascending part_number order.",
                param="parts",
                code="invalid_value",
            )
        stored = {p.part_number: p for p in await self.store.list_parts(upload.id)}
        for number, etag in parts:
            part = stored.get(number)
            if part is None:
                raise InvalidRequest(
                    f"Part {number} was never uploaded.", param="parts", code="invalid_value"
                )
            if etag.strip('"').lower() != part.etag:
                raise InvalidRequest(
                    f"The etag of part {number} is not the one its upload returned.",
                    param="parts",
                    code="etag_mismatch",
                )
        return await self.service.finish_upload(upload, [stored[n] for n in numbers])

    async def abort(self, tenant: TenantScope, upload_id: str, file_id: str) -> Upload:
        await self._multipart(tenant, upload_id, file_id)
        return await self.service.cancel_upload(tenant, upload_id)

    async def _multipart(self, tenant: TenantScope, upload_id: str, file_id: str) -> Upload:
        upload = await self.service.pending_upload(tenant, upload_id)
        if upload.file_id != file_id:
            raise InvalidRequest(
                f"Upload {upload_id} is not the upload of file {file_id}.",
                param="file_id",
                code="invalid_value",
            )
        return upload

    async def _refuse_duplicate(
        self, tenant: TenantId, checksum: str | None, purpose: FilePurpose
    ) -> None:
        if checksum is None:
            return
        existing = await self.store.find_file_by_checksum(
            tenant, checksum, purpose, live_at=self._now()
        )
        if existing is not None:
            raise DuplicateFile(existing.id)


def _checksum(checksum: str | None) -> str | None:
    if checksum is None or checksum == "":
        return None
    digest = checksum.strip().lower()
    if not _SHA256_HEX.fullmatch(digest):
        raise InvalidRequest(
            "checksum must be the file's SHA-256 as 64 hex digits.",
            param="checksum",
            code="invalid_value",
        )
    return digest


async def _drain(body: AsyncIterator[bytes], sink: FileSink, *, hint: bool = False) -> None:
    """Stream a request body into a sink; on any failure nothing is kept."""
    try:
        async for data in body:
            await sink.write(data)
    except PayloadTooLarge as exc:
        if hint:
            exc.message += " Larger files are uploaded in parts: POST /files/multipart/initiate."
            exc.args = (exc.message,)
        raise
    except BaseException:
        await sink.abort()
        raise
