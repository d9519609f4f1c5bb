"""One contract for every blob store: the local directory and S3 (against a
real S3-compatible HTTP server, moto's, on loopback)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from overnight.blobs import BlobStore, LocalBlobs
from overnight.blobs.s3 import S3Blobs

from helpers import free_port

MIB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    store: BlobStore
    if request.param == "local":
        store = LocalBlobs(tmp_path / "blobs")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        store = S3Blobs(
            f"bucket-{free_port()}",
            "some/prefix",
            endpoint_url=endpoint,
            access_key_id="test",
            secret_access_key="test",
            part_size=5 * MIB,
            create_bucket=True,
        )
    await store.start()
    yield store
    await store.close()


async def write(blobs: BlobStore, key: str, data: bytes, piece: int = 64 * 1024) -> None:
    writer = blobs.writer(key)
    for start in range(0, len(data), piece):
        await writer.write(data[start : start + piece])
    await writer.commit()
    assert writer.size == len(data)
    assert writer.sha256 == hashlib.sha256(data).hexdigest()


async def read_all(blobs: BlobStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([piece async for piece in blobs.read(key, start, end)])


async def test_write_then_read_back(blobs: BlobStore) -> None:
    await write(blobs, "files/a", b"hello\nworld\n")
    assert await read_all(blobs, "files/a") == b"hello\nworld\n"
    assert await blobs.size("files/a") == 12
    assert await blobs.exists("files/a")
    assert not await blobs.exists("files/b")


async def test_ranged_reads_return_only_the_range(blobs: BlobStore) -> None:
    await write(blobs, "files/r", bytes(range(256)) * 10)
    assert await read_all(blobs, "files/r", 10, 20) == bytes(range(10, 20))
    assert await blobs.read_bytes("files/r", 250, 260) == bytes(
        [250, 251, 252, 253, 254, 255, 0, 1, 2, 3]
    )
    assert await read_all(blobs, "files/r", 2550) == bytes(range(246, 256))
    assert await read_all(blobs, "files/r", 5, 5) == b""


async def test_large_blobs_stream_in_parts(blobs: BlobStore) -> None:
    data = os.urandom(12 * MIB + 123)
    await write(blobs, "files/big", data, piece=MIB)
    assert await blobs.size("files/big") == len(data)
    pieces = [piece async for piece in blobs.read("files/big")]
    assert max(len(p) for p in pieces) <= 4 * MIB  # read in pieces, not at once
    assert b"".join(pieces) == data


async def test_an_empty_blob(blobs: BlobStore) -> None:
    await write(blobs, "files/empty", b"")
    assert await blobs.size("files/empty") == 0
    assert await read_all(blobs, "files/empty") == b""


async def test_an_aborted_write_leaves_nothing(blobs: BlobStore) -> None:
    writer = blobs.writer("files/never")
    await writer.write(os.urandom(6 * MIB))
    await writer.abort()
    assert not await blobs.exists("files/never")


async def test_delete_and_delete_prefix(blobs: BlobStore) -> None:
    for name in ("parts/b1/0.out", "parts/b1/1.out", "parts/b2/0.out"):
        await write(blobs, name, b"x")
    await blobs.delete_prefix("parts/b1")
    assert not await blobs.exists("parts/b1/0.out")
    assert not await blobs.exists("parts/b1/1.out")
    assert await blobs.exists("parts/b2/0.out")
    await blobs.delete("parts/b2/0.out")
    assert not await blobs.exists("parts/b2/0.out")
    await blobs.delete("parts/b2/0.out")  # deleting twice is fine


async def test_put_file_moves_a_local_file_in(blobs: BlobStore, tmp_path: Path) -> None:
    path = tmp_path / "part.jsonl"
    path.write_bytes(b'{"custom_id": "a"}\n')
    await blobs.put_file("parts/x/000001.output.jsonl", path)
    assert not path.exists()
    assert await read_all(blobs, "parts/x/000001.output.jsonl") == b'{"custom_id": "a"}\n'


async def test_a_missing_blob_is_file_not_found(blobs: BlobStore) -> None:
    with pytest.raises(FileNotFoundError):
        await read_all(blobs, "files/missing")
    with pytest.raises(FileNotFoundError):
        await blobs.size("files/missing")


async def test_keys_cannot_escape(blobs: BlobStore) -> None:
    with pytest.raises(ValueError):
        blobs.writer("../etc/passwd")
