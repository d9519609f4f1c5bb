"""The store on SQLAlchemy Core: SQLite by default, PostgreSQL to scale out.

SQLite keeps one writer connection (a pool of one) whose transactions open
with BEGIN IMMEDIATE, so writers queue instead of failing on lock upgrades,
and readers use their own connections, which WAL lets run beside the writer.
PostgreSQL uses one pool for both and claims work with FOR UPDATE SKIP LOCKED.

Every public method is one transaction. Transitions are guarded in WHERE
clauses (`status = :expected`, `lease_owner = :me`); a guard that matches no
row means someone else moved first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import (
    ColumnElement,
    bindparam,
    case,
    delete,
    event,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from overnight import _json
from overnight.domain.batch import Batch, LineError, RequestCounts, Usage
from overnight.domain.chunk import Chunk, ChunkKey, ChunkStatus, ChunkWork, Tally
from overnight.domain.files import FilePurpose, FileRecord, Upload, UploadPart, UploadStatus
from overnight.domain.grants import UploadGrant
from overnight.domain.keys import ApiKey, KeyRole
from overnight.domain.quotas import (
    PENDING_STATUSES,
    QuotaOverrides,
    Quotas,
    TenantUsage,
    refusal,
)
from overnight.domain.scheduling import Candidate, schedule_order
from overnight.domain.status import BatchStatus, StopReason, sources_of
from overnight.domain.validation import ChunkRange
from overnight.errors import Conflict, LimitExceeded
from overnight.store import migrate
from overnight.store.schema import (
    api_keys,
    batches,
    chunks,
    files,
    tenant_quotas,
    upload_grants,
    upload_parts,
    uploads,
    workers,
)
from overnight.types import BatchId, FileId, PartId, TenantId, UploadId, WorkerId

_ACTIVE_CHUNK = (ChunkStatus.PENDING.value, ChunkStatus.RUNNING.value)
#: The first key of the PostgreSQL advisory locks that serialise one
#: tenant's quota checks (the second is a hash of the tenant's name).
_PG_QUOTA_LOCK_SPACE = 0x6F76_6E71  # "ovnq"


async def open_store(url: str) -> SqlStore:
    """Connect, migrate to the newest schema, and return the store."""
    store = SqlStore.connect(url)
    await migrate.upgrade(store.write_engine)
    return store


def _sqlite_pragmas(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to send.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class SqlStore:
    def __init__(self, read_engine: AsyncEngine, write_engine: AsyncEngine) -> None:
        self.read_engine = read_engine
        self.write_engine = write_engine
        self.dialect = write_engine.dialect.name

    @classmethod
    def connect(cls, url: str) -> SqlStore:
        if make_url(url).get_backend_name() == "sqlite":
            writer = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=120)
            reader = create_async_engine(url, pool_size=4, max_overflow=4)
            _sqlite_pragmas(writer, immediate=True)
            _sqlite_pragmas(reader, immediate=False)
            return cls(reader, writer)
        engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
        return cls(engine, engine)

    async def close(self) -> None:
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self.write_engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with self.read_engine.connect() as conn:
            yield conn

    # ------------------------------------------------------------------ files

    async def insert_file(self, record: FileRecord, created_us: int) -> None:
        async with self._write() as conn:
            await conn.execute(insert(files).values(**_file_values(record), created_us=created_us))

    async def get_file(
        self, tenant: TenantId | None, file_id: str, *, live_at: int | None = None
    ) -> FileRecord | None:
        """One file. `tenant` None looks in every tenant (the runner, an
        admin); `live_at` hides files that expired by then."""
        query = select(files).where(files.c.id == file_id, *_visible(files, tenant))
        if live_at is not None:
            query = query.where(_live(live_at))
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        return _file(row) if row else None

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
        query = select(files).where(*_visible(files, tenant))
        if purpose is not None:
            query = query.where(files.c.purpose == purpose)
        if live_at is not None:
            query = query.where(_live(live_at))
        async with self._read() as conn:
            if after is not None:
                cursor = (
                    await conn.execute(
                        select(files.c.created_us, files.c.id).where(
                            files.c.id == after, *_visible(files, tenant)
                        )
                    )
                ).first()
                if cursor is None:
                    return None
                query = query.where(_after_cursor(files, cursor, newest_first))
            query = query.order_by(*_ordering(files, newest_first)).limit(limit)
            rows = (await conn.execute(query)).all()
        return [_file(r) for r in rows]

    async def delete_file(
        self, tenant: TenantId | None, file_id: str, *, live_at: int | None = None
    ) -> FileRecord | None:
        async with self._write() as conn:
            query = select(files).where(files.c.id == file_id, *_visible(files, tenant))
            if live_at is not None:
                query = query.where(_live(live_at))
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
        return _file(row)

    # ---------------------------------------------------------------- uploads

    async def insert_upload(self, upload: Upload) -> None:
        async with self._write() as conn:
            await conn.execute(insert(uploads).values(**_upload_values(upload)))

    async def get_upload(self, tenant: TenantId | None, upload_id: str) -> Upload | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(uploads).where(uploads.c.id == upload_id, *_visible(uploads, tenant))
                )
            ).first()
        return _upload(row) if row else None

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
            await conn.execute(insert(files).values(**_file_values(record), created_us=created_us))

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

    # ---------------------------------------------------------------- batches

    async def insert_batch(
        self,
        batch: Batch,
        created_us: int,
        *,
        default_quotas: Quotas | None = None,
        adding: int = 0,
    ) -> None:
        """Store a new batch. With `default_quotas`, first check in the same
        transaction that the tenant stays within its quotas (those defaults,
        or what an admin set) with `adding` more requests; LimitExceeded if
        not. Concurrent creates of one tenant queue for the check."""
        async with self._write() as conn:
            if default_quotas is not None:
                await self._check_quotas(conn, batch.tenant, default_quotas, adding)
            await conn.execute(
                insert(batches).values(
                    id=batch.id,
                    tenant=batch.tenant,
                    endpoint=batch.endpoint,
                    input_file_id=batch.input_file_id,
                    completion_window=batch.completion_window,
                    status=batch.status.value,
                    dialect=batch.dialect,
                    model=batch.model,
                    priority=batch.priority,
                    metadata_json=_json.dumps(batch.metadata).decode()
                    if batch.metadata is not None
                    else None,
                    input_bytes=batch.input_bytes,
                    created_us=created_us,
                    created_at=batch.created_at,
                    expires_at=batch.expires_at,
                    total=0,
                    completed=0,
                    failed=0,
                    input_tokens=0,
                    cached_tokens=0,
                    output_tokens=0,
                    reasoning_tokens=0,
                    chunks_total=0,
                    chunks_done=0,
                    output_expires_after=batch.output_expires_after,
                )
            )

    async def get_batch(self, tenant: TenantId | None, batch_id: str) -> Batch | None:
        query = select(batches).where(batches.c.id == batch_id, *_visible(batches, tenant))
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        return _batch(row) if row else None

    async def list_batches(
        self,
        tenant: TenantId | None,
        *,
        after: str | None,
        limit: int,
        newest_first: bool = True,
    ) -> list[Batch] | None:
        """Up to `limit` batches after the cursor `after` (a batch id); None
        if the cursor names no batch this caller can see."""
        query = select(batches).where(*_visible(batches, tenant))
        async with self._read() as conn:
            if after is not None:
                cursor = (
                    await conn.execute(
                        select(batches.c.created_us, batches.c.id).where(
                            batches.c.id == after, *_visible(batches, tenant)
                        )
                    )
                ).first()
                if cursor is None:
                    return None
                query = query.where(_after_cursor(batches, cursor, newest_first))
            query = query.order_by(*_ordering(batches, newest_first)).limit(limit)
            rows = (await conn.execute(query)).all()
        return [_batch(r) for r in rows]

    async def request_cancel(
        self, tenant: TenantId | None, batch_id: str, now: int
    ) -> Batch | None:
        """Move a batch towards `cancelled`; None if there is no such batch.

        A batch that nobody is validating yet is cancelled at once (edges c
        and j); otherwise it is `cancelling` and drains. Cancelling a batch
        that already ended raises Conflict, except an already cancelled one.
        """
        async with self._write() as conn:
            row = (
                await conn.execute(
                    select(batches)
                    .where(batches.c.id == batch_id, *_visible(batches, tenant))
                    .with_for_update()
                )
            ).first()
            if row is None:
                return None
            status = BatchStatus(row.status)
            if status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
                return _batch(row)
            if status is BatchStatus.FINALIZING and row.stop_reason == StopReason.CANCELLED:
                return _batch(row)
            if status not in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS):
                raise Conflict(
                    f"Cannot cancel a batch with status '{status.value}'.",
                    code="batch_not_cancellable",
                )
            if status is BatchStatus.VALIDATING and row.lease_owner is None:
                await conn.execute(
                    update(batches)
                    .where(batches.c.id == batch_id, batches.c.status == status.value)
                    .values(
                        status=BatchStatus.CANCELLED.value,
                        stop_reason=StopReason.CANCELLED.value,
                        cancelling_at=now,
                        cancelled_at=now,
                    )
                )
            else:
                await conn.execute(
                    update(batches)
                    .where(batches.c.id == batch_id, batches.c.status == status.value)
                    .values(
                        status=BatchStatus.CANCELLING.value,
                        cancelling_at=now,
                        stop_reason=row.stop_reason or StopReason.CANCELLED.value,
                    )
                )
                if status is BatchStatus.IN_PROGRESS:
                    await self._skip_pending_chunks(conn, BatchId(batch_id), now)
            row = (await conn.execute(select(batches).where(batches.c.id == batch_id))).one()
        return _batch(row)

    async def expire_due(self, now: int) -> list[BatchId]:
        """Stop every running batch whose window has closed (reason `expired`)."""
        async with self._write() as conn:
            rows = (
                await conn.execute(
                    select(batches.c.id).where(
                        batches.c.status.in_(
                            [BatchStatus.VALIDATING.value, BatchStatus.IN_PROGRESS.value]
                        ),
                        batches.c.stop_reason.is_(None),
                        batches.c.expires_at <= now,
                    )
                )
            ).all()
            expired = [BatchId(r.id) for r in rows]
            for batch_id in expired:
                await conn.execute(
                    update(batches)
                    .where(batches.c.id == batch_id, batches.c.stop_reason.is_(None))
                    .values(stop_reason=StopReason.EXPIRED.value)
                )
                await self._skip_pending_chunks(conn, batch_id, now)
        return expired

    async def _skip_pending_chunks(
        self, conn: AsyncConnection, batch_id: BatchId, now: int
    ) -> None:
        skipped = await conn.execute(
            update(chunks)
            .where(chunks.c.batch_id == batch_id, chunks.c.status == ChunkStatus.PENDING.value)
            .values(status=ChunkStatus.SKIPPED.value, lease_owner=None, lease_expires_at=None)
        )
        if skipped.rowcount:
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id)
                .values(chunks_done=batches.c.chunks_done + skipped.rowcount)
            )
        await self._finalize_if_drained(conn, batch_id, now)

    async def _finalize_if_drained(
        self, conn: AsyncConnection, batch_id: BatchId, now: int
    ) -> bool:
        """Edges e and f: once every chunk is done or skipped, the batch is
        finalizing, unowned, for whichever worker claims it first."""
        result = await conn.execute(
            update(batches)
            .where(
                batches.c.id == batch_id,
                batches.c.status.in_([s.value for s in sources_of(BatchStatus.FINALIZING)]),
                batches.c.chunks_done >= batches.c.chunks_total,
                batches.c.chunks_total > 0,
            )
            .values(
                status=BatchStatus.FINALIZING.value,
                finalizing_at=now,
                lease_owner=None,
                lease_expires_at=None,
            )
        )
        return bool(result.rowcount == 1)

    # ------------------------------------------------------------- validation

    async def claim_validation(self, worker: WorkerId, now: float, ttl: float) -> Batch | None:
        return await self._claim_batch(BatchStatus.VALIDATING, worker, now, ttl)

    async def claim_finalization(self, worker: WorkerId, now: float, ttl: float) -> Batch | None:
        return await self._claim_batch(BatchStatus.FINALIZING, worker, now, ttl)

    async def _claim_batch(
        self, status: BatchStatus, worker: WorkerId, now: float, ttl: float
    ) -> Batch | None:
        async with self._write() as conn:
            row = (
                await conn.execute(
                    select(batches)
                    .where(
                        batches.c.status == status.value,
                        or_(batches.c.lease_owner.is_(None), batches.c.lease_expires_at < now),
                    )
                    .order_by(batches.c.created_us)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
            ).first()
            if row is None:
                return None
            await conn.execute(
                update(batches)
                .where(batches.c.id == row.id)
                .values(lease_owner=worker, lease_expires_at=now + ttl)
            )
        return _batch(row)

    async def start_batch(
        self,
        batch_id: BatchId,
        worker: WorkerId,
        *,
        requests: int,
        model: str | None,
        chunk_ranges: Sequence[ChunkRange],
        now: int,
    ) -> BatchStatus | None:
        """Edge a: a valid file's chunks are stored and the batch runs. If the
        batch was cancelled meanwhile it ends at once (edge j); if its window
        closed, every chunk is skipped and it goes straight to finalizing.
        None when the lease was lost."""
        async with self._write() as conn:
            row = (
                await conn.execute(
                    select(batches)
                    .where(
                        batches.c.id == batch_id,
                        batches.c.lease_owner == worker,
                        batches.c.status.in_(
                            [BatchStatus.VALIDATING.value, BatchStatus.CANCELLING.value]
                        ),
                    )
                    .with_for_update()
                )
            ).first()
            if row is None:
                return None
            if row.status == BatchStatus.CANCELLING.value:
                await conn.execute(
                    update(batches)
                    .where(batches.c.id == batch_id)
                    .values(
                        status=BatchStatus.CANCELLED.value,
                        cancelled_at=now,
                        total=requests,
                        model=model,
                        lease_owner=None,
                        lease_expires_at=None,
                    )
                )
                return BatchStatus.CANCELLED
            if chunk_ranges:
                await conn.execute(
                    insert(chunks),
                    [
                        {
                            "batch_id": batch_id,
                            "idx": c.index,
                            "start": c.start,
                            "end": c.end,
                            "first_line": c.first_line,
                            "requests": c.requests,
                            "status": ChunkStatus.PENDING.value,
                            "tenant": row.tenant,
                            "deadline": row.expires_at,
                            "priority": row.priority,
                            "created_us": row.created_us,
                            "attempts": 0,
                            "completed": 0,
                            "failed": 0,
                            "input_tokens": 0,
                            "cached_tokens": 0,
                            "output_tokens": 0,
                            "reasoning_tokens": 0,
                        }
                        for c in chunk_ranges
                    ],
                )
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id)
                .values(
                    status=BatchStatus.IN_PROGRESS.value,
                    in_progress_at=now,
                    total=requests,
                    model=model,
                    chunks_total=len(chunk_ranges),
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            if row.stop_reason is not None:
                await self._skip_pending_chunks(conn, batch_id, now)
                return BatchStatus.FINALIZING
        return BatchStatus.IN_PROGRESS

    async def fail_batch(
        self, batch_id: BatchId, worker: WorkerId, errors: Sequence[LineError], now: int
    ) -> BatchStatus | None:
        """Edge b: the file is invalid. A batch cancelled meanwhile ends
        cancelled (edge j), still naming the errors."""
        errors_json = _json.dumps([_line_error_dict(e) for e in errors]).decode()
        async with self._write() as conn:
            row = (
                await conn.execute(
                    select(batches.c.status)
                    .where(batches.c.id == batch_id, batches.c.lease_owner == worker)
                    .with_for_update()
                )
            ).first()
            if row is None:
                return None
            if row.status == BatchStatus.CANCELLING.value:
                target, stamp = BatchStatus.CANCELLED, "cancelled_at"
            elif row.status == BatchStatus.VALIDATING.value:
                target, stamp = BatchStatus.FAILED, "failed_at"
            else:
                return None
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.status == row.status)
                .values(
                    {
                        "status": target.value,
                        stamp: now,
                        "errors_json": errors_json,
                        "lease_owner": None,
                        "lease_expires_at": None,
                    }
                )
            )
        return target

    # ----------------------------------------------------------------- chunks

    async def claim_chunk(
        self,
        worker: WorkerId,
        now: float,
        ttl: float,
        *,
        urgent_within: float = 3600.0,
        idle_only: bool = False,
        running: Collection[ChunkKey] = (),
    ) -> ChunkWork | None:
        """Lease the next chunk to run, or None.

        A chunk whose lease lapsed (its worker died) is taken first: it is
        work already under way. Otherwise the batch is chosen by
        `domain.scheduling.schedule_order`, and its lowest pending chunk is
        taken. With `idle_only`, only batches with no chunk running anywhere
        are considered: a worker that is full still admits a newcomer.
        `running` are the chunks the claiming worker runs now: even if their
        lease lapsed (it stalled), it must not take them a second time.
        Attempts count up on every claim."""
        async with self._write() as conn:
            row = (
                await conn.execute(
                    select(chunks)
                    .where(
                        chunks.c.status == ChunkStatus.RUNNING.value,
                        chunks.c.lease_expires_at < now,
                        *(
                            [
                                tuple_(chunks.c.batch_id, chunks.c.idx).not_in(
                                    [(k.batch_id, k.index) for k in running]
                                )
                            ]
                            if running
                            else []
                        ),
                    )
                    .order_by(chunks.c.deadline, chunks.c.idx)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
            ).first()
            if row is None:
                row = await self._next_pending_chunk(conn, now, urgent_within, idle_only)
            if row is None:
                return None
            await conn.execute(
                update(chunks)
                .where(chunks.c.batch_id == row.batch_id, chunks.c.idx == row.idx)
                .values(
                    status=ChunkStatus.RUNNING.value,
                    lease_owner=worker,
                    lease_expires_at=now + ttl,
                    attempts=chunks.c.attempts + 1,
                )
            )
            batch = (
                await conn.execute(
                    select(
                        batches.c.tenant,
                        batches.c.endpoint,
                        batches.c.dialect,
                        batches.c.stop_reason,
                        files.c.blob_key,
                    )
                    .select_from(batches.join(files, files.c.id == batches.c.input_file_id))
                    .where(batches.c.id == row.batch_id)
                )
            ).one()
        chunk = _chunk(row)
        return ChunkWork(
            chunk=dataclasses.replace(
                chunk, status=ChunkStatus.RUNNING, attempts=chunk.attempts + 1
            ),
            tenant=TenantId(batch.tenant),
            endpoint=batch.endpoint,
            dialect=batch.dialect,
            input_blob_key=batch.blob_key,
            stop_reason=StopReason(batch.stop_reason) if batch.stop_reason else None,
        )

    async def _next_pending_chunk(
        self, conn: AsyncConnection, now: float, urgent_within: float, idle_only: bool
    ) -> Any | None:
        candidates = [
            Candidate(BatchId(r.id), TenantId(r.tenant), r.expires_at, r.priority, r.created_us)
            for r in await conn.execute(
                select(
                    batches.c.id,
                    batches.c.tenant,
                    batches.c.expires_at,
                    batches.c.priority,
                    batches.c.created_us,
                ).where(
                    batches.c.status.in_(
                        [BatchStatus.IN_PROGRESS.value, BatchStatus.CANCELLING.value]
                    ),
                    batches.c.chunks_done < batches.c.chunks_total,
                )
            )
        ]
        if not candidates:
            return None
        by_batch: dict[BatchId, int] = {}
        by_tenant: dict[TenantId, int] = {}
        for r in await conn.execute(
            select(chunks.c.batch_id, chunks.c.tenant, func.count().label("n"))
            .where(chunks.c.status == ChunkStatus.RUNNING.value)
            .group_by(chunks.c.batch_id, chunks.c.tenant)
        ):
            by_batch[BatchId(r.batch_id)] = r.n
            by_tenant[TenantId(r.tenant)] = by_tenant.get(TenantId(r.tenant), 0) + r.n
        if idle_only:
            candidates = [c for c in candidates if not by_batch.get(c.batch_id)]
        ordered = schedule_order(
            candidates,
            running_by_batch=by_batch,
            running_by_tenant=by_tenant,
            now=now,
            urgent_within=urgent_within,
        )
        for candidate in ordered:
            row = (
                await conn.execute(
                    select(chunks)
                    .where(
                        chunks.c.batch_id == candidate.batch_id,
                        chunks.c.status == ChunkStatus.PENDING.value,
                    )
                    .order_by(chunks.c.idx)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
            ).first()
            if row is not None:
                return row
        return None

    async def heartbeat(
        self, worker: WorkerId, now: float, ttl: float, running: Collection[ChunkKey] = ()
    ) -> int:
        """One worker's heartbeat: renew the leases of the chunks it runs and
        of the batches it validates or finalises (one statement per table),
        and its presence. A lease it holds on a chunk it no longer runs is
        left to lapse. Returns how many workers are alive, so each can take
        its share of every model's max_concurrency."""
        async with self._write() as conn:
            if running:
                await conn.execute(
                    update(chunks)
                    .where(
                        chunks.c.lease_owner == worker,
                        chunks.c.status == ChunkStatus.RUNNING.value,
                        tuple_(chunks.c.batch_id, chunks.c.idx).in_(
                            [(k.batch_id, k.index) for k in running]
                        ),
                    )
                    .values(lease_expires_at=now + ttl)
                )
            await conn.execute(
                update(batches)
                .where(batches.c.lease_owner == worker)
                .values(lease_expires_at=now + ttl)
            )
            await conn.execute(delete(workers).where(workers.c.heartbeat_at < now - 10 * ttl))
            alive = (
                await conn.execute(
                    select(func.count())
                    .select_from(workers)
                    .where(workers.c.heartbeat_at >= now - ttl, workers.c.id != worker)
                )
            ).scalar_one() + 1
            seen = await conn.execute(
                update(workers).where(workers.c.id == worker).values(heartbeat_at=now, view=alive)
            )
            if seen.rowcount == 0:
                await conn.execute(
                    insert(workers).values(id=worker, started_at=now, heartbeat_at=now, view=alive)
                )
        return int(alive)

    async def counted_by_all(self, worker: WorkerId, now: float, ttl: float) -> bool:
        """Whether every other live worker has counted at least as many
        workers as there are now (so it has counted `worker` in, and shrunk
        to its share)."""
        async with self._read() as conn:
            live = (
                await conn.execute(
                    select(workers.c.id, workers.c.view).where(workers.c.heartbeat_at >= now - ttl)
                )
            ).all()
        count = len(live)
        return all((row.view or 0) >= count for row in live if row.id != worker)

    async def live_workers(self, now: float, ttl: float) -> list[WorkerId]:
        """Workers whose heartbeat is fresh: the ones doing work right now."""
        async with self._read() as conn:
            rows = await conn.execute(
                select(workers.c.id)
                .where(workers.c.heartbeat_at >= now - ttl)
                .order_by(workers.c.id)
            )
            return [WorkerId(r.id) for r in rows]

    async def release_leases(self, worker: WorkerId) -> None:
        """On shutdown: hand every held chunk and batch back at once."""
        async with self._write() as conn:
            await conn.execute(delete(workers).where(workers.c.id == worker))
            await conn.execute(
                update(chunks)
                .where(chunks.c.lease_owner == worker, chunks.c.status == ChunkStatus.RUNNING.value)
                .values(status=ChunkStatus.PENDING.value, lease_owner=None, lease_expires_at=None)
            )
            await conn.execute(
                update(batches)
                .where(batches.c.lease_owner == worker)
                .values(lease_owner=None, lease_expires_at=None)
            )

    async def release_chunk(self, key: ChunkKey, worker: WorkerId, attempt: int) -> None:
        async with self._write() as conn:
            await conn.execute(
                update(chunks)
                .where(
                    chunks.c.batch_id == key.batch_id,
                    chunks.c.idx == key.index,
                    chunks.c.lease_owner == worker,
                    chunks.c.attempts == attempt,
                    chunks.c.status == ChunkStatus.RUNNING.value,
                )
                .values(status=ChunkStatus.PENDING.value, lease_owner=None, lease_expires_at=None)
            )

    async def release_batch(self, batch_id: BatchId, worker: WorkerId) -> None:
        async with self._write() as conn:
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.lease_owner == worker)
                .values(lease_owner=None, lease_expires_at=None)
            )

    async def release_all_leases(self) -> None:
        """At start-up of the only process on a SQLite store: every lease
        belongs to a process that is gone, so there is no need to wait for
        them to expire."""
        async with self._write() as conn:
            await conn.execute(
                update(chunks)
                .where(chunks.c.status == ChunkStatus.RUNNING.value)
                .values(status=ChunkStatus.PENDING.value, lease_owner=None, lease_expires_at=None)
            )
            await conn.execute(
                update(batches)
                .where(batches.c.lease_owner.is_not(None))
                .values(lease_owner=None, lease_expires_at=None)
            )

    async def record_progress(
        self,
        key: ChunkKey,
        worker: WorkerId,
        attempt: int,
        tally: Tally,
        previous: Tally,
        *,
        done: bool,
        now: int,
    ) -> bool | None:
        """Store a chunk's counters and add the difference to its batch.

        With `done`, the chunk is finished; if it was the batch's last, the
        batch moves to finalizing. Returns None if the lease was lost (the
        caller must stop), else whether the batch is now finalizing.

        This runs every flush of every chunk, so its two statements are
        built once (`_PROGRESS`) and only their parameters change."""
        delta = tally - previous
        usage = tally.usage
        async with self._write() as conn:
            result = await conn.execute(
                _DONE_CHUNK if done else _PROGRESS_CHUNK,
                {
                    "k_batch": key.batch_id,
                    "k_idx": key.index,
                    "k_owner": worker,
                    "k_attempt": attempt,
                    "completed": tally.completed,
                    "failed": tally.failed,
                    "input_tokens": usage.input_tokens,
                    "cached_tokens": usage.cached_tokens,
                    "output_tokens": usage.output_tokens,
                    "reasoning_tokens": usage.reasoning_tokens,
                },
            )
            if result.rowcount != 1:
                return None
            await conn.execute(
                _PROGRESS_BATCH, _batch_delta(key.batch_id, delta, chunks_done=1 if done else 0)
            )
            if done:
                return await self._finalize_if_drained(conn, key.batch_id, now)
        return False

    async def record_progress_many(
        self, worker: WorkerId, moves: Sequence[tuple[ChunkKey, int, Tally, Tally]]
    ) -> set[ChunkKey]:
        """A worker's flush: store each chunk's counters (`tally`, the held
        `previous` being what the database had) and add the differences to
        their batches, all in one transaction. Each move names the attempt
        (the fencing token) it holds. Returns the chunks whose lease the
        worker still held; the others were not touched."""
        kept: set[ChunkKey] = set()
        deltas: dict[BatchId, Tally] = {}
        async with self._write() as conn:
            for key, attempt, tally, previous in moves:
                usage = tally.usage
                result = await conn.execute(
                    _PROGRESS_CHUNK,
                    {
                        "k_batch": key.batch_id,
                        "k_idx": key.index,
                        "k_owner": worker,
                        "k_attempt": attempt,
                        "completed": tally.completed,
                        "failed": tally.failed,
                        "input_tokens": usage.input_tokens,
                        "cached_tokens": usage.cached_tokens,
                        "output_tokens": usage.output_tokens,
                        "reasoning_tokens": usage.reasoning_tokens,
                    },
                )
                if result.rowcount != 1:
                    continue
                kept.add(key)
                delta = tally - previous
                before = deltas.get(key.batch_id)
                deltas[key.batch_id] = delta if before is None else before + delta
            for batch_id, delta in deltas.items():
                await conn.execute(_PROGRESS_BATCH, _batch_delta(batch_id, delta, chunks_done=0))
        return kept

    async def stop_reasons(self, batch_ids: Iterable[BatchId]) -> dict[BatchId, StopReason]:
        ids = list(batch_ids)
        if not ids:
            return {}
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    select(batches.c.id, batches.c.stop_reason).where(
                        batches.c.id.in_(ids), batches.c.stop_reason.is_not(None)
                    )
                )
            ).all()
        return {BatchId(r.id): StopReason(r.stop_reason) for r in rows}

    async def chunks_of(self, batch_id: BatchId) -> list[Chunk]:
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    select(chunks).where(chunks.c.batch_id == batch_id).order_by(chunks.c.idx)
                )
            ).all()
        return [_chunk(r) for r in rows]

    async def finish_batch(
        self,
        batch_id: BatchId,
        worker: WorkerId,
        *,
        status: BatchStatus,
        output: FileRecord | None,
        errors: FileRecord | None,
        never_ran: int,
        now: int,
        created_us: int,
    ) -> bool:
        """Edges g, h, i: store the result files and end the batch, once.
        Lines that never ran (skipped chunks) join the failed count."""
        stamp = {
            BatchStatus.COMPLETED: "completed_at",
            BatchStatus.EXPIRED: "expired_at",
            BatchStatus.CANCELLED: "cancelled_at",
        }[status]
        async with self._write() as conn:
            keep_for = (
                await conn.execute(
                    select(batches.c.output_expires_after).where(batches.c.id == batch_id)
                )
            ).scalar()
            if keep_for is not None:  # the batch's output_expires_after
                output = _expiring(output, keep_for)
                errors = _expiring(errors, keep_for)
            result = await conn.execute(
                update(batches)
                .where(
                    batches.c.id == batch_id,
                    batches.c.status == BatchStatus.FINALIZING.value,
                    batches.c.lease_owner == worker,
                )
                .values(
                    {
                        "status": status.value,
                        stamp: now,
                        "failed": batches.c.failed + never_ran,
                        "output_file_id": output.id if output else None,
                        "error_file_id": errors.id if errors else None,
                        "lease_owner": None,
                        "lease_expires_at": None,
                    }
                )
            )
            if result.rowcount != 1:
                return False
            for record in (output, errors):
                if record is not None:
                    await conn.execute(
                        insert(files).values(**_file_values(record), created_us=created_us)
                    )
        return True

    # ------------------------------------------------------------- dashboard

    async def count_batches_by_status(self) -> dict[str, int]:
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    select(batches.c.status, func.count()).group_by(batches.c.status)
                )
            ).all()
        return {r[0]: r[1] for r in rows}

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
                        _live(live_at),
                    )
                    .order_by(files.c.created_us, files.c.id)
                    .limit(1)
                )
            ).first()
        return _file(row) if row else None

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
                await conn.execute(insert(uploads).values(**_upload_values(upload)))
            if grants:
                await conn.execute(insert(upload_grants), [_grant_values(g) for g in grants])

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
        return bool(result.rowcount == 1), _grant(row)

    # ================================================================
    # Tenants, API keys, quotas and retention
    # ================================================================

    # -- API keys (only their SHA-256 is stored)

    async def insert_api_key(self, key: ApiKey) -> None:
        async with self._write() as conn:
            await conn.execute(insert(api_keys).values(**_api_key_values(key)))

    async def find_api_key(self, digest: str) -> ApiKey | None:
        """The active key with this SHA-256, if any."""
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(api_keys).where(
                        api_keys.c.digest == digest, api_keys.c.revoked_at.is_(None)
                    )
                )
            ).first()
        return _api_key(row) if row else None

    async def has_api_keys(self) -> bool:
        """Whether any key was ever made (revoked ones count: once keys are
        in use, a server never falls back to single-user local mode)."""
        async with self._read() as conn:
            row = (await conn.execute(select(api_keys.c.id).limit(1))).first()
        return row is not None

    async def list_api_keys(
        self, tenant: str | None = None, *, include_revoked: bool = False
    ) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [_api_key(r) for r in rows]

    async def revoke_api_keys(
        self, now: int, *, key_id: str | None = None, tenant: str | None = None
    ) -> list[ApiKey]:
        """Revoke one key (by id or shown prefix) or every key of a tenant;
        returns the keys this call revoked."""
        if key_id is None and tenant is None:
            return []
        where: list[ColumnElement[bool]] = [api_keys.c.revoked_at.is_(None)]
        if key_id is not None:
            where.append(or_(api_keys.c.id == key_id, api_keys.c.shown == key_id))
        if tenant is not None:
            where.append(api_keys.c.tenant == tenant)
        async with self._write() as conn:
            rows = (await conn.execute(select(api_keys).where(*where))).all()
            if rows:
                await conn.execute(
                    update(api_keys)
                    .where(api_keys.c.id.in_([r.id for r in rows]), api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
        return [dataclasses.replace(_api_key(r), revoked_at=now) for r in rows]

    # -- quotas

    async def quota_overrides(self, tenant: str) -> QuotaOverrides:
        async with self._read() as conn:
            return await self._quota_overrides(conn, tenant)

    async def set_quota_overrides(self, tenant: str, overrides: QuotaOverrides, now: int) -> None:
        values = {
            "max_pending_batches": overrides.max_pending_batches,
            "max_enqueued_requests": overrides.max_enqueued_requests,
            "updated_at": now,
        }
        async with self._write() as conn:
            changed = await conn.execute(
                update(tenant_quotas).where(tenant_quotas.c.tenant == tenant).values(**values)
            )
            if changed.rowcount == 0:
                await conn.execute(insert(tenant_quotas).values(tenant=tenant, **values))

    async def tenant_usage(self, tenant: str) -> TenantUsage:
        async with self._read() as conn:
            return await self._usage(conn, tenant)

    async def known_tenants(self) -> set[str]:
        """Every tenant with a key, a quota, a file or a batch."""
        async with self._read() as conn:
            names: set[str] = set()
            for column in (
                api_keys.c.tenant,
                tenant_quotas.c.tenant,
                files.c.tenant,
                batches.c.tenant,
            ):
                rows = await conn.execute(select(column).where(column.is_not(None)).distinct())
                names.update(r[0] for r in rows)
        return names

    async def _check_quotas(
        self, conn: AsyncConnection, tenant: TenantId, defaults: Quotas, adding: int
    ) -> None:
        if self.dialect == "postgresql":
            # Two creates of one tenant must not both pass on the same count.
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:space, hashtext(:tenant))"),
                {"space": _PG_QUOTA_LOCK_SPACE, "tenant": tenant},
            )
        quotas = (await self._quota_overrides(conn, tenant)).over(defaults)
        problem = refusal(await self._usage(conn, tenant), quotas, adding=adding)
        if problem is not None:
            raise LimitExceeded(problem.message, code=problem.code)

    async def _quota_overrides(self, conn: AsyncConnection, tenant: str) -> QuotaOverrides:
        row = (
            await conn.execute(select(tenant_quotas).where(tenant_quotas.c.tenant == tenant))
        ).first()
        if row is None:
            return QuotaOverrides()
        return QuotaOverrides(row.max_pending_batches, row.max_enqueued_requests)

    async def _usage(self, conn: AsyncConnection, tenant: str) -> TenantUsage:
        waiting = case(
            (
                batches.c.status == BatchStatus.VALIDATING.value,
                func.coalesce(files.c.line_count, 0),
            ),
            else_=batches.c.total - batches.c.completed - batches.c.failed,
        )
        row = (
            await conn.execute(
                select(func.count(), func.coalesce(func.sum(waiting), 0))
                .select_from(batches.outerjoin(files, files.c.id == batches.c.input_file_id))
                .where(
                    batches.c.tenant == tenant,
                    batches.c.status.in_([s.value for s in PENDING_STATUSES]),
                )
            )
        ).one()
        return TenantUsage(int(row[0]), max(0, int(row[1])))

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
        return [_file(r) for r in rows]

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
        return [dataclasses.replace(_upload(r), status=UploadStatus.EXPIRED) for r in rows]


# ------------------------------------------------------------------- helpers

_CHUNK_COUNTERS: dict[str, Any] = {
    name: bindparam(name)
    for name in (
        "completed",
        "failed",
        "input_tokens",
        "cached_tokens",
        "output_tokens",
        "reasoning_tokens",
    )
}
#: The lease guard of every write to a running chunk. `attempts` is the
#: fencing token: a worker that lost its lease (even to itself, after a
#: stall) writes nothing, whoever holds the chunk now.
_HELD_CHUNK = (
    chunks.c.batch_id == bindparam("k_batch"),
    chunks.c.idx == bindparam("k_idx"),
    chunks.c.lease_owner == bindparam("k_owner"),
    chunks.c.attempts == bindparam("k_attempt"),
    chunks.c.status == ChunkStatus.RUNNING.value,
)
_PROGRESS_CHUNK = update(chunks).where(*_HELD_CHUNK).values(**_CHUNK_COUNTERS)
_DONE_CHUNK = (
    update(chunks)
    .where(*_HELD_CHUNK)
    .values(
        **_CHUNK_COUNTERS,
        status=ChunkStatus.DONE.value,
        lease_owner=None,
        lease_expires_at=None,
    )
)
_PROGRESS_BATCH = (
    update(batches)
    .where(batches.c.id == bindparam("k_batch"))
    .values(
        completed=batches.c.completed + bindparam("d_completed"),
        failed=batches.c.failed + bindparam("d_failed"),
        input_tokens=batches.c.input_tokens + bindparam("d_input"),
        cached_tokens=batches.c.cached_tokens + bindparam("d_cached"),
        output_tokens=batches.c.output_tokens + bindparam("d_output"),
        reasoning_tokens=batches.c.reasoning_tokens + bindparam("d_reasoning"),
        chunks_done=batches.c.chunks_done + bindparam("d_chunks"),
    )
)


def _visible(table: Any, tenant: TenantId | None) -> tuple[ColumnElement[bool], ...]:
    """The WHERE clauses that keep a caller to its tenant's rows; none for
    `tenant` None (the runner, or an admin seeing every tenant)."""
    return () if tenant is None else (table.c.tenant == tenant,)


def _live(now: int) -> ColumnElement[bool]:
    """Files that have not expired by `now`."""
    return or_(files.c.expires_at.is_(None), files.c.expires_at > now)


def _expiring(record: FileRecord | None, seconds: int) -> FileRecord | None:
    if record is None:
        return None
    return dataclasses.replace(record, expires_at=record.created_at + seconds)


def _read_by_unfinished_batch() -> ColumnElement[bool]:
    """The file is the input of a batch that has not ended."""
    return exists().where(
        batches.c.input_file_id == files.c.id,
        batches.c.status.in_([s.value for s in BatchStatus if not s.is_terminal]),
    )


def _api_key_values(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "digest": key.digest,
        "shown": key.shown,
        "role": key.role.value,
        "tenant": key.tenant,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        digest=row.digest,
        shown=row.shown,
        role=KeyRole(row.role),
        tenant=TenantId(row.tenant) if row.tenant is not None else None,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _batch_delta(batch_id: BatchId, delta: Tally, *, chunks_done: int) -> dict[str, Any]:
    return {
        "k_batch": batch_id,
        "d_completed": delta.completed,
        "d_failed": delta.failed,
        "d_input": delta.usage.input_tokens,
        "d_cached": delta.usage.cached_tokens,
        "d_output": delta.usage.output_tokens,
        "d_reasoning": delta.usage.reasoning_tokens,
        "d_chunks": chunks_done,
    }


def _ordering(table: Any, newest_first: bool) -> tuple[Any, Any]:
    if newest_first:
        return table.c.created_us.desc(), table.c.id.desc()
    return table.c.created_us.asc(), table.c.id.asc()


def _after_cursor(table: Any, cursor: Any, newest_first: bool) -> ColumnElement[bool]:
    key = tuple_(table.c.created_us, table.c.id)
    value = tuple_(cursor.created_us, cursor.id)
    return key < value if newest_first else key > value


def _file_values(record: FileRecord) -> dict[str, Any]:
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


def _file(row: Any) -> FileRecord:
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


def _upload_values(upload: Upload) -> dict[str, Any]:
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


def _upload(row: Any) -> Upload:
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


def _line_error_dict(error: LineError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message, "line": error.line, "param": error.param}


def _batch(row: Any) -> Batch:
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
        dialect=row.dialect,
        model=row.model,
        priority=row.priority,
        metadata=_json.loads(row.metadata_json) if row.metadata_json else None,
        errors=errors,
        request_counts=RequestCounts(row.total, row.completed, row.failed),
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
    )


def _chunk(row: Any) -> Chunk:
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
        ),
    )


def _grant_values(grant: UploadGrant) -> dict[str, Any]:
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


def _grant(row: Any) -> UploadGrant:
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
