"""Schema migrations, run by every process at start-up.

Several replicas may start at once against one PostgreSQL database, so the
upgrade runs under a transaction-scoped advisory lock: the first process
migrates, the others wait and then find nothing to do.

Almost every start finds the schema current. That is checked with one query
against Alembic's version table before Alembic itself is imported (0.15 s of
CPU a process, paid by every API replica, worker and CLI command).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK_KEY = 0x6F76_6E69_6768_74  # "overnight"


def head_revision() -> str:
    """The newest migration's revision: each file in versions/ is named
    after its revision (`0009_stopped_counts.py` is revision "0009"), which
    tests/store/test_migrations.py holds Alembic to."""
    return max(
        path.name[:4] for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")
    )


def alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection), "head")


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema's revision; None for a database Alembic never touched."""
    async with engine.connect() as conn:
        try:
            return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        except DBAPIError:  # no version table yet
            return None


async def upgrade(engine: AsyncEngine) -> None:
    if await current_revision(engine) == head_revision():
        return
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        await conn.run_sync(_upgrade)
