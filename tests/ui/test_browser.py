"""The dashboard in a real browser: Playwright driving Debian's Chromium
(`/usr/bin/chromium`; `make install` installs it when missing) against one
server with its worker, on the fake model server.

One server and one browser serve every case (module-scoped), so the
module costs a browser start and a few short batches. Each page's
screenshot is kept: under $OVERNIGHT_UI_SCREENSHOTS when set (how
docs/dashboard.md's pictures are made), else in the test's temporary
directory, whose path the module prints.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from overnight.api.app import create_app
from overnight.testing.fake_upstream import FakeUpstream

from helpers import chat_lines, fake_model, free_port, jsonl
from inprocess import api_settings

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
ALPHA, BETA, ADMIN = "key-alpha", "key-beta", "key-admin"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium (make install: apt-get install chromium)"
)


class ThreadedServer:
    """The app under uvicorn on a thread of this process: a real port for
    the browser, without a second interpreter's start-up."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dashboard's server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[str]:
    settings = api_settings(
        tmp_path_factory.mktemp("ui-browser"),
        worker=True,
        models=[fake_model(upstream.url, max_concurrency=8)],
        tenants=[{"name": "alpha", "api_keys": [ALPHA]}, {"name": "beta", "api_keys": [BETA]}],
        admin_api_key_hashes=[hashlib.sha256(ADMIN.encode()).hexdigest()],
        chunk_lines=20,
    )
    with ThreadedServer(create_app(settings)) as running:
        yield running.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("OVERNIGHT_UI_SCREENSHOTS")
    where = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    where.mkdir(parents=True, exist_ok=True)
    print(f"dashboard screenshots: {where}")
    return where


Api = Callable[[str], httpx.Client]


@pytest.fixture(scope="module")
def api(server: str) -> Iterator[Api]:
    clients: list[httpx.Client] = []

    def client(key: str) -> httpx.Client:
        made = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        clients.append(made)
        return made

    yield client
    for made in clients:
        made.close()


def create_batch(client: httpx.Client, lines: list[dict[str, Any]]) -> str:
    uploaded = client.post(
        "/v1/files", files={"file": ("in.jsonl", jsonl(lines))}, data={"purpose": "batch"}
    )
    assert uploaded.status_code == 200, uploaded.text
    created = client.post(
        "/v1/batches",
        json={"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions"},
    )
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


def signed_in(browser: Any, server: str, key: str) -> Any:
    """A fresh browser context (its own cookies), signed in with `key`."""
    context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto("/ui/batches")
    assert page.url.endswith("/ui/login?next=%2Fui%2Fbatches")
    page.fill("input[name=api_key]", key)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/batches")
    return page


@pytest.fixture(scope="module")
def alpha(browser: Any, server: str) -> Iterator[Any]:
    page = signed_in(browser, server, ALPHA)
    yield page
    page.context.close()


@pytest.fixture(scope="module")
def finished(alpha: Any, api: Api, shots: Path) -> dict[str, Any]:
    """A batch watched from its page until it completes: the counts it
    showed on the way, and the batch as the API then reports it."""
    lines = chat_lines(240, extra={"x_fake": {"latency": 0.1}})
    lines += chat_lines(6, prefix="bad", extra={"x_fake": {"status": 400}})
    batch_id = create_batch(api(ALPHA), lines)
    alpha.goto(f"/ui/batches/{batch_id}")
    seen: list[int] = []
    deadline = time.monotonic() + 90
    while alpha.inner_text("#batch-status") != "completed":
        assert time.monotonic() < deadline, f"still {alpha.inner_text('#batch-status')}"
        seen.append(int(alpha.inner_text("#count-completed").replace(",", "")))
        alpha.wait_for_timeout(250)
    alpha.screenshot(path=str(shots / "batch.png"), full_page=True)
    return {"id": batch_id, "seen": seen, "batch": api(ALPHA).get(f"/v1/batches/{batch_id}").json()}


def test_a_batchs_bar_moves_and_reaches_completed(alpha: Any, finished: dict[str, Any]) -> None:
    total = finished["batch"]["request_counts"]["total"]
    moving = [count for count in finished["seen"] if 0 < count < total - 6]
    assert moving, f"the page never showed the batch part-way: {finished['seen']}"
    assert finished["seen"] == sorted(finished["seen"])  # never backwards
    assert alpha.inner_text("#count-completed") == "240"
    assert alpha.inner_text("#count-failed") == "6"
    # The failures are grouped by code, with examples.
    assert "http_400" in alpha.inner_text("table.errors")
    # The throughput chart was drawn from the snapshots taken meanwhile.
    assert alpha.locator("svg.chart polyline").count() == 1


def test_an_output_file_downloads_with_the_apis_bytes(
    alpha: Any, api: Api, finished: dict[str, Any]
) -> None:
    alpha.goto(f"/ui/batches/{finished['id']}")
    with alpha.expect_download() as download:
        alpha.click("#download-output")
    saved = Path(download.value.path())
    output_id = finished["batch"]["output_file_id"]
    from_api = api(ALPHA).get(f"/v1/files/{output_id}/content")
    assert saved.read_bytes() == from_api.content and len(from_api.content) > 0


def test_a_batch_is_cancelled_from_its_page(alpha: Any, api: Api, shots: Path) -> None:
    batch_id = create_batch(api(ALPHA), chat_lines(400, extra={"x_fake": {"latency": 0.5}}))
    alpha.goto("/ui/batches")
    # The list refreshes itself: the row turns in_progress without a reload.
    alpha.wait_for_selector(f"tr[data-batch='{batch_id}'][data-status='in_progress']")
    alpha.screenshot(path=str(shots / "batches.png"), full_page=True)
    alpha.goto(f"/ui/batches/{batch_id}")
    questions: list[str] = []

    def answer(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.accept()

    alpha.once("dialog", answer)
    alpha.click("#cancel")
    # (`expect` rather than `wait_for_function`: the page's CSP forbids eval.)
    playwright_api.expect(alpha.locator("#batch-status")).to_have_text("cancelled", timeout=60_000)
    assert questions and batch_id in questions[0]
    assert api(ALPHA).get(f"/v1/batches/{batch_id}").json()["status"] == "cancelled"


def test_a_form_post_without_its_csrf_token_is_refused(alpha: Any, api: Api) -> None:
    batch_id = create_batch(api(ALPHA), chat_lines(200, extra={"x_fake": {"latency": 0.5}}))
    alpha.goto(f"/ui/batches/{batch_id}")
    # A forged form: the same post, without the token the page put in it.
    alpha.evaluate("document.querySelector('form.cancel input[name=csrf]').remove()")
    alpha.once("dialog", lambda dialog: dialog.accept())
    with alpha.expect_navigation() as navigation:
        alpha.click("#cancel")
    assert navigation.value.status == 403
    assert "Refused" in alpha.inner_text("h1")
    assert api(ALPHA).get(f"/v1/batches/{batch_id}").json()["status"] != "cancelled"
    api(ALPHA).post(f"/v1/batches/{batch_id}/cancel")


def test_tenant_b_opening_as_batch_gets_not_found(
    browser: Any, server: str, finished: dict[str, Any]
) -> None:
    page = signed_in(browser, server, BETA)
    try:
        answer = page.goto(f"/ui/batches/{finished['id']}")
        assert answer is not None and answer.status == 404
        shown = page.inner_text("main").replace(finished["id"], "ID")
        missing = "batch_" + "0" * 32
        page.goto(f"/ui/batches/{missing}")
        # Word for word what a batch that does not exist gets.
        assert shown == page.inner_text("main").replace(missing, "ID")
        assert page.inner_text("h1") == "Not found"
    finally:
        page.context.close()


def test_every_page_renders_for_an_admin(
    browser: Any, server: str, shots: Path, finished: dict[str, Any]
) -> None:
    page = signed_in(browser, server, ADMIN)
    try:
        for name in ("batches", "files", "models", "workers", "tenants"):
            answer = page.goto(f"/ui/{name}")
            assert answer is not None and answer.status == 200, name
            page.screenshot(path=str(shots / f"{name}-admin.png"), full_page=True)
        page.goto("/ui/batches")
        assert page.locator(f"tr[data-batch='{finished['id']}'] td").nth(1).inner_text() == "alpha"
        page.goto("/ui/models")
        assert page.locator("tr[data-model='fake-model'] .replica.healthy").count() == 1
    finally:
        page.context.close()


def test_signing_out_ends_the_session(browser: Any, server: str, shots: Path) -> None:
    page = signed_in(browser, server, ALPHA)
    try:
        page.click("#logout")
        page.wait_for_url("**/ui/login")
        page.screenshot(path=str(shots / "login.png"))
        page.goto("/ui/batches")
        assert "/ui/login" in page.url
    finally:
        page.context.close()
