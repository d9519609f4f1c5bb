"""A store operation whose caller is cancelled (a worker shutting down)
still ends cleanly, so the next write does not wait on a lock left behind.

Before: the cancel threw the SQLite connection away mid-statement with the
write lock held, and the next write waited out the 30 s busy timeout and
failed "database is locked" (how `overnight run` and `serve` hung on
Ctrl-C, about one stop in twenty)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

from sqlalchemy import text

from overnight.store._base import StoreBase

#: A statement that runs for a while and leaves rows unread when stopped.
SLOW = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) "
    "SELECT count(*) FROM c"
)


class SlowStore(StoreBase):
    async def slow_write(self, started: asyncio.Event) -> None:
        async with self._write() as conn:
            await conn.execute(text("INSERT INTO t VALUES (1)"))
            started.set()
            await conn.execute(text(SLOW))

    async def quick_write(self) -> None:
        async with self._write() as conn:
            await conn.execute(text("INSERT INTO t VALUES (2)"))

    async def rows(self) -> list[int]:
        async with self._read() as conn:
            return list((await conn.execute(text("SELECT x FROM t ORDER BY x"))).scalars())


async def slow_store(path: Path) -> SlowStore:
    store = SlowStore.connect(f"sqlite+aiosqlite:///{path}")
    async with store.write_engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (x INTEGER)"))
    return store


async def a_slow_write(store: SlowStore) -> asyncio.Task[None]:
    """A write whose first row is in and whose slow statement has begun."""
    started = asyncio.Event()
    writer = asyncio.create_task(store.slow_write(started))
    await started.wait()
    return writer


async def test_a_cancelled_write_leaves_no_lock_behind(tmp_path: Path) -> None:
    store = await slow_store(tmp_path / "s.db")
    writer = await a_slow_write(store)
    await asyncio.sleep(0.05)  # inside the slow statement
    writer.cancel()
    cancelled_at = time.monotonic()
    try:
        await writer
    except asyncio.CancelledError:
        pass
    assert time.monotonic() - cancelled_at < 1, "the caller still stops waiting at once"
    # Without the shield this waits 30 s and fails "database is locked".
    await asyncio.wait_for(store.quick_write(), timeout=15)
    assert await store.rows() == [1, 2]  # the cancelled write ran to its end
    await store.close()


async def test_closing_waits_for_an_operation_its_caller_left(tmp_path: Path) -> None:
    """A stop cancels its loops, then closes the store: the write a
    cancelled loop left running ends, committed, before the engines go.
    Before: `close()` returned under it, and the write went on with a
    connection the pool no longer knew, to be cut off by the loop's end."""
    path = tmp_path / "s.db"
    store = await slow_store(path)
    writer = await a_slow_write(store)
    writer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writer
    await store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT x FROM t").fetchall() == [(1,)]
