"""Shared test helpers: a real `overnight serve` process on a free loopback
port, and small utilities to drive it."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent

#: Fast loops for tests; production defaults are in docs/configuration.md.
FAST_ENV = {
    "OVERNIGHT_POLL_INTERVAL": "0.05",
    "OVERNIGHT_IDLE_POLL_INTERVAL": "0.5",
    "OVERNIGHT_FLUSH_INTERVAL": "0.1",
    "OVERNIGHT_HEARTBEAT_INTERVAL": "1",
    "OVERNIGHT_LEASE_TTL": "5",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def write_config(path: Path, models: list[dict[str, Any]], **settings: Any) -> Path:
    lines = [f"{key} = {toml_value(value)}" for key, value in settings.items()]
    for model in models:
        lines.append("")
        lines.append("[[models]]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in model.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def fake_model(url: str, name: str = "fake-model", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "backend": "openai",
        "base_url": url,
        "max_concurrency": 16,
        "retry_backoff": 0.01,
        "max_retry_delay": 0.1,
        **extra,
    }


class ManagedProcess:
    """A child process with its output in a log file, stopped by its PID."""

    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    #: At most this many open files (soft and hard limit), as on a machine
    #: that allows few; None: this process's limits.
    open_files: int | None = None

    def _spawn(self, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(ROOT),
                preexec_fn=None if self.open_files is None else self._limit_open_files,
            )
        return self.process

    def _limit_open_files(self) -> None:  # in the child, before exec
        assert self.open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def kill(self) -> None:
        """`kill -9`: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


@functools.cache
def local_http() -> httpx.Client:
    """One client for this process's plain calls to local servers in
    loops. `httpx.get` builds a client per call, and each client an SSL
    context, whose CA bundle takes about 26 ms of CPU to load: the polls
    of a server's start alone cost most of a CPU-second."""
    return httpx.Client()


class ServerProcess(ManagedProcess):
    """`overnight serve` as a user runs it, in its own process."""

    def __init__(
        self,
        data_dir: Path,
        *,
        config: Path | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        open_files: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.open_files = open_files
        self.port = free_port()
        self.config = config
        self.env = {**os.environ, **FAST_ENV, **(env or {})}
        self.args = args or []
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ServerProcess:
        command = [
            sys.executable,
            "-m",
            "overnight",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]
        if self.config is not None:
            command += ["--config", str(self.config)]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        process = self._spawn(command, self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                health = local_http().get(f"{self.url}/health", timeout=1)
                # Ready when it answers and, unless it runs no worker, a
                # worker (in its own process) has registered.
                if health.status_code == 200 and (
                    "--no-worker" in self.args or health.json().get("workers")
                ):
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start in {timeout} s:\n{self.log()}")


def wait_for_batch(
    client: Any,
    batch_id: str,
    *,
    timeout: float = 60,
    statuses: tuple[str, ...] = ("completed", "failed", "expired", "cancelled"),
) -> Any:
    """Poll through the SDK until the batch reaches one of `statuses`."""
    deadline = time.monotonic() + timeout
    batch = client.batches.retrieve(batch_id)
    while batch.status not in statuses:
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} still {batch.status} after {timeout} s")
        time.sleep(0.05)
        batch = client.batches.retrieve(batch_id)
    return batch


def chat_lines(
    n: int, *, model: str = "fake-model", prefix: str = "req", extra: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": f"message number {i}"}],
                **(extra or {}),
            },
        }
        for i in range(n)
    ]


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def read_jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


class WorkerProcess(ManagedProcess):
    """`overnight worker`: execution only, no API."""

    def __init__(self, data_dir: Path, *, config: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.config = config
        self.env = {**os.environ, **FAST_ENV, **(env or {})}
        self.log_path = data_dir.parent / f"worker-{data_dir.name}.log"

    def start(self, timeout: float = 60) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "overnight",
            "worker",
            "--data-dir",
            str(self.data_dir),
            "--config",
            str(self.config),
        ]
        process = self._spawn(command, self.env)
        deadline = time.monotonic() + timeout
        while "starting" not in self.log():
            if process.poll() is not None:
                raise RuntimeError(f"worker exited with {process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker did not start in {timeout} s:\n{self.log()}")
            time.sleep(0.1)
        return self


def keyed_server(
    root: Path,
    models: list[dict[str, Any]],
    tenants: list[dict[str, Any]],
    *,
    admin_key_hashes: list[str] | None = None,
    **settings: Any,
) -> ServerProcess:
    """A started server whose tenants (and admin keys) come from the
    environment, as an operator might set them; the rest from a config."""
    config = write_config(root / "config.toml", models, **settings)
    env = {"OVERNIGHT_TENANTS": json.dumps(tenants)}
    if admin_key_hashes:
        env["OVERNIGHT_ADMIN_API_KEY_HASHES"] = json.dumps(admin_key_hashes)
    return ServerProcess(root / "data", config=config, env=env).start()


def message_requests(
    n: int, model: str = "fake-model", prefix: str = "q", **params: Any
) -> list[dict[str, Any]]:
    """The `requests` of an Anthropic Message Batch create."""
    return [
        {
            "custom_id": f"{prefix}{i}",
            "params": {
                "model": model,
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"{prefix} number {i}"}],
                **params,
            },
        }
        for i in range(n)
    ]


async def wait_for_message_batch(sdk: Any, batch_id: str, *, within: float = 30) -> Any:
    """Poll through the async `anthropic` SDK until the batch has ended."""
    import asyncio

    deadline = time.monotonic() + within
    batch = await sdk.messages.batches.retrieve(batch_id)
    while batch.processing_status != "ended":
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} still {batch.processing_status} after {within} s")
        await asyncio.sleep(0.05)
        batch = await sdk.messages.batches.retrieve(batch_id)
    return batch
