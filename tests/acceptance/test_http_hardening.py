"""HTTP hardening: what reaches the wire from hostile file names, forms that
repeat a name, clients that hang up or trickle their headers, and a `Host`
header that is not the server's address.

Most cases run the app in-process (httpx over ASGI, a temporary SQLite data
directory, no worker): the answer is the point. Hang-ups, slow headers and
huge headers need a real `overnight serve`, since its log, its sockets and
its HTTP protocol are the point.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from overnight.settings import Settings

from helpers import ServerProcess, chat_lines, jsonl, write_config
from inprocess import ApiFactory, InProcess

DATA = jsonl(chat_lines(2))
INJECTION = "x.jsonl\"; filename*=UTF-8''evil.html; x=\""


@pytest.fixture
def http(api: InProcess) -> httpx.AsyncClient:
    """The shared in-process app (tests/inprocess.py), over raw httpx."""
    return api.http()


async def together_upload(http: httpx.AsyncClient, file_name: str) -> str:
    """Together's three steps; form-urlencoded, so the name arrives as is."""
    announced = await http.post(
        "/together/v1/files",
        data={"purpose": "batch-api", "file_name": file_name, "file_type": "jsonl"},
    )
    assert announced.status_code == 302, announced.text
    assert (await http.put(announced.headers["location"], content=DATA)).status_code == 200
    file_id = announced.headers["x-together-file-id"]
    assert (await http.post(f"/together/v1/files/{file_id}/preprocess")).status_code == 200
    return file_id


# ------------------------------------------------------------ downloads


@pytest.mark.parametrize("name", ["данные.jsonl", "数据.jsonl", "🔥.jsonl", INJECTION])
@pytest.mark.parametrize("prefix", ["/v1", "/together/v1"])
async def test_a_download_names_any_file_exactly_and_adds_nothing(
    http: httpx.AsyncClient, name: str, prefix: str
) -> None:
    file_id = await together_upload(http, name)
    download = await http.get(f"{prefix}/files/{file_id}/content")
    assert download.status_code == 200, download.text
    assert download.content == DATA
    assert download.headers["x-content-type-options"] == "nosniff"
    # As a real client (aiohttp) reads it: `filename*` wins (RFC 6266) and
    # carries the name exactly, and nothing in the name became a parameter.
    kind, params = parse_content_disposition(download.headers["content-disposition"])
    assert kind == "attachment"
    assert content_disposition_filename(params, "filename") == name
    assert set(params) == {"filename", "filename*"}
    fallback = params["filename"]
    assert fallback.isascii() and not set(fallback) & set('"\\;%')


async def test_every_answer_forbids_sniffing(http: httpx.AsyncClient) -> None:
    for answer in (await http.get("/v1/files"), await http.get("/v1/files/file-nope")):
        assert answer.headers["x-content-type-options"] == "nosniff"


# ---------------------------------------------------------------- forms


async def test_a_form_may_not_repeat_one_name_ten_thousand_times(http: httpx.AsyncClient) -> None:
    boundary = "hardening"
    repeated = f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    body += DATA + b"\r\n" + repeated.encode() * 10_000 + f"--{boundary}--\r\n".encode()
    answer = await http.post(
        "/v1/files",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_multipart"
    assert (await http.get("/v1/files")).json()["data"] == []


# ------------------------------------------------------------ public URL


async def test_upload_urls_use_public_url_whatever_the_host_header(start_api: ApiFactory) -> None:
    public = "https://batch.example.com/overnight"
    http = (await start_api(public_url=public)).http()
    forged = {"host": "attacker.example"}
    announced = await http.post(
        "/together/v1/files",
        data={"purpose": "batch-api", "file_name": "in.jsonl"},
        headers=forged,
    )
    assert announced.status_code == 302
    location = announced.headers["location"]
    assert location.startswith(f"{public}/together/v1/files/upload/")
    initiated = await http.post(
        "/together/v1/files/multipart/initiate",
        json={
            "file_name": "big.jsonl",
            "file_size": 20 * 1024 * 1024,
            "num_parts": 2,
            "purpose": "batch-api",
            "file_type": "jsonl",
        },
        headers=forged,
    )
    assert initiated.status_code == 200, initiated.text
    urls = [part["URL"] for part in initiated.json()["parts"]]
    assert len(urls) == 2
    assert all(u.startswith(f"{public}/together/v1/files/upload/") for u in urls)
    # The proxy strips its prefix; the token works on this server.
    path = location.removeprefix(public)
    assert (await http.put(path, content=DATA)).status_code == 200


def test_public_url_must_be_a_plain_http_url() -> None:
    with pytest.raises(ValueError, match="public_url"):
        Settings(public_url="batch.example.com")


# ------------------------------------------------------ a real server

HEADER_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def lone_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """An API-only server (no worker, no model needed) on SQLite, with a
    short header timeout."""
    root = tmp_path_factory.mktemp("hardening")
    config = write_config(root / "config.toml", [], header_timeout=HEADER_TIMEOUT)
    server = ServerProcess(root / "data", config=config, args=["--no-worker"]).start()
    yield server
    server.stop()


def wait_for_log(server: ServerProcess, text: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{server.log()}"
        time.sleep(0.05)
    return server.log()


def test_a_client_hanging_up_mid_upload_is_one_log_line(lone_server: ServerProcess) -> None:
    before = len(lone_server.log())
    boundary = "hangup"
    head = (
        "POST /v1/files HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{lone_server.port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        "Content-Length: 100000000\r\n\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="in.jsonl"\r\n\r\n'
    ).encode()
    with socket.create_connection(("127.0.0.1", lone_server.port)) as sock:
        sock.sendall(head + DATA * 1000)
    log = wait_for_log(lone_server, "went away")[before:]
    assert "Traceback" not in log
    assert [line for line in log.splitlines() if line.strip()] == [
        line for line in log.splitlines() if "POST /v1/files: the client went away" in line
    ]
    assert httpx.get(f"{lone_server.url}/v1/files").status_code == 200


def test_a_huge_header_is_refused_by_the_protocol(lone_server: ServerProcess) -> None:
    """From the hostile-input catalogue: the server's HTTP protocol counts
    the head as it parses it, so this case needs the real server."""
    answer = httpx.get(f"{lone_server.url}/v1/files", headers={"x-padding": "a" * 1_000_000})
    assert answer.status_code == 431, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["param"]) == ("request_header_fields_too_large", None)
    assert error["message"]
    assert answer.headers["x-request-id"]
    assert httpx.get(f"{lone_server.url}/health").status_code == 200


async def trickle(port: int, started: float) -> float:
    """A slowloris client: a request line, then a header byte every 0.1 s,
    never the blank line. Seconds until the server closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while True:
            try:
                if await asyncio.wait_for(reader.read(1), 0.1) == b"":
                    break
            except TimeoutError:
                writer.write(b"a")
                await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
    return time.monotonic() - started


async def silent(port: int, started: float) -> float:
    """A client that connects and sends nothing at all."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert await reader.read() == b""
    except ConnectionError:
        pass
    finally:
        writer.close()
    return time.monotonic() - started


async def test_slow_headers_are_cut_off_while_others_are_served(
    lone_server: ServerProcess,
) -> None:
    started = time.monotonic()
    clients = [asyncio.create_task(trickle(lone_server.port, started)) for _ in range(50)]
    clients.append(asyncio.create_task(silent(lone_server.port, started)))
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient(base_url=lone_server.url) as http:
        assert (await http.get("/health")).status_code == 200
    closed = await asyncio.wait_for(asyncio.gather(*clients), timeout=HEADER_TIMEOUT + 14)
    assert all(seconds >= HEADER_TIMEOUT * 0.9 for seconds in closed)
