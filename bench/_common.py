"""Shared pieces of the benchmarks: processes, input files, measurements.

Every benchmark starts its own processes on loopback (a fake upstream, an
overnight server) and stops them by PID when done.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.popen.pid)

    def tree(self) -> list[psutil.Process]:
        """The process and its worker processes."""
        return [self.ps, *self.ps.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """CPU used so far by the process and its live children."""
        total = 0.0
        for process in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@contextlib.contextmanager
def fake_upstream(workdir: Path, name: str = "upstream", **knobs: float) -> Iterator[Proc]:
    """The fake model server in its own process (uvloop), answering at once
    unless `knobs` say otherwise; it logs to `workdir/<name>.log`."""
    args = [sys.executable, "-m", "overnight.testing.fake_upstream", "--port", "0"]
    for knob, value in knobs.items():
        args += [f"--{knob.replace('_', '-')}", str(value)]
    log = workdir / f"{name}.log"
    popen = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log.open("wb"))
    assert popen.stdout is not None
    line = popen.stdout.readline().decode()
    url = line.strip().rsplit(" ", 1)[-1]
    proc = Proc(popen, url, log)
    try:
        yield proc
    finally:
        proc.stop()


def write_config(path: Path, upstream_url: str | None, concurrency: int, **settings: Any) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    if upstream_url is not None:
        lines += [
            "[[models]]",
            'name = "bench-model"',
            f'base_url = "{upstream_url}"',
            f"max_concurrency = {concurrency}",
            "adaptive = false",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


@functools.cache
def local_http() -> httpx.Client:
    """One client for the polls: `httpx.get` builds a client per call,
    each loading the CA bundle (about 26 ms of CPU)."""
    return httpx.Client()


def wait_until_serving(popen: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Until `overnight serve` at `url` answers /health with a worker up;
    its log in the error when it exits or takes over a minute."""
    deadline = time.monotonic() + 60
    while True:
        if popen.poll() is not None:
            raise RuntimeError(log.read_text())
        with contextlib.suppress(httpx.HTTPError):
            health = local_http().get(f"{url}/health", timeout=1)
            if health.status_code == 200 and health.json().get("workers"):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"server did not start:\n{log.read_text()}")
        time.sleep(0.1)


@contextlib.contextmanager
def overnight_server(
    workdir: Path, config: Path, *, env: dict[str, str] | None = None
) -> Iterator[Proc]:
    port = free_port()
    log = workdir / "server.log"
    popen = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "overnight",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(workdir / "data"),
            "--config",
            str(config),
            "--log-level",
            "warning",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    proc = Proc(popen, url, log)
    try:
        wait_until_serving(popen, url, log)
        yield proc
    finally:
        proc.stop()


def chat_file(path: Path, lines: int, *, model: str = "bench-model", pad: int = 0) -> Path:
    """A batch input file of `lines` short chat requests (written fast)."""
    padding = "x" * pad
    with path.open("w") as handle:
        for i in range(lines):
            handle.write(
                f'{{"custom_id": "r-{i}", "method": "POST", "url": "/v1/chat/completions", '
                f'"body": {{"model": "{model}", "messages": [{{"role": "user", '
                f'"content": "hi {i}{padding}"}}], "max_tokens": 8}}}}\n'
            )
    return path


ENDED = ("completed", "failed", "cancelled", "expired")


def wait_until_ended(client: Any, batch: Any, interval: float) -> Any:
    """Poll a batch (openai SDK) every `interval` seconds until it ends."""
    while batch.status not in ENDED:
        time.sleep(interval)
        batch = client.batches.retrieve(batch.id)
    return batch


def table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    out = [
        f"\n{title}",
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)) + " |",
    ]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        out.append(
            "| " + " | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=False)) + " |"
        )
    return "\n".join(out)
