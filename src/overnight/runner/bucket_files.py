"""Numbered bucket files in a scratch folder, for two-pass work on local
disk in bounded memory: a stream is split into buckets, then each bucket is
read on its own. Used by the grouped copy of an input (runner/regroup.py)
and by `run --ordered` of a grouped batch (result_order.py). A bucket's file
is opened when its first bytes arrive; writes run in a worker thread, so
the event loop never waits on the disk."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import BinaryIO


class BucketFiles:
    def __init__(self, folder: Path, suffix: str) -> None:
        self.folder = folder
        self.suffix = suffix
        self._handles: dict[int, BinaryIO] = {}

    async def open(self) -> None:
        await asyncio.to_thread(self.folder.mkdir, parents=True, exist_ok=True)

    async def append(self, pieces: dict[int, bytes]) -> None:
        """Each bucket's bytes at the end of its file."""
        await asyncio.to_thread(self._append, pieces)

    def _append(self, pieces: dict[int, bytes]) -> None:
        for bucket, data in pieces.items():
            handle = self._handles.get(bucket)
            if handle is None:
                handle = self._handles[bucket] = self.path(bucket).open("wb")
            handle.write(data)

    def finish(self) -> list[int]:
        """Close the files; the buckets that got bytes, in order."""
        for handle in self._handles.values():
            handle.close()
        return sorted(self._handles)

    def path(self, bucket: int) -> Path:
        return self.folder / f"{bucket:03d}{self.suffix}"

    def remove(self) -> None:
        """Close and delete everything (the work is over, or failed)."""
        self.finish()
        shutil.rmtree(self.folder, ignore_errors=True)
