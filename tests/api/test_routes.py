"""Every route of the app, in-process: the shape of its answer and at least
one of its errors, through the official SDK where one covers the route and
raw httpx where the wire is the point.

`test_every_route_has_a_case` lists the app's routes and fails for any
without a case here: a new route comes with its test.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from fastapi import FastAPI

from overnight.settings import Settings

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


def route_settings(data_dir: Any) -> Settings:
    return api_settings(
        data_dir,
        tenants=[{"name": "alpha", "api_keys": [ALPHA]}, {"name": "beta", "api_keys": [BETA]}],
        admin_api_key_hashes=[hashlib.sha256(ADMIN.encode()).hexdigest()],
        # No worker runs: the model is never called.
        models=[{"name": "fake-model", "backend": "openai", "base_url": "http://127.0.0.1:9/v1"}],
    )


@dataclass
class Ctx:
    api: InProcess
    alpha: httpx.AsyncClient
    beta: httpx.AsyncClient
    admin: httpx.AsyncClient
    anonymous: httpx.AsyncClient
    sdk: openai.AsyncOpenAI

    async def file(self, data: bytes = DATA, purpose: str = "batch") -> str:
        return (await self.sdk.files.create(file=("in.jsonl", data), purpose=purpose)).id  # type: ignore[arg-type]

    async def batch(self) -> dict[str, Any]:
        created = await self.alpha.post(
            "/v1/batches",
            json={"input_file_id": await self.file(), "endpoint": "/v1/chat/completions"},
        )
        assert created.status_code == 200, created.text
        return dict(created.json())

    async def together_file(self) -> str:
        granted = await self.alpha.post(
            "/together/v1/files", data={"purpose": "batch-api", "file_name": "t.jsonl"}
        )
        assert granted.status_code == 302, granted.text
        assert (await self.alpha.put(granted.headers["location"], content=DATA)).status_code == 200
        file_id = granted.headers["x-together-file-id"]
        assert (await self.alpha.post(f"/together/v1/files/{file_id}/preprocess")).is_success
        return file_id


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ctx(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Ctx]:
    async with in_process(route_settings(tmp_path_factory.mktemp("routes"))) as api:
        yield Ctx(
            api,
            alpha=api.http(ALPHA),
            beta=api.http(BETA),
            admin=api.http(ADMIN),
            anonymous=api.http(),
            sdk=api.openai(ALPHA),
        )


def error_of(response: httpx.Response, status: int, code: str, param: str | None = None) -> None:
    """An error in the one shape every route uses."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    assert error["message"]
    assert response.headers["x-request-id"].startswith("req_")


Case = Callable[[Ctx], Awaitable[None]]
CASES: dict[str, Case] = {}
#: The same cases, once each, named by the routes they cover.
GROUPS: dict[str, Case] = {}


def covers(*routes: str) -> Callable[[Case], Case]:
    """Registers a case as the test of these routes ("METHOD /path")."""

    def register(case: Case) -> Case:
        for route in routes:
            assert route not in CASES, f"two cases for {route}"
            CASES[route] = case
        GROUPS[" + ".join(routes)] = case
        return case

    return register


# ------------------------------------------------------------ OpenAI files


@covers("POST /v1/files")
async def _(ctx: Ctx) -> None:
    created = await ctx.sdk.files.create(file=("in.jsonl", DATA), purpose="batch")
    assert (created.object, created.purpose, created.bytes) == ("file", "batch", len(DATA))
    assert created.filename == "in.jsonl" and created.id.startswith("file-")
    with pytest.raises(openai.BadRequestError) as caught:
        await ctx.sdk.files.create(file=("x.jsonl", DATA), purpose="homework")  # type: ignore[arg-type]
    error_of(caught.value.response, 400, "invalid_value", "purpose")


@covers("GET /v1/files")
async def _(ctx: Ctx) -> None:
    file_id = await ctx.file(purpose="user_data")
    listed = await ctx.sdk.files.list(purpose="user_data")
    assert file_id in [f.id for f in listed.data]
    # Tenants see their own files only.
    theirs = (await ctx.beta.get("/v1/files")).json()
    assert theirs["object"] == "list" and file_id not in [f["id"] for f in theirs["data"]]
    error_of(await ctx.alpha.get("/v1/files", params={"limit": 0}), 400, "invalid_value", "limit")


@covers("GET /v1/files/{file_id}")
async def _(ctx: Ctx) -> None:
    file_id = await ctx.file()
    assert (await ctx.sdk.files.retrieve(file_id)).id == file_id
    error_of(await ctx.beta.get(f"/v1/files/{file_id}"), 404, "file_not_found", "file_id")


@covers("DELETE /v1/files/{file_id}")
async def _(ctx: Ctx) -> None:
    file_id = await ctx.file()
    deleted = await ctx.sdk.files.delete(file_id)
    assert (deleted.id, deleted.deleted, deleted.object) == (file_id, True, "file")
    error_of(await ctx.alpha.delete(f"/v1/files/{file_id}"), 404, "file_not_found")


@covers("GET /v1/files/{file_id}/content")
async def _(ctx: Ctx) -> None:
    file_id = await ctx.file()
    assert (await ctx.sdk.files.content(file_id)).content == DATA
    error_of(await ctx.beta.get(f"/v1/files/{file_id}/content"), 404, "file_not_found")


# ---------------------------------------------------------- OpenAI uploads


@covers("POST /v1/uploads")
async def _(ctx: Ctx) -> None:
    upload = await ctx.sdk.uploads.create(
        bytes=3, filename="u.txt", mime_type="text/plain", purpose="user_data"
    )
    assert (upload.object, upload.status, upload.bytes) == ("upload", "pending", 3)
    missing = await ctx.alpha.post("/v1/uploads", json={"filename": "u.txt"})
    error_of(missing, 400, "missing_required_parameter")


@covers("POST /v1/uploads/{upload_id}/parts")
async def _(ctx: Ctx) -> None:
    upload = await ctx.sdk.uploads.create(
        bytes=3, filename="u.txt", mime_type="text/plain", purpose="user_data"
    )
    part = await ctx.sdk.uploads.parts.create(upload_id=upload.id, data=b"abc")
    assert (part.object, part.upload_id) == ("upload.part", upload.id)
    foreign = await ctx.beta.post(f"/v1/uploads/{upload.id}/parts", files={"data": ("p", b"abc")})
    error_of(foreign, 404, "upload_not_found")


@covers("POST /v1/uploads/{upload_id}/complete")
async def _(ctx: Ctx) -> None:
    upload = await ctx.sdk.uploads.create(
        bytes=3, filename="u.txt", mime_type="text/plain", purpose="user_data"
    )
    part = await ctx.sdk.uploads.parts.create(upload_id=upload.id, data=b"abc")
    with pytest.raises(openai.BadRequestError) as caught:
        await ctx.sdk.uploads.complete(upload_id=upload.id, part_ids=[part.id], md5="0" * 32)
    error_of(caught.value.response, 400, "checksum_mismatch", "md5")
    done = await ctx.sdk.uploads.complete(
        upload_id=upload.id, part_ids=[part.id], md5=hashlib.md5(b"abc").hexdigest()
    )
    assert done.status == "completed" and done.file is not None
    assert (await ctx.sdk.files.content(done.file.id)).content == b"abc"


@covers("POST /v1/uploads/{upload_id}/cancel")
async def _(ctx: Ctx) -> None:
    upload = await ctx.sdk.uploads.create(
        bytes=3, filename="u.txt", mime_type="text/plain", purpose="user_data"
    )
    assert (await ctx.sdk.uploads.cancel(upload.id)).status == "cancelled"
    error_of(await ctx.alpha.post(f"/v1/uploads/{upload.id}/cancel"), 409, "upload_not_pending")


# ---------------------------------------------------------- OpenAI batches


@covers("POST /v1/batches")
async def _(ctx: Ctx) -> None:
    file_id = await ctx.file()
    batch = await ctx.sdk.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"team": "search"},
    )
    assert (batch.object, batch.status, batch.input_file_id) == ("batch", "validating", file_id)
    assert batch.metadata == {"team": "search"} and batch.completion_window == "24h"
    refused = await ctx.beta.post(
        "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
    )
    error_of(refused, 404, "file_not_found", "input_file_id")


@covers("GET /v1/batches")
async def _(ctx: Ctx) -> None:
    batch = await ctx.batch()
    listed = await ctx.sdk.batches.list(limit=100)
    assert batch["id"] in [b.id for b in listed.data]
    error_of(await ctx.alpha.get("/v1/batches", params={"limit": 101}), 400, "invalid_value")


@covers("GET /v1/batches/{batch_id}")
async def _(ctx: Ctx) -> None:
    batch = await ctx.batch()
    assert (await ctx.sdk.batches.retrieve(batch["id"])).id == batch["id"]
    error_of(await ctx.beta.get(f"/v1/batches/{batch['id']}"), 404, "batch_not_found")


@covers("POST /v1/batches/{batch_id}/cancel")
async def _(ctx: Ctx) -> None:
    batch = await ctx.batch()
    cancelled = await ctx.sdk.batches.cancel(batch["id"])
    assert cancelled.status in ("cancelling", "cancelled")
    error_of(await ctx.beta.post(f"/v1/batches/{batch['id']}/cancel"), 404, "batch_not_found")


@covers("GET /v1/batches/{batch_id}/output", "GET /v1/batches/{batch_id}/errors")
async def _(ctx: Ctx) -> None:
    batch = await ctx.batch()  # no worker: it stays validating, with no line yet
    for kind in ("output", "errors"):
        path = f"/v1/batches/{batch['id']}/{kind}"
        so_far = await ctx.alpha.get(path)
        assert so_far.status_code == 200 and so_far.content == b""
        assert so_far.headers["x-overnight-incomplete"] == "true"
        after = so_far.headers["x-overnight-next-after"]
        assert (await ctx.alpha.get(path, params={"after": after})).status_code == 200
        error_of(await ctx.beta.get(path), 404, "batch_not_found")
        error_of(await ctx.alpha.get(path, params={"after": "x"}), 400, "invalid_cursor", "after")
        error_of(await ctx.alpha.get(path, params={"merged": "true"}), 400, "not_a_retry")


@covers("POST /v1/batches/{batch_id}/retry")
async def _(ctx: Ctx) -> None:
    batch = await ctx.batch()
    path = f"/v1/batches/{batch['id']}/retry"
    error_of(await ctx.alpha.post(path, json={}), 409, "batch_not_ended")
    error_of(await ctx.beta.post(path, json={}), 404, "batch_not_found")
    bad = await ctx.alpha.post(path, json={"outcomes": ["failed", "lost"]})
    error_of(bad, 400, "invalid_value", "outcomes")


@covers("GET /v1/models")
async def _(ctx: Ctx) -> None:
    models = await ctx.sdk.models.list()
    assert [m.id for m in models.data] == ["fake-model"]
    error_of(await ctx.anonymous.get("/v1/models"), 401, "invalid_api_key")


# ------------------------------------------------------- Together files


@covers("POST /together/v1/files", "PUT /together/v1/files/upload/{token}")
async def _(ctx: Ctx) -> None:
    granted = await ctx.alpha.post(
        "/together/v1/files",
        data={"purpose": "batch-api", "file_name": "t.jsonl", "file_type": "jsonl"},
    )
    assert granted.status_code == 302, granted.text
    location = granted.headers["location"]
    assert "/together/v1/files/upload/" in location
    assert granted.headers["x-together-file-id"].startswith("file-")
    stored = await ctx.alpha.put(location, content=DATA)
    assert stored.status_code == 200 and stored.headers["etag"].startswith('"')
    error_of(await ctx.alpha.put(location, content=DATA), 403, "upload_url_rejected")
    error_of(
        await ctx.alpha.post(
            "/together/v1/files",
            data={"purpose": "batch-api", "file_name": "x.exe", "file_type": "exe"},
        ),
        400,
        "invalid_value",
        "file_type",
    )


@covers("POST /together/v1/files/upload")
async def _(ctx: Ctx) -> None:
    stored = await ctx.alpha.post(
        "/together/v1/files/upload",
        files={"file": ("d.jsonl", DATA)},
        data={"purpose": "batch-api", "file_name": "d.jsonl"},
    )
    assert stored.status_code == 200, stored.text
    body = stored.json()
    assert (body["object"], body["filename"], body["bytes"]) == ("file", "d.jsonl", len(DATA))
    error_of(
        await ctx.alpha.post("/together/v1/files/upload", data={"purpose": "batch-api"}),
        400,
        "invalid_content_type",
    )


@covers("POST /together/v1/files/{file_id}/preprocess")
async def _(ctx: Ctx) -> None:
    file_id = await ctx.together_file()
    again = await ctx.alpha.post(f"/together/v1/files/{file_id}/preprocess")
    assert again.status_code == 200 and again.json()["id"] == file_id
    error_of(await ctx.beta.post(f"/together/v1/files/{file_id}/preprocess"), 404, "file_not_found")


@covers("GET /together/v1/files")
async def _(ctx: Ctx) -> None:
    file_id = await ctx.together_file()
    listed = await ctx.alpha.get("/together/v1/files")
    assert listed.json()["object"] == "list"
    assert file_id in [f["id"] for f in listed.json()["data"]]
    error_of(await ctx.anonymous.get("/together/v1/files"), 401, "invalid_api_key")


@covers("GET /together/v1/files/{file_id}")
async def _(ctx: Ctx) -> None:
    file_id = await ctx.together_file()
    found = (await ctx.alpha.get(f"/together/v1/files/{file_id}")).json()
    assert (found["id"], found["purpose"], found["bytes"]) == (file_id, "batch-api", len(DATA))
    error_of(await ctx.beta.get(f"/together/v1/files/{file_id}"), 404, "file_not_found")


@covers("GET /together/v1/files/{file_id}/content")
async def _(ctx: Ctx) -> None:
    file_id = await ctx.together_file()
    assert (await ctx.alpha.get(f"/together/v1/files/{file_id}/content")).content == DATA
    error_of(await ctx.beta.get(f"/together/v1/files/{file_id}/content"), 404, "file_not_found")


@covers("DELETE /together/v1/files/{file_id}")
async def _(ctx: Ctx) -> None:
    file_id = await ctx.together_file()
    deleted = (await ctx.alpha.delete(f"/together/v1/files/{file_id}")).json()
    assert (deleted["id"], deleted["deleted"]) == (file_id, True)
    error_of(await ctx.alpha.delete(f"/together/v1/files/{file_id}"), 404, "file_not_found")


#: A part below the 5 MiB S3 minimum is allowed only last.
FIRST_PART = DATA * (5 * 1024 * 1024 // len(DATA) + 1)
MULTIPART = {
    "file_name": "big.jsonl",
    "file_size": len(FIRST_PART) + len(DATA),
    "num_parts": 2,
    "purpose": "batch-api",
    "file_type": "jsonl",
}


async def initiate(ctx: Ctx) -> dict[str, Any]:
    initiated = await ctx.alpha.post("/together/v1/files/multipart/initiate", json=MULTIPART)
    assert initiated.status_code == 200, initiated.text
    return dict(initiated.json())


@covers("POST /together/v1/files/multipart/initiate")
async def _(ctx: Ctx) -> None:
    initiated = await initiate(ctx)
    assert [p["PartNumber"] for p in initiated["parts"]] == [1, 2]
    assert all("/together/v1/files/upload/" in p["URL"] for p in initiated["parts"])
    assert initiated["upload_id"] and initiated["file_id"].startswith("file-")
    refused = await ctx.alpha.post(
        "/together/v1/files/multipart/initiate", json={**MULTIPART, "num_parts": "two"}
    )
    error_of(refused, 400, "invalid_value", "num_parts")


@covers("POST /together/v1/files/multipart/complete")
async def _(ctx: Ctx) -> None:
    initiated = await initiate(ctx)
    parts = []
    for part, data in zip(initiated["parts"], (FIRST_PART, DATA), strict=True):
        stored = await ctx.alpha.put(part["URL"], content=data)
        assert stored.status_code == 200, stored.text
        parts.append({"part_number": part["PartNumber"], "etag": stored.headers["etag"]})
    ids = {"upload_id": initiated["upload_id"], "file_id": initiated["file_id"]}
    wrong = [{**parts[0], "etag": '"nope"'}, parts[1]]
    refused = await ctx.alpha.post(
        "/together/v1/files/multipart/complete", json={**ids, "parts": wrong}
    )
    assert refused.status_code == 400, refused.text
    done = await ctx.alpha.post(
        "/together/v1/files/multipart/complete", json={**ids, "parts": parts}
    )
    assert done.status_code == 200, done.text
    assert done.json()["file"]["id"] == initiated["file_id"]
    assert done.json()["file"]["bytes"] == MULTIPART["file_size"]


@covers("POST /together/v1/files/multipart/abort")
async def _(ctx: Ctx) -> None:
    initiated = await initiate(ctx)
    ids = {"upload_id": initiated["upload_id"], "file_id": initiated["file_id"]}
    aborted = await ctx.alpha.post("/together/v1/files/multipart/abort", json=ids)
    assert aborted.status_code == 200, aborted.text
    assert aborted.json() == {**ids, "status": "cancelled"}
    foreign = await ctx.beta.post("/together/v1/files/multipart/abort", json=ids)
    assert foreign.status_code == 404, foreign.text


# ------------------------------------------------------ Together batches


async def together_batch(ctx: Ctx) -> dict[str, Any]:
    created = await ctx.alpha.post(
        "/together/v1/batches",
        json={"input_file_id": await ctx.together_file(), "endpoint": "/v1/chat/completions"},
    )
    assert created.status_code == 201, created.text
    return dict(created.json()["job"])


@covers("POST /together/v1/batches")
async def _(ctx: Ctx) -> None:
    file_id = await ctx.together_file()
    created = await ctx.alpha.post(
        "/together/v1/batches",
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
    )
    assert created.status_code == 201, created.text
    assert created.json()["warning"] is None
    job = created.json()["job"]
    assert job["input_file_id"] == file_id and job["id"]
    refused = await ctx.beta.post(
        "/together/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
    )
    assert refused.status_code == 404, refused.text


@covers("GET /together/v1/batches")
async def _(ctx: Ctx) -> None:
    job = await together_batch(ctx)
    listed = (await ctx.alpha.get("/together/v1/batches")).json()
    assert isinstance(listed, list) and job["id"] in [j["id"] for j in listed]
    assert job["id"] not in [j["id"] for j in (await ctx.beta.get("/together/v1/batches")).json()]
    error_of(await ctx.anonymous.get("/together/v1/batches"), 401, "invalid_api_key")


@covers("GET /together/v1/batches/{batch_id}")
async def _(ctx: Ctx) -> None:
    job = await together_batch(ctx)
    found = await ctx.alpha.get(f"/together/v1/batches/{job['id']}")
    assert found.status_code == 200 and found.json()["id"] == job["id"]
    assert (await ctx.beta.get(f"/together/v1/batches/{job['id']}")).status_code == 404


@covers("POST /together/v1/batches/{batch_id}/cancel")
async def _(ctx: Ctx) -> None:
    job = await together_batch(ctx)
    cancelled = await ctx.alpha.post(f"/together/v1/batches/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["id"] == job["id"]
    assert (await ctx.beta.post(f"/together/v1/batches/{job['id']}/cancel")).status_code == 404


@covers(
    "GET /together/v1/batches/{batch_id}/output",
    "GET /together/v1/batches/{batch_id}/errors",
    "POST /together/v1/batches/{batch_id}/retry",
)
async def _(ctx: Ctx) -> None:
    job = await together_batch(ctx)
    for kind in ("output", "errors"):
        so_far = await ctx.alpha.get(f"/together/v1/batches/{job['id']}/{kind}")
        assert so_far.status_code == 200 and so_far.content == b""
        assert so_far.headers["x-overnight-incomplete"] == "true"
        assert (await ctx.beta.get(f"/together/v1/batches/{job['id']}/{kind}")).status_code == 404
    retried = await ctx.alpha.post(f"/together/v1/batches/{job['id']}/retry", json={})
    assert retried.status_code == 409, retried.text
    assert (
        await ctx.beta.post(f"/together/v1/batches/{job['id']}/retry", json={})
    ).status_code == 404


@covers("GET /together/v1/models")
async def _(ctx: Ctx) -> None:
    models = await ctx.alpha.get("/together/v1/models")
    assert models.status_code == 200, models.text
    assert "fake-model" in json.dumps(models.json())
    error_of(await ctx.anonymous.get("/together/v1/models"), 401, "invalid_api_key")


@covers("GET /together/v1/whoami", "GET /together/v3/whoami")
async def _(ctx: Ctx) -> None:
    for version in ("v1", "v3"):
        me = (await ctx.alpha.get(f"/together/{version}/whoami")).json()
        assert me["type"] == "user_org_project_jwt"
        assert me["project"] == {"id": "alpha", "name": "alpha", "slug": "alpha"}
        assert (await ctx.admin.get(f"/together/{version}/whoami")).json()["user"] == {
            "id": "admin"
        }
        error_of(await ctx.anonymous.get(f"/together/{version}/whoami"), 401, "invalid_api_key")


# ---------------------------------------------------- Anthropic batches

MESSAGE_REQUEST = {
    "custom_id": "a",
    "params": {
        "model": "fake-model",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
    },
}


def anthropic_error_of(response: httpx.Response, status: int, kind: str) -> None:
    """An error in Anthropic's shape, with its `request-id`."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    assert body["error"]["message"]
    assert response.headers["request-id"].startswith("req_")


async def message_batch(ctx: Ctx) -> Any:
    return await ctx.api.anthropic(ALPHA).messages.batches.create(requests=[MESSAGE_REQUEST])  # type: ignore[list-item]


@covers("POST /anthropic/v1/messages/batches")
async def _(ctx: Ctx) -> None:
    batch = await message_batch(ctx)
    assert batch.id.startswith("msgbatch_") and batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 1
    # A retry under the same Idempotency-Key gets the first answer, not a second batch.
    once = {"Idempotency-Key": "create-once"}
    first, again = [
        await ctx.alpha.post(
            "/anthropic/v1/messages/batches", json={"requests": [MESSAGE_REQUEST]}, headers=once
        )
        for _ in range(2)
    ]
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"]
    anthropic_error_of(
        await ctx.anonymous.post("/anthropic/v1/messages/batches", json={"requests": []}),
        401,
        "authentication_error",
    )
    anthropic_error_of(
        await ctx.alpha.post("/anthropic/v1/messages/batches", json={"requests": []}),
        400,
        "invalid_request_error",
    )


@covers("GET /anthropic/v1/messages/batches")
async def _(ctx: Ctx) -> None:
    batch = await message_batch(ctx)
    listed = await ctx.api.anthropic(ALPHA).messages.batches.list(limit=1000)
    assert batch.id in [b.id for b in listed.data]
    theirs = (await ctx.beta.get("/anthropic/v1/messages/batches")).json()
    assert batch.id not in [b["id"] for b in theirs["data"]]
    anthropic_error_of(
        await ctx.alpha.get("/anthropic/v1/messages/batches", params={"limit": 0}),
        400,
        "invalid_request_error",
    )


@covers("GET /anthropic/v1/messages/batches/{batch_id}")
async def _(ctx: Ctx) -> None:
    batch = await message_batch(ctx)
    assert (await ctx.api.anthropic(ALPHA).messages.batches.retrieve(batch.id)).id == batch.id
    anthropic_error_of(
        await ctx.beta.get(f"/anthropic/v1/messages/batches/{batch.id}"), 404, "not_found_error"
    )


@covers(
    "POST /anthropic/v1/messages/batches/{batch_id}/cancel",
    "GET /anthropic/v1/messages/batches/{batch_id}/results",
)
async def _(ctx: Ctx) -> None:
    sdk = ctx.api.anthropic(ALPHA)
    batch = await message_batch(ctx)
    anthropic_error_of(
        await ctx.alpha.get(f"/anthropic/v1/messages/batches/{batch.id}/results"),
        404,
        "not_found_error",
    )
    # No worker here: nothing ran, and the cancel ends it at once.
    cancelled = await sdk.messages.batches.cancel(batch.id)
    assert cancelled.processing_status == "ended"
    assert cancelled.request_counts.canceled == 1 and cancelled.results_url
    results = [r async for r in await sdk.messages.batches.results(batch.id)]
    assert [(r.custom_id, r.result.type) for r in results] == [("a", "canceled")]
    anthropic_error_of(
        await ctx.beta.post(f"/anthropic/v1/messages/batches/{batch.id}/cancel"),
        404,
        "not_found_error",
    )


@covers("POST /anthropic/v1/messages/batches/{batch_id}/retry")
async def _(ctx: Ctx) -> None:
    batch = await message_batch(ctx)
    path = f"/anthropic/v1/messages/batches/{batch.id}/retry"
    anthropic_error_of(await ctx.alpha.post(path, json={}), 409, "invalid_request_error")
    await ctx.api.anthropic(ALPHA).messages.batches.cancel(batch.id)  # ends at once, all canceled
    anthropic_error_of(await ctx.beta.post(path, json={}), 404, "not_found_error")
    nothing = await ctx.alpha.post(path, json={"outcomes": ["failed"]})
    anthropic_error_of(nothing, 400, "invalid_request_error")
    again = await ctx.alpha.post(path, json={"outcomes": ["cancelled"]})
    assert again.status_code == 200, again.text
    assert again.json()["type"] == "message_batch" and again.json()["id"] != batch.id
    assert again.json()["processing_status"] == "in_progress"


@covers("DELETE /anthropic/v1/messages/batches/{batch_id}")
async def _(ctx: Ctx) -> None:
    sdk = ctx.api.anthropic(ALPHA)
    batch = await message_batch(ctx)
    anthropic_error_of(
        await ctx.alpha.delete(f"/anthropic/v1/messages/batches/{batch.id}"),
        400,
        "invalid_request_error",
    )
    await sdk.messages.batches.cancel(batch.id)
    anthropic_error_of(
        await ctx.beta.delete(f"/anthropic/v1/messages/batches/{batch.id}"), 404, "not_found_error"
    )
    deleted = await sdk.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")


# ---------------------------------------------------------------- admin


@covers("GET /admin/tenants")
async def _(ctx: Ctx) -> None:
    listed = (await ctx.admin.get("/admin/tenants")).json()
    assert listed["object"] == "list"
    assert {t["name"] for t in listed["data"]} == {"alpha", "beta"}
    error_of(await ctx.alpha.get("/admin/tenants"), 403, "admin_only")


@covers("GET /admin/tenants/{name}")
async def _(ctx: Ctx) -> None:
    tenant = (await ctx.admin.get("/admin/tenants/beta")).json()
    assert (tenant["object"], tenant["name"]) == ("tenant", "beta")
    assert set(tenant) >= {"quotas", "overrides", "usage", "active_keys"}
    assert (await ctx.admin.get("/admin/tenants/nobody")).status_code == 404
    error_of(await ctx.beta.get("/admin/tenants/beta"), 403, "admin_only")


@covers("PUT /admin/tenants/{name}/quotas")
async def _(ctx: Ctx) -> None:
    changed = await ctx.admin.put("/admin/tenants/beta/quotas", json={"max_pending_batches": 7})
    assert changed.status_code == 200, changed.text
    assert changed.json()["quotas"]["max_pending_batches"] == 7
    assert changed.json()["overrides"]["max_pending_batches"] == 7
    reset = await ctx.admin.put("/admin/tenants/beta/quotas", json={})
    assert reset.json()["overrides"]["max_pending_batches"] is None
    refused = await ctx.admin.put("/admin/tenants/beta/quotas", json={"max_pending_batches": -1})
    assert refused.status_code == 400, refused.text
    error_of(
        await ctx.alpha.put("/admin/tenants/alpha/quotas", json={"max_pending_batches": 9}),
        403,
        "admin_only",
    )


# ------------------------------------------------------- admin: webhooks


async def new_webhook(ctx: Ctx, url: str = "https://hooks.example.com/in") -> dict[str, Any]:
    made = await ctx.admin.post("/admin/webhooks", json={"tenant": "alpha", "url": url})
    assert made.status_code == 200, made.text
    return dict(made.json())


@covers("POST /admin/webhooks")
async def _(ctx: Ctx) -> None:
    made = await new_webhook(ctx)
    assert (made["object"], made["tenant"], made["status"]) == (
        "webhook_endpoint",
        "alpha",
        "enabled",
    )
    assert made["secret"].startswith("whsec_") and made["id"].startswith("we_")
    assert len(made["event_types"]) == 4
    bad = {"tenant": "alpha", "url": "http://x.example.com", "event_types": ["batch.done"]}
    error_of(await ctx.admin.post("/admin/webhooks", json=bad), 400, "invalid_value", "event_types")
    ftp = {"tenant": "alpha", "url": "ftp://x.example.com"}
    error_of(await ctx.admin.post("/admin/webhooks", json=ftp), 400, "invalid_value", "url")
    error_of(await ctx.alpha.post("/admin/webhooks", json=bad), 403, "admin_only")


@covers("GET /admin/webhooks")
async def _(ctx: Ctx) -> None:
    made = await new_webhook(ctx)
    listed = (await ctx.admin.get("/admin/webhooks", params={"tenant": "alpha"})).json()
    assert listed["object"] == "list" and made["id"] in [e["id"] for e in listed["data"]]
    assert all("secret" not in e for e in listed["data"])
    assert (await ctx.admin.get("/admin/webhooks", params={"tenant": "beta"})).json()["data"] == []
    error_of(await ctx.beta.get("/admin/webhooks"), 403, "admin_only")


@covers("GET /admin/webhooks/{endpoint_id}")
async def _(ctx: Ctx) -> None:
    made = await new_webhook(ctx)
    shown = (await ctx.admin.get(f"/admin/webhooks/{made['id']}")).json()
    assert shown == {k: v for k, v in made.items() if k != "secret"}
    error_of(await ctx.admin.get("/admin/webhooks/we_nope"), 404, "webhook_not_found")


@covers("DELETE /admin/webhooks/{endpoint_id}")
async def _(ctx: Ctx) -> None:
    made = await new_webhook(ctx)
    removed = (await ctx.admin.delete(f"/admin/webhooks/{made['id']}")).json()
    assert removed == {"id": made["id"], "object": "webhook_endpoint", "deleted": True}
    error_of(await ctx.admin.delete(f"/admin/webhooks/{made['id']}"), 404, "webhook_not_found")


@covers("POST /admin/webhooks/{endpoint_id}/rotate")
async def _(ctx: Ctx) -> None:
    made = await new_webhook(ctx)
    rotated = (await ctx.admin.post(f"/admin/webhooks/{made['id']}/rotate")).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != made["secret"]
    assert rotated["rotating_until"] > made["created_at"]
    error_of(await ctx.admin.post("/admin/webhooks/we_nope/rotate"), 404, "webhook_not_found")


@covers("POST /admin/webhooks/{endpoint_id}/enable")
async def _(ctx: Ctx) -> None:
    made = await new_webhook(ctx)
    enabled = (await ctx.admin.post(f"/admin/webhooks/{made['id']}/enable")).json()
    assert (enabled["status"], enabled["disabled_reason"]) == ("enabled", None)
    error_of(await ctx.alpha.post(f"/admin/webhooks/{made['id']}/enable"), 403, "admin_only")


@covers("GET /admin/webhooks/{endpoint_id}/deliveries")
async def _(ctx: Ctx) -> None:
    made = await new_webhook(ctx)
    log = (await ctx.admin.get(f"/admin/webhooks/{made['id']}/deliveries")).json()
    assert log == {"object": "list", "data": [], "has_more": False}  # no worker sends here
    too_many = await ctx.admin.get(f"/admin/webhooks/{made['id']}/deliveries?limit=101")
    assert too_many.status_code == 400, too_many.text
    error_of(await ctx.admin.get("/admin/webhooks/we_nope/deliveries"), 404, "webhook_not_found")


# ----------------------------------------------------------- operations


@covers("GET /health")
async def _(ctx: Ctx) -> None:
    health = await ctx.anonymous.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["models"] == ["fake-model"]
    assert health.json()["workers"] == 0 or health.json()["workers"] == []


@covers("GET /metrics")
async def _(ctx: Ctx) -> None:
    metrics = await ctx.anonymous.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in metrics.text


@covers("GET /openapi.json")
async def _(ctx: Ctx) -> None:
    schema = (await ctx.anonymous.get("/openapi.json")).json()
    assert "/v1/batches" in schema["paths"] and "/together/v1/batches" in schema["paths"]


@covers("GET /docs", "GET /docs/oauth2-redirect", "GET /redoc")
async def _(ctx: Ctx) -> None:
    for path in ("/docs", "/docs/oauth2-redirect", "/redoc"):
        page = await ctx.anonymous.get(path)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]


# ----------------------------------------------------------------- table


def app_routes(app: FastAPI) -> set[str]:
    """Every "METHOD /path" the app answers (HEAD aside), included routers
    walked through."""

    def walk(routes: list[Any]) -> Iterator[Any]:
        for route in routes:
            nested = getattr(route, "effective_candidates", None)
            if nested is not None:
                yield from walk(nested())
            else:
                yield route

    return {
        f"{method} {route.path}"
        for route in walk(list(app.router.routes))
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD"
    }


async def test_every_route_has_a_case(ctx: Ctx) -> None:
    routes = app_routes(ctx.api.app)
    assert len(routes) > 30, routes  # the walk found the included routers
    # Everything the schema documents is among them.
    documented = {
        f"{method.upper()} {path}"
        for path, operations in ctx.api.app.openapi()["paths"].items()
        for method in operations
    }
    assert documented <= routes
    assert sorted(routes - set(CASES)) == [], "routes without a case in tests/api/test_routes.py"
    assert sorted(set(CASES) - routes) == [], "cases for routes the app does not have"


@pytest.mark.parametrize("routes", list(GROUPS))
async def test_route(ctx: Ctx, routes: str) -> None:
    await GROUPS[routes](ctx)
