"""The Alembic migrations build exactly the tables the code declares, on
SQLite and on PostgreSQL, and several processes may run them at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

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
    # Imported here: every pytest worker collects this file, and Alembic's
    # autogenerate costs half a CPU-second to import.
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

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


def test_the_head_read_from_file_names_is_alembics_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS))
    assert migrate.head_revision() == ScriptDirectory.from_config(config).get_current_head()


def _downgrade_one(connection: Any) -> None:
    from alembic import command

    command.downgrade(migrate.alembic_config(connection), "-1")


async def test_a_current_schema_is_left_alone_and_an_old_one_is_upgraded(tmp_path: Path) -> None:
    store = SqlStore.connect(f"sqlite+aiosqlite:///{tmp_path}/m.db")
    engine = store.write_engine
    assert await migrate.current_revision(engine) is None
    await migrate.upgrade(engine)
    assert await migrate.current_revision(engine) == migrate.head_revision()
    # A database one migration behind is brought up to date.
    async with engine.begin() as conn:
        await conn.run_sync(_downgrade_one)
    assert await migrate.current_revision(engine) != migrate.head_revision()
    await migrate.upgrade(engine)
    assert await migrate.current_revision(engine) == migrate.head_revision()
    await store.close()
