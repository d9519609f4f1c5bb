"""Workers and their leases: heartbeats that renew what a worker holds and
count the live workers, and handing leases back when a worker stops.

One mixin of `SqlStore`.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import delete, func, insert, select, tuple_, update

from overnight.domain.chunk import ChunkKey, ChunkStatus
from overnight.store._base import StoreBase
from overnight.store.schema import batches, chunks, webhook_deliveries, workers
from overnight.types import WorkerId


class WorkersMixin(StoreBase):
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
                held = (
                    chunks.c.lease_owner == worker,
                    chunks.c.status == ChunkStatus.RUNNING.value,
                    tuple_(chunks.c.batch_id, chunks.c.idx).in_(
                        [(k.batch_id, k.index) for k in running]
                    ),
                )
                # Lock in key order first (a no-op on SQLite), as a flush's
                # count does, so the two never deadlock on PostgreSQL.
                await conn.execute(
                    select(chunks.c.idx)
                    .where(*held)
                    .order_by(chunks.c.batch_id, chunks.c.idx)
                    .with_for_update()
                )
                await conn.execute(update(chunks).where(*held).values(lease_expires_at=now + ttl))
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

    async def release_leases(self, worker: WorkerId, *, died: bool = False) -> None:
        """On shutdown: hand every held chunk, batch and webhook delivery
        back at once (a delivery cut short is attempted again). When
        the worker `died` (its process exited unasked), each chunk and batch counts a crash
        towards `max_chunk_attempts`."""
        async with self._write() as conn:
            await conn.execute(delete(workers).where(workers.c.id == worker))
            await conn.execute(
                update(chunks)
                .where(chunks.c.lease_owner == worker, chunks.c.status == ChunkStatus.RUNNING.value)
                .values(
                    status=ChunkStatus.PENDING.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    crashes=chunks.c.crashes + int(died),
                )
            )
            await conn.execute(
                update(batches)
                .where(batches.c.lease_owner == worker)
                .values(
                    lease_owner=None,
                    lease_expires_at=None,
                    crashes=batches.c.crashes + int(died),
                )
            )
            await conn.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.lease_owner == worker)
                .values(lease_owner=None, lease_expires_at=None)
            )

    async def release_all_leases(self) -> None:
        """At start-up of the only process on a SQLite store: every lease
        belongs to a process that is gone, so there is no need to wait for
        them to expire. A clean shutdown hands its leases back, so whatever
        is still held was held when its process died: each counts a crash.
        The dead processes' workers are forgotten too, or a new worker would
        wait for them to count it in (`Worker._wait_to_be_counted`) until
        their heartbeats aged out."""
        async with self._write() as conn:
            await conn.execute(delete(workers))
            await conn.execute(
                update(chunks)
                .where(chunks.c.status == ChunkStatus.RUNNING.value)
                .values(
                    status=ChunkStatus.PENDING.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    crashes=chunks.c.crashes + 1,
                )
            )
            await conn.execute(
                update(batches)
                .where(batches.c.lease_owner.is_not(None))
                .values(lease_owner=None, lease_expires_at=None, crashes=batches.c.crashes + 1)
            )
            await conn.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.lease_owner.is_not(None))
                .values(lease_owner=None, lease_expires_at=None)
            )
