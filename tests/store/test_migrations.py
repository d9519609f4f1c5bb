"""The Alembic migrations build exactly the tables the code declares."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from overnight.store import migrate
from overnight.store.schema import metadata
from overnight.store.sql import SqlStore


async def test_migrations_rebuild_the_metadata(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/m.db"
    store = SqlStore.connect(url)
    await migrate.upgrade(store.write_engine)
    await migrate.upgrade(store.write_engine)  # a second start finds nothing to do
    await store.close()

    engine = create_engine(f"sqlite:///{tmp_path}/m.db")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        tables = set(inspect(conn).get_table_names())
    engine.dispose()
    assert diff == []
    assert tables >= {"files", "uploads", "upload_parts", "batches", "chunks", "alembic_version"}
