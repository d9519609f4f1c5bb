"""The store on SQLAlchemy Core: SQLite by default, PostgreSQL to scale out.

SQLite keeps one writer connection (a pool of one) whose transactions open
with BEGIN IMMEDIATE, so writers queue instead of failing on lock upgrades,
and readers use their own connections, which WAL lets run beside the writer.
PostgreSQL uses one pool for both and claims work with FOR UPDATE SKIP LOCKED.

Every public method is one transaction. Transitions are guarded in WHERE
clauses (`status = :expected`, `lease_owner = :me`); a guard that matches no
row means someone else moved first.

This module only assembles `SqlStore` from one mixin per kind of record
(`files`, `tenants`, `batches`, `chunks`, `workers`, `idempotency`,
`webhooks`, `dashboard`), over
the engines of `_base`; rows are converted in `rows` and shared query
fragments live in `queries`. What consumers may ask of it is written down
in `contracts`, one Protocol per consumer; `SqlStore` meets them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from overnight.store import migrate
from overnight.store.batches import BatchesMixin
from overnight.store.chunks import ChunksMixin
from overnight.store.dashboard import DashboardMixin
from overnight.store.files import FilesMixin
from overnight.store.idempotency import IdempotencyMixin
from overnight.store.tenants import TenantsMixin
from overnight.store.webhooks import WebhooksMixin
from overnight.store.workers import WorkersMixin

__all__ = ["SqlStore", "open_store"]


class SqlStore(
    FilesMixin,
    TenantsMixin,
    BatchesMixin,
    ChunksMixin,
    WorkersMixin,
    IdempotencyMixin,
    WebhooksMixin,
    DashboardMixin,
):
    """Every store operation, each one transaction."""


if TYPE_CHECKING:
    from overnight.store.contracts import Store

    def _meets_every_contract(store: SqlStore) -> Store:
        """mypy fails here when SqlStore drifts from a consumer's Protocol."""
        return store


async def open_store(url: str) -> SqlStore:
    """Connect, migrate to the newest schema, and return the store."""
    store = SqlStore.connect(url)
    await migrate.upgrade(store.write_engine)
    return store
