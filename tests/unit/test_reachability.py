"""A worker says at start-up which model servers it cannot reach, and why,
without waiting for them."""

from __future__ import annotations

import asyncio
import logging

import pytest

from overnight.runner.models import Models
from overnight.runner.reachability import why_unreachable
from overnight.settings import ModelSettings

from helpers import free_port


async def test_a_refused_port_and_a_listening_one() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await why_unreachable(f"http://127.0.0.1:{port}/v1") is None
        assert await why_unreachable(f"http://127.0.0.1:{free_port()}/v1") == "connection refused"
        assert await why_unreachable("http:///v1") == "no host in the URL"
    finally:
        server.close()
        await server.wait_closed()


async def test_starting_the_models_warns_of_each_unreachable_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    up = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    down = f"http://127.0.0.1:{free_port()}/v1"
    models = Models(
        [
            ModelSettings(name="up-model", base_url=up),
            ModelSettings(name="down-model", base_urls=[up, down], outage_patience=90),
            ModelSettings(name="impatient", base_url=down, max_attempts=4, outage_patience=0),
        ]
    )
    caplog.set_level(logging.WARNING, logger="overnight.runner")
    try:
        await models.start()
        for _ in range(200):
            if len(caplog.records) >= 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the up server's check has ended too
        assert sorted(r.getMessage() for r in caplog.records) == [
            f"model 'down-model': cannot reach its server at {down} (connection refused); "
            "its requests will wait for it for up to 90 s, then fail",
            f"model 'impatient': cannot reach its server at {down} (connection refused); "
            "until it is up, each of its requests fails after 4 tries",
        ]
    finally:
        await models.close()
        server.close()
        await server.wait_closed()
