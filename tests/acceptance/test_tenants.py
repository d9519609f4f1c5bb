"""Tenants: keys from the settings (plain and hashed), from `overnight keys
create` and for admins; every endpoint of both dialects answers another
tenant's ids exactly as it answers ids that never existed; an admin sees
everyone and sets quotas; single-user local mode closes for good once a key
exists. The answers are checked in process; the CLI's keys against a real
server process (a key made by another process must be honoured at once)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from conftest import ServerFactory
from overnight.cli import app as cli
from overnight.testing.fake_upstream import FakeUpstream

from backends import Backend
from helpers import ServerProcess, chat_lines, fake_model, jsonl, wait_for_batch, write_config
from inprocess import BASE_URL, BackgroundApi, api_settings

ALPHA, BETA, ADMIN = "key-alpha", "key-beta", "key-admin"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


TENANTS = [
    {"name": "alpha", "api_keys": [ALPHA]},
    # Beta's key is configured only as its hash: the plaintext is nowhere.
    {"name": "beta", "api_key_hashes": [sha256(BETA)]},
]


@pytest.fixture(scope="module")
def keyed(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream, backend: Backend
) -> Iterator[BackgroundApi]:
    settings = api_settings(
        tmp_path_factory.mktemp("tenants") / "data",
        worker=True,
        models=[
            fake_model(upstream.url),
            fake_model(upstream.url, name="fake-small", max_concurrency=1),
        ],
        tenants=TENANTS,
        admin_api_key_hashes=[sha256(ADMIN)],
        **backend.settings(),
    )
    with BackgroundApi(settings) as app:
        yield app


#: Where the tests send requests: the in-process app, or (for the CLI's
#: keys) a real server process.
Server = BackgroundApi | ServerProcess


def http(server: Server, key: str | None, **headers: str) -> httpx.Client:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if isinstance(server, BackgroundApi):
        return server.client(headers=headers, timeout=30)
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def sdk(server: Server, key: str, **headers: str) -> openai.OpenAI:
    if isinstance(server, BackgroundApi):
        return openai.OpenAI(
            base_url=f"{BASE_URL}/v1",
            api_key=key,
            max_retries=0,
            default_headers=headers,
            http_client=server.client(),
        )
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=key, max_retries=0, default_headers=headers
    )


def shape(response: httpx.Response, ids: dict[str, str]) -> tuple[int, Any]:
    """Status and body with the ids in it replaced by their role, so that
    answers about a foreign id and an unknown id can be compared."""
    text = response.text
    for real, placeholder in ids.items():
        text = text.replace(real, placeholder)
    return response.status_code, json.loads(text) if text else None


# ------------------------------------------------------------------ CLI keys
#
# First in the file: on each backend it runs before the in-process `keyed`
# app starts, so that app's worker is not polling through this test's
# server start and CLI runs (a module-scoped fixture lives until the
# backend changes).


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_keys_made_with_the_cli_work_and_are_stored_only_as_hashes(
    start_server: ServerFactory, upstream: FakeUpstream, backend: Backend, tmp_path: Path
) -> None:
    settings = backend.settings()
    config = write_config(
        tmp_path / "keys.toml", [fake_model(upstream.url)], worker_processes=0, **settings
    )  # keys are the point here, not the worker's process
    data_dir = tmp_path / "data-keys"
    server = start_server(data_dir=data_dir, args=["--config", str(config)])
    where = ["--config", str(config), "--data-dir", str(data_dir)]

    # Local mode: no key yet, everyone is `default`.
    assert httpx.get(f"{server.url}/v1/files").status_code == 200

    made = invoke("keys", "create", "--tenant", "gamma", *where)
    secret = made.stdout.strip()
    assert secret.startswith("ovn-") and len(secret) > 40
    # From the next request on, keys are required.
    assert httpx.get(f"{server.url}/v1/files").status_code == 401
    with sdk(server, secret) as gamma:
        file = gamma.files.create(file=("g.jsonl", jsonl(chat_lines(2))), purpose="batch")
        batch = gamma.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert wait_for_batch(gamma, batch.id).status == "completed"

    admin_secret = invoke("keys", "create", "--admin", *where).stdout.strip()
    listed = invoke("keys", "list", *where).stdout
    assert secret[:12] in listed and secret not in listed and admin_secret not in listed
    assert "gamma" in listed and "admin" in listed
    header, *rows = listed.splitlines()
    for name in ("KEY", "ROLE", "TENANT", "CREATED", "REVOKED"):  # every column under its name
        start = header.index(name)
        assert all(row[start - 2 : start] == "  " and row[start] != " " for row in rows), listed
    with http(server, admin_secret) as admin:
        names = [t["name"] for t in admin.get("/admin/tenants").json()["data"]]
        assert "gamma" in names
        assert admin.get(f"/v1/files/{file.id}").status_code == 200

    if backend.postgres is None:  # SQLite: look at the database file itself
        database = (data_dir / "overnight.db").read_bytes()
        wal = data_dir / "overnight.db-wal"
        everything = database + (wal.read_bytes() if wal.exists() else b"")
        assert secret.encode() not in everything
        with sqlite3.connect(data_dir / "overnight.db") as conn:
            digests = {row[0] for row in conn.execute("SELECT digest FROM api_keys")}
        assert sha256(secret) in digests

    key_id = next(line.split()[0] for line in listed.splitlines() if "gamma" in line)
    assert invoke("keys", "revoke", key_id, *where).stdout.startswith(f"revoked {key_id}")
    with sdk(server, secret) as gamma, pytest.raises(openai.AuthenticationError):
        gamma.files.list()
    # Revoking every key never reopens local mode: nobody gets in.
    admin_id = next(line.split()[0] for line in listed.splitlines() if " admin " in line)
    invoke("keys", "revoke", admin_id, *where)
    assert httpx.get(f"{server.url}/v1/files").status_code == 401
    with http(server, admin_secret) as admin:
        assert admin.get("/admin/tenants").status_code == 401
    missing = CliRunner().invoke(cli, ["keys", "revoke", key_id, *where])
    assert missing.exit_code == 2 and "No active key" in missing.output
    bad = CliRunner().invoke(cli, ["keys", "create", "--tenant", "no spaces", *where])
    assert bad.exit_code == 2 and "not a valid tenant name" in bad.output


def test_the_keys_commands_print_json_for_scripts(tmp_path: Path) -> None:
    where = ["--data-dir", str(tmp_path)]
    made = json.loads(invoke("keys", "create", "--tenant", "gamma", "--json", *where).stdout)
    assert made["object"] == "api_key" and made["tenant"] == "gamma" and made["role"] == "tenant"
    assert made["key"].startswith(made["shown"]) and made["revoked_at"] is None
    admin = json.loads(invoke("keys", "create", "--admin", "--json", *where).stdout)
    assert admin["role"] == "admin" and admin["tenant"] is None

    listed = json.loads(invoke("keys", "list", "--json", *where).stdout)
    assert {key["id"] for key in listed} == {made["id"], admin["id"]}
    assert made["key"] not in json.dumps(listed) and admin["key"] not in json.dumps(listed)

    (revoked,) = json.loads(invoke("keys", "revoke", made["id"], "--json", *where).stdout)
    assert revoked["id"] == made["id"] and revoked["revoked_at"] is not None
    assert json.loads(invoke("keys", "list", "--json", *where).stdout) == [
        {k: v for k, v in admin.items() if k != "key"}
    ]


# ------------------------------------------------------------ authentication


def test_a_missing_or_wrong_key_is_401_in_each_dialect(keyed: BackgroundApi) -> None:
    for key in (None, "wrong"):
        with http(keyed, key) as client:
            for path in ("/v1/files", "/v1/batches", "/together/v1/files", "/together/v1/batches"):
                response = client.get(path)
                assert response.status_code == 401, path
                assert response.json()["error"]["code"] == "invalid_api_key"
                assert response.json()["error"]["type"] == "authentication_error"
                assert response.headers["x-should-retry"] == "false"
                assert response.headers["x-request-id"]
    # Unknown routes and bodies are not even looked at without a key.
    with http(keyed, None) as client:
        assert client.get("/v1/nothing-here").status_code == 401
        assert client.post("/v1/batches", content=b"x" * 10_000_000).status_code == 401
        assert client.get("/health").status_code == 200


def test_bearer_and_x_api_key_both_work(keyed: BackgroundApi) -> None:
    with http(keyed, None, **{"x-api-key": BETA}) as client:
        assert client.get("/v1/files").status_code == 200
    with sdk(keyed, BETA) as beta:
        assert beta.files.list().data is not None


def test_another_tenants_ids_are_unknown_everywhere(keyed: BackgroundApi) -> None:
    """Alpha makes one of everything; for beta, each of alpha's ids is
    answered exactly like an id that never existed, on every endpoint of
    both dialects, and alpha's objects stay untouched."""
    with sdk(keyed, ALPHA) as alpha:
        file = alpha.files.create(file=("a.jsonl", jsonl(chat_lines(3))), purpose="batch")
        batch = alpha.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        upload = alpha.uploads.create(
            bytes=3, filename="u.txt", mime_type="text/plain", purpose="user_data"
        )
    with http(keyed, ALPHA) as client:
        initiated = client.post(
            "/together/v1/files/multipart/initiate",
            json={"file_name": "m.jsonl", "file_size": 10, "num_parts": 1, "purpose": "batch-api"},
        ).json()
    ids = {
        file.id: "FILE",
        batch.id: "BATCH",
        upload.id: "UPLOAD",
        initiated["upload_id"]: "MULTIPART",
        initiated["file_id"]: "PROMISED",
    }
    unknown = {
        "file-" + str(uuid.uuid4()): "FILE",
        "batch_" + uuid.uuid4().hex: "BATCH",
        "upload_" + uuid.uuid4().hex: "UPLOAD",
        "upload_" + uuid.uuid4().hex: "MULTIPART",
        "file-" + str(uuid.uuid4()): "PROMISED",
    }

    def calls(i: dict[str, str]) -> list[tuple[str, str, dict[str, Any]]]:
        f, b, u, m, p = list(i)
        multipart = {"upload_id": m, "file_id": p}
        return [
            ("GET", f"/v1/files/{f}", {}),
            ("GET", f"/v1/files/{f}/content", {}),
            ("DELETE", f"/v1/files/{f}", {}),
            ("GET", "/v1/files", {"params": {"after": f}}),
            ("GET", f"/v1/batches/{b}", {}),
            ("POST", f"/v1/batches/{b}/cancel", {}),
            ("GET", "/v1/batches", {"params": {"after": b}}),
            ("POST", "/v1/batches", {"json": {"input_file_id": f, "endpoint": "/v1/completions"}}),
            ("POST", f"/v1/uploads/{u}/parts", {"files": {"data": ("p", b"abc")}}),
            ("POST", f"/v1/uploads/{u}/complete", {"json": {"part_ids": []}}),
            ("POST", f"/v1/uploads/{u}/cancel", {}),
            ("GET", f"/together/v1/files/{f}", {}),
            ("GET", f"/together/v1/files/{f}/content", {}),
            ("DELETE", f"/together/v1/files/{f}", {}),
            ("POST", f"/together/v1/files/{f}/preprocess", {}),
            ("GET", f"/together/v1/batches/{b}", {}),
            ("POST", f"/together/v1/batches/{b}/cancel", {}),
            ("POST", "/together/v1/batches", {"json": {"input_file_id": f, "endpoint": "/v1/completions"}}),
            ("POST", "/together/v1/files/multipart/complete", {"json": {**multipart, "parts": [{"part_number": 1, "etag": "x"}]}}),
            ("POST", "/together/v1/files/multipart/abort", {"json": multipart}),
        ]  # fmt: skip

    with http(keyed, BETA) as beta:
        for (method, path, kw), (_, unknown_path, unknown_kw) in zip(
            calls(ids), calls(unknown), strict=True
        ):
            foreign = beta.request(method, path, **kw)
            never = beta.request(method, unknown_path, **unknown_kw)
            assert foreign.status_code in (400, 404), (method, path, foreign.text)
            assert shape(foreign, ids) == shape(never, unknown), (method, path)
        # Lists show none of alpha's objects.
        listed = json.dumps(
            [
                beta.get("/v1/files").json(),
                beta.get("/v1/batches").json(),
                beta.get("/together/v1/files").json(),
                beta.get("/together/v1/batches").json(),
            ]
        )
        assert not any(real in listed for real in ids)

    # Nothing of alpha's moved.
    with sdk(keyed, ALPHA) as alpha:
        assert alpha.files.content(file.id).content == jsonl(chat_lines(3))
        assert alpha.batches.retrieve(batch.id).status != "cancelled"
        assert alpha.uploads.cancel(upload.id).status == "cancelled"


# --------------------------------------------------------------------- admin


def test_an_admin_sees_every_tenant_and_creates_only_for_one(keyed: BackgroundApi) -> None:
    with sdk(keyed, ALPHA) as alpha, sdk(keyed, BETA) as beta:
        a = alpha.files.create(file=("a.txt", b"alpha"), purpose="user_data")
        b = beta.files.create(file=("b.txt", b"beta"), purpose="user_data")
    with sdk(keyed, ADMIN) as admin:
        listed = {f.id for f in admin.files.list(purpose="user_data", limit=10000)}
        assert {a.id, b.id} <= listed
        assert admin.files.content(b.id).content == b"beta"
        with pytest.raises(openai.PermissionDeniedError) as refused:
            admin.files.create(file=("x.txt", b"x"), purpose="user_data")
        assert refused.value.body["code"] == "tenant_required"  # type: ignore[index]
    with sdk(keyed, ADMIN, **{"x-overnight-tenant": "beta"}) as acting:
        made = acting.files.create(file=("for-beta.txt", b"x"), purpose="user_data")
        assert a.id not in {f.id for f in acting.files.list(purpose="user_data", limit=10000)}
    with sdk(keyed, BETA) as beta:
        assert beta.files.retrieve(made.id).filename == "for-beta.txt"


def test_the_admin_api_shows_tenants_and_sets_quotas(keyed: BackgroundApi) -> None:
    with http(keyed, ALPHA) as alpha:
        refused = alpha.get("/admin/tenants")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "admin_only"
    with http(keyed, ADMIN) as admin:
        tenants = {t["name"]: t for t in admin.get("/admin/tenants").json()["data"]}
        assert {"alpha", "beta"} <= set(tenants)
        assert tenants["alpha"]["quotas"] == {
            "max_pending_batches": 1000,
            "max_enqueued_requests": 50_000_000,
        }
        assert tenants["alpha"]["active_keys"] == 1
        changed = admin.put("/admin/tenants/beta/quotas", json={"max_pending_batches": 0})
        assert changed.status_code == 200
        assert changed.json()["quotas"]["max_pending_batches"] == 0
        assert changed.json()["overrides"] == {
            "max_pending_batches": 0,
            "max_enqueued_requests": None,
        }
        assert admin.get("/admin/tenants/nobody").status_code == 404
        bad = admin.put("/admin/tenants/a b/quotas", json={"max_pending_batches": 1})
        assert (bad.status_code, bad.json()["error"]["param"]) == (400, "name")
    with sdk(keyed, BETA) as beta:
        file = beta.files.create(file=("q.jsonl", jsonl(chat_lines(1))), purpose="batch")
        with pytest.raises(openai.RateLimitError) as caught:
            beta.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        assert caught.value.body["code"] == "too_many_pending_batches"  # type: ignore[index]
        assert caught.value.response.headers["x-should-retry"] == "false"
    with http(keyed, ADMIN) as admin:
        admin.put("/admin/tenants/beta/quotas", json={})  # back to the defaults
    with sdk(keyed, BETA) as beta:
        batch = beta.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert wait_for_batch(beta, batch.id).status == "completed"
