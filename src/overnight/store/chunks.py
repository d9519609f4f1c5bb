"""Chunks, the unit of work: claimed by the scheduler's order, their
progress recorded (fenced by the attempt that holds the lease), released,
and read back.

One mixin of `SqlStore`, with the statements that record progress, which
run on every flush and so are built once here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from overnight.domain.chunk import Chunk, ChunkKey, ChunkStatus, ChunkWork, Tally
from overnight.domain.dialects import dialect_named
from overnight.domain.scheduling import Candidate, schedule_order
from overnight.domain.status import BatchStatus, StopReason
from overnight.store._base import StoreBase
from overnight.store.batches import finalize_if_drained
from overnight.store.rows import to_chunk
from overnight.store.schema import batches, chunks, files
from overnight.types import BatchId, TenantId, WorkerId

_ACTIVE_CHUNK = (ChunkStatus.PENDING.value, ChunkStatus.RUNNING.value)


_CHUNK_COUNTERS: dict[str, Any] = {
    name: bindparam(name)
    for name in (
        "completed",
        "failed",
        "stopped",
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
        stopped=batches.c.stopped + bindparam("d_stopped"),
        input_tokens=batches.c.input_tokens + bindparam("d_input"),
        cached_tokens=batches.c.cached_tokens + bindparam("d_cached"),
        output_tokens=batches.c.output_tokens + bindparam("d_output"),
        reasoning_tokens=batches.c.reasoning_tokens + bindparam("d_reasoning"),
        chunks_done=batches.c.chunks_done + bindparam("d_chunks"),
    )
)


def _batch_delta(batch_id: BatchId, delta: Tally, *, chunks_done: int) -> dict[str, Any]:
    return {
        "k_batch": batch_id,
        "d_completed": delta.completed,
        "d_failed": delta.failed,
        "d_stopped": delta.stopped,
        "d_input": delta.usage.input_tokens,
        "d_cached": delta.usage.cached_tokens,
        "d_output": delta.usage.output_tokens,
        "d_reasoning": delta.usage.reasoning_tokens,
        "d_chunks": chunks_done,
    }


def _chunk_counters(key: ChunkKey, worker: WorkerId, attempt: int, tally: Tally) -> dict[str, Any]:
    """The parameters of `_PROGRESS_CHUNK` and `_DONE_CHUNK`: the held
    lease (`_HELD_CHUNK`) and the chunk's counters."""
    usage = tally.usage
    return {
        "k_batch": key.batch_id,
        "k_idx": key.index,
        "k_owner": worker,
        "k_attempt": attempt,
        "completed": tally.completed,
        "failed": tally.failed,
        "stopped": tally.stopped,
        "input_tokens": usage.input_tokens,
        "cached_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


async def _lease(
    conn: AsyncConnection, row: Any, worker: WorkerId, until: float, *, lapsed: bool
) -> None:
    """Mark a chunk (`row`, as read before) running under `worker`'s lease."""
    await conn.execute(
        update(chunks)
        .where(chunks.c.batch_id == row.batch_id, chunks.c.idx == row.idx)
        .values(
            status=ChunkStatus.RUNNING.value,
            lease_owner=worker,
            lease_expires_at=until,
            attempts=chunks.c.attempts + 1,
            crashes=chunks.c.crashes + int(lapsed),
        )
    )


class ChunksMixin(StoreBase):
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
        """Lease the next chunk to run, or None: `claim_chunks` of one."""
        claimed = await self.claim_chunks(
            worker,
            now,
            ttl,
            1,
            urgent_within=urgent_within,
            idle_only=idle_only,
            running=running,
        )
        return claimed[0] if claimed else None

    async def claim_chunks(
        self,
        worker: WorkerId,
        now: float,
        ttl: float,
        count: int,
        *,
        urgent_within: float = 3600.0,
        idle_only: bool = False,
        running: Collection[ChunkKey] = (),
    ) -> list[ChunkWork]:
        """Lease up to `count` chunks to run, in one transaction, in the
        order that many claims of one chunk each would take them.

        A chunk whose lease lapsed (its worker died) is taken first: it is
        work already under way. Otherwise the batch is chosen by
        `domain.scheduling.schedule_order`, and its lowest pending chunk is
        taken; each chunk taken counts as running before the next is
        chosen, so several chunks spread over batches and tenants as
        separate claims would. With `idle_only`, only batches with no chunk
        running anywhere are considered: a worker that is full still admits
        a newcomer. `running` are the chunks the claiming worker runs now:
        even if their lease lapsed (it stalled), it must not take them a
        second time. Attempts count up on every claim; crashes count up when
        the lease had lapsed (whoever held it died or stalled): the caller
        gives the chunk up when they reach its bound. One transaction for
        several chunks keeps a worker that needs many (a wide model, a
        slow upstream) from queueing a claim per chunk behind the
        database."""
        async with self._write() as conn:
            lapsed = (
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
                    .limit(count)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            taken: list[tuple[Any, bool]] = [(row, True) for row in lapsed]
            for row in lapsed:
                await _lease(conn, row, worker, now + ttl, lapsed=True)
            if len(taken) < count:
                taken += [
                    (row, False)
                    for row in await self._next_pending_chunks(
                        conn, worker, now + ttl, count - len(taken), now, urgent_within, idle_only
                    )
                ]
            if not taken:
                return []
            batch_ids = sorted({row.batch_id for row, _ in taken})
            info = {
                r.id: r
                for r in await conn.execute(
                    select(
                        batches.c.id,
                        batches.c.tenant,
                        batches.c.endpoint,
                        batches.c.dialect,
                        batches.c.stop_reason,
                        # A grouped copy, when validation wrote one, else the input.
                        func.coalesce(batches.c.grouped_blob_key, files.c.blob_key).label(
                            "blob_key"
                        ),
                    )
                    .select_from(batches.join(files, files.c.id == batches.c.input_file_id))
                    .where(batches.c.id.in_(batch_ids))
                )
            }
        claimed = []
        for row, was_lapsed in taken:
            chunk = to_chunk(row)
            batch = info[row.batch_id]
            claimed.append(
                ChunkWork(
                    chunk=dataclasses.replace(
                        chunk,
                        status=ChunkStatus.RUNNING,
                        attempts=chunk.attempts + 1,
                        crashes=chunk.crashes + int(was_lapsed),
                    ),
                    tenant=TenantId(batch.tenant),
                    endpoint=batch.endpoint,
                    dialect=dialect_named(batch.dialect),
                    input_blob_key=batch.blob_key,
                    stop_reason=StopReason(batch.stop_reason) if batch.stop_reason else None,
                )
            )
        return claimed

    async def _next_pending_chunks(
        self,
        conn: AsyncConnection,
        worker: WorkerId,
        lease_until: float,
        count: int,
        now: float,
        urgent_within: float,
        idle_only: bool,
    ) -> list[Any]:
        """Lease up to `count` pending chunks, choosing the batch of each by
        `schedule_order` with the chunks taken so far counted as running."""
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
            return []
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
        taken: list[Any] = []
        while len(taken) < count and candidates:
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
                if row is None:  # nothing left to take here: never ask again
                    candidates.remove(candidate)
                    continue
                await _lease(conn, row, worker, lease_until, lapsed=False)
                taken.append(row)
                by_batch[candidate.batch_id] = by_batch.get(candidate.batch_id, 0) + 1
                by_tenant[candidate.tenant] = by_tenant.get(candidate.tenant, 0) + 1
                if idle_only:  # it is running now
                    candidates.remove(candidate)
                break
            else:
                break
        return taken

    async def release_chunk(
        self, key: ChunkKey, worker: WorkerId, attempt: int, *, crashed: bool = False
    ) -> None:
        """Hand a held chunk back; `crashed` (the run raised) counts it as a
        crash towards `max_chunk_attempts`."""
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
                .values(
                    status=ChunkStatus.PENDING.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    crashes=chunks.c.crashes + int(crashed),
                )
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
        async with self._write() as conn:
            result = await conn.execute(
                _DONE_CHUNK if done else _PROGRESS_CHUNK,
                _chunk_counters(key, worker, attempt, tally),
            )
            if result.rowcount != 1:
                return None
            await conn.execute(
                _PROGRESS_BATCH, _batch_delta(key.batch_id, delta, chunks_done=1 if done else 0)
            )
            if done:
                return await finalize_if_drained(conn, key.batch_id, now)
        return False

    async def record_progress_many(
        self, worker: WorkerId, moves: Sequence[tuple[ChunkKey, int, Tally, Tally]]
    ) -> set[ChunkKey]:
        """A worker's flush: store each chunk's counters (`tally`, the held
        `previous` being what the database had) and add the differences to
        their batches, all in one transaction. Each move names the attempt
        (the fencing token) it holds. Returns the chunks whose lease the
        worker still held; the others were not touched.

        Rows are locked in key order, chunks before batches, as the
        heartbeat locks them: two transactions that lock the same rows in
        different orders deadlock on PostgreSQL."""
        kept: set[ChunkKey] = set()
        deltas: dict[BatchId, Tally] = {}
        async with self._write() as conn:
            for key, attempt, tally, previous in sorted(
                moves, key=lambda move: (move[0].batch_id, move[0].index)
            ):
                result = await conn.execute(
                    _PROGRESS_CHUNK, _chunk_counters(key, worker, attempt, tally)
                )
                if result.rowcount != 1:
                    continue
                kept.add(key)
                delta = tally - previous
                before = deltas.get(key.batch_id)
                deltas[key.batch_id] = delta if before is None else before + delta
            for batch_id, delta in sorted(deltas.items()):
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
        return [to_chunk(r) for r in rows]
