"""Fixtures: a fake model server, and real `overnight serve` processes."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import ServerProcess, fake_model, write_config

pytest_plugins = ["backends", "inprocess"]

if TYPE_CHECKING:
    import openai

    from overnight.testing.fake_upstream import FakeUpstream

    from backends import Backend

#: The files that take longest (seconds of wall time in a run of the whole
#: suite on 2 cores, 2026-12-02), which start first. pytest-xdist (`--dist
#: loadfile`) hands files out in collection order as workers free up;
#: started first, the long files run while every worker is busy, and the
#: run ends on short ones (longest processing time first: the last worker
#: to finish no longer starts a 60 s file when the others are done). The
#: Makefile passes `--no-loadscope-reorder`, without which xdist would put
#: the files with the most tests first. A file missing here only runs later.
SLOWEST_FIRST = [
    "tests/test_bench_smoke.py",  # 82
    "tests/acceptance/test_crash_safety.py",  # 50
    "tests/acceptance/test_limits.py",  # 43
    "tests/acceptance/test_schema_fuzzing.py",  # 38
    "tests/acceptance/test_scale_out.py",  # 37
    "tests/acceptance/test_webhooks_crash.py",  # 36
    "tests/acceptance/test_embedded_model.py",  # 36
    "tests/acceptance/test_poisoned_chunks.py",  # 33
    "tests/acceptance/test_upstream_faults.py",  # 31
    "tests/acceptance/test_openai_batches.py",  # 31
    "tests/acceptance/test_together_conformance.py",  # 29
    "tests/acceptance/test_together1_sdk.py",  # 29
    "tests/unit/test_embedded_batching.py",  # 28
    "tests/ui/test_browser.py",  # 26
    "tests/acceptance/test_hostile_input.py",  # 22
    "tests/acceptance/test_fair_scheduling.py",  # 21
    "tests/acceptance/test_open_files.py",  # 21
    "tests/acceptance/test_quickstart.py",  # 21
    "tests/acceptance/test_together_uploads.py",  # 19
    "tests/acceptance/test_tenants.py",  # 18
    "tests/acceptance/test_webhooks.py",  # 17
    "tests/cli/test_run_resume.py",  # 17
    "tests/acceptance/test_rate_limits.py",  # 15
    "tests/acceptance/test_flat_memory.py",  # 15
    "tests/acceptance/test_together_sdk.py",  # 15
]


def pytest_configure(config: pytest.Config) -> None:
    """Tests that press Ctrl-C on a process they start need it to take
    SIGINT; one started under a shell's background job (`make test &` in a
    script) inherits SIGINT ignored, and so would every process it starts."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest files first (see SLOWEST_FIRST); the order within a file,
    and of the other files, stays as collected."""
    rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    from overnight.testing.fake_upstream import FakeUpstream

    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _calm_upstream(request: pytest.FixtureRequest) -> None:
    """Tests that tune the shared fake upstream start from a clean slate."""
    if "upstream" in request.fixturenames:
        fake: FakeUpstream = request.getfixturevalue("upstream")
        fake.configure(
            latency=0, latency_jitter=0, error_rate=0, rate_limit_rate=0, reset_rate=0, hang_rate=0
        )


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def start_server(tmp_path: Path, backend: Backend) -> Iterator[ServerFactory]:
    """Start servers for one test, on the module's backend; all are stopped
    at its end."""
    started: list[ServerProcess] = []

    def start(
        models: list[dict[str, Any]] | None = None,
        *,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        data_dir: Path | None = None,
        open_files: int | None = None,
        **settings: Any,
    ) -> ServerProcess:
        config = None
        if models is not None or settings:
            if "database_url" not in settings:  # on the module's backend
                settings = {**backend.settings(), **settings}
            config = write_config(
                tmp_path / f"config-{len(started)}.toml", models or [], **settings
            )
        server = ServerProcess(
            data_dir or tmp_path / f"data-{len(started)}",
            config=config,
            env=env,
            args=args,
            open_files=open_files,
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream, backend: Backend
) -> Iterator[ServerProcess]:
    """One server per test module and backend, serving `fake-model` (and
    `fake-small`, one request at a time)."""
    root = tmp_path_factory.mktemp("server")
    config = write_config(
        root / "config.toml",
        [fake_model(upstream.url), fake_model(upstream.url, name="fake-small", max_concurrency=1)],
        chunk_lines=10,
        # The worker in the server's process: 1.8 CPU-seconds less a start.
        # Where the process split is the point (Ctrl-C, a worker that dies,
        # kill -9, scale-out), those tests start their own servers.
        worker_processes=0,
        **backend.settings(),
    )
    process = ServerProcess(root / "data", config=config).start()
    yield process
    process.stop()


def openai_client(server: ServerProcess) -> openai.OpenAI:
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="test-key", max_retries=0)


@pytest.fixture
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai_client(server) as sdk:
        yield sdk
