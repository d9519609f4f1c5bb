"""A webhook receiver for tests: a real HTTP server on a free loopback port,
in a thread, that records every POST and answers as told; and the check a
real receiver makes of each delivery, with the real `openai` SDK and the
`standardwebhooks` package.

A thread, so that sync tests (a `kill -9` of a server process) and async
ones (the app in this event loop) use the same receiver; async tests wait
on it with `await receiver.until(...)`, off the loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import standardwebhooks

from helpers import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    """Records each POST; answers the codes in `answers` first, one each,
    then `status` (200); or a redirect to `redirect_to`; after `hang`
    seconds of silence, if set."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[Received] = []
        self.status = 200
        self.answers: list[int] = []
        self.redirect_to: str | None = None
        self.hang = 0.0
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._changed:
                    receiver.received.append(Received(self.path, headers, body))
                    receiver._changed.notify_all()
                if receiver.hang:
                    time.sleep(receiver.hang)
                if receiver.redirect_to is not None:
                    self.send_response(307)
                    self.send_header("location", receiver.redirect_to)
                else:
                    with receiver._changed:
                        status = receiver.answers.pop(0) if receiver.answers else receiver.status
                    self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(
        self, enough: Callable[[list[Received]], bool], timeout: float = 20
    ) -> list[Received]:
        """Every delivery so far, once `enough` says so; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not enough(self.received):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.received)} deliveries after {timeout} s")
                self._changed.wait(left)
            return list(self.received)

    async def until(
        self, enough: Callable[[list[Received]], bool], within: float = 20
    ) -> list[Received]:
        return await asyncio.to_thread(self.wait_for, enough, within)

    def batch_ids(self) -> set[str]:
        with self._changed:
            return {r.event["data"]["id"] for r in self.received}


@functools.cache
def _sdk() -> openai.OpenAI:
    """One client for every check: each new one loads the CA bundle (26 ms
    of CPU), and a test checks a hundred deliveries."""
    return openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")


def verified(delivery: Received, secret: str) -> dict[str, Any]:
    """The event, once both the openai SDK and `standardwebhooks` have
    verified its signature with `secret` (each raises if it is wrong)."""
    event = _sdk().webhooks.unwrap(delivery.body, delivery.headers, secret=secret)
    assert event.id == delivery.event["id"] and event.type == delivery.event["type"]
    assert event.data.id == delivery.event["data"]["id"]
    standardwebhooks.Webhook(secret).verify(delivery.body, delivery.headers)
    return delivery.event
