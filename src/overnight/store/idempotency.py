"""Idempotency keys: claiming one, storing the answer, letting it go, and
dropping them when their day is over (domain/idempotency.py says why).

One mixin of `SqlStore`. The table's primary key (tenant, key) decides
races: an insert that meets an existing row does nothing, and the caller
is shown that row instead.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from overnight.domain.idempotency import ABANDONED_AFTER, KEPT_FOR, IdempotencyRecord
from overnight.store._base import StoreBase
from overnight.store.schema import idempotency_keys as keys
from overnight.types import TenantId

#: Tries to claim a key when the row seen a moment ago was already let go.
_CLAIM_TRIES = 3


class IdempotencyMixin(StoreBase):
    async def claim_idempotency_key(
        self, tenant: TenantId, key: str, route: str, now: int
    ) -> IdempotencyRecord | None:
        """Claim `key` for a request that starts now: None if this call
        claimed it, else the record of whoever holds it. A record past its
        day, or a claim abandoned by a process that died, holds nothing."""
        async with self._write() as conn:
            await conn.execute(delete(keys).where(_this(tenant, key), _stale(now)))
            for _ in range(_CLAIM_TRIES):
                inserted = await conn.execute(
                    self._insert_unless_taken().values(
                        tenant=tenant, key=key, route=route, created_at=now
                    )
                )
                if inserted.rowcount == 1:
                    return None
                record = await _record(conn, tenant, key)
                if record is not None:
                    return record
        raise RuntimeError(f"idempotency key {key!r} changed hands {_CLAIM_TRIES} times")

    async def answer_idempotency_key(
        self,
        claimed: IdempotencyRecord,
        *,
        request_hash: str,
        status_code: int,
        body: bytes,
        object_id: str | None,
    ) -> None:
        """Store the answer of the request that claimed the key."""
        async with self._write() as conn:
            await conn.execute(
                update(keys)
                .where(_claim(claimed))
                .values(
                    request_hash=request_hash,
                    status_code=status_code,
                    body=body,
                    object_id=object_id,
                )
            )

    async def release_idempotency_key(self, claimed: IdempotencyRecord) -> None:
        """Let go of a claim whose request failed: the key is free again."""
        async with self._write() as conn:
            await conn.execute(delete(keys).where(_claim(claimed)))

    async def delete_expired_idempotency_keys(self, now: int) -> int:
        """The retention sweep: drop records past their day and abandoned claims."""
        async with self._write() as conn:
            result = await conn.execute(delete(keys).where(_stale(now)))
        return int(result.rowcount)

    def _insert_unless_taken(self) -> Any:
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        return dialect.insert(keys).on_conflict_do_nothing(index_elements=["tenant", "key"])


def _this(tenant: TenantId, key: str) -> ColumnElement[bool]:
    return and_(keys.c.tenant == tenant, keys.c.key == key)


def _claim(claimed: IdempotencyRecord) -> ColumnElement[bool]:
    """The still unanswered claim made by one request (not a later one that
    took the key over after this one was given up for dead)."""
    return and_(
        _this(claimed.tenant, claimed.key),
        keys.c.created_at == claimed.created_at,
        keys.c.status_code.is_(None),
    )


def _stale(now: int) -> ColumnElement[bool]:
    return or_(
        keys.c.created_at <= now - KEPT_FOR,
        and_(keys.c.status_code.is_(None), keys.c.created_at <= now - ABANDONED_AFTER),
    )


async def _record(conn: AsyncConnection, tenant: TenantId, key: str) -> IdempotencyRecord | None:
    row = (await conn.execute(select(keys).where(_this(tenant, key)))).first()
    if row is None:
        return None
    return IdempotencyRecord(
        tenant=TenantId(row.tenant),
        key=row.key,
        route=row.route,
        created_at=row.created_at,
        request_hash=row.request_hash,
        status_code=row.status_code,
        body=row.body,
        object_id=row.object_id,
    )
