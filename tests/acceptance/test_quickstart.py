"""`make run` runs examples/quickstart.py: it must reach a completed batch
with real model output, keep serving, and stop cleanly on Ctrl-C."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from helpers import ROOT, free_port

pytestmark = pytest.mark.embedded


def test_quickstart_completes_a_batch_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "OVERNIGHT_PORT": str(port),
        "OVERNIGHT_DATA_DIR": str(tmp_path / "data"),
        "COLUMNS": "200",
    }
    script = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(tmp_path),
    )
    assert script.stdout is not None
    output = b""
    deadline = time.monotonic() + 180
    try:
        while b"Press Ctrl-C to stop" not in output:
            assert script.poll() is None, output.decode(errors="replace")
            assert time.monotonic() < deadline, output.decode(errors="replace")
            ready, _, _ = select.select([script.stdout], [], [], 1)
            if ready:
                output += os.read(script.stdout.fileno(), 65536)
        text = output.decode(errors="replace")
        assert "Batch completed: 20 succeeded, 0 failed" in text
        assert "request-1" in text and "What is the capital of France?" in text
        # Still serving after the batch.
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        script.send_signal(signal.SIGINT)
        rest, _ = script.communicate(timeout=30)
        assert script.returncode == 0
        assert b"Stopped." in rest
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
