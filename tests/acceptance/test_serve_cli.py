"""`overnight serve` as a user meets it in a terminal: a second server on a
data directory in use, and Ctrl-C (which reaches every process of the
terminal's process group, the worker processes too)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from overnight.testing.fake_upstream import FakeUpstream

from helpers import ROOT, ServerProcess, fake_model, free_port, write_config


def test_a_second_server_on_a_data_dir_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        config = write_config(tmp_path / "config.toml", [fake_model(upstream.url)])
        first = ServerProcess(tmp_path / "data", config=config).start()
        try:
            second = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "overnight",
                    "serve",
                    "--port",
                    str(free_port()),
                    "--data-dir",
                    str(tmp_path / "data"),
                    "--config",
                    str(config),
                ],
                capture_output=True,
                text=True,
                cwd=str(ROOT),
                env={**os.environ, "COLUMNS": "200"},  # one line, unwrapped
                timeout=60,
            )
        finally:
            first.stop()
    output = second.stdout + second.stderr
    assert second.returncode == 1, output
    assert output.strip().splitlines() == [
        f"error: {tmp_path / 'data'} is in use by another overnight process; "
        "stop it, or use --data-dir for a second one."
    ]


def test_ctrl_c_stops_the_server_and_its_workers_without_a_false_alarm(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        config = write_config(tmp_path / "config.toml", [fake_model(upstream.url)])
        server = ServerProcess(tmp_path / "data", config=config).start()
        try:
            processes = [psutil.Process(server.pid), *psutil.Process(server.pid).children()]
            assert len(processes) == 2  # the API process and one worker process
            for process in processes:  # what a terminal's Ctrl-C does
                process.send_signal(signal.SIGINT)
            gone, alive = psutil.wait_procs(processes, timeout=20)
        finally:
            server.stop()
    assert alive == []
    # psutil reaps them, so the exit status is read from it, not Popen (a
    # grandchild's is not known to it). 130 is how a program stopped by
    # Ctrl-C exits (uvicorn passes the SIGINT on once it has shut down); a
    # crash or a failed shutdown would be 1.
    exits = {process.pid: process.returncode for process in gone}
    assert exits[server.pid] == 130, exits
    log = server.log()
    assert "restarting" not in log, log
    assert "stopped; leases released" in log
