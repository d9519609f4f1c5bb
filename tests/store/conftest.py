"""The store contract suite's fixtures: one store per test module and
backend (SQLite in a temporary file, PostgreSQL in a fresh database),
emptied before each test and handed to it as the `Store` Protocol, which
is all a consumer ever sees of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from sqlalchemy import delete

from overnight.store import SqlStore, Store, open_store
from overnight.store.schema import metadata


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('store')}/store.db"
        return
    # Skips loudly without PostgreSQL, and fails under OVERNIGHT_REQUIRE_POSTGRES=1.
    postgres = request.getfixturevalue("postgres")
    url = str(postgres.new_database())
    yield url
    postgres.drop_later([url])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def opened(store_url: str) -> AsyncIterator[SqlStore]:
    store = await open_store(store_url)
    yield store
    await store.close()


@pytest_asyncio.fixture(loop_scope="module")
async def store(opened: SqlStore) -> Store:
    """The module's store, with every table empty."""
    async with opened.write_engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(delete(table))
    return opened
