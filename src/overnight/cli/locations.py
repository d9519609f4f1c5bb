"""Where `overnight run` reads its input and writes its results: a path,
`-` (stdin, stdout), or `s3://bucket/key` (with the S3 settings of the
configuration, else the usual AWS environment).

An input is read once into a local file while it is hashed (a path is only
hashed): the hash names the run, so the same input, however it arrives,
finds the same state directory and batch again. A result is written whole
or not at all: a temporary file renamed into place, an S3 multipart upload
completed only at the end."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

import orjson

from overnight.cli.common import as_new_file

if TYPE_CHECKING:  # imported when used: `overnight batches` starts without them
    from overnight.blobs.s3 import S3Blobs
    from overnight.settings import Settings

PIECE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Input:
    path: Path
    name: str
    sha256: str
    size: int
    #: A copy made for this run (stdin, S3), deleted when done with.
    spooled: bool


class Sink(Protocol):
    async def write(self, data: bytes) -> None: ...


def cache_root() -> Path:
    """overnight's folder in the user's cache ($XDG_CACHE_HOME or ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "overnight"


def default_state_dir(sha256: str) -> Path:
    return cache_root() / "runs" / sha256[:16]


def errors_path_for(output: str) -> str:
    """`out.jsonl` -> `out.errors.jsonl` (also for s3:// keys)."""
    if output == "-":
        return "overnight-errors.jsonl"
    return output.removesuffix(".jsonl") + ".errors.jsonl"


async def take_input(source: str, settings: Settings) -> Input:
    """The input as a local file and its SHA-256; stdin and S3 are copied
    into the cache first."""
    if source == "-":
        return _spool_stream(sys.stdin.buffer, "stdin.jsonl")
    if source.startswith("s3://"):
        return await _spool_s3(source, settings)
    return await asyncio.to_thread(_hash_file, Path(source))


def _hash_file(path: Path) -> Input:
    if not path.is_file():
        raise FileNotFoundError(f"no such input file: {path}")
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while piece := handle.read(PIECE):
            digest.update(piece)
            size += len(piece)
    return Input(path, path.name, digest.hexdigest(), size, spooled=False)


def _spool_stream(stream: BinaryIO, name: str) -> Input:
    spool = cache_root() / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".jsonl", dir=spool)
    digest = hashlib.sha256()
    size = 0
    with os.fdopen(handle, "wb") as sink:
        while piece := stream.read(PIECE):
            digest.update(piece)
            sink.write(piece)
            size += len(piece)
    return Input(Path(temporary), name, digest.hexdigest(), size, spooled=True)


async def _spool_s3(url: str, settings: Settings) -> Input:
    bucket, key = _split_s3(url)
    spool = cache_root() / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".jsonl", dir=spool)
    digest = hashlib.sha256()
    size = 0
    try:
        async with _s3(bucket, settings) as blobs:
            with os.fdopen(handle, "wb") as sink:
                async for piece in blobs.read(key):
                    digest.update(piece)
                    sink.write(piece)
                    size += len(piece)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return Input(Path(temporary), Path(key).name, digest.hexdigest(), size, spooled=True)


@asynccontextmanager
async def open_result(target: str, settings: Settings) -> AsyncIterator[Sink]:
    """A sink for one result file that appears only if the block ends
    without an error."""
    if target == "-":
        yield _Stdout()
        sys.stdout.buffer.flush()
    elif target.startswith("s3://"):
        bucket, key = _split_s3(target)
        async with _s3(bucket, settings) as blobs:
            writer = blobs.writer(key)
            try:
                yield writer
                await writer.commit()
            except BaseException:
                await writer.abort()
                raise
    else:
        async with _local_result(Path(target)) as sink:
            yield sink


class _Stdout:
    async def write(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)


class _LocalResult:
    def __init__(self, handle: int) -> None:
        self.file = os.fdopen(handle, "wb")

    async def write(self, data: bytes) -> None:
        self.file.write(data)


def result_target_problem(target: str) -> str | None:
    """Why a local result path cannot be written (a folder, a parent that
    cannot be made or written), checked before the run so that a bad `-o`
    is told at once rather than after the work; None when it can, or for
    stdout and S3, which are tried when written."""
    if target == "-" or target.startswith("s3://"):
        return None
    path = Path(target)
    if path.is_dir():
        return f"{target} is a folder; name a file in it (e.g. {path / 'results.jsonl'})"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot write {target}: {exc.strerror or exc}"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"cannot write {target}: {path.parent} is not writable"
    return None


@asynccontextmanager
async def _local_result(path: Path) -> AsyncIterator[Sink]:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    as_new_file(temporary)
    sink = _LocalResult(handle)
    try:
        with sink.file:
            yield sink
            sink.file.flush()
            os.fsync(sink.file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _split_s3(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not bucket or not key or key.endswith("/"):
        raise ValueError(f"{url} does not name an object: expected s3://bucket/key")
    return bucket, key


@asynccontextmanager
async def _s3(bucket: str, settings: Settings) -> AsyncIterator[S3Blobs]:
    from overnight.blobs.s3 import S3Blobs

    blobs = S3Blobs(
        bucket,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
        part_size=settings.s3_part_size,
    )
    await blobs.start()
    try:
        yield blobs
    finally:
        await blobs.close()


def endpoint_of_file(path: Path) -> str | None:
    """The `url` of a JSONL file's first request, if it names one."""
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                return endpoint_of_line(line)
    return None


def endpoint_of_line(line: bytes) -> str | None:
    try:
        first = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    url = first.get("url") if isinstance(first, dict) else None
    return url if isinstance(url, str) else None
