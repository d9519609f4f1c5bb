"""Database failures leave the store as the project's own errors: a
database out of reach is `StorageUnavailable` (503, worth a retry), a
broken constraint a `StorageError` (500), never a SQLAlchemy or driver
exception; and the runner's loops that catch it outlive it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Collection
from pathlib import Path

import pytest
from sqlalchemy import exc as sa

from overnight.blobs import open_blobs
from overnight.domain.chunk import ChunkKey
from overnight.errors import StorageError, StorageUnavailable, Unavailable
from overnight.runner.models import Models
from overnight.runner.wakeups import Wakeups
from overnight.runner.worker import Worker
from overnight.settings import ModelSettings, Settings
from overnight.store import SqlStore, Store
from overnight.store._errors import is_transient
from overnight.types import WorkerId

from .records import ACME, NOW, TTL, file_record
from helpers import free_port


def unreachable_postgresql() -> str:
    return f"postgresql+asyncpg://root@127.0.0.1:{free_port()}/nothing"


async def test_an_unreachable_postgresql_is_storage_unavailable() -> None:
    store = SqlStore.connect(unreachable_postgresql())
    try:
        with pytest.raises(StorageUnavailable) as read:
            await store.get_file(ACME, "file-x")
        assert isinstance(read.value.__cause__, OSError)  # asyncpg's, bare
        with pytest.raises(StorageUnavailable):
            await store.heartbeat(WorkerId("w"), NOW, TTL)
    finally:
        await store.close()


async def test_an_unopenable_sqlite_file_is_storage_unavailable(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    store = SqlStore.connect(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/store.db")
    try:
        with pytest.raises(StorageUnavailable) as read:
            await store.list_files(ACME, purpose=None, newest_first=True, after=None, limit=1)
        assert isinstance(read.value.__cause__, sa.OperationalError)
    finally:
        await store.close()
        # aiosqlite stops a connection that failed to open without waiting
        # for it; let its thread end while this test's loop is still open.
        for thread in set(threading.enumerate()) - before:
            await asyncio.to_thread(thread.join, 10)


@pytest.mark.asyncio(loop_scope="module")  # the store fixture's
async def test_a_broken_constraint_is_a_storage_error_not_a_retry(store: Store) -> None:
    record = file_record()
    await store.insert_file(record, 1)
    with pytest.raises(StorageError) as refused:
        await store.insert_file(record, 2)
    error = refused.value
    assert not isinstance(error, StorageUnavailable)
    assert error.status_code == 500 and isinstance(error.__cause__, sa.IntegrityError)
    assert "INSERT" not in error.message and "files" not in error.message  # nothing of the SQL
    assert await store.get_file(ACME, record.id) == record  # and the store goes on


def test_storage_unavailable_is_a_retryable_503() -> None:
    error = StorageUnavailable("down")
    assert isinstance(error, Unavailable) and isinstance(error, StorageError)
    assert (error.status_code, error.code, error.retryable) == (503, "storage_unavailable", True)


class _Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "transient"),
    [
        ("40P01", True),  # deadlock detected
        ("40001", True),  # serialization failure
        ("08006", True),  # connection failure
        ("57P01", True),  # admin shutdown
        ("53300", True),  # too many connections
        ("55P03", True),  # lock not available
        ("23505", False),  # unique violation
        ("42P01", False),  # undefined table
    ],
)
def test_postgresql_errors_are_judged_by_their_sqlstate(sqlstate: str, transient: bool) -> None:
    error = sa.DBAPIError("SELECT 1", {}, _Orig(sqlstate))
    assert is_transient(error) is transient


class _CountingStore(SqlStore):
    """A real store (on a database that is not there) that says when it
    has been asked for a number of heartbeats."""

    def __init__(self, url: str, wanted: int) -> None:
        connected = SqlStore.connect(url)
        super().__init__(connected.read_engine, connected.write_engine)
        self.beats = 0
        self.wanted = wanted
        self.enough = asyncio.Event()

    async def heartbeat(
        self, worker: WorkerId, now: float, ttl: float, running: Collection[ChunkKey] = ()
    ) -> int:
        self.beats += 1
        if self.beats >= self.wanted:
            self.enough.set()
        return await super().heartbeat(worker, now, ttl, running)


async def test_the_heartbeat_outlives_a_database_out_of_reach(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        models=[ModelSettings(name="m", base_urls=["http://127.0.0.1:9"])],
        heartbeat_interval=0.001,
    )
    store = _CountingStore(unreachable_postgresql(), wanted=3)
    worker = Worker(
        store=store,
        blobs=open_blobs(settings),
        models=Models(settings.served_models),
        settings=settings,
        wakeups=Wakeups(),
    )
    beating = asyncio.create_task(worker._heartbeat())
    enough = asyncio.create_task(store.enough.wait())
    try:
        await asyncio.wait({beating, enough}, return_when=asyncio.FIRST_COMPLETED)
        assert not beating.done(), beating.exception()
        assert store.beats >= 3
    finally:
        for task in (beating, enough):
            task.cancel()
        await asyncio.gather(beating, enough, return_exceptions=True)
        await store.close()
