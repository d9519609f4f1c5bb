"""overnight in-process: the ASGI app with its lifespan run (store, blobs,
models and, when asked, the worker in the same event loop), called over
httpx's ASGI transport. No process starts, no port opens: a test whose
point is an answer, not the process, pays milliseconds instead of a
server start.

Two shapes of the same thing:

- `InProcess` (async): `async with in_process(settings) as api`, then
  `api.client(key)` (httpx) or `api.openai(key)` / `api.together(key)` /
  `api.anthropic(key)` (the official async SDKs, with only their transport
  swapped). The fixture
  `start_api` opens one per call and closes them all at the test's end.
- `BackgroundApi` (sync): the same app on an event loop of its own thread,
  so that sync tests and the sync SDKs drive it as they would a server; a
  module-scoped fixture can hold one.

`api_settings` builds the Settings: no worker unless asked, and, with one,
the fast loops tests use (tests/helpers.py FAST_ENV) in this process.

The SDKs and the app are imported where first used: pytest's controller
process loads this plugin too, and runs no test (importing them here cost
it about 5 s of CPU before the workers could start).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
import requests
import urllib3

from helpers import fake_model

if TYPE_CHECKING:
    import anthropic
    import openai
    import together
    from fastapi import FastAPI

    from overnight.runtime import Runtime
    from overnight.settings import Settings
    from overnight.testing.fake_upstream import FakeUpstream

    from backends import Backend

BASE_URL = "http://overnight.test"

#: The worker's loops, fast, as FAST_ENV sets them for `overnight serve`.
FAST_LOOPS: dict[str, Any] = {
    "poll_interval": 0.05,
    "idle_poll_interval": 0.5,
    "flush_interval": 0.1,
    "heartbeat_interval": 1,
    "lease_ttl": 5,
}

T = TypeVar("T")

log = logging.getLogger(__name__)


def api_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for an in-process app: no worker unless `worker=True`, in
    which case it runs in this event loop (no worker processes), fast."""
    from overnight.settings import Settings

    if overrides.get("worker"):
        return Settings(data_dir=data_dir, **{"worker_processes": 0, **FAST_LOOPS, **overrides})
    return Settings(data_dir=data_dir, **{"worker": False, **overrides})


def bearer(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


class InProcess:
    """One app whose lifespan runs; clients over ASGI, closed with it."""

    def __init__(self, app: FastAPI, runtime: Runtime, stack: AsyncExitStack) -> None:
        self.app = app
        self.runtime = runtime
        self.transport = httpx.ASGITransport(app=app)
        self._stack = stack

    def http(self, key: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        """A raw httpx client; `key` becomes its bearer token."""
        headers = {**bearer(key), **kwargs.pop("headers", {})}
        client = httpx.AsyncClient(
            transport=self.transport, base_url=BASE_URL, headers=headers, **kwargs
        )
        self._stack.push_async_callback(client.aclose)
        return client

    def openai(self, key: str = "test-key") -> openai.AsyncOpenAI:
        """The official OpenAI SDK, unchanged but for its transport."""
        import openai

        sdk = openai.AsyncOpenAI(
            base_url=f"{BASE_URL}/v1",
            api_key=key,
            max_retries=0,
            http_client=httpx.AsyncClient(transport=self.transport),
        )
        self._stack.push_async_callback(sdk.close)
        return sdk

    def anthropic(self, key: str = "test-key") -> anthropic.AsyncAnthropic:
        """The official Anthropic SDK, unchanged but for its transport (it
        speaks through httpx2, httpx's successor)."""
        import anthropic
        import httpx2

        sdk = anthropic.AsyncAnthropic(
            base_url=f"{BASE_URL}/anthropic",
            api_key=key,
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=self.app)),
        )
        self._stack.push_async_callback(sdk.close)
        return sdk

    def together(self, key: str = "test-key") -> together.AsyncTogether:
        """The official Together SDK, unchanged but for its transport."""
        import together

        sdk = together.AsyncTogether(
            base_url=f"{BASE_URL}/together",
            api_key=key,
            max_retries=0,
            http_client=httpx.AsyncClient(transport=self.transport),
        )
        self._stack.push_async_callback(sdk.close)
        return sdk


@asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[InProcess]:
    from overnight.api.app import create_app
    from overnight.runtime import Runtime

    runtime = Runtime(settings)
    app = create_app(settings, runtime)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        # Clients close before the lifespan ends (the stack unwinds last in,
        # first out).
        yield InProcess(app, runtime, stack)


ApiFactory = Callable[..., Awaitable[InProcess]]


@pytest.fixture
async def start_api(tmp_path: Path) -> AsyncIterator[ApiFactory]:
    """`api = await start_api(**settings)`: an in-process app on a fresh
    SQLite data directory (unless settings say otherwise), stopped at the
    test's end."""
    async with AsyncExitStack() as stack:
        count = 0

        async def start(**settings: Any) -> InProcess:
            nonlocal count
            count += 1
            data_dir = settings.pop("data_dir", tmp_path / f"api-{count}")
            return await stack.enter_async_context(in_process(api_settings(data_dir, **settings)))

        yield start


@pytest.fixture
async def api(start_api: ApiFactory) -> InProcess:
    """An in-process app with no tenants (local mode) and no worker."""
    return await start_api()


class BackgroundApi:
    """An in-process app on its own event-loop thread, for sync callers:
    `client(key)` and `openai(key)` are sync clients whose requests run on
    that loop over ASGI. `call(coroutine)` runs anything else there (a store
    query, say)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._context: AbstractAsyncContextManager[InProcess] | None = None
        self._clients: list[httpx.Client] = []
        self.api: InProcess

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self) -> BackgroundApi:
        self._thread.start()
        self._context = in_process(self.settings)
        self.api = self.call(self._context.__aenter__())
        return self

    def stop(self, timeout: float = 30) -> None:
        """Runs the lifespan's shutdown. One that does not finish in
        `timeout` is left behind on its daemon thread, as `ServerProcess`
        kills a server that does not stop: the test's answers are in."""
        for client in self._clients:
            client.close()
        if self._context is not None:
            context, self._context = self._context, None
            try:
                self.call(context.__aexit__(None, None, None), timeout)
            except TimeoutError:
                log.warning("the in-process app did not stop in %s s; left behind", timeout)
                return
        # What the app left running (a shielded store call whose caller
        # was cancelled, say) ends before the loop closes: an aiosqlite
        # thread answering a closed loop raises in its thread, and pytest
        # pins that on whichever test sets up next.
        with contextlib.suppress(TimeoutError):
            self.call(_settle(), timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def __enter__(self) -> BackgroundApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def runtime(self) -> Runtime:
        return self.api.runtime

    def transport(self) -> httpx.BaseTransport:
        """A sync transport to this app, for clients built by hand."""
        return _ThreadedAsgi(self)

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {**bearer(key), **kwargs.pop("headers", {})}
        transport = kwargs.pop("transport", None) or self.transport()
        client = httpx.Client(transport=transport, base_url=BASE_URL, headers=headers, **kwargs)
        self._clients.append(client)
        return client

    def openai(self, key: str = "test-key") -> openai.OpenAI:
        import openai

        return openai.OpenAI(
            base_url=f"{BASE_URL}/v1", api_key=key, max_retries=0, http_client=self.client()
        )

    def together(self, key: str = "test-key") -> together.Together:
        import together

        return together.Together(
            base_url=f"{BASE_URL}/together", api_key=key, max_retries=0, http_client=self.client()
        )

    def requests_session(self) -> requests.Session:
        """A `requests` session whose every URL reaches this app (what
        schemathesis sends its cases through)."""
        session = requests.Session()
        adapter = _RequestsToApp(self.client())
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session


@pytest.fixture(scope="module")
def app_server(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream, backend: Backend
) -> Iterator[BackgroundApi]:
    """The in-process twin of conftest's `server`: one app per test module
    and backend, with its worker, serving `fake-model` (and `fake-small`,
    one request at a time), in local mode (any key)."""
    root = tmp_path_factory.mktemp("app")
    settings = api_settings(
        root / "data",
        worker=True,
        models=[
            fake_model(upstream.url),
            fake_model(upstream.url, name="fake-small", max_concurrency=1),
        ],
        chunk_lines=10,
        **backend.settings(),
    )
    with BackgroundApi(settings) as app:
        yield app


AppFactory = Callable[..., BackgroundApi]


@pytest.fixture
def start_app(tmp_path: Path, backend: Backend) -> Iterator[AppFactory]:
    """The in-process twin of conftest's `start_server`: `start_app(models,
    **settings)` runs an app with its worker on the module's backend; all
    are stopped at the test's end."""
    numbers = itertools.count()
    with contextlib.ExitStack() as stack:

        def start(models: list[dict[str, Any]], **settings: Any) -> BackgroundApi:
            data_dir = tmp_path / f"app-{next(numbers)}"
            app_settings = api_settings(
                data_dir, worker=True, models=models, **{**backend.settings(), **settings}
            )
            return stack.enter_context(BackgroundApi(app_settings))

        yield start


async def _settle(seconds: float = 10) -> None:
    """Wait (a while) for every other task on this loop to end."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=seconds)


class _ThreadedAsgi(httpx.BaseTransport):
    """A sync transport that hands each request to the app's loop thread."""

    def __init__(self, background: BackgroundApi) -> None:
        self.background = background

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        forwarded = httpx.Request(
            request.method, request.url, headers=request.headers, content=body
        )

        async def send() -> tuple[int, httpx.Headers, bytes]:
            response = await self.background.api.transport.handle_async_request(forwarded)
            content = b"".join([part async for part in response.stream])  # type: ignore[union-attr]
            return response.status_code, response.headers, content

        status, headers, content = self.background.call(send())
        return httpx.Response(status, headers=headers, content=content, request=request)


class _RequestsToApp(requests.adapters.HTTPAdapter):
    """A `requests` adapter that sends through an in-process httpx client."""

    def __init__(self, client: httpx.Client) -> None:
        super().__init__()
        self.client = client

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        body = request.body
        answer = self.client.request(
            str(request.method),
            str(request.url),
            headers=dict(request.headers),
            content=body.encode() if isinstance(body, str) else body,
        )
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(answer.content),
            headers=urllib3.HTTPHeaderDict(answer.headers.multi_items()),
            status=answer.status_code,
            reason=answer.reason_phrase,
            version=11,
            preload_content=False,
        )
        return self.build_response(request, raw)
