"""Query fragments more than one kind of record is read with.

Tenant visibility, file liveness, and the keyset pagination (by creation
time, then id) that every `list_*` pages with, written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from overnight.store.schema import files
from overnight.types import TenantId


def visible(table: Any, tenant: TenantId | None) -> tuple[ColumnElement[bool], ...]:
    """The WHERE clauses that keep a caller to its tenant's rows; none for
    `tenant` None (the runner, or an admin seeing every tenant)."""
    return () if tenant is None else (table.c.tenant == tenant,)


def live(now: int) -> ColumnElement[bool]:
    """Files that have not expired by `now`."""
    return or_(files.c.expires_at.is_(None), files.c.expires_at > now)


def ordering(table: Any, newest_first: bool) -> tuple[Any, Any]:
    if newest_first:
        return table.c.created_us.desc(), table.c.id.desc()
    return table.c.created_us.asc(), table.c.id.asc()


def after_cursor(table: Any, cursor: Any, newest_first: bool) -> ColumnElement[bool]:
    key = tuple_(table.c.created_us, table.c.id)
    value = tuple_(cursor.created_us, cursor.id)
    return key < value if newest_first else key > value


async def page(
    conn: AsyncConnection,
    table: Any,
    query: Select[Any],
    tenant: TenantId | None,
    *,
    after: str | None,
    newest_first: bool,
    limit: int,
) -> Sequence[Row[Any]] | None:
    """Up to `limit` rows of `query` (over `table`) after the cursor `after`
    (an id), in creation order; None if the cursor names no row `tenant`
    can see."""
    if after is not None:
        cursor = (
            await conn.execute(
                select(table.c.created_us, table.c.id).where(
                    table.c.id == after, *visible(table, tenant)
                )
            )
        ).first()
        if cursor is None:
            return None
        query = query.where(after_cursor(table, cursor, newest_first))
    query = query.order_by(*ordering(table, newest_first)).limit(limit)
    rows: Sequence[Row[Any]] = (await conn.execute(query)).all()
    return rows
