"""A live overnight server for the client commands: the real app and its
worker served by uvicorn on a free loopback port, in a thread of the test
process (no process to start, so a module pays well under a second for
it), reached by the CLI over real HTTP, in CliRunner or in a child process
alike."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from overnight.api.app import create_app
from overnight.runtime import Runtime
from overnight.settings import Settings, TenantSettings
from overnight.testing.fake_upstream import FakeUpstream

from helpers import fake_model, free_port
from inprocess import api_settings

#: The one key the live server knows (a tenant's), so a wrong one is refused.
API_KEY = "sk-cli-test"


class LiveServer:
    """The app with its lifespan (store, blobs, worker) under uvicorn, on
    an event loop of its own thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.runtime = Runtime(settings)
        config = uvicorn.Config(
            create_app(settings, self.runtime),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            loop="asyncio",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:  # uvicorn offers a flag, not an event
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the live server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def live_settings(data_dir: Path, upstream: FakeUpstream, **overrides: Any) -> Settings:
    return api_settings(
        data_dir,
        worker=True,
        models=[
            fake_model(upstream.url),
            fake_model(upstream.url, name="fake-small", max_concurrency=1),
        ],
        tenants=[TenantSettings(name="cli", api_keys=[API_KEY])],
        chunk_lines=10,
        **overrides,
    )


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[LiveServer]:
    """One live server per test module, serving `fake-model` and
    `fake-small` (one request at a time) from the module's fake upstream."""
    server = LiveServer(live_settings(tmp_path_factory.mktemp("live") / "data", upstream))
    server.start()
    yield server
    server.stop()
