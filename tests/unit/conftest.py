"""Fixtures of the unit tests that drive the use cases and the runner
in-process.

For the use cases (service.py, signed_uploads.py): a real store on a
temporary SQLite and real local blobs, opened once per module; each test
gets its own tenant, so tests never see each other's rows, and a `Service`
with a clock the test moves by hand. For the runner: `pipeline`, see
tests/unit/pipeline.py."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from overnight.blobs import BlobStore, open_blobs
from overnight.runner.wakeups import Wakeups
from overnight.service import Service
from overnight.settings import Settings
from overnight.store.sql import SqlStore, open_store
from overnight.testing.fake_upstream import FakeUpstream
from overnight.types import TenantId
from unit.pipeline import Pipeline, open_pipeline, pipeline_settings


@dataclass
class Clock:
    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Storage:
    store: SqlStore
    blobs: BlobStore
    data_dir: Path

    def service(self, clock: Clock, **settings: Any) -> Service:
        return Service(
            store=self.store,
            blobs=self.blobs,
            settings=Settings(data_dir=self.data_dir, worker=False, **settings),
            model_names=frozenset({"fake-model"}),
            wakeups=Wakeups(),
            clock=clock,
        )

    def blob_keys(self, prefix: str) -> list[str]:
        """The keys under `prefix` that hold bytes (local blobs are files)."""
        root = self.data_dir / "blobs"
        keys = (str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def storage(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Storage]:
    data_dir = tmp_path_factory.mktemp("service")
    settings = Settings(data_dir=data_dir, worker=False)
    store = await open_store(settings.resolved_database_url)
    blobs = open_blobs(settings)
    await blobs.start()
    yield Storage(store, blobs, data_dir)
    await blobs.close()
    await store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tenant() -> TenantId:
    return TenantId(f"t{secrets.token_hex(4)}")


@pytest.fixture
async def pipeline(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Pipeline]:
    """A temporary SQLite store and local blobs, the fake upstream's model,
    and a flusher running: see tests/unit/pipeline.py."""
    async for opened in open_pipeline(pipeline_settings(tmp_path, upstream.url)):
        yield opened
