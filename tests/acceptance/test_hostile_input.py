"""The hostile-input catalogue: broken and malicious input, each case with
the exact answer it must get (status, code, param, line number), and after
every case proof that the app still serves others.

Two kinds of case. A *file* case uploads an input file and creates a batch:
the batch must end `failed` naming exactly the expected lines (or run, for
the inputs that are merely unusual: a BOM, CRLF, blank lines). A *request*
case sends one malformed request, over raw HTTP or through the SDKs, and
checks the error body. The app runs with `require_single_model`, a 1 MiB
line limit and at most 1,000 requests per file, so that a 10 MB line, a
model mix and 1,001 lines are errors.

Both run in-process (tests/inprocess.py): the answers are the point, not
the process. File cases run the worker too, on both storage backends, since
validation reads the file back from storage; request cases are answered
before storage matters and run on SQLite only. A header too large for the
server is refused by its HTTP protocol, below the app: that case runs on a
real server, in test_http_hardening.py.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from overnight.testing.fake_upstream import FakeUpstream

from backends import Backend
from helpers import chat_lines, fake_model, jsonl, wait_for_batch
from inprocess import BackgroundApi, api_settings

KEY, VICTIM = "key-hostile", "key-victim"
GOOD = chat_lines(1)[0]
ENDPOINT = "/v1/chat/completions"


def hostile_app(root: Path, upstream: FakeUpstream, **settings: Any) -> BackgroundApi:
    tenants = [{"name": "hostile", "api_keys": [KEY]}, {"name": "victim", "api_keys": [VICTIM]}]
    return BackgroundApi(
        api_settings(
            root / "data",
            models=[fake_model(upstream.url), fake_model(upstream.url, name="fake-small")],
            tenants=tenants,
            require_single_model=True,
            max_line_bytes=1024 * 1024,
            max_requests_per_batch=1000,
            # Cases follow one another faster than any client would poll.
            rate_limit_per_second=0,
            **settings,
        )
    ).start()


@pytest.fixture(scope="module")
def hostile(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream, backend: Backend
) -> Iterator[BackgroundApi]:
    """With a worker, on each backend: for the file cases."""
    app = hostile_app(
        tmp_path_factory.mktemp("hostile"), upstream, worker=True, **backend.settings()
    )
    yield app
    app.stop()


@pytest.fixture(scope="module")
def hostile_requests(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[BackgroundApi]:
    """No worker, SQLite: for the request cases."""
    app = hostile_app(tmp_path_factory.mktemp("hostile-requests"), upstream)
    yield app
    app.stop()


@dataclass
class Context:
    server: BackgroundApi
    http: httpx.Client
    sdk: openai.OpenAI

    def upload(self, data: bytes, purpose: str = "batch", key: str = KEY) -> str:
        response = self.server.client(key).post(
            "/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": purpose}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["id"])


def context(server: BackgroundApi) -> Iterator[Context]:
    yield Context(server, server.client(KEY), server.openai(KEY))
    # Whatever the case did, the app still serves everyone.
    assert server.client().get("/health").status_code == 200
    assert server.openai(VICTIM).files.list().object == "list"


@pytest.fixture
def ctx(hostile: BackgroundApi) -> Iterator[Context]:
    yield from context(hostile)


@pytest.fixture
def request_ctx(hostile_requests: BackgroundApi) -> Iterator[Context]:
    yield from context(hostile_requests)


def line(**change: Any) -> dict[str, Any]:
    value = json.loads(json.dumps(GOOD))
    for key, new in change.items():
        if new is ...:
            del value[key]
        else:
            value[key] = new
    return value


def body(**change: Any) -> dict[str, Any]:
    return line(body={**GOOD["body"], **change})


def rows(*values: Any) -> bytes:
    """JSONL from values, one line each; bytes are taken as they are."""
    return b"".join(
        (value if isinstance(value, bytes) else json.dumps(value).encode()) + b"\n"
        for value in values
    )


def with_value(fragment: bytes, custom_id: str = "b") -> bytes:
    """A good line but for `fragment`, raw JSON text in a field of its body."""
    good = json.dumps(line(custom_id=custom_id)).encode()
    return good[: good.rindex(b"}}")] + b', "x": ' + fragment + b"}}"


def in_a_message(fragment: bytes, custom_id: str = "b") -> bytes:
    """A good line whose conversation opens with a system message holding
    `fragment` (raw JSON text): a prompt prefix, which prefix-aware
    dispatch renders to group lines by."""
    value = line(custom_id=custom_id)
    value["body"]["messages"].insert(0, {"role": "system", "content": "be brief", "x": 0})
    good = json.dumps(value).encode()
    return good.replace(b'"x": 0', b'"x": ' + fragment, 1)


def ids(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**v, "custom_id": f"c{i}"} for i, v in enumerate(values)]


# ------------------------------------------------------------- file cases

#: name -> (file bytes, expected [(line, code, param)], or an int: the number
#: of requests a batch that must run holds)
FILE_CASES: dict[str, tuple[bytes, list[tuple[int | None, str, str | None]] | int]] = {
    "malformed json line": (
        rows(line(custom_id="a"), b'{"custom_id": "b", "method": "POST",', line(custom_id="c")),
        [(2, "invalid_json_line", None)],
    ),
    "invalid utf-8": (
        rows(line(custom_id="a"), b'{"custom_id": "\xff\xfe", "body": {}}'),
        [(2, "invalid_json_line", None)],
    ),
    "a json array instead of an object": (rows(b"[1, 2, 3]"), [(1, "invalid_json_line", None)]),
    "nesting 100000 deep": (rows(b"[" * 100_000 + b"]" * 100_000), [(1, "invalid_json_line", None)]),
    "a raw NUL byte in a string": (
        rows(b'{"custom_id": "a\x00b", "method": "POST"}'),
        [(1, "invalid_json_line", None)],
    ),
    "a byte-order mark is tolerated": (
        b"\xef\xbb\xbf" + jsonl(ids(chat_lines(2))),
        2,
    ),
    "CRLF line ends are tolerated": (jsonl(ids(chat_lines(3))).replace(b"\n", b"\r\n"), 3),
    "blank lines are skipped but counted": (
        rows(line(custom_id="a"), b"", b"   ", b"{oops", line(custom_id="b")),
        [(4, "invalid_json_line", None)],
    ),
    "a 10 MB line": (
        rows(line(custom_id="a"), line(custom_id="b", pad="x" * 10_000_000), line(custom_id="c")),
        [(2, "line_too_long", None)],
    ),
    "duplicate custom_id": (
        rows(line(custom_id="a"), line(custom_id="b"), line(custom_id="a")),
        [(3, "duplicate_custom_id", "custom_id")],
    ),
    "missing custom_id": (rows(line(custom_id=...)), [(1, "missing_required_parameter", "custom_id")]),
    "non-string custom_id": (rows(line(custom_id=42)), [(1, "invalid_request", "custom_id")]),
    "empty custom_id": (rows(line(custom_id="")), [(1, "invalid_request", "custom_id")]),
    "custom_id over 512 characters": (
        rows(line(custom_id="x" * 513)),
        [(1, "custom_id_too_long", "custom_id")],
    ),
    "wrong url": (rows(line(url="/v1/embeddings")), [(1, "invalid_url", "url")]),
    "non-POST method": (rows(line(method="GET")), [(1, "invalid_method", "method")]),
    "missing method": (rows(line(method=...)), [(1, "missing_required_parameter", "method")]),
    "body not an object": (rows(line(body="hello")), [(1, "invalid_request", "body")]),
    "stream true": (rows(body(stream=True)), [(1, "streaming_unsupported", "body.stream")]),
    "unknown model": (rows(body(model="gpt-unknown")), [(1, "model_not_found", "body.model")]),
    "a model mix when one model is required": (
        rows(line(custom_id="a"), line(custom_id="b", body={**GOOD["body"], "model": "fake-small"})),
        [(2, "model_mismatch", "body.model")],
    ),
    "an empty file": (b"\n\n\n", [(None, "empty_file", None)]),
    # Values that strict JSON refuses, after the first line: validation once
    # accepted these and execution then dropped the line from both files.
    "1e400 in a body on line 2": (
        rows(line(custom_id="a"), with_value(b"1e400")), [(2, "invalid_json_line", None)]
    ),
    "a 5,000-digit integer on line 2": (
        rows(line(custom_id="a"), with_value(b"7" * 5000)), [(2, "invalid_json_line", None)]
    ),
    "invalid utf-8 inside a body string on line 2": (
        rows(line(custom_id="a"), with_value(b'"caf\xc3 \xff"')), [(2, "invalid_json_line", None)]
    ),
    "a lone surrogate escape on line 3": (
        rows(line(custom_id="a"), line(custom_id="c"), with_value(b'"\\udc00"')),
        [(3, "invalid_json_line", None)],
    ),
    "nesting 1,000 deep on line 2": (
        rows(line(custom_id="a"), with_value(b"[" * 1000 + b"]" * 1000)),
        [(2, "invalid_json_line", None)],
    ),
    "nesting 100,000 deep on line 2": (
        rows(line(custom_id="a"), with_value(b"{\"k\":" * 100_000 + b"0" + b"}" * 100_000)),
        [(2, "invalid_json_line", None)],
    ),
    "nesting 129 deep on lines 2 and 4": (
        rows(
            line(custom_id="a"),
            with_value(b"[" * 127 + b"]" * 127),
            line(custom_id="c"),
            with_value(b"[" * 127 + b"]" * 127, custom_id="d"),
        ),
        [(2, "invalid_json_line", None), (4, "invalid_json_line", None)],
    ),
    # Unusual but valid: these run, and are sent as written.
    "nesting 128 deep runs": (rows(line(custom_id="a"), with_value(b"[" * 126 + b"]" * 126)), 2),
    "brackets inside strings are text": (
        rows(line(custom_id="a"), with_value(b'"' + b"[{" * 3000 + b'"')), 2
    ),
    "an integer past 64 bits runs": (
        rows(line(custom_id="a"), with_value(b"123456789012345678901234567890")), 2
    ),
    # The same in a conversation's leading messages, which dispatch renders
    # to find the prompt prefix (domain/prefixes.py).
    "an integer past 64 bits in a prompt prefix runs": (
        rows(line(custom_id="a"), in_a_message(b"123456789012345678901234567890")), 2
    ),
    "nesting 128 deep in a prompt prefix runs": (
        rows(line(custom_id="a"), in_a_message(b"[" * 123 + b"]" * 123)), 2
    ),
    "more requests than max_requests_per_batch": (
        jsonl(ids(chat_lines(1001))),
        [(1001, "too_many_requests_in_file", None)],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(FILE_CASES))
def test_file_case(ctx: Context, name: str) -> None:
    data, expected = FILE_CASES[name]
    file_id = ctx.upload(data)
    created = ctx.sdk.batches.create(
        input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h"
    )
    batch = wait_for_batch(ctx.sdk, created.id, timeout=120)
    if isinstance(expected, int):
        assert batch.status == "completed", batch.errors
        assert batch.request_counts.total == expected
        assert batch.request_counts.completed == expected
        return
    assert batch.status == "failed"
    assert batch.errors is not None
    found = [(e.line, e.code, e.param) for e in batch.errors.data or []]
    assert found == expected
    for error in batch.errors.data or []:
        if error.line is not None and error.code != "too_many_requests_in_file":
            assert f"Line {error.line}" in (error.message or "")


# ---------------------------------------------------------- request cases

Answer = Any  # an httpx response, or an SDK error's response
REQUEST_CASES: dict[str, tuple[Callable[[Context], Answer], int, str, str | None]] = {}


def case(
    name: str, status: int, code: str, param: str | None = None
) -> Callable[[Callable[[Context], Answer]], Callable[[Context], Answer]]:
    def register(send: Callable[[Context], Answer]) -> Callable[[Context], Answer]:
        REQUEST_CASES[name] = (send, status, code, param)
        return send

    return register


def sdk_error(call: Callable[[], Any]) -> Answer:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    return caught.value.response


def create(ctx: Context, **fields: Any) -> httpx.Response:
    file_id = ctx.upload(jsonl(chat_lines(1)))
    payload = {"input_file_id": file_id, "endpoint": ENDPOINT, "completion_window": "24h"}
    payload.update(fields)
    return ctx.http.post("/v1/batches", json=payload)


@case("a wrong purpose", 400, "invalid_value", "purpose")
def _(ctx: Context) -> Answer:
    return sdk_error(lambda: ctx.sdk.files.create(file=("x.jsonl", b"{}"), purpose="homework"))  # type: ignore[arg-type]


@case("a batch from a file that is not batch input", 400, "invalid_value", "input_file_id")
def _(ctx: Context) -> Answer:
    file_id = ctx.upload(jsonl(chat_lines(1)), purpose="user_data")
    return sdk_error(
        lambda: ctx.sdk.batches.create(
            input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h"
        )
    )


@case("a deleted file id", 404, "file_not_found", "input_file_id")
def _(ctx: Context) -> Answer:
    file_id = ctx.upload(jsonl(chat_lines(1)))
    ctx.sdk.files.delete(file_id)
    return sdk_error(
        lambda: ctx.sdk.batches.create(
            input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h"
        )
    )


@case("another tenant's file id", 404, "file_not_found", "input_file_id")
def _(ctx: Context) -> Answer:
    file_id = ctx.upload(jsonl(chat_lines(1)), key=VICTIM)
    return sdk_error(
        lambda: ctx.sdk.batches.create(
            input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h"
        )
    )


@case("a truncated multipart body", 400, "invalid_multipart", "file")
def _(ctx: Context) -> Answer:
    content = (
        b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
        b'{"custom_id": "a"}\n'
    )
    return ctx.http.post(
        "/v1/files", content=content, headers={"Content-Type": "multipart/form-data; boundary=B"}
    )


@case("a multipart body without a boundary", 400, "invalid_multipart", "file")
def _(ctx: Context) -> Answer:
    return ctx.http.post(
        "/v1/files", content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"}
    )


@case("a file upload that is not multipart", 400, "invalid_content_type", "file")
def _(ctx: Context) -> Answer:
    return ctx.http.post("/v1/files", json={"file": "hello", "purpose": "batch"})


@case("a huge multipart part header", 400, "invalid_multipart", "file")
def _(ctx: Context) -> Answer:
    return ctx.http.post(
        "/v1/files", files={"file": ("n" * 100_000 + ".jsonl", b"{}")}, data={"purpose": "batch"}
    )


@case("too many form fields", 400, "invalid_multipart")
def _(ctx: Context) -> Answer:
    fields = {f"f{i}": "x" for i in range(40)}
    return ctx.http.post("/v1/files", files={"file": ("a.jsonl", b"{}")}, data=fields)


@case("a non-numeric expires_after", 400, "invalid_value", "expires_after[seconds]")
def _(ctx: Context) -> Answer:
    return ctx.http.post(
        "/v1/files",
        files={"file": ("a.jsonl", b"{}")},
        data={
            "purpose": "batch",
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": "soon",
        },
    )


@case("a non-JSON create body", 400, "invalid_json")
def _(ctx: Context) -> Answer:
    return ctx.http.post(
        "/v1/batches", content=b"input_file_id=x", headers={"Content-Type": "application/json"}
    )


@case("a create body that is a JSON array", 400, "invalid_value")
def _(ctx: Context) -> Answer:
    return ctx.http.post("/v1/batches", json=[{"input_file_id": "x"}])


@case("a create body without input_file_id", 400, "missing_required_parameter", "input_file_id")
def _(ctx: Context) -> Answer:
    return ctx.http.post("/v1/batches", json={"endpoint": ENDPOINT})


for field, wrong in {
    "input_file_id": 12,
    "endpoint": ["/v1/chat/completions"],
    "completion_window": 24,
    "metadata": "team=search",
    "output_expires_after": "soon",
}.items():
    case(f"a wrong type for {field}", 400, "invalid_value", field)(
        lambda ctx, field=field, wrong=wrong: create(ctx, **{field: wrong})
    )


#: JSON bodies that the body parser cannot read although their syntax holds.
UNREADABLE_JSON = {
    "nested 5,000 deep": b'{"metadata": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}",
    "with a 5,000-digit integer": b'{"completion_window": ' + b"9" * 5000 + b"}",
    "with invalid UTF-8": b'{"input_file_id": "file-\xff\xfe"}',
}
for route in (
    "/v1/batches",
    "/v1/uploads",
    "/v1/uploads/upload_x/complete",
    "/together/v1/batches",
    "/together/v1/files/multipart/complete",
):
    for what, raw in UNREADABLE_JSON.items():
        case(f"a body {what} to {route}", 400, "invalid_json")(
            lambda ctx, route=route, raw=raw: ctx.http.post(
                route, content=raw, headers={"Content-Type": "application/json"}
            )
        )


@case("a wrong type inside metadata", 400, "invalid_value", "metadata.team")
def _(ctx: Context) -> Answer:
    return create(ctx, metadata={"team": 7})


@case("a lone surrogate in metadata", 400, "invalid_value", "metadata")
def _(ctx: Context) -> Answer:
    file_id = ctx.upload(jsonl(chat_lines(1)))
    payload = {"input_file_id": file_id, "endpoint": ENDPOINT, "metadata": {"k": "\ud800"}}
    raw = json.dumps(payload).encode()  # ASCII, with the escape "\\ud800"
    return ctx.http.post("/v1/batches", content=raw, headers={"Content-Type": "application/json"})


@case("seventeen metadata pairs", 400, "invalid_value", "metadata")
def _(ctx: Context) -> Answer:
    return create(ctx, metadata={f"k{i}": "v" for i in range(17)})


@case("an unknown endpoint", 400, "invalid_value", "endpoint")
def _(ctx: Context) -> Answer:
    return create(ctx, endpoint="/v1/moderations")


@case("a completion window of forever", 400, "invalid_value", "completion_window")
def _(ctx: Context) -> Answer:
    return create(ctx, completion_window="forever")


@case("limit 0", 400, "invalid_value", "limit")
def _(ctx: Context) -> Answer:
    return ctx.http.get("/v1/batches", params={"limit": 0})


@case("limit 101", 400, "invalid_value", "limit")
def _(ctx: Context) -> Answer:
    return sdk_error(lambda: ctx.sdk.batches.list(limit=101))


@case("limit that is not a number", 400, "invalid_value", "limit")
def _(ctx: Context) -> Answer:
    return ctx.http.get("/v1/files", params={"limit": "lots"})


@case("a bad files cursor", 400, "invalid_cursor", "after")
def _(ctx: Context) -> Answer:
    return sdk_error(lambda: ctx.sdk.files.list(after="file-" + str(uuid.uuid4())))


@case("another tenant's batch as a cursor", 400, "invalid_cursor", "after")
def _(ctx: Context) -> Answer:
    file_id = ctx.upload(jsonl(chat_lines(1)), key=VICTIM)
    theirs = (
        ctx.server.client(VICTIM)
        .post("/v1/batches", json={"input_file_id": file_id, "endpoint": ENDPOINT})
        .json()["id"]
    )
    return ctx.http.get("/v1/batches", params={"after": theirs})


@case("a wrong checksum on a Together upload", 400, "checksum_mismatch", "checksum")
def _(ctx: Context) -> Answer:
    grant = ctx.http.post(
        "/together/v1/files",
        data={
            "purpose": "batch-api",
            "file_name": "c.jsonl",
            "checksum": hashlib.sha256(b"other bytes").hexdigest(),
        },
    )
    return ctx.server.client().put(grant.headers["location"], content=jsonl(chat_lines(1)))


@case("a wrong md5 on an upload", 400, "checksum_mismatch", "md5")
def _(ctx: Context) -> Answer:
    upload = ctx.sdk.uploads.create(
        bytes=3, filename="m.txt", mime_type="text/plain", purpose="user_data"
    )
    part = ctx.sdk.uploads.parts.create(upload_id=upload.id, data=b"abc")
    return sdk_error(
        lambda: ctx.sdk.uploads.complete(upload_id=upload.id, part_ids=[part.id], md5="0" * 32)
    )


@case("a replayed upload token", 403, "upload_url_rejected")
def _(ctx: Context) -> Answer:
    grant = ctx.http.post(
        "/together/v1/files", data={"purpose": "batch-api", "file_name": "r.jsonl"}
    )
    assert ctx.server.client().put(grant.headers["location"], content=b"{}\n").status_code == 200
    return ctx.server.client().put(grant.headers["location"], content=b"{}\n")


@case("a made-up upload token", 403, "upload_url_rejected")
def _(ctx: Context) -> Answer:
    return ctx.server.client().put("/together/v1/files/upload/forged", content=b"{}\n")


@case("an unknown Together file type", 400, "invalid_value", "file_type")
def _(ctx: Context) -> Answer:
    return ctx.http.post(
        "/together/v1/files",
        data={"purpose": "batch-api", "file_name": "x.exe", "file_type": "exe"},
    )


@case("a part for a cancelled upload", 409, "upload_not_pending")
def _(ctx: Context) -> Answer:
    upload = ctx.sdk.uploads.create(
        bytes=3, filename="c.txt", mime_type="text/plain", purpose="user_data"
    )
    ctx.sdk.uploads.cancel(upload.id)
    return sdk_error(lambda: ctx.sdk.uploads.parts.create(upload_id=upload.id, data=b"abc"))


@case("a NUL byte in a file id", 404, "file_not_found", "file_id")
def _(ctx: Context) -> Answer:
    return ctx.http.get("/v1/files/file-%00abc")


@case("no API key", 401, "invalid_api_key")
def _(ctx: Context) -> Answer:
    return ctx.server.client().get("/v1/batches")


@case("a wrong API key in the Together dialect", 401, "invalid_api_key")
def _(ctx: Context) -> Answer:
    return ctx.server.client("nope").get("/together/v1/batches")


@case("an unknown route", 404, "unknown_url")
def _(ctx: Context) -> Answer:
    return ctx.http.get("/v1/../../etc/passwd")


@case("a wrong method", 405, "method_not_allowed")
def _(ctx: Context) -> Answer:
    return ctx.http.delete("/v1/batches")


@case("a JSON body over its limit", 413, "request_too_large")
def _(ctx: Context) -> Answer:
    return ctx.http.post(
        "/v1/batches",
        content=b"[" * (5 * 1024 * 1024),
        headers={"Content-Type": "application/json"},
    )


@pytest.mark.parametrize("name", list(REQUEST_CASES))
def test_request_case(request_ctx: Context, name: str) -> None:
    send, status, code, param = REQUEST_CASES[name]
    response = send(request_ctx)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error
    assert error["message"]
    assert response.headers["x-request-id"]


# ------------------------------------------------- cases with other answers


def test_dot_dot_slash_in_a_filename_is_only_a_label(request_ctx: Context) -> None:
    ctx = request_ctx
    created = ctx.sdk.files.create(file=("../../etc/passwd", b"{}\n"), purpose="user_data")
    assert created.filename == "passwd"
    assert ctx.sdk.files.content(created.id).content == b"{}\n"
    windows = ctx.sdk.files.create(file=("..\\..\\boot.ini", b"x"), purpose="user_data")
    assert windows.filename == "boot.ini"
