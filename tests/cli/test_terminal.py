"""What a person sees in a terminal: `batches submit --wait` in a real
pseudo-terminal (pexpect) draws a live progress line, and Ctrl-C detaches
from the batch, which goes on on the server (or, with
`--cancel-on-interrupt`, cancels it)."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pexpect

from cli.conftest import API_KEY, LiveServer
from helpers import chat_lines, jsonl


def submit_and_wait(server: LiveServer, source: Path, *extra: str) -> pexpect.spawn:
    """`overnight batches submit FILE --wait` in a pseudo-terminal 200
    columns wide, as a person would type it."""
    return pexpect.spawn(
        sys.executable,
        [
            "-m",
            "overnight",
            "batches",
            "submit",
            str(source),
            "--wait",
            "--interval",
            "0.2",
            *extra,
        ],
        cwd=str(source.parent),
        env={
            **os.environ,
            "OVERNIGHT_BASE_URL": server.url,
            "OVERNIGHT_API_KEY": API_KEY,
            "TERM": "xterm",
        },
        dimensions=(24, 200),
        timeout=30,
    )


def slow_batch(path: Path, count: int) -> Path:
    """One request at a time (`fake-small`), 30 ms each: a few seconds."""
    lines = chat_lines(count, model="fake-small", extra={"x_fake": {"latency": 0.03}})
    path.write_bytes(jsonl(lines))
    return path


def batch_of(server: LiveServer, batch_id: str) -> dict[str, Any]:
    answer = httpx.get(
        f"{server.url}/v1/batches/{batch_id}", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def test_the_progress_line_moves_and_ctrl_c_detaches(
    live_server: LiveServer, tmp_path: Path
) -> None:
    child = submit_and_wait(live_server, slow_batch(tmp_path / "slow.jsonl", 200))
    try:
        child.expect(r"created (batch_\w+)")
        batch_id = child.match.group(1).decode()
        # The live line: status, done/total, failed, requests/s and ETA, with
        # the rate measured once two looks are apart.
        child.expect(r"in_progress.* (\d+)/200 +0 failed +[\d.]+ req/s +ETA \d+:\d\d")
        seen = int(child.match.group(1))
        child.sendintr()
        child.expect(
            f"detached; {batch_id} goes on. Re-attach with: overnight batches watch {batch_id}"
        )
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130
    assert seen < 180
    # The batch did not stop with the command: it goes on without it.
    deadline = time.monotonic() + 30
    batch = batch_of(live_server, batch_id)
    while batch["request_counts"]["completed"] < seen + 10:
        assert batch["status"] == "in_progress", batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.1)
        batch = batch_of(live_server, batch_id)
    httpx.post(
        f"{live_server.url}/v1/batches/{batch_id}/cancel",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )


def test_cancel_on_interrupt_cancels_instead(live_server: LiveServer, tmp_path: Path) -> None:
    child = submit_and_wait(
        live_server, slow_batch(tmp_path / "cancel.jsonl", 200), "--cancel-on-interrupt"
    )
    try:
        child.expect(r"created (batch_\w+)")
        batch_id = child.match.group(1).decode()
        child.expect(r"in_progress")
        child.sendintr()
        child.expect(re.escape(f"cancelling {batch_id}"))
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130
    # The cancel was sent: the batch ends cancelled (by way of cancelling
    # and finalizing, which it may be in when the command has exited).
    deadline = time.monotonic() + 30
    batch = batch_of(live_server, batch_id)
    while batch["status"] in ("cancelling", "finalizing"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.1)
        batch = batch_of(live_server, batch_id)
    assert batch["status"] == "cancelled", batch
