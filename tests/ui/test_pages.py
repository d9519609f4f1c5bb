"""The dashboard in-process: every page renders for who may see it, lists
filter and page, another tenant's batch is the same 404 as a missing one,
a form without its CSRF token is refused, signing out ends the session,
and `ui = false` turns it all off. No browser, no worker: the app over
httpx's ASGI transport, as the API tests run (tests/ui/test_browser.py
drives a real browser against a running batch)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

from overnight.tenants import create_key, revoke_keys

from inprocess import InProcess, api_settings, in_process

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALPHA, BETA, ADMIN = "key-alpha", "key-beta", "key-admin"
LINE = {
    "custom_id": "a",
    "method": "POST",
    "url": "/v1/chat/completions",
    "body": {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]},
}
DATA = json.dumps(LINE).encode() + b"\n"


@dataclass
class Ctx:
    api: InProcess
    alpha_api: httpx.AsyncClient
    beta_api: httpx.AsyncClient

    def browser(self) -> httpx.AsyncClient:
        """A client with a cookie jar and no key: what a browser sends."""
        return self.api.http()

    async def signed_in(self, key: str) -> httpx.AsyncClient:
        client = self.browser()
        form = await client.get("/ui/login")
        answer = await client.post(
            "/ui/login", data={"api_key": key, "csrf": csrf_of(form.text), "next": "/ui/batches"}
        )
        assert answer.status_code == 303, answer.text
        return client

    async def batch(self, api: httpx.AsyncClient | None = None) -> str:
        api = api or self.alpha_api
        uploaded = await api.post(
            "/v1/files", files={"file": ("in.jsonl", DATA)}, data={"purpose": "batch"}
        )
        created = await api.post(
            "/v1/batches",
            json={"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions"},
        )
        assert created.status_code == 200, created.text
        return str(created.json()["id"])


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html
    return found.group(1)


def batch_ids(html: str) -> list[str]:
    return re.findall(r'data-batch="([^"]+)"', html)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ctx(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Ctx]:
    settings = api_settings(
        tmp_path_factory.mktemp("ui"),
        tenants=[{"name": "alpha", "api_keys": [ALPHA]}, {"name": "beta", "api_keys": [BETA]}],
        admin_api_key_hashes=[hashlib.sha256(ADMIN.encode()).hexdigest()],
        models=[{"name": "fake-model", "backend": "openai", "base_url": "http://127.0.0.1:9/v1"}],
    )
    async with in_process(settings) as api:
        yield Ctx(api, api.http(ALPHA), api.http(BETA))


async def test_pages_ask_for_a_sign_in_and_refuse_a_wrong_key(ctx: Ctx) -> None:
    browser = ctx.browser()
    answer = await browser.get("/ui/batches")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login?next=%2Fui%2Fbatches"
    form = await browser.get("/ui/login")
    refused = await browser.post(
        "/ui/login", data={"api_key": "key-wrong", "csrf": csrf_of(form.text)}
    )
    assert refused.status_code == 401 and "not valid" in refused.text
    assert "overnight_session" not in browser.cookies
    # The sign-in form has its own CSRF token.
    forged = await ctx.browser().post("/ui/login", data={"api_key": ALPHA, "csrf": "x"})
    assert forged.status_code == 403


async def test_a_session_cookie_is_http_only_and_strict(ctx: Ctx) -> None:
    browser = ctx.browser()
    form = await browser.get("/ui/login")
    answer = await browser.post("/ui/login", data={"api_key": ALPHA, "csrf": csrf_of(form.text)})
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("overnight_session=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain http here; https adds it
    page = await browser.get("/ui/batches")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]


async def test_a_tenant_sees_its_own_batches_and_not_anothers(ctx: Ctx) -> None:
    mine = await ctx.batch()
    theirs = await ctx.batch(ctx.beta_api)
    alpha = await ctx.signed_in(ALPHA)
    listed = batch_ids((await alpha.get("/ui/batches")).text)
    assert mine in listed and theirs not in listed
    page = await alpha.get(f"/ui/batches/{mine}")
    assert page.status_code == 200 and mine in page.text
    assert "/content" in page.text  # the input file's download link
    for path in (f"/ui/batches/{theirs}", "/ui/batches/batch_missing"):
        hidden = await alpha.get(path)
        assert hidden.status_code == 404 and "Not found" in hidden.text
    input_id = (await ctx.beta_api.get(f"/v1/batches/{theirs}")).json()["input_file_id"]
    assert (await alpha.get(f"/ui/files/{input_id}/content")).status_code == 404
    # Admin pages are hidden from tenants the same way.
    assert (await alpha.get("/ui/workers")).status_code == 404
    assert (await alpha.get("/ui/tenants")).status_code == 404


async def test_an_admin_sees_every_tenant_and_filters_on_one(ctx: Ctx) -> None:
    mine = await ctx.batch()
    theirs = await ctx.batch(ctx.beta_api)
    admin = await ctx.signed_in(ADMIN)
    everyone = await admin.get("/ui/batches")
    assert {mine, theirs} <= set(batch_ids(everyone.text))
    assert "<th>Tenant</th>" in everyone.text
    only_beta = batch_ids((await admin.get("/ui/batches?tenant=beta")).text)
    assert theirs in only_beta and mine not in only_beta
    for path in ("/ui/workers", "/ui/tenants", "/ui/models", "/ui/files"):
        assert (await admin.get(path)).status_code == 200, path


async def test_lists_filter_by_status_and_dialect(ctx: Ctx) -> None:
    batch = await ctx.batch()
    alpha = await ctx.signed_in(ALPHA)
    assert batch in batch_ids((await alpha.get("/ui/batches?status=validating")).text)
    assert batch not in batch_ids((await alpha.get("/ui/batches?status=completed")).text)
    assert batch in batch_ids((await alpha.get("/ui/batches?dialect=openai")).text)
    assert batch_ids((await alpha.get("/ui/batches?dialect=anthropic")).text) == []
    bad = await alpha.get("/ui/batches?status=sleeping")
    assert bad.status_code == 400 and "sleeping" in bad.text


async def test_the_batch_list_pages_both_ways(ctx: Ctx) -> None:
    alpha = await ctx.signed_in(ALPHA)
    for _ in range(3):
        await ctx.batch()
    newest = batch_ids((await alpha.get("/ui/batches?limit=100")).text)
    first = await alpha.get("/ui/batches?limit=2")
    assert batch_ids(first.text) == newest[:2]
    older = re.search(r'href="(/ui/batches\?[^"]+)" rel="next"', first.text)
    assert older is not None and 'rel="prev"' not in first.text
    second = await alpha.get(older.group(1).replace("&amp;", "&"))
    assert batch_ids(second.text) == newest[2:4]
    newer = re.search(r'href="(/ui/batches\?[^"]+)" rel="prev"', second.text)
    assert newer is not None
    back = await alpha.get(newer.group(1).replace("&amp;", "&"))
    assert batch_ids(back.text) == newest[:2]


async def test_the_live_part_of_a_page_comes_alone(ctx: Ctx) -> None:
    batch = await ctx.batch()
    alpha = await ctx.signed_in(ALPHA)
    whole = await alpha.get("/ui/batches")
    live = await alpha.get("/ui/batches", headers={"x-overnight-live": "1"})
    assert "<html" in whole.text and 'data-live="' in whole.text
    assert "<html" not in live.text and batch in live.text
    detail = await alpha.get(f"/ui/batches/{batch}", headers={"x-overnight-live": "1"})
    assert 'id="batch-status">validating<' in detail.text


async def test_a_form_without_its_csrf_token_is_refused(ctx: Ctx) -> None:
    batch = await ctx.batch()
    alpha = await ctx.signed_in(ALPHA)
    page = await alpha.get(f"/ui/batches/{batch}")
    for data in ({}, {"csrf": "forged"}):
        refused = await alpha.post(f"/ui/batches/{batch}/cancel", data=data)
        assert refused.status_code == 403
    assert (await ctx.alpha_api.get(f"/v1/batches/{batch}")).json()["status"] == "validating"
    done = await alpha.post(f"/ui/batches/{batch}/cancel", data={"csrf": csrf_of(page.text)})
    assert done.status_code == 303 and done.headers["location"] == f"/ui/batches/{batch}"
    assert (await ctx.alpha_api.get(f"/v1/batches/{batch}")).json()["status"] == "cancelled"


async def test_another_tenants_batch_cannot_be_cancelled_from_the_page(ctx: Ctx) -> None:
    theirs = await ctx.batch(ctx.beta_api)
    alpha = await ctx.signed_in(ALPHA)
    page = await alpha.get("/ui/batches")
    answer = await alpha.post(f"/ui/batches/{theirs}/cancel", data={"csrf": csrf_of(page.text)})
    assert answer.status_code == 404
    assert (await ctx.beta_api.get(f"/v1/batches/{theirs}")).json()["status"] == "validating"


async def test_files_list_download_and_delete(ctx: Ctx) -> None:
    uploaded = await ctx.alpha_api.post(
        "/v1/files", files={"file": ("mine.jsonl", DATA)}, data={"purpose": "batch"}
    )
    file_id = uploaded.json()["id"]
    alpha = await ctx.signed_in(ALPHA)
    listing = await alpha.get("/ui/files")
    assert f'data-file="{file_id}"' in listing.text and "mine.jsonl" in listing.text
    download = await alpha.get(f"/ui/files/{file_id}/content")
    assert download.content == DATA
    assert "attachment" in download.headers["content-disposition"]
    deleted = await alpha.post(f"/ui/files/{file_id}/delete", data={"csrf": csrf_of(listing.text)})
    assert deleted.status_code == 303
    assert (await ctx.alpha_api.get(f"/v1/files/{file_id}")).status_code == 404


async def test_an_admin_edits_a_tenants_quotas(ctx: Ctx) -> None:
    await ctx.batch()
    admin = await ctx.signed_in(ADMIN)
    page = await admin.get("/ui/tenants")
    assert 'data-tenant="alpha"' in page.text
    saved = await admin.post(
        "/ui/tenants/alpha/quotas",
        data={
            "csrf": csrf_of(page.text),
            "max_pending_batches": "900",
            "max_enqueued_requests": "",
        },
    )
    assert saved.status_code == 303
    shown = await ctx.api.http(ADMIN).get("/admin/tenants/alpha")
    assert shown.json()["quotas"]["max_pending_batches"] == 900
    wrong = await admin.post(
        "/ui/tenants/alpha/quotas", data={"csrf": csrf_of(page.text), "max_pending_batches": "-1"}
    )
    assert wrong.status_code == 400


async def test_signing_out_ends_the_session(ctx: Ctx) -> None:
    alpha = await ctx.signed_in(ALPHA)
    page = await alpha.get("/ui/batches")
    token = alpha.cookies["overnight_session"]
    out = await alpha.post("/ui/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    # The old cookie, sent again by hand, opens nothing either.
    replay = ctx.browser()
    replay.cookies.set("overnight_session", token, domain="overnight.test", path="/ui")
    assert (await replay.get("/ui/batches")).status_code == 303


async def test_revoking_the_key_ends_its_sessions(ctx: Ctx) -> None:
    made = await create_key(ctx.api.runtime.store, tenant="gamma")
    browser = await ctx.signed_in(made.secret)
    assert (await browser.get("/ui/batches")).status_code == 200
    await revoke_keys(ctx.api.runtime.store, tenant="gamma")
    answer = await browser.get("/ui/batches")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/login")


async def test_over_https_the_cookie_is_secure(ctx: Ctx) -> None:
    browser = httpx.AsyncClient(transport=ctx.api.transport, base_url="https://overnight.test")
    async with browser:
        form = await browser.get("/ui/login")
        assert "Secure" in form.headers["set-cookie"]
        answer = await browser.post(
            "/ui/login", data={"api_key": ALPHA, "csrf": csrf_of(form.text)}
        )
    assert answer.status_code == 303
    assert "Secure" in answer.headers["set-cookie"]


async def test_the_models_page_shows_the_limit_and_backlog(ctx: Ctx) -> None:
    alpha = await ctx.signed_in(ALPHA)
    page = await alpha.get("/ui/models")
    assert page.status_code == 200
    assert 'data-model="fake-model"' in page.text and "127.0.0.1:9" in page.text


async def test_static_assets_come_from_the_package(ctx: Ctx) -> None:
    browser = ctx.browser()
    script = await browser.get("/ui/static/ui.js")
    assert script.status_code == 200 and "x-overnight-live" in script.text
    assert (await browser.get("/ui/static/ui.css")).status_code == 200


async def test_metrics_count_batches_and_time_requests(ctx: Ctx) -> None:
    await ctx.batch()
    text = (await ctx.browser().get("/metrics")).text
    validating = re.search(r'^overnight_batches\{status="validating"\} (\S+)$', text, re.M)
    assert validating is not None and float(validating.group(1)) >= 1
    assert re.search(
        r'^overnight_api_request_duration_seconds_count\{method="POST",route="/v1/batches",status="2xx"\} ',
        text,
        re.M,
    )
    for series in ("overnight_chunks_leased", "overnight_workers_live"):
        assert re.search(rf"^{series} 0\.0$", text, re.M), series


# ------------------------------------------------------------ local mode


async def test_local_mode_needs_no_sign_in_but_still_checks_forms(tmp_path: Any) -> None:
    async with in_process(api_settings(tmp_path)) as api:
        browser = api.http()
        home = await browser.get("/ui/")
        assert home.status_code == 303 and home.headers["location"] == "/ui/batches"
        page = await browser.get("/ui/batches")
        assert page.status_code == 200 and "local mode" in page.text
        assert "Sign out" not in page.text
        assert "overnight_session" in browser.cookies
        assert (await browser.get("/ui/login")).status_code == 303
        refused = await browser.post("/ui/files/file-x/delete", data={"csrf": "forged"})
        assert refused.status_code == 403
        assert (await browser.get("/ui/workers")).status_code == 200


async def test_ui_false_turns_the_dashboard_off(tmp_path: Any) -> None:
    async with in_process(api_settings(tmp_path, ui=False)) as api:
        assert (await api.http().get("/ui/batches")).status_code == 404
        assert (await api.http().get("/health")).status_code == 200
