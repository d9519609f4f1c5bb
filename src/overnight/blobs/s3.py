"""Blobs in S3-compatible object storage (AWS S3, MinIO, Ceph, R2, ...).

Selected by `storage_url = "s3://bucket/prefix"`. Both directions stream in
bounded memory: a write buffers one part (`s3_part_size`, 8 MiB by default)
and sends it as a part of a multipart upload, so a 10 GB upload holds 8 MiB;
a read asks for a byte range, so a chunk reads only its own lines. Small
blobs (under one part) are a single PUT.

aiobotocore, because its client runs on aiohttp, which the service already
uses, and it is async end to end.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

READ_PIECE = 1024 * 1024


class S3Blobs:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_size: int = 8 * 1024 * 1024,
        create_bucket: bool = False,
    ) -> None:
        if part_size < 5 * 1024 * 1024:
            raise ValueError("S3 parts must be at least 5 MiB")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self._options: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region_name": region or "us-east-1",
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
            "config": AioConfig(max_pool_connections=64, retries={"max_attempts": 5}),
        }
        self._create_bucket = create_bucket
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def start(self) -> None:
        session = get_session()
        self._client = await self._stack.enter_async_context(
            session.create_client("s3", **self._options)
        )
        if self._create_bucket:
            try:
                await self._client.head_bucket(Bucket=self.bucket)
            except ClientError:
                await self._client.create_bucket(Bucket=self.bucket)

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    def name(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad blob key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def local_path(self, key: str) -> Path | None:
        return None

    def writer(self, key: str) -> S3BlobWriter:
        return S3BlobWriter(self, self.name(key))

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if end is not None and end <= start:
            return
        span = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        try:
            response = await self._client.get_object(
                Bucket=self.bucket, Key=self.name(key), Range=span
            )
        except ClientError as exc:
            if _code(exc) == "InvalidRange":  # an empty object, or start at its end
                return
            raise _not_found(exc, key) from exc
        async with response["Body"] as body:
            while piece := await body.read(READ_PIECE):
                yield piece

    async def read_bytes(self, key: str, start: int, end: int) -> bytes:
        return b"".join([piece async for piece in self.read(key, start, end)])

    async def size(self, key: str) -> int:
        try:
            head = await self._client.head_object(Bucket=self.bucket, Key=self.name(key))
        except ClientError as exc:
            raise _not_found(exc, key) from exc
        return int(head["ContentLength"])

    async def exists(self, key: str) -> bool:
        try:
            await self._client.head_object(Bucket=self.bucket, Key=self.name(key))
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    async def delete(self, key: str) -> None:
        await self._client.delete_object(Bucket=self.bucket, Key=self.name(key))

    async def delete_prefix(self, prefix: str) -> None:
        full = self.name(prefix.rstrip("/")) + "/"
        paginator = self._client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                await self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                )

    @property
    def remote(self) -> bool:
        return True

    async def put_file(self, key: str, path: Path, *, keep: bool = False) -> None:
        """Upload a local file (a chunk's part), then remove it unless `keep`."""
        writer = self.writer(key)
        try:
            with path.open("rb") as handle:
                while piece := await asyncio.to_thread(handle.read, self.part_size):
                    await writer.write(piece)
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        if not keep:
            await asyncio.to_thread(path.unlink)


class S3BlobWriter:
    def __init__(self, blobs: S3Blobs, name: str) -> None:
        self.blobs = blobs
        self.name = name
        self.size = 0
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        self._buffer += data
        if len(self._buffer) >= self.blobs.part_size:
            await self._send_part()

    async def _send_part(self) -> None:
        client = self.blobs._client
        data = bytes(self._buffer)
        self._buffer.clear()
        await asyncio.to_thread(self._hash.update, data)
        if self._upload_id is None:
            created = await client.create_multipart_upload(Bucket=self.blobs.bucket, Key=self.name)
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        sent = await client.upload_part(
            Bucket=self.blobs.bucket,
            Key=self.name,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,
        )
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    async def commit(self) -> None:
        client = self.blobs._client
        if self._upload_id is None:
            data = bytes(self._buffer)
            self._buffer.clear()
            self._hash.update(data)
            await client.put_object(Bucket=self.blobs.bucket, Key=self.name, Body=data)
            return
        if self._buffer:
            await self._send_part()
        await client.complete_multipart_upload(
            Bucket=self.blobs.bucket,
            Key=self.name,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        self._upload_id = None

    async def abort(self) -> None:
        self._buffer.clear()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            try:
                await self.blobs._client.abort_multipart_upload(
                    Bucket=self.blobs.bucket, Key=self.name, UploadId=upload_id
                )
            except ClientError:  # best effort; a lifecycle rule cleans up the rest
                pass


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _not_found(exc: ClientError, key: str) -> Exception:
    if _code(exc) in ("404", "NoSuchKey", "NotFound"):
        return FileNotFoundError(key)
    error: Exception = exc
    return error
