"""The composition root: everything one overnight process holds, opened in
order and closed in reverse. `api/app.py` runs it in the ASGI lifespan; the
CLI's `worker` command runs it without an API."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from sqlalchemy.engine import make_url

from overnight.admin import Admin
from overnight.blobs import BlobStore, open_blobs
from overnight.runner.models import Models
from overnight.runner.wakeups import Wakeups
from overnight.runner.worker import Worker
from overnight.service import Service
from overnight.settings import Settings
from overnight.store.sql import SqlStore, open_store
from overnight.tenants import Tenants

log = logging.getLogger("overnight")


class DataDirInUse(RuntimeError):
    pass


class Runtime:
    def __init__(
        self, settings: Settings, *, on_failure: Callable[[BaseException], None] | None = None
    ):
        self.settings = settings
        self.on_failure = on_failure
        self.wakeups = Wakeups()
        self.models = Models(settings.served_models)
        self._lock: IO[str] | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self.store: SqlStore
        self.blobs: BlobStore
        self.service: Service
        self.tenants: Tenants
        self.admin: Admin
        self.worker: Worker | None = None

    async def start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = settings.resolved_database_url
        if make_url(url).get_backend_name() == "sqlite":
            self._lock = _lock_data_dir(settings.data_dir)
        self.store = await open_store(url)
        self.blobs = open_blobs(settings)
        await self.blobs.start()
        self.service = Service(
            store=self.store,
            blobs=self.blobs,
            settings=settings,
            model_names=self.models.names,
            wakeups=self.wakeups,
        )
        self.tenants = Tenants(settings, self.store)
        await self.tenants.load()
        self.admin = Admin(self.store, settings)
        if settings.worker:
            await self.models.start()
            self.worker = Worker(
                store=self.store,
                blobs=self.blobs,
                models=self.models,
                settings=settings,
                wakeups=self.wakeups,
            )
            self._worker_task = asyncio.create_task(self.worker.run(), name="worker")
            self._worker_task.add_done_callback(self._worker_ended)

    def _worker_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.critical("the worker stopped: %r", error, exc_info=error)
            if self.on_failure is not None:
                self.on_failure(error)

    async def stop(self) -> None:
        if self._worker_task is not None:
            self._worker_task.cancel()
            await asyncio.gather(self._worker_task, return_exceptions=True)
            self._worker_task = None
        await self.models.close()
        await self.blobs.close()
        await self.store.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _lock_data_dir(data_dir: Path) -> IO[str]:
    """One process per SQLite data directory: a second would fight over the
    same leases. The lock dies with the process, so a crash never leaves it."""
    handle = (data_dir / "overnight.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise DataDirInUse(
            f"{data_dir} is in use by another overnight process; "
            "stop it, or use --data-dir for a second one."
        ) from exc
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
