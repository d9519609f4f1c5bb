"""Fixtures of the unit tests that drive the runner in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from overnight.testing.fake_upstream import FakeUpstream
from unit.pipeline import Pipeline, open_pipeline, pipeline_settings


@pytest.fixture
async def pipeline(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Pipeline]:
    """A temporary SQLite store and local blobs, the fake upstream's model,
    and a flusher running: see tests/unit/pipeline.py."""
    async for opened in open_pipeline(pipeline_settings(tmp_path, upstream.url)):
        yield opened
