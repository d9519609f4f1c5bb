"""The engines under every store operation, and how they are opened.

This is the one place that knows SQLite from PostgreSQL at connection time:
the pools, the SQLite pragmas, and the read and write connections that each
operation (in the mixins beside this module) runs its one transaction on.
Those connections are also where database errors are translated into the
project's (`_errors.translated`), so no operation can let one out raw.

Every operation runs to its end even when its caller is cancelled (a
worker shutting down cancels its loops). A cancel landing in the middle of
a statement makes SQLAlchemy throw the connection away while SQLite still
holds it open around an unfinished statement, write lock and all; the next
write then waited out the 30 s busy timeout and failed "database is
locked", which is how a stop used to hang. So each public operation runs in
a task of its own, shielded: the caller still stops waiting at once, and
the operation commits or rolls back and hands its connection back.

`close()` waits for the operations still running that way before it
disposes of the engines. Closed under them, an operation went on with a
connection the pool no longer knew; when the event loop then ended (the
end of `overnight run`, of a test's app) it was cancelled mid-statement,
and the garbage collector later found the connection never handed back.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Self, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from overnight.store._errors import translated


def _sqlite_pragmas(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to send.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


T = TypeVar("T")

log = logging.getLogger(__name__)

#: Seconds `close()` waits for operations still running (SQLite's busy
#: timeout bounds a write's wait for the lock at 30 s).
CLOSE_WAIT = 35.0


def runs_to_its_end(
    operation: Callable[..., Coroutine[Any, Any, T]],
) -> Callable[..., Coroutine[Any, Any, T]]:
    """The operation in a task of its own that a cancel of the caller does
    not interrupt (see the module's docstring)."""

    @functools.wraps(operation)
    async def shielded(self: StoreBase, *args: Any, **kwargs: Any) -> T:
        task = asyncio.ensure_future(operation(self, *args, **kwargs))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return await asyncio.shield(task)

    return shielded


class StoreBase:
    """The engines, and a connection to read or to write on. Every part of
    `SqlStore` inherits this, and each of its public operations runs to its
    end whatever happens to its caller."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and inspect.iscoroutinefunction(member):
                setattr(cls, name, runs_to_its_end(member))

    def __init__(self, read_engine: AsyncEngine, write_engine: AsyncEngine) -> None:
        self.read_engine = read_engine
        self.write_engine = write_engine
        self.dialect = write_engine.dialect.name
        self._running: set[asyncio.Future[Any]] = set()

    @classmethod
    def connect(cls, url: str) -> Self:
        if make_url(url).get_backend_name() == "sqlite":
            writer = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=120)
            reader = create_async_engine(url, pool_size=4, max_overflow=4)
            _sqlite_pragmas(writer, immediate=True)
            _sqlite_pragmas(reader, immediate=False)
            return cls(reader, writer)
        engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
        return cls(engine, engine)

    async def close(self) -> None:
        others = self._running - {asyncio.current_task()}
        if others:
            _, late = await asyncio.wait(others, timeout=CLOSE_WAIT)
            if late:
                log.warning("closing the store with %d operations still running", len(late))
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        with translated():
            async with self.write_engine.begin() as conn:
                yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        with translated():
            async with self.read_engine.connect() as conn:
                yield conn
