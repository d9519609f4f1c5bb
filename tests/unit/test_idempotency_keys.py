"""`Idempotency-Key` on the creates, in-process (httpx over ASGI) on each
storage backend: a repeat gets the first answer, another request under the
key is refused, keys are per tenant, and racing repeats make one object."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import httpx
import pytest

from overnight.api.idempotency import RequestDigest
from overnight.domain.idempotency import ABANDONED_AFTER, KEPT_FOR, IdempotencyRecord
from overnight.types import TenantId

from backends import Backend
from inprocess import ApiFactory, InProcess

LINE = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'


class Api:
    """The shared in-process app (tests/inprocess.py), and a client per tenant."""

    def __init__(self, api: InProcess) -> None:
        self.runtime = api.runtime
        self.alpha = api.http("key-alpha")
        self.beta = api.http("key-beta")


def _key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


@pytest.fixture
def storage(backend: Backend) -> dict[str, Any]:
    """A new database and bucket on the module's backend (made outside the
    test's event loop)."""
    return backend.settings()


@pytest.fixture
async def api(start_api: ApiFactory, storage: dict[str, Any]) -> Api:
    tenants = [
        {"name": "alpha", "api_keys": ["key-alpha"]},
        {"name": "beta", "api_keys": ["key-beta"]},
    ]
    return Api(await start_api(tenants=tenants, **storage))


async def upload(client: httpx.AsyncClient, data: bytes = LINE, **headers: str) -> httpx.Response:
    return await client.post(
        "/v1/files",
        files={"file": ("input.jsonl", data)},
        data={"purpose": "batch"},
        headers=headers,
    )


async def input_file(client: httpx.AsyncClient) -> str:
    response = await upload(client)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def batch_body(file_id: str, **extra: Any) -> dict[str, Any]:
    return {"input_file_id": file_id, "endpoint": "/v1/chat/completions", **extra}


async def batch_ids(client: httpx.AsyncClient) -> list[str]:
    listed = await client.get("/v1/batches")
    return [b["id"] for b in listed.json()["data"]]


async def test_a_repeated_batch_create_answers_the_first_batch(api: Api) -> None:
    file_id = await input_file(api.alpha)
    body = batch_body(file_id, metadata={"run": "1"})

    first = await api.alpha.post("/v1/batches", json=body, headers=_key("retry-1"))
    again = await api.alpha.post("/v1/batches", json=body, headers=_key("retry-1"))

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await batch_ids(api.alpha) == [first.json()["id"]]


async def test_another_body_under_the_same_key_is_refused(api: Api) -> None:
    file_id = await input_file(api.alpha)
    first = await api.alpha.post("/v1/batches", json=batch_body(file_id), headers=_key("k"))
    other = batch_body(file_id, metadata={"changed": "yes"})

    refused = await api.alpha.post("/v1/batches", json=other, headers=_key("k"))

    assert refused.status_code == 409
    assert refused.json() == {
        "error": {
            "message": refused.json()["error"]["message"],
            "type": "invalid_request_error",
            "param": "Idempotency-Key",
            "code": "idempotency_key_reused",
        }
    }
    assert refused.headers["x-should-retry"] == "false"
    assert await batch_ids(api.alpha) == [first.json()["id"]]


async def test_a_key_is_bound_to_its_route(api: Api) -> None:
    file_id = await input_file(api.alpha)
    await api.alpha.post("/v1/batches", json=batch_body(file_id), headers=_key("k"))

    elsewhere = await upload(api.alpha, **_key("k"))

    assert elsewhere.status_code == 409
    assert elsewhere.json()["error"]["code"] == "idempotency_key_reused"


async def test_tenants_keys_are_their_own(api: Api) -> None:
    alpha_file = await input_file(api.alpha)
    beta_file = await input_file(api.beta)

    alpha = await api.alpha.post("/v1/batches", json=batch_body(alpha_file), headers=_key("k"))
    beta = await api.beta.post("/v1/batches", json=batch_body(beta_file), headers=_key("k"))

    again = await api.alpha.post("/v1/batches", json=batch_body(alpha_file), headers=_key("k"))

    assert alpha.status_code == beta.status_code == 200
    assert "idempotent-replayed" not in beta.headers
    assert alpha.json()["id"] != beta.json()["id"]
    assert again.json()["id"] == alpha.json()["id"]
    assert await batch_ids(api.alpha) == [alpha.json()["id"]]
    assert await batch_ids(api.beta) == [beta.json()["id"]]


async def test_a_repeated_file_upload_is_stored_once(api: Api) -> None:
    # httpx draws a new multipart boundary for every request, as the SDKs
    # do on a retry: the bodies differ byte for byte, the request does not.
    first = await upload(api.alpha, **_key("file-1"))
    again = await upload(api.alpha, **_key("file-1"))
    changed = await upload(api.alpha, LINE + LINE, **_key("file-1"))

    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "idempotency_key_reused"
    listed = (await api.alpha.get("/v1/files")).json()["data"]
    assert [f["id"] for f in listed] == [first.json()["id"]]


async def test_a_repeated_together_direct_upload_is_stored_once(api: Api) -> None:
    async def send() -> httpx.Response:
        return await api.alpha.post(
            "/together/v1/files/upload",
            files={"file": ("in.jsonl", LINE)},
            data={"purpose": "batch-api", "file_name": "in.jsonl", "file_type": "jsonl"},
            headers=_key("tg-file"),
        )

    first, again = await send(), await send()
    assert first.status_code == again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    listed = (await api.alpha.get("/v1/files")).json()["data"]
    assert [f["id"] for f in listed] == [first.json()["id"]]


async def test_a_repeated_upload_its_parts_and_completion_happen_once(api: Api) -> None:
    created = {"bytes": len(LINE), "filename": "in.jsonl", "mime_type": "text/jsonl"}
    created["purpose"] = "batch"
    made = [await api.alpha.post("/v1/uploads", json=created, headers=_key("u")) for _ in "ab"]
    assert made[0].json()["id"] == made[1].json()["id"]
    upload_id = made[0].json()["id"]

    parts = [
        await api.alpha.post(
            f"/v1/uploads/{upload_id}/parts", files={"data": ("blob", LINE)}, headers=_key("p")
        )
        for _ in "ab"
    ]
    assert parts[0].status_code == parts[1].status_code == 200, parts[1].text
    assert parts[0].json()["id"] == parts[1].json()["id"]

    done = [
        await api.alpha.post(
            f"/v1/uploads/{upload_id}/complete",
            json={"part_ids": [parts[0].json()["id"]]},
            headers=_key("c"),
        )
        for _ in "ab"
    ]
    # Without the key, the second completion would be refused: the upload
    # is no longer pending.
    assert done[0].status_code == done[1].status_code == 200, done[1].text
    assert done[0].json() == done[1].json()
    assert done[0].json()["status"] == "completed"


async def test_a_repeated_together_batch_create_answers_the_first_job(api: Api) -> None:
    file_id = await input_file(api.alpha)
    body = batch_body(file_id)

    first = await api.alpha.post("/together/v1/batches", json=body, headers=_key("t"))
    again = await api.alpha.post("/together/v1/batches", json=body, headers=_key("t"))
    other = await api.alpha.post(
        "/together/v1/batches", json={**body, "priority": 3}, headers=_key("t")
    )

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    listed = (await api.alpha.get("/together/v1/batches")).json()
    assert [job["id"] for job in listed] == [first.json()["job"]["id"]]


async def test_a_repeated_together_multipart_completion_answers_the_first_file(api: Api) -> None:
    initiated = await api.alpha.post(
        "/together/v1/files/multipart/initiate",
        json={
            "file_name": "in.jsonl",
            "file_size": len(LINE),
            "num_parts": 1,
            "purpose": "batch-api",
            "checksum": hashlib.sha256(LINE).hexdigest(),
        },
    )
    assert initiated.status_code == 200, initiated.text
    grant = initiated.json()
    put = await api.alpha.put(grant["parts"][0]["URL"], content=LINE)
    assert put.status_code == 200, put.text
    body = {
        "upload_id": grant["upload_id"],
        "file_id": grant["file_id"],
        "parts": [{"part_number": 1, "etag": put.headers["etag"].strip('"')}],
    }

    done = [
        await api.alpha.post("/together/v1/files/multipart/complete", json=body, headers=_key("m"))
        for _ in "ab"
    ]

    assert done[0].status_code == done[1].status_code == 200, done[1].text
    assert done[0].json() == done[1].json()
    assert done[0].json()["file"]["id"] == grant["file_id"]


async def test_a_repeat_while_the_first_still_runs_is_told_to_retry(api: Api) -> None:
    file_id = await input_file(api.alpha)
    store = api.runtime.store
    now = int(api.runtime.service.clock())
    assert (
        await store.claim_idempotency_key(TenantId("alpha"), "k", "POST /v1/batches", now) is None
    )

    busy = await api.alpha.post("/v1/batches", json=batch_body(file_id), headers=_key("k"))

    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "idempotency_key_in_use"
    assert "x-should-retry" not in busy.headers  # the SDKs retry a 409 by default
    assert await batch_ids(api.alpha) == []


async def test_racing_repeats_make_one_batch(api: Api) -> None:
    file_id = await input_file(api.alpha)
    body = batch_body(file_id)

    answers = await asyncio.gather(
        *(api.alpha.post("/v1/batches", json=body, headers=_key("race")) for _ in range(6))
    )

    made = {a.json()["id"] for a in answers if a.status_code == 200}
    busy = [a for a in answers if a.status_code != 200]
    assert len(made) == 1
    assert all(a.json()["error"]["code"] == "idempotency_key_in_use" for a in busy)
    assert await batch_ids(api.alpha) == list(made)


async def test_a_failed_request_frees_its_key(api: Api) -> None:
    refused = await api.alpha.post(
        "/v1/batches", json=batch_body("file-missing"), headers=_key("k")
    )
    file_id = await input_file(api.alpha)
    made = await api.alpha.post("/v1/batches", json=batch_body(file_id), headers=_key("k"))
    again = await api.alpha.post("/v1/batches", json=batch_body(file_id), headers=_key("k"))

    assert refused.status_code == 404
    assert made.status_code == 200
    assert "idempotent-replayed" not in made.headers
    assert again.headers["idempotent-replayed"] == "true"


async def test_keys_are_kept_for_a_day_and_abandoned_claims_for_an_hour(api: Api) -> None:
    store, alpha, route, t = api.runtime.store, TenantId("alpha"), "POST /v1/batches", 1_000_000
    await store.claim_idempotency_key(alpha, "dead", route, t)
    await store.claim_idempotency_key(alpha, "slow", route, t + 60)
    await store.claim_idempotency_key(alpha, "done", route, t)
    done = IdempotencyRecord(tenant=alpha, key="done", route=route, created_at=t)
    await store.answer_idempotency_key(
        done, request_hash="0" * 64, status_code=200, body=b"{}", object_id=None
    )

    assert await store.delete_expired_idempotency_keys(t + ABANDONED_AFTER) == 1  # "dead"
    assert await store.claim_idempotency_key(alpha, "dead", route, t + ABANDONED_AFTER) is None
    kept = await store.claim_idempotency_key(alpha, "done", route, t + KEPT_FOR - 1)
    assert kept is not None and kept.body == b"{}" and kept.status_code == 200
    # A day on, the key is free even before a sweep has run.
    assert await store.claim_idempotency_key(alpha, "done", route, t + KEPT_FOR) is None
    assert await store.delete_expired_idempotency_keys(t + 2 * KEPT_FOR) == 3


async def test_a_malformed_key_is_refused(api: Api) -> None:
    file_id = await input_file(api.alpha)

    refused = await api.alpha.post("/v1/batches", json=batch_body(file_id), headers=_key("x" * 256))

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_idempotency_key"
    assert await batch_ids(api.alpha) == []


def _form(boundary: str, filename: str = "in.jsonl", data: bytes = LINE) -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


def _digest(body: bytes, boundary: str, step: int) -> str | None:
    digest = RequestDigest(f"multipart/form-data; boundary={boundary}")
    for at in range(0, len(body), step):
        digest.feed(body[at : at + step], more=at + step < len(body))
    return digest.hexdigest()


@pytest.mark.parametrize("step", [1, 7, 4096])
def test_a_form_hashes_the_same_whatever_its_boundary_and_chunks(step: int) -> None:
    first = _digest(_form("aaaa"), "aaaa", 4096)

    assert first is not None
    assert _digest(_form("b" * 40), "b" * 40, step) == first
    assert _digest(_form("aaaa", filename="other.jsonl"), "aaaa", step) != first
    assert _digest(_form("aaaa", data=LINE + LINE), "aaaa", step) != first
    assert _digest(_form("aaaa")[:-10], "aaaa", step) is None  # a body cut short
