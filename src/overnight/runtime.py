"""The composition root: everything one overnight process holds, opened in
order and closed in reverse. `api/app.py` runs it in the ASGI lifespan; the
CLI's `worker` command runs it without an API. Whichever process runs a
worker also runs the webhook sender beside it, under the worker's id."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from sqlalchemy.engine import make_url

from overnight.admin import Admin
from overnight.blobs import BlobStore, open_blobs
from overnight.runner.collection import Collector
from overnight.runner.models import Models
from overnight.runner.open_files import connection_budget
from overnight.runner.supervisor import Supervisor
from overnight.runner.wakeups import Wakeups
from overnight.service import Service
from overnight.settings import Settings
from overnight.store.contracts import Store
from overnight.store.sql import open_store
from overnight.tenants import Tenants
from overnight.types import WorkerId
from overnight.webhooks.endpoints import Webhooks

if TYPE_CHECKING:  # imported where a worker starts: an API process runs neither
    from overnight.runner.worker import Worker
    from overnight.webhooks.sender import Sender

log = logging.getLogger("overnight")


class DataDirInUse(RuntimeError):
    pass


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        on_failure: Callable[[BaseException], None] | None = None,
        child_worker: WorkerId | None = None,
    ):
        """`child_worker`: this process is a worker process of a `serve`
        (runner/supervisor.py), with this worker id."""
        self.settings = settings
        self.on_failure = on_failure
        self.child_worker = child_worker
        self.supervisor: Supervisor | None = None
        self.wakeups = Wakeups()
        self.models = Models(settings.served_models)
        self.collector = Collector()
        self._lock: IO[str] | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._sender_task: asyncio.Task[None] | None = None
        self.store: Store
        self.blobs: BlobStore
        self.service: Service
        self.tenants: Tenants
        self.admin: Admin
        self.webhooks: Webhooks
        self.worker: Worker | None = None
        self.sender: Sender | None = None

    async def start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = settings.resolved_database_url
        sqlite = make_url(url).get_backend_name() == "sqlite"
        if sqlite and self.child_worker is None:
            self._lock = _lock_data_dir(settings.data_dir)
        self.store = await open_store(url)
        if sqlite and self.child_worker is None and settings.worker:
            # SQLite means one server (the data directory is locked): every
            # lease left behind belongs to a process that is gone.
            await self.store.release_all_leases()
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
        self.webhooks = Webhooks(self.store, settings)
        if self.child_worker is None:  # a worker process has its parent's config
            await self.webhooks.sync_config()
        # Everything built so far lives as long as the process: move it out of
        # the cyclic GC's sight, so collections on the dispatch path do not
        # rescan the whole framework each time.
        gc.collect()
        gc.freeze()
        if not settings.worker:
            return
        if settings.worker_processes > 0 and self.child_worker is None:
            self.supervisor = Supervisor(settings, self.store)
            self.wakeups.forward(self.supervisor.wake)
            await self.supervisor.start()
            return
        from overnight.runner.worker import Worker
        from overnight.webhooks.sender import Sender

        self.models.fit_open_files(connection_budget(settings))
        await self.models.start()
        self.collector.start()
        self.worker = Worker(
            store=self.store,
            blobs=self.blobs,
            models=self.models,
            settings=settings,
            wakeups=self.wakeups,
            worker_id=self.child_worker,
            collector=self.collector,
        )
        self._worker_task = asyncio.create_task(self.worker.run(), name="worker")
        self._worker_task.add_done_callback(self._worker_ended)
        self.sender = Sender(
            store=self.store, settings=settings, worker=self.worker.id, wakeups=self.wakeups
        )
        self._sender_task = asyncio.create_task(self.sender.run(), name="webhooks")
        self._sender_task.add_done_callback(self._worker_ended)

    def _worker_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.critical("the worker stopped (%s): %r", task.get_name(), error, exc_info=error)
            if self.on_failure is not None:
                self.on_failure(error)

    async def stop(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self._sender_task is not None:  # first: the worker's end hands its claims back
            self._sender_task.cancel()
            await asyncio.gather(self._sender_task, return_exceptions=True)
            self._sender_task = None
        if self._worker_task is not None:
            self._worker_task.cancel()
            await asyncio.gather(self._worker_task, return_exceptions=True)
            self._worker_task = None
        self.collector.stop()
        await self.models.close()
        await self.blobs.close()
        await self.store.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def ensure_data_dir_free(settings: Settings) -> None:
    """Raise DataDirInUse at once if another process serves this SQLite data
    directory, before anything (migrations, the banner) touches it. The
    lock is held for good from `Runtime.start`; here it is only tried."""
    if make_url(settings.resolved_database_url).get_backend_name() != "sqlite":
        return
    if (settings.data_dir / "overnight.lock").exists():
        _lock_data_dir(settings.data_dir).close()


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
