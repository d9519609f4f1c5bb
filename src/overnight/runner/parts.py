"""A chunk's result parts: two append-only JSONL files, output and errors.

Results are appended as they arrive, but written in groups: the executor
writes what it holds every `flush_lines` results or `flush_interval` seconds,
before it stores the counters. A written group is in the kernel's page
cache, which survives the death of the process (`kill -9`), so after a crash
the parts hold at least what the database counted, and at most one flush
window of results is lost (and run again). The parts are fsynced when the
chunk is done, before it is marked done, so a finished chunk also survives
the loss of the machine; an unfinished one is re-run from what survived.

On resume, `open()` reads what the parts hold: a torn last line (the process
died mid-write) is cut off, and the `custom_id`s present are returned so the
executor skips them. Parts are staged on local disk while the chunk runs and
handed to the blob store when it is done; a resumed chunk whose staging is
gone (another machine) starts from the best copy in the blob store: with
remote storage the parts are also copied there every `part_upload_interval`
seconds while the chunk runs, which bounds what such a takeover re-runs.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import BinaryIO

import orjson

from overnight.blobs import BlobStore
from overnight.domain.batch import Usage
from overnight.domain.chunk import ChunkKey, Tally
from overnight.domain.results import was_stopped


def part_key(key: ChunkKey, attempt: int, kind: str) -> str:
    """Where attempt `attempt` of a chunk leaves its finished part. Each
    attempt has its own key, so a worker that lost its lease (a "zombie")
    can never overwrite the part of the attempt that finished; the chunk row
    records which attempt that was."""
    return f"parts/{key.batch_id}/{key.index:06d}.{attempt}.{kind}.jsonl"


def snapshot_key(key: ChunkKey, kind: str) -> str:
    """Where a running chunk's parts are copied now and then (S3 only)."""
    return f"parts/{key.batch_id}/{key.index:06d}.snapshot.{kind}.jsonl"


class ChunkParts:
    def __init__(self, staging: Path, blobs: BlobStore, key: ChunkKey, attempt: int) -> None:
        self.key = key
        self.attempt = attempt
        self.blobs = blobs
        folder = staging / key.batch_id
        self.paths = {
            kind: folder / f"{key.index:06d}.{kind}.jsonl" for kind in ("output", "error")
        }
        self._handles: dict[str, BinaryIO] = {}
        #: Writes run on worker threads while the chunk may end (and close
        #: its parts) on the loop: a write must never meet a closed file,
        #: which raised in the Flusher and stopped the whole worker.
        self._lock = threading.Lock()
        self._pending: dict[str, list[bytes]] = {"output": [], "error": []}
        self.buffered = 0

    async def open(self) -> tuple[set[str], Tally]:
        """Open both parts for appending; return the ids they already hold
        and the tally of their results."""
        if not any(path.exists() for path in self.paths.values()):
            await self._restore_from_blobs()
        ids, tally = await asyncio.to_thread(self._scan_and_open)
        return ids, tally

    async def _restore_from_blobs(self) -> None:
        """No local staging (another machine ran the chunk, or an earlier
        attempt finished it but died before marking it done): start from the
        best copy in the blob store. Both kinds come from one source, so the
        two parts always agree: first an earlier attempt's finished parts
        (complete), newest first; then the running snapshot."""
        sources = [
            {kind: part_key(self.key, attempt, kind) for kind in self.paths}
            for attempt in range(self.attempt - 1, 0, -1)
        ]
        sources.append({kind: snapshot_key(self.key, kind) for kind in self.paths})
        for source in sources:
            present = {kind: key for kind, key in source.items() if await self.blobs.exists(key)}
            if not present:
                continue
            for kind, key in present.items():
                path = self.paths[kind]
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("wb") as handle:
                    async for piece in self.blobs.read(key):
                        handle.write(piece)
            return

    def _scan_and_open(self) -> tuple[set[str], Tally]:
        ids: set[str] = set()
        completed = failed = stopped = 0
        usage = Usage()
        for kind, path in self.paths.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = path.open("a+b")
            handle.seek(0)
            data = handle.read()
            keep = data.rfind(b"\n") + 1  # everything after the last newline is torn
            if keep != len(data):
                handle.truncate(keep)
                data = data[:keep]
            for line in data.splitlines():
                try:
                    value = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                ids.add(value["custom_id"])
                if kind == "output":
                    completed += 1
                    usage = usage + Usage.from_response(_response_body(value))
                else:
                    failed += 1
                    stopped += was_stopped(value)
            handle.seek(0, os.SEEK_END)
            self._handles[kind] = handle
        return ids, Tally(completed, failed, usage, stopped)

    def add(self, line: bytes, *, succeeded: bool) -> None:
        self._pending["output" if succeeded else "error"].append(line)
        self.buffered += 1

    def take(self) -> dict[str, bytes]:
        """Everything added since the last take, to hand to `write`. Taking
        is synchronous so the caller can snapshot its counters at the same
        instant: what it stores then never exceeds what is on disk."""
        pending = {kind: b"".join(lines) for kind, lines in self._pending.items() if lines}
        for lines in self._pending.values():
            lines.clear()
        self.buffered = 0
        return pending

    async def write(self, pending: dict[str, bytes]) -> None:
        """Append (one write per part; no fsync, see the module docstring)."""
        if pending:
            await asyncio.to_thread(self._write, pending)

    async def flush(self) -> None:
        await self.write(self.take())

    def _write(self, pending: dict[str, bytes]) -> None:
        with self._lock:
            if not self._handles:  # closed parts (the chunk ended) take nothing more
                return
            for kind, data in pending.items():
                handle = self._handles[kind]
                handle.write(data)
                handle.flush()

    def write_now(self, pending: dict[str, bytes]) -> None:
        """Append, blocking: for `write_parts`, on a worker thread."""
        self._write(pending)

    def _sync(self) -> None:
        with self._lock:
            for handle in self._handles.values():
                os.fsync(handle.fileno())

    async def upload_snapshot(self) -> None:
        """Copy the parts as they stand to the blob store, so that a worker
        on another machine can resume from them if this one is lost."""
        for kind, path in self.paths.items():
            if path.exists() and path.stat().st_size > 0:
                await self.blobs.put_file(snapshot_key(self.key, kind), path, keep=True)

    async def hand_over(self) -> None:
        """The chunk is done: make its parts durable and move the non-empty
        ones into the blob store."""
        await self.flush()
        await asyncio.to_thread(self._sync)
        self.close()
        for kind, path in self.paths.items():
            if path.exists() and path.stat().st_size > 0:
                await self.blobs.put_file(part_key(self.key, self.attempt, kind), path)
            else:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            for handle in self._handles.values():
                handle.close()
            self._handles.clear()


def write_parts(pending: list[tuple[ChunkParts, dict[str, bytes]]]) -> None:
    """Append several chunks' results in one trip to a worker thread."""
    for parts, data in pending:
        parts.write_now(data)


def _response_body(value: dict[str, object]) -> object:
    """The answer a result line holds: OpenAI's and Together's under
    `response.body`, Anthropic's under `result.message`."""
    response = value.get("response")
    if isinstance(response, dict):
        return response.get("body")
    result = value.get("result")
    return result.get("message") if isinstance(result, dict) else None
