"""`overnight run` stopped and run again, as a person would: Ctrl-C once,
then `kill -9` five times during a 20,000-line run, the same command
re-run each time. The output holds every line exactly once, and the
requests sent twice (counted by the fake upstream, which sees each line's
custom_id as a tag) stay within the durability window per stop.

Each run is a process of its own, stopped by a real signal; what it skips
is the interpreter's start and imports (about 2 s of a 2-core machine per
run): a pre-imported parent forks each run (`Forker`), so seven runs cost
what their work costs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from overnight.testing.fake_upstream import FakeUpstream

from helpers import ROOT, chat_lines, fake_model, jsonl, read_jsonl, write_config
from inprocess import FAST_LOOPS

LINES = 20_000
KILLS = 5
#: Requests each run sends before it is stopped: a few seconds of a cycle.
STEP = 2_000
CHUNK_LINES = 500
FLUSH_LINES = 50
CONCURRENCY = 32


#: The forking parent: imports what `overnight run` imports, then for each
#: order on stdin forks a child that runs the command with its stdout and
#: stderr in files, says the child's pid, waits for it and says how it ended. It has
#: no threads, so forking it is safe.
FORKER = """
import json, os, sys
from overnight.cli import app
import overnight.backends.http, overnight.offline, overnight.runner.worker

for line in sys.stdin:
    order = json.loads(line)
    pid = os.fork()
    if pid == 0:
        for fd, path in ((1, order["stdout"]), (2, order["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        try:
            app(order["argv"], prog_name="overnight")
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class Forker:
    """Runs `overnight ...` commands one at a time as forked processes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.runs = 0
        self.process = subprocess.Popen(
            [sys.executable, "-c", FORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(ROOT),
            text=True,
        )

    def start(self, argv: list[str]) -> Run:
        self.runs += 1
        stdout = self.folder / f"run-{self.runs}.out"
        stderr = self.folder / f"run-{self.runs}.err"
        order = {"argv": argv, "stdout": str(stdout), "stderr": str(stderr)}
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(order) + "\n")
        self.process.stdin.flush()
        pid = json.loads(self.process.stdout.readline())["pid"]
        return Run(self, pid, stdout, stderr)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)


class Run:
    """One forked `overnight` command."""

    def __init__(self, forker: Forker, pid: int, stdout: Path, stderr: Path) -> None:
        self.forker = forker
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.code: int | None = None

    def signal(self, number: int) -> None:
        os.kill(self.pid, number)

    def wait(self) -> int:
        """The exit code (negative: the signal that ended it)."""
        if self.code is None:
            assert self.forker.process.stdout is not None
            line = self.forker.process.stdout.readline()
            assert line, "the forking parent died"
            self.code = int(json.loads(line)["exit"])
        return self.code

    def output(self) -> str:
        """Both its streams, for a failed assertion to show."""
        return self.stdout.read_text() + self.stderr.read_text()


def wait_for_sends(upstream: FakeUpstream, count: int, run: Run) -> None:
    """Until the upstream has seen `count` requests in all (the run is then
    mid-way, with results in flight and unflushed)."""
    deadline = time.monotonic() + 60
    while upstream.stats()["requests"] < count:
        assert time.monotonic() < deadline, run.output()
        time.sleep(0.01)


def test_ctrl_c_and_kill_9_five_times_then_every_line_exactly_once(tmp_path: Path) -> None:
    lines = chat_lines(LINES)
    for line in lines:
        line["body"]["x_fake"] = {"tag": line["custom_id"]}
    source = tmp_path / "big.jsonl"
    source.write_bytes(jsonl(lines))
    output = tmp_path / "out.jsonl"

    with FakeUpstream() as upstream:
        config = write_config(
            tmp_path / "overnight.toml",
            [fake_model(upstream.url, max_concurrency=CONCURRENCY, adaptive=False)],
            chunk_lines=CHUNK_LINES,
            flush_lines=FLUSH_LINES,
            **FAST_LOOPS,
        )
        command = [
            "run",
            str(source),
            "-o",
            str(output),
            "--state-dir",
            str(tmp_path / "state"),
            "-c",
            str(config),
            "--json",
        ]
        forker = Forker(tmp_path)
        try:
            # Ctrl-C: the run hands its work back and says how to go on.
            run = forker.start(command)
            wait_for_sends(upstream, STEP, run)
            run.signal(signal.SIGINT)
            assert run.wait() == 130, run.output()
            assert json.loads(run.stdout.read_text())["status"] == "interrupted"

            # kill -9, five times, each once the run has sent STEP more requests.
            for kill in range(KILLS):
                run = forker.start(command)
                wait_for_sends(upstream, (kill + 2) * STEP, run)
                run.signal(signal.SIGKILL)
                assert run.wait() == -signal.SIGKILL
                assert not output.exists()  # results appear only whole, at the end

            final = forker.start(command)
            assert final.wait() == 0, final.output()
        finally:
            forker.close()
        sends = upstream.stats()["by_tag"]

    answer = json.loads(final.stdout.read_text())
    assert answer["resumed"] is True and answer["status"] == "completed"
    assert answer["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
    # Exactly once: every input line in the output, once.
    seen = Counter(row["custom_id"] for row in read_jsonl(output.read_text()))
    assert len(seen) == LINES and set(seen.values()) == {1}
    assert read_jsonl((tmp_path / "out.errors.jsonl").read_text()) == []
    # Every line was sent; those sent again are bounded per stop.
    assert set(sends) == {line["custom_id"] for line in lines}
    resent = sum(sends.values()) - LINES
    stops = KILLS + 1
    bound = 2 * FLUSH_LINES + CONCURRENCY  # unwritten results + requests in flight
    print(
        f"{stops} stops (1 Ctrl-C, {KILLS} kill -9): {resent} requests sent again "
        f"(bound {bound} per stop)"
    )
    assert resent <= stops * bound
