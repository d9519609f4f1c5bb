"""Worker processes that `overnight serve` starts beside its API.

Dispatching thousands of requests a second saturates one core, and an API
sharing that event loop answers late (measured: p99 126 ms for a GET while a
batch runs in the same process; docs/benchmarks.md). So by default `serve`
runs the workers in child processes (`worker_processes`, 1 by default), and
the API process only answers requests.

The children are `overnight worker` processes on the same store (SQLite
handles several processes in WAL mode; every write transaction begins with
BEGIN IMMEDIATE and waits its turn). The supervisor:

- passes each child the parent's resolved settings and a worker id;
- wakes them through their stdin when the API creates or cancels a batch
  (polling stays the fallback);
- restarts a child that dies, after releasing its leases at once (each
  counting a crash towards `max_chunk_attempts`);
- stops them with SIGTERM (they save their progress) when it stops.

A child asks the kernel to kill it the moment its parent dies
(PR_SET_PDEATHSIG), so after a `kill -9` of `serve` no orphan keeps writing
to the data directory the restarted server resumes from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

from overnight._ids import new_worker_id
from overnight.settings import Settings
from overnight.store.contracts import RunnerStore
from overnight.types import WorkerId

log = logging.getLogger("overnight.supervisor")

#: Settings for a child, as JSON, in this environment variable.
SETTINGS_ENV = "OVERNIGHT_CHILD_SETTINGS"
RESTART_DELAY = 1.0
#: Seconds a worker process gets to save its progress when asked to stop.
STOP_TIMEOUT = 25.0


@dataclass
class Child:
    worker_id: WorkerId
    process: asyncio.subprocess.Process


class Supervisor:
    def __init__(self, settings: Settings, store: RunnerStore) -> None:
        self.settings = settings
        self.store = store
        self.children: list[Child] = []
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        for _ in range(self.settings.worker_processes):
            await self._spawn()

    async def _spawn(self) -> Child:
        worker_id = new_worker_id()
        child_settings = self.settings.model_copy(update={"worker": True, "worker_processes": 0})
        env = {**os.environ, SETTINGS_ENV: child_settings.model_dump_json()}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "overnight",
            "worker",
            "--supervised-by",
            str(os.getpid()),
            "--worker-id",
            worker_id,
            stdin=asyncio.subprocess.PIPE,
            env=env,
        )
        child = Child(worker_id, process)
        self.children.append(child)
        self._watchers.append(asyncio.create_task(self._watch(child), name=f"watch-{worker_id}"))
        log.info("worker process %s started as pid %d", worker_id, process.pid)
        return child

    async def _watch(self, child: Child) -> None:
        code = await child.process.wait()
        self.children.remove(child)
        if self._stopping:
            return
        log.error(
            "worker process %s (pid %d) exited with %s; restarting",
            child.worker_id,
            child.process.pid,
            code,
        )
        with contextlib.suppress(Exception):
            await self.store.release_leases(child.worker_id, died=True)
        _forget_metrics(child.process.pid)
        await asyncio.sleep(RESTART_DELAY)
        if not self._stopping:
            await self._spawn()

    def wake(self) -> None:
        """Tell every child there is new work (a byte on its stdin)."""
        for child in self.children:
            pipe = child.process.stdin
            if pipe is not None and not pipe.is_closing():
                with contextlib.suppress(Exception):
                    pipe.write(b"w")

    async def stop(self) -> None:
        self._stopping = True
        children = list(self.children)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        for child in children:
            try:
                await asyncio.wait_for(child.process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                await child.process.wait()
            _forget_metrics(child.process.pid)
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)


def _forget_metrics(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def die_with_parent(parent: int) -> None:
    """In a child: be killed by the kernel when `parent` dies (Linux), and
    exit now if it already has."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


async def follow_parent(wake: Callable[[], None]) -> None:
    """In a child: read wake-ups from stdin; when it closes (the parent is
    gone), exit at once, as a crash would, without touching any state."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        data = await reader.read(4096)
        if not data:
            os._exit(1)
        wake()
