"""Tenants: their API keys, their quotas and what they use of them, and
which tenants exist at all.

One mixin of `SqlStore`, plus `check_quotas`, which creating a batch runs
inside its own transaction.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import ColumnElement, case, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from overnight.domain.keys import ApiKey
from overnight.domain.quotas import (
    PENDING_STATUSES,
    QuotaOverrides,
    Quotas,
    TenantUsage,
    refusal,
)
from overnight.domain.status import BatchStatus
from overnight.errors import LimitExceeded
from overnight.store._base import StoreBase
from overnight.store.rows import api_key_values, to_api_key
from overnight.store.schema import api_keys, batches, files, tenant_quotas
from overnight.types import TenantId

#: The first key of the PostgreSQL advisory locks that serialise one
#: tenant's quota checks (the second is a hash of the tenant's name).
_PG_QUOTA_LOCK_SPACE = 0x6F76_6E71  # "ovnq"


class TenantsMixin(StoreBase):
    # ================================================================
    # Tenants, API keys and quotas (retention is in files.py)
    # ================================================================

    # -- API keys (only their SHA-256 is stored)

    async def insert_api_key(self, key: ApiKey) -> None:
        async with self._write() as conn:
            await conn.execute(insert(api_keys).values(**api_key_values(key)))

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
        return to_api_key(row) if row else None

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
        return [to_api_key(r) for r in rows]

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
        return [dataclasses.replace(to_api_key(r), revoked_at=now) for r in rows]

    # -- quotas

    async def quota_overrides(self, tenant: str) -> QuotaOverrides:
        async with self._read() as conn:
            return await _quota_overrides(conn, tenant)

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
            return await _usage(conn, tenant)

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


async def check_quotas(
    conn: AsyncConnection, tenant: TenantId, defaults: Quotas, adding: int, *, dialect: str
) -> None:
    """Within `conn`'s transaction, LimitExceeded unless the tenant stays
    within its quotas (`defaults`, or what an admin set) with `adding` more
    requests. `dialect` is the store's."""
    if dialect == "postgresql":
        # Two creates of one tenant must not both pass on the same count.
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:space, hashtext(:tenant))"),
            {"space": _PG_QUOTA_LOCK_SPACE, "tenant": tenant},
        )
    quotas = (await _quota_overrides(conn, tenant)).over(defaults)
    problem = refusal(await _usage(conn, tenant), quotas, adding=adding)
    if problem is not None:
        raise LimitExceeded(problem.message, code=problem.code)


async def _quota_overrides(conn: AsyncConnection, tenant: str) -> QuotaOverrides:
    row = (
        await conn.execute(select(tenant_quotas).where(tenant_quotas.c.tenant == tenant))
    ).first()
    if row is None:
        return QuotaOverrides()
    return QuotaOverrides(row.max_pending_batches, row.max_enqueued_requests)


async def _usage(conn: AsyncConnection, tenant: str) -> TenantUsage:
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
