"""Batches through their lifecycle: created, listed, cancelled, expired,
claimed for validation and for finalization, started, failed and finished.
Every move to a terminal status records its webhook event in the same
transaction (`webhooks.record_batch_event`).

One mixin of `SqlStore`, plus `finalize_if_drained`, the step (edges e and
f) that recording a chunk's last progress takes as well.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from overnight import _json
from overnight.domain.batch import Batch
from overnight.domain.chunk import ChunkStatus
from overnight.domain.files import FileRecord
from overnight.domain.lines import LineError
from overnight.domain.quotas import Quotas
from overnight.domain.status import TERMINAL, BatchStatus, StopReason, sources_of
from overnight.domain.validation import ChunkRange
from overnight.errors import Conflict
from overnight.store._base import StoreBase
from overnight.store.queries import page, visible
from overnight.store.rows import file_values, line_error_dict, to_batch, to_file
from overnight.store.schema import batch_snapshots, batches, chunks, files
from overnight.store.tenants import check_quotas
from overnight.store.webhooks import record_batch_event
from overnight.types import BatchId, FileId, TenantId, WorkerId


class BatchesMixin(StoreBase):
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
                await check_quotas(conn, batch.tenant, default_quotas, adding, dialect=self.dialect)
            await conn.execute(
                insert(batches).values(
                    id=batch.id,
                    tenant=batch.tenant,
                    endpoint=batch.endpoint,
                    input_file_id=batch.input_file_id,
                    completion_window=batch.completion_window,
                    status=batch.status.value,
                    dialect=batch.dialect.name,
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
                    stopped=0,
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
        query = select(batches).where(batches.c.id == batch_id, *visible(batches, tenant))
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        return to_batch(row) if row else None

    async def list_batches(
        self,
        tenant: TenantId | None,
        *,
        after: str | None,
        limit: int,
        newest_first: bool = True,
        status: str | None = None,
        model: str | None = None,
        dialect: str | None = None,
    ) -> list[Batch] | None:
        """Up to `limit` batches after the cursor `after` (a batch id); None
        if the cursor names no batch this caller can see. `status`, `model`
        and `dialect` keep only the batches that match each one given."""
        filters = [
            column == value
            for column, value in (
                (batches.c.status, status),
                (batches.c.model, model),
                (batches.c.dialect, dialect),
            )
            if value is not None
        ]
        query = select(batches).where(*visible(batches, tenant), *filters)
        async with self._read() as conn:
            rows = await page(
                conn, batches, query, tenant, after=after, newest_first=newest_first, limit=limit
            )
        return None if rows is None else [to_batch(r) for r in rows]

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
                    .where(batches.c.id == batch_id, *visible(batches, tenant))
                    .with_for_update()
                )
            ).first()
            if row is None:
                return None
            status = BatchStatus(row.status)
            if status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
                return to_batch(row)
            if status is BatchStatus.FINALIZING and row.stop_reason == StopReason.CANCELLED:
                return to_batch(row)
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
                await record_batch_event(conn, BatchId(batch_id), BatchStatus.CANCELLED, now)
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
                    await _skip_pending_chunks(conn, BatchId(batch_id), now)
            row = (await conn.execute(select(batches).where(batches.c.id == batch_id))).one()
        return to_batch(row)

    async def delete_batch(
        self, tenant: TenantId | None, batch_id: str, file_ids: Sequence[FileId]
    ) -> list[FileRecord] | None:
        """Delete an ended batch, its chunks, and the records of `file_ids`
        (its result files, and an input made only for it), in one
        transaction; the caller deletes their bytes, which it gets back.
        None if the caller sees no such batch, or it has not ended."""
        async with self._write() as conn:
            row = (
                await conn.execute(
                    select(batches.c.id)
                    .where(
                        batches.c.id == batch_id,
                        batches.c.status.in_([s.value for s in TERMINAL]),
                        *visible(batches, tenant),
                    )
                    .with_for_update()
                )
            ).first()
            if row is None:
                return None
            doomed = (await conn.execute(select(files).where(files.c.id.in_(file_ids)))).all()
            await conn.execute(delete(files).where(files.c.id.in_(file_ids)))
            await conn.execute(delete(chunks).where(chunks.c.batch_id == batch_id))
            await conn.execute(
                delete(batch_snapshots).where(batch_snapshots.c.batch_id == batch_id)
            )
            await conn.execute(delete(batches).where(batches.c.id == batch_id))
        return [to_file(r) for r in doomed]

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
                await _skip_pending_chunks(conn, batch_id, now)
        return expired

    # ------------------------------------------------------------- validation

    async def claim_validation(self, worker: WorkerId, now: float, ttl: float) -> Batch | None:
        return await self._claim_batch(BatchStatus.VALIDATING, worker, now, ttl)

    async def claim_finalization(self, worker: WorkerId, now: float, ttl: float) -> Batch | None:
        return await self._claim_batch(BatchStatus.FINALIZING, worker, now, ttl)

    async def _claim_batch(
        self, status: BatchStatus, worker: WorkerId, now: float, ttl: float
    ) -> Batch | None:
        """Lease the oldest batch in `status` that nobody holds. A lease
        that lapsed (its worker died or stalled) counts a crash; the caller
        fails the batch when they reach their bound."""
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
            lapsed = row.lease_owner is not None
            await conn.execute(
                update(batches)
                .where(batches.c.id == row.id)
                .values(
                    lease_owner=worker,
                    lease_expires_at=now + ttl,
                    crashes=batches.c.crashes + int(lapsed),
                )
            )
        batch = to_batch(row)
        return dataclasses.replace(batch, crashes=batch.crashes + 1) if lapsed else batch

    async def start_batch(
        self,
        batch_id: BatchId,
        worker: WorkerId,
        *,
        requests: int,
        model: str | None,
        chunk_ranges: Sequence[ChunkRange],
        now: int,
        grouped_blob_key: str | None = None,
    ) -> BatchStatus | None:
        """Edge a: a valid file's chunks are stored and the batch runs (its
        chunks cut from `grouped_blob_key` when given, runner/regroup.py). If the
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
                await record_batch_event(conn, batch_id, BatchStatus.CANCELLED, now)
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
                            "stopped": 0,
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
                    grouped_blob_key=grouped_blob_key,
                    lease_owner=None,
                    lease_expires_at=None,
                    crashes=0,  # validation's count; finalisation starts afresh
                )
            )
            if row.stop_reason is not None:
                await _skip_pending_chunks(conn, batch_id, now)
                return BatchStatus.FINALIZING
        return BatchStatus.IN_PROGRESS

    async def fail_batch(
        self, batch_id: BatchId, worker: WorkerId, errors: Sequence[LineError], now: int
    ) -> BatchStatus | None:
        """Edge b: the file is invalid. A batch cancelled meanwhile ends
        cancelled (edge j), still naming the errors. Edge k: a batch whose
        finalisation kept crashing fails, whatever stopped it."""
        errors_json = _json.dumps([line_error_dict(e) for e in errors]).decode()
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
            elif row.status in (BatchStatus.VALIDATING.value, BatchStatus.FINALIZING.value):
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
            await record_batch_event(conn, batch_id, target, now)
        return target

    async def release_batch(
        self, batch_id: BatchId, worker: WorkerId, *, crashed: bool = False
    ) -> None:
        """Hand a held batch back; `crashed` (its validation or finalisation
        raised) counts a crash towards `max_chunk_attempts`."""
        async with self._write() as conn:
            await conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.lease_owner == worker)
                .values(
                    lease_owner=None,
                    lease_expires_at=None,
                    crashes=batches.c.crashes + int(crashed),
                )
            )

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
        stopped: int | None = None,
    ) -> bool:
        """Edges g, h, i: store the result files and end the batch, once.
        Lines that never ran (skipped chunks) join the failed count, and
        the `stopped` among them (all of them unless told) the stopped."""
        if stopped is None:
            stopped = never_ran
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
                        "stopped": batches.c.stopped + stopped,
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
                        insert(files).values(**file_values(record), created_us=created_us)
                    )
            await record_batch_event(conn, batch_id, status, now)
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


async def _skip_pending_chunks(conn: AsyncConnection, batch_id: BatchId, now: int) -> None:
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
    await finalize_if_drained(conn, batch_id, now)


async def finalize_if_drained(conn: AsyncConnection, batch_id: BatchId, now: int) -> bool:
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


def _expiring(record: FileRecord | None, seconds: int) -> FileRecord | None:
    if record is None:
        return None
    return dataclasses.replace(record, expires_at=record.created_at + seconds)
