"""Blobs as files under one directory.

Writes go to a temporary name and are renamed into place on commit, so a
crash never leaves a half-written blob under a real key. File I/O runs in
worker threads (hashlib releases the GIL too), in pieces of about 1 MiB, so
the event loop serving the API never waits on the disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

PIECE = 1024 * 1024


class LocalBlobs:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad blob key {key!r}")
        return self.root / key

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    def writer(self, key: str) -> LocalBlobWriter:
        return LocalBlobWriter(self.path(key))

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread(_open_at, self.path(key), start)
        try:
            position = start
            while end is None or position < end:
                want = PIECE if end is None else min(PIECE, end - position)
                data = await asyncio.to_thread(handle.read, want)
                if not data:
                    break
                position += len(data)
                yield data
        finally:
            handle.close()

    async def read_bytes(self, key: str, start: int, end: int) -> bytes:
        return await asyncio.to_thread(_read_range, self.path(key), start, end)

    async def size(self, key: str) -> int:
        return (await asyncio.to_thread(os.stat, self.path(key))).st_size

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).exists)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path(key).unlink, True)

    async def delete_prefix(self, prefix: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.path(prefix.rstrip("/")), True)

    @property
    def remote(self) -> bool:
        return False

    async def put_file(self, key: str, path: Path, *, keep: bool = False) -> None:
        """Move a local file in (or copy it, with `keep`)."""
        target = self.path(key)
        if keep:
            await asyncio.to_thread(_copy, path, target)
        else:
            await asyncio.to_thread(_move, path, target)


class LocalBlobWriter:
    def __init__(self, target: Path) -> None:
        self.target = target
        self.size = 0
        self._hash = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        self._handle: BinaryIO | None = None

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= PIECE:
            await self._flush()

    async def _flush(self) -> None:
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        if self._handle is None:
            self._handle = await asyncio.to_thread(_create, self._temp)
        await asyncio.to_thread(_hash_and_write, self._hash, self._handle, data)

    async def commit(self) -> None:
        await self._flush()
        handle = self._handle
        assert handle is not None
        self._handle = None
        await asyncio.to_thread(_close_and_rename, handle, self._temp, self.target)

    async def abort(self) -> None:
        handle, self._handle = self._handle, None
        self._buffer.clear()
        await asyncio.to_thread(_discard, handle, self._temp)


def _open_at(path: Path, start: int) -> BinaryIO:
    handle = path.open("rb")
    handle.seek(start)
    return handle


def _read_range(path: Path, start: int, end: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(start)
        return handle.read(end - start)


def _create(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("wb")


def _hash_and_write(hasher: hashlib._Hash, handle: BinaryIO, data: bytes) -> None:
    hasher.update(data)
    handle.write(data)


def _close_and_rename(handle: BinaryIO, temp: Path, target: Path) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.replace(temp, target)


def _discard(handle: BinaryIO | None, temp: Path) -> None:
    if handle is not None:
        handle.close()
    temp.unlink(missing_ok=True)


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    shutil.copyfile(source, temp)
    os.replace(temp, target)


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError:  # another filesystem
        shutil.copyfile(source, target)
        source.unlink()
