"""What the dashboard reads beside the API's records: snapshots of running
batches' counts, the backlog per model, workers with the chunks they hold,
and the sessions of signed-in browsers.

One mixin of `SqlStore`.
"""

from __future__ import annotations

from sqlalchemy import and_, case, delete, exists, func, insert, literal, select

from overnight.domain.chunk import ChunkStatus
from overnight.domain.dashboard import SNAPSHOTS_PER_BATCH, Snapshot, UiSession, WorkerView
from overnight.domain.status import BatchStatus
from overnight.store._base import StoreBase
from overnight.store.schema import batch_snapshots, batches, chunks, ui_sessions, workers
from overnight.types import BatchId, TenantId

#: Statuses whose counts still move.
RUNNING = (BatchStatus.IN_PROGRESS.value, BatchStatus.CANCELLING.value)


class DashboardMixin(StoreBase):
    # ------------------------------------------------------------ snapshots

    async def record_snapshots(self, now: int, min_interval: int) -> int:
        """Snapshot the counts of every running batch whose last snapshot is
        older than its interval (`domain.dashboard.snapshot_interval`, in
        SQL): one statement, however many batches run. The number taken."""
        elapsed = now - func.coalesce(batches.c.in_progress_at, batches.c.created_at)
        interval = case(
            (elapsed / SNAPSHOTS_PER_BATCH > min_interval, elapsed / SNAPSHOTS_PER_BATCH),
            else_=min_interval,
        )
        recent = exists().where(
            batch_snapshots.c.batch_id == batches.c.id,
            batch_snapshots.c.at > now - interval,
        )
        source = select(batches.c.id, literal(now), batches.c.completed, batches.c.failed).where(
            batches.c.status.in_(RUNNING), ~recent
        )
        async with self._write() as conn:
            result = await conn.execute(
                insert(batch_snapshots).from_select(
                    ["batch_id", "at", "completed", "failed"], source
                )
            )
        return int(result.rowcount or 0)

    async def batch_snapshots(self, batch_id: BatchId) -> list[Snapshot]:
        """A batch's snapshots, oldest first."""
        query = (
            select(batch_snapshots.c.at, batch_snapshots.c.completed, batch_snapshots.c.failed)
            .where(batch_snapshots.c.batch_id == batch_id)
            .order_by(batch_snapshots.c.at, batch_snapshots.c.id)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [Snapshot(r.at, r.completed, r.failed) for r in rows]

    # -------------------------------------------------------------- backlog

    async def queued_by_model(self, tenant: TenantId | None = None) -> dict[str | None, int]:
        """Lines not yet run of every running batch, by the batch's model
        (None: each line names its own)."""
        left = func.sum(batches.c.total - batches.c.completed - batches.c.failed)
        query = (
            select(batches.c.model, left)
            .where(
                batches.c.status == BatchStatus.IN_PROGRESS.value,
                *(() if tenant is None else (batches.c.tenant == tenant,)),
            )
            .group_by(batches.c.model)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return {r[0]: int(r[1] or 0) for r in rows}

    # -------------------------------------------------------------- workers

    async def worker_views(self, now: float, ttl: float) -> list[WorkerView]:
        """Live workers (fresh heartbeat), each with the chunks it runs."""
        held = (
            select(chunks.c.lease_owner, func.count().label("held"))
            .where(chunks.c.status == ChunkStatus.RUNNING.value, chunks.c.lease_owner.is_not(None))
            .group_by(chunks.c.lease_owner)
            .subquery()
        )
        query = (
            select(
                workers.c.id,
                workers.c.started_at,
                workers.c.heartbeat_at,
                func.coalesce(held.c.held, 0),
            )
            .select_from(workers.outerjoin(held, held.c.lease_owner == workers.c.id))
            .where(workers.c.heartbeat_at >= now - ttl)
            .order_by(workers.c.id)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [WorkerView(r[0], r[1], r[2], int(r[3])) for r in rows]

    async def chunks_leased(self) -> int:
        """Chunks some worker runs right now."""
        query = select(func.count()).where(chunks.c.status == ChunkStatus.RUNNING.value)
        async with self._read() as conn:
            return int((await conn.execute(query)).scalar_one())

    # ------------------------------------------------------------- sessions

    async def insert_ui_session(self, session: UiSession) -> None:
        """Store a new session, dropping the expired ones on the way."""
        async with self._write() as conn:
            await conn.execute(
                delete(ui_sessions).where(ui_sessions.c.expires_at <= session.created_at)
            )
            await conn.execute(
                insert(ui_sessions).values(
                    token_hash=session.token_hash,
                    tenant=session.tenant,
                    admin=session.admin,
                    csrf=session.csrf,
                    created_at=session.created_at,
                    expires_at=session.expires_at,
                    key_digest=session.key_digest,
                )
            )

    async def find_ui_session(self, token_hash: str, now: int) -> UiSession | None:
        query = select(ui_sessions).where(
            and_(ui_sessions.c.token_hash == token_hash, ui_sessions.c.expires_at > now)
        )
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return UiSession(
            token_hash=row.token_hash,
            tenant=TenantId(row.tenant) if row.tenant is not None else None,
            admin=bool(row.admin),
            csrf=row.csrf,
            created_at=row.created_at,
            expires_at=row.expires_at,
            key_digest=row.key_digest,
        )

    async def delete_ui_session(self, token_hash: str) -> bool:
        """True if there was such a session (signing out twice is harmless)."""
        async with self._write() as conn:
            result = await conn.execute(
                delete(ui_sessions).where(ui_sessions.c.token_hash == token_hash)
            )
        return bool(result.rowcount)
