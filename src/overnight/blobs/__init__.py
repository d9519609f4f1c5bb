"""Bytes of files and result parts, behind one small interface.

`LocalBlobs` keeps them in a directory (the default); an S3-compatible
implementation can replace it by configuration (`storage_url`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from overnight.blobs.local import LocalBlobs


class BlobWriter(Protocol):
    """Streams one new blob. Nothing is visible under the key until commit;
    size and SHA-256 are computed on the way through."""

    size: int

    async def write(self, data: bytes) -> None: ...
    async def commit(self) -> None: ...
    async def abort(self) -> None: ...
    @property
    def sha256(self) -> str: ...


class BlobStore(Protocol):
    def writer(self, key: str) -> BlobWriter: ...
    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]: ...
    async def read_bytes(self, key: str, start: int, end: int) -> bytes: ...
    async def size(self, key: str) -> int: ...
    async def exists(self, key: str) -> bool: ...
    async def delete(self, key: str) -> None: ...
    async def delete_prefix(self, prefix: str) -> None: ...
    async def put_file(self, key: str, path: Path) -> None: ...
    def local_path(self, key: str) -> Path | None: ...


def open_blobs(url: str) -> BlobStore:
    if url.startswith("file://"):
        return LocalBlobs(Path(url.removeprefix("file://")))
    raise ValueError(f"unsupported storage_url {url!r}: expected file:///path")


__all__ = ["BlobStore", "BlobWriter", "LocalBlobs", "open_blobs"]
