"""How many connections a worker can hold open: its limit on open files,
less the files it holds already and a reserve for those its work opens.

Every request in flight to a model server holds a connection, and every
connection is a file descriptor. A worker whose models' slots exceed what
it may open does not run faster: the connects past the limit fail with
EMFILE ("Too many open files"). Measured: the first of three workers to
start is alone, its share is a whole 20,000-slot model, and 20,000
connections plus its other files passed the 20,000 a process could open
here, so its connects failed. So a worker plans within its limit
(`connection_budget`, applied by `Models.fit_open_files`), and a connect
that still finds no descriptor is backpressure, never a line's failure
(runner/dispatch.py).
"""

from __future__ import annotations

import contextlib
import os
import resource

from overnight.settings import Settings

#: Descriptors kept for everything but model connections: the database
#: pool, webhook deliveries, validation's and finalisation's spill files,
#: logs, uploads being read.
RESERVED = 256


def allow_open_files() -> int | None:
    """Raise the soft limit on open files to the hard one (often 1,024
    against far more), as servers that hold many sockets do, so a wide
    model is bounded by the system and not by a default. The limit now in
    force; None when there is none."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def open_now() -> int:
    """Descriptors this process holds (0 where the system does not say)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return len(os.listdir(folder))
    return 0


def reserve(settings: Settings, limit: int) -> int:
    """Descriptors kept free for the worker's own files: `RESERVED`, and two
    part files for each chunk it may hold; at most a quarter of `limit`."""
    chunks = settings.worker_max_lines // settings.chunk_lines + 2 * settings.worker_chunks
    return min(RESERVED + 2 * chunks, limit // 4)


def connection_budget(settings: Settings) -> int | None:
    """How many connections this worker may hold open at once; None when
    its open files are not limited."""
    limit = allow_open_files()
    if limit is None:
        return None
    return max(1, limit - open_now() - reserve(settings, limit))
