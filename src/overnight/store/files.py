"""Files and how they arrive: records, multipart uploads and their parts,
upload grants, lookups by checksum, and the expiry of files and uploads.

One mixin of `SqlStore`, for everything the files API and the retention
sweep ask of the store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy import ColumnElement, delete, exists, insert, select, update

from overnight.domain.files import FilePurpose, FileRecord, Upload, UploadPart, UploadStatus
from overnight.domain.grants import UploadGrant
from overnight.domain.status import BatchStatus
from overnight.errors import Conflict
from overnight.store._base import StoreBase
from overnight.store.queries import live, page, visible
from overnight.store.rows import (
    file_values,
    grant_values,
    to_file,
    to_grant,
    to_upload,
    upload_values,
)
from overnight.store.schema import batches, files, upload_grants, upload_parts, uploads
from overnight.types import FileId, PartId, TenantId, UploadId


class FilesMixin(StoreBase):
    # ------------------------------------------------------------------ files

    async def insert_file(self, record: FileRecord, created_us: int) -> None:
        async with self._write() as conn:
            await conn.execute(insert(files).values(**file_values(record), created_us=created_us))

    async def get_file(
        self, tenant: TenantId | None, file_id: str, *, live_at: int | None = None
    ) -> FileRecord | None:
        """One file. `tenant` None looks in every tenant (the runner, an
        admin); `live_at` hides files that expired by then."""
        query = select(files).where(files.c.id == file_id, *visible(files, tenant))
        if live_at is not None:
            query = query.where(live(live_at))
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        return to_file(row) if row else None

    async def list_files(
        self,
        tenant: TenantId | None,
        *,
        purpose: str | None,
        newest_first: bool,
        after: str | None,
        limit: int,
        live_at: int | None = None,
    ) -> list[FileRecord] | None:
        """Up to `limit` files after the cursor `after` (a file id); None if
        the cursor names no file this caller can see."""
        query = select(files).where(*visible(files, tenant))
        if purpose is not None:
            query = query.where(files.c.purpose == purpose)
        if live_at is not None:
            query = query.where(live(live_at))
        async with self._read() as conn:
            rows = await page(
                conn, files, query, tenant, after=after, newest_first=newest_first, limit=limit
            )
        return None if rows is None else [to_file(r) for r in rows]

    async def delete_file(
        self, tenant: TenantId | None, file_id: str, *, live_at: int | None = None
    ) -> FileRecord | None:
        async with self._write() as conn:
            query = select(files).where(files.c.id == file_id, *visible(files, tenant))
            if live_at is not None:
                query = query.where(live(live_at))
            row = (await conn.execute(query)).first()
            if row is None:
                return None
            busy = (
                await conn.execute(
                    select(batches.c.id)
                    .where(
                        batches.c.input_file_id == file_id,
                        batches.c.status.in_([s.value for s in BatchStatus if not s.is_terminal]),
                    )
                    .limit(1)
                )
            ).first()
            if busy is not None:
                raise Conflict(
                    f"File {file_id} is the input of batch {busy.id}, which is still running; "
                    "cancel the batch or wait for it to end.",
                    param="file_id",
                    code="file_in_use",
                )
            await conn.execute(delete(files).where(files.c.id == file_id))
        return to_file(row)

    # ---------------------------------------------------------------- uploads

    async def insert_upload(self, upload: Upload) -> None:
        async with self._write() as conn:
            await conn.execute(insert(uploads).values(**upload_values(upload)))

    async def get_upload(self, tenant: TenantId | None, upload_id: str) -> Upload | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(uploads).where(uploads.c.id == upload_id, *visible(uploads, tenant))
                )
            ).first()
        return to_upload(row) if row else None

    async def insert_part(self, part: UploadPart) -> None:
        async with self._write() as conn:
            status = (
                await conn.execute(select(uploads.c.status).where(uploads.c.id == part.upload_id))
            ).scalar()
            if status != UploadStatus.PENDING.value:
                raise Conflict(
                    f"Upload {part.upload_id} is {status}; parts can only be added while it is pending.",
                    code="upload_not_pending",
                )
            await conn.execute(
                insert(upload_parts).values(
                    id=part.id,
                    upload_id=part.upload_id,
                    created_at=part.created_at,
                    bytes=part.bytes,
                    blob_key=part.blob_key,
                    part_number=part.part_number,
                    etag=part.etag,
                )
            )

    async def list_parts(self, upload_id: str) -> list[UploadPart]:
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    select(upload_parts).where(upload_parts.c.upload_id == upload_id)
                )
            ).all()
        return [
            UploadPart(
                PartId(r.id),
                UploadId(r.upload_id),
                r.created_at,
                r.bytes,
                r.blob_key,
                r.part_number,
                r.etag,
            )
            for r in rows
        ]

    async def complete_upload(self, upload_id: str, record: FileRecord, created_us: int) -> None:
        """Mark the upload completed and create its file, or Conflict."""
        async with self._write() as conn:
            result = await conn.execute(
                update(uploads)
                .where(uploads.c.id == upload_id, uploads.c.status == UploadStatus.PENDING.value)
                .values(status=UploadStatus.COMPLETED.value, file_id=record.id)
            )
            if result.rowcount != 1:
                raise Conflict(
                    f"Upload {upload_id} is no longer pending.", code="upload_not_pending"
                )
            await conn.execute(insert(files).values(**file_values(record), created_us=created_us))

    async def set_upload_status(
        self, upload_id: str, status: UploadStatus, *, expected: UploadStatus
    ) -> bool:
        async with self._write() as conn:
            result = await conn.execute(
                update(uploads)
                .where(uploads.c.id == upload_id, uploads.c.status == expected.value)
                .values(status=status.value)
            )
        return bool(result.rowcount == 1)

    async def delete_parts(self, upload_id: str) -> None:
        async with self._write() as conn:
            await conn.execute(delete(upload_parts).where(upload_parts.c.upload_id == upload_id))

    # --------------------------------------------------------------- together

    async def find_file_by_checksum(
        self, tenant: TenantId, sha256: str, purpose: FilePurpose, *, live_at: int
    ) -> FileRecord | None:
        """The tenant's oldest live file with these bytes and this purpose, if any."""
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(files)
                    .where(
                        files.c.tenant == tenant,
                        files.c.sha256 == sha256,
                        files.c.purpose == purpose.value,
                        live(live_at),
                    )
                    .order_by(files.c.created_us, files.c.id)
                    .limit(1)
                )
            ).first()
        return to_file(row) if row else None

    async def set_line_count(self, file_id: FileId, line_count: int) -> None:
        async with self._write() as conn:
            await conn.execute(
                update(files).where(files.c.id == file_id).values(line_count=line_count)
            )

    async def insert_grants(
        self, grants: Sequence[UploadGrant], *, forget_before: int, upload: Upload | None = None
    ) -> None:
        """Store new upload grants (with the multipart upload they belong
        to, if any) in one transaction, and forget grants that expired
        before `forget_before`."""
        async with self._write() as conn:
            await conn.execute(
                delete(upload_grants).where(upload_grants.c.expires_at < forget_before)
            )
            if upload is not None:
                await conn.execute(insert(uploads).values(**upload_values(upload)))
            if grants:
                await conn.execute(insert(upload_grants), [grant_values(g) for g in grants])

    async def use_grant(self, token_hash: str, now: int) -> tuple[bool, UploadGrant | None]:
        """Spend a grant: (True, grant) if this call used it, else (False, the
        grant as it was, or None if there is none). Guarded in the WHERE, so
        two PUTs racing with one URL cannot both pass."""
        async with self._write() as conn:
            row = (
                await conn.execute(
                    select(upload_grants).where(upload_grants.c.token_hash == token_hash)
                )
            ).first()
            if row is None:
                return False, None
            result = await conn.execute(
                update(upload_grants)
                .where(
                    upload_grants.c.token_hash == token_hash,
                    upload_grants.c.used_at.is_(None),
                    upload_grants.c.expires_at > now,
                )
                .values(used_at=now)
            )
        return bool(result.rowcount == 1), to_grant(row)

    # -- retention

    async def expired_files(self, now: int, limit: int) -> list[FileRecord]:
        """Files whose time is up and that no unfinished batch reads."""
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    select(files)
                    .where(
                        files.c.expires_at.is_not(None),
                        files.c.expires_at <= now,
                        ~_read_by_unfinished_batch(),
                    )
                    .order_by(files.c.expires_at)
                    .limit(limit)
                )
            ).all()
        return [to_file(r) for r in rows]

    async def delete_expired_file(self, file_id: FileId, now: int) -> bool:
        """Delete an expired file's record, unless a batch started reading it
        meanwhile; True if this call deleted it."""
        async with self._write() as conn:
            result = await conn.execute(
                delete(files).where(
                    files.c.id == file_id,
                    files.c.expires_at <= now,
                    ~_read_by_unfinished_batch(),
                )
            )
        return bool(result.rowcount == 1)

    async def expire_uploads(self, now: int) -> list[Upload]:
        """Mark every pending upload whose time is up as expired; returns
        them, so that their parts can be dropped."""
        async with self._write() as conn:
            rows = (
                await conn.execute(
                    select(uploads).where(
                        uploads.c.status == UploadStatus.PENDING.value,
                        uploads.c.expires_at <= now,
                    )
                )
            ).all()
            if rows:
                await conn.execute(
                    update(uploads)
                    .where(
                        uploads.c.id.in_([r.id for r in rows]),
                        uploads.c.status == UploadStatus.PENDING.value,
                    )
                    .values(status=UploadStatus.EXPIRED.value)
                )
        return [dataclasses.replace(to_upload(r), status=UploadStatus.EXPIRED) for r in rows]


def _read_by_unfinished_batch() -> ColumnElement[bool]:
    """The file is the input of a batch that has not ended."""
    return exists().where(
        batches.c.input_file_id == files.c.id,
        batches.c.status.in_([s.value for s in BatchStatus if not s.is_terminal]),
    )
