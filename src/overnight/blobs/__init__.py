"""Bytes of files and result parts, behind one small interface.

`LocalBlobs` keeps them in a directory (the default); `S3Blobs` in
S3-compatible object storage, chosen by `storage_url = "s3://bucket/prefix"`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from overnight.blobs.local import LocalBlobs
from overnight.settings import Settings


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
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def writer(self, key: str) -> BlobWriter: ...
    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]: ...
    async def read_bytes(self, key: str, start: int, end: int) -> bytes: ...
    async def size(self, key: str) -> int: ...
    async def exists(self, key: str) -> bool: ...
    async def delete(self, key: str) -> None: ...
    async def delete_prefix(self, prefix: str) -> None: ...
    async def put_file(self, key: str, path: Path, *, keep: bool = False) -> None: ...
    @property
    def remote(self) -> bool: ...
    def local_path(self, key: str) -> Path | None: ...


def open_blobs(settings: Settings) -> BlobStore:
    url = settings.resolved_storage_url
    if url.startswith("file://"):
        return LocalBlobs(Path(url.removeprefix("file://")))
    if url.startswith("s3://"):
        from overnight.blobs.s3 import S3Blobs

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return S3Blobs(
            bucket,
            prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            part_size=settings.s3_part_size,
            create_bucket=settings.s3_create_bucket,
        )
    raise ValueError(
        f"unsupported storage_url {url!r}: expected file:///path or s3://bucket/prefix"
    )


__all__ = ["BlobStore", "BlobWriter", "LocalBlobs", "open_blobs"]
