"""One worker's runner parts, in-process: a real SQLite store and local blobs
in a temporary data directory, the model served by the fake upstream, and
the worker's flusher running beside. Tests of the executor, flushing and
finalisation drive them step by step (claim, run, finalise) instead of
through the worker's loops, so each step's effect can be looked at."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from overnight.blobs import BlobStore, open_blobs
from overnight.domain.batch import Batch
from overnight.domain.chunk import Chunk, ChunkWork
from overnight.domain.files import FilePurpose, FileRecord
from overnight.domain.status import BatchStatus
from overnight.runner.executor import ChunkOutcome, ChunkRun
from overnight.runner.finalize import finalize_batch
from overnight.runner.flushing import Flusher
from overnight.runner.models import Models
from overnight.runner.validate import validate_batch
from overnight.settings import ModelSettings, Settings
from overnight.store.sql import SqlStore, open_store
from overnight.types import BatchId, FileId, TenantId, WorkerId

ENDPOINT = "/v1/chat/completions"
MODEL = "fake-model"
TTL = 30.0
TENANT = TenantId("t")


def request_line(custom_id: str, text: str = "hello", **fake: Any) -> bytes:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    if fake:
        body["x_fake"] = fake
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body})


def jsonl(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines() if line]


def pipeline_settings(data_dir: Path, upstream_url: str, **overrides: Any) -> Settings:
    model = ModelSettings(
        name=MODEL,
        base_urls=[upstream_url],
        max_concurrency=4,
        retry_backoff=0.01,
        max_retry_delay=0.05,
    )
    defaults: dict[str, Any] = {
        "data_dir": data_dir,
        "models": [model],
        "chunk_lines": 4,
        "flush_lines": 2,
        "flush_interval": 0.05,
        "stop_grace": 1.0,
        "max_chunk_attempts": 3,
    }
    return Settings(**{**defaults, **overrides})


class Pipeline:
    def __init__(self, settings: Settings, store: SqlStore, blobs: BlobStore) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.worker = WorkerId("w-test")
        self.models = Models(settings.served_models)
        self.flusher = Flusher(store, self.worker, settings)

    async def add_batch(self, lines: list[bytes], batch_id: str = "batch-1") -> Batch:
        """Store `lines` as an input file and validate a batch of it: the
        batch is in progress, its chunks pending."""
        file_id = FileId(f"file-{batch_id}")
        data = b"".join(line + b"\n" for line in lines)
        writer = self.blobs.writer(f"files/{file_id}")
        await writer.write(data)
        await writer.commit()
        await self.store.insert_file(
            FileRecord(
                id=file_id,
                tenant=TENANT,
                filename="in.jsonl",
                purpose=FilePurpose.BATCH,
                bytes=len(data),
                created_at=0,
                sha256=writer.sha256,
                blob_key=f"files/{file_id}",
            ),
            created_us=0,
        )
        now = int(time.time())
        batch = Batch(
            id=BatchId(batch_id),
            tenant=TENANT,
            endpoint=ENDPOINT,
            input_file_id=file_id,
            completion_window="24h",
            status=BatchStatus.VALIDATING,
            created_at=now,
            expires_at=now + 86_400,
        )
        await self.store.insert_batch(batch, created_us=now * 1_000_000)
        claimed = await self.store.claim_validation(self.worker, time.time(), TTL)
        assert claimed is not None
        assert await self.validate(claimed) is BatchStatus.IN_PROGRESS
        return await self.batch(batch.id)

    async def validate(self, claimed: Batch) -> BatchStatus | None:
        """Validate a batch whose validation this worker has claimed."""
        return await validate_batch(
            claimed,
            worker=self.worker,
            store=self.store,
            blobs=self.blobs,
            settings=self.settings,
            model_names=self.models.names,
        )

    async def batch(self, batch_id: BatchId) -> Batch:
        batch = await self.store.get_batch(None, batch_id)
        assert batch is not None
        return batch

    async def chunks(self, batch_id: BatchId) -> list[Chunk]:
        return list(await self.store.chunks_of(batch_id))

    async def claim(self, worker: WorkerId | None = None, now: float | None = None) -> ChunkWork:
        work = await self.store.claim_chunk(
            worker or self.worker, time.time() if now is None else now, TTL
        )
        assert work is not None
        return work

    def chunk_run(self, work: ChunkWork) -> ChunkRun:
        return ChunkRun(
            work,
            worker=self.worker,
            store=self.store,
            blobs=self.blobs,
            models=self.models,
            settings=self.settings,
            flusher=self.flusher,
        )

    async def run_all_chunks(self) -> list[ChunkOutcome]:
        outcomes = []
        while (work := await self.store.claim_chunk(self.worker, time.time(), TTL)) is not None:
            outcomes.append(await self.chunk_run(work).run())
        return outcomes

    async def finalize(self, batch_id: BatchId) -> Batch:
        claimed = await self.store.claim_finalization(self.worker, time.time(), TTL)
        assert claimed is not None and claimed.id == batch_id
        assert await finalize_batch(
            claimed,
            worker=self.worker,
            store=self.store,
            blobs=self.blobs,
            settings=self.settings,
        )
        return await self.batch(batch_id)

    async def blob(self, key: str) -> bytes:
        return b"".join([piece async for piece in self.blobs.read(key)])

    async def file_lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if file_id is None:
            return []
        return jsonl(await self.blob(f"files/{file_id}"))


async def open_pipeline(settings: Settings) -> AsyncIterator[Pipeline]:
    """The body of the `pipeline` fixture (tests/unit/conftest.py)."""
    store = await open_store(settings.resolved_database_url)
    blobs = open_blobs(settings)
    await blobs.start()
    pipeline = Pipeline(settings, store, blobs)
    await pipeline.models.start()
    flushing = asyncio.create_task(pipeline.flusher.run_forever(), name="flusher")
    try:
        yield pipeline
    finally:
        flushing.cancel()
        await asyncio.gather(flushing, return_exceptions=True)
        await pipeline.models.close()
        await blobs.close()
        await store.close()
