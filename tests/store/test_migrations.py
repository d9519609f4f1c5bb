"""The Alembic migrations build exactly the tables the code declares, on
SQLite and on PostgreSQL, and several processes may run them at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from overnight.store import migrate
from overnight.store.schema import metadata
from overnight.store.sql import SqlStore

from backends import Postgres

TABLES = {
    "files",
    "uploads",
    "upload_parts",
    "batches",
    "chunks",
    "workers",
    "idempotency_keys",
    "webhook_endpoints",
    "webhook_deliveries",
    "webhook_attempts",
    "alembic_version",
}


def _differences(connection: Any) -> tuple[list[Any], set[str]]:
    diff = compare_metadata(MigrationContext.configure(connection), metadata)
    return diff, set(inspect(connection).get_table_names())


async def _check(url: str) -> None:
    store = SqlStore.connect(url)
    await migrate.upgrade(store.write_engine)
    await migrate.upgrade(store.write_engine)  # a second start finds nothing to do
    async with store.write_engine.connect() as conn:
        diff, tables = await conn.run_sync(_differences)
    await store.close()
    assert diff == []
    assert tables >= TABLES


async def test_migrations_rebuild_the_metadata_on_sqlite(tmp_path: Path) -> None:
    await _check(f"sqlite+aiosqlite:///{tmp_path}/m.db")


def test_migrations_rebuild_the_metadata_on_postgresql(postgres: Postgres) -> None:
    asyncio.run(_check(postgres.new_database()))


def test_replicas_starting_together_migrate_once(postgres: Postgres) -> None:
    url = postgres.new_database()

    async def start_three() -> None:
        stores = [SqlStore.connect(url) for _ in range(3)]
        try:
            await asyncio.gather(*(migrate.upgrade(s.write_engine) for s in stores))
        finally:
            for store in stores:
                await store.close()

    asyncio.run(start_three())
    asyncio.run(_check(url))
