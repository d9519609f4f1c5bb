"""A client for any overnight server, over its OpenAI-dialect HTTP API
(httpx, sync: a command does one thing at a time).

Every way a request can go wrong becomes one `ServerRefused` whose text is
the one line a person needs: the server is not there, the key was refused,
the id is unknown, or the server's own error message. Commands print it
and exit 2; nobody sees a traceback."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import ssl
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO

import httpx

from overnight import __version__

DEFAULT_BASE_URL = "http://127.0.0.1:8000"

#: A file larger than this goes through the Uploads API in parts of this
#: size (OpenAI caps a part at 64 MB).
DEFAULT_PART_SIZE = 64 * 1024 * 1024

#: Reads of a download and pieces of an upload.
PIECE = 1024 * 1024

Progress = Callable[[int], None]
"""Told how many more bytes went over the wire."""


class ServerRefused(Exception):
    """One line for the person at the terminal."""


class ServerDeclined(ServerRefused):
    """The server answered a 4xx: it did not do what was asked (unlike a
    timeout or a 5xx, after which it may have)."""


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default TLS context, built once a process: each client
    would otherwise load the CA bundle again (about 26 ms of CPU), and a
    process running several commands (a script, the test suite) makes a
    client for each."""
    return httpx.create_ssl_context()


class Remote:
    """The server's `/v1` routes, as plain dicts (the wire's JSON)."""

    def __init__(
        self, base_url: str = DEFAULT_BASE_URL, api_key: str | None = None, timeout: float = 60
    ) -> None:
        root = base_url.rstrip("/")
        self.root = root.removesuffix("/v1")
        headers = {"User-Agent": f"overnight-cli/{__version__}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.http = httpx.Client(
            base_url=f"{self.root}/v1",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=5),
            verify=tls_context(),
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ files

    def upload_file(
        self,
        path: Path,
        *,
        purpose: str = "batch",
        part_size: int = DEFAULT_PART_SIZE,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """One request for a small file; the Uploads API in parts of
        `part_size` bytes for a larger one, checked end to end by MD5."""
        size = path.stat().st_size
        if size <= part_size:
            with path.open("rb") as handle:
                body = _Counted(handle, progress)
                files = {"file": (path.name, body, "application/jsonl")}
                return self._call("POST", "/files", data={"purpose": purpose}, files=files)
        return self._upload_in_parts(path, size, purpose, part_size, progress)

    def _upload_in_parts(
        self, path: Path, size: int, purpose: str, part_size: int, progress: Progress | None
    ) -> dict[str, Any]:
        upload = self._call(
            "POST",
            "/uploads",
            json={
                "filename": path.name,
                "purpose": purpose,
                "bytes": size,
                "mime_type": "text/jsonl",
            },
        )
        digest = hashlib.md5(usedforsecurity=False)
        part_ids = []
        try:
            with path.open("rb") as handle:
                while piece := handle.read(part_size):
                    digest.update(piece)
                    body = _Counted(io.BytesIO(piece), progress)
                    part = self._call(
                        "POST",
                        f"/uploads/{upload['id']}/parts",
                        files={"data": ("part", body, "application/octet-stream")},
                    )
                    part_ids.append(part["id"])
            done = self._call(
                "POST",
                f"/uploads/{upload['id']}/complete",
                json={"part_ids": part_ids, "md5": digest.hexdigest()},
            )
        except BaseException:
            # Ctrl-C or a refused part: drop what was sent instead of leaving
            # it to expire (best effort; the original error is what matters).
            try:
                self.http.post(f"/uploads/{upload['id']}/cancel", timeout=5)
            except httpx.HTTPError:
                pass
            raise
        file: dict[str, Any] = done["file"]
        return file

    def list_files(
        self, *, purpose: str | None = None, limit: int = 100, after: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if purpose:
            params["purpose"] = purpose
        if after:
            params["after"] = after
        return self._call("GET", "/files", params=params)

    def get_file(self, file_id: str) -> dict[str, Any]:
        return self._call("GET", f"/files/{file_id}")

    def delete_file(self, file_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/files/{file_id}")

    def download(self, file_id: str, sink: IO[bytes], progress: Progress | None = None) -> int:
        """Stream a file's bytes into `sink`; returns how many."""
        return self._stream_into(f"/files/{file_id}/content", {}, sink, progress)

    def first_lines(self, file_id: str, limit: int) -> list[bytes]:
        """Up to `limit` lines from the start of a file, without reading the
        rest of it."""
        lines: list[bytes] = []
        with self._guarded(), self.http.stream("GET", f"/files/{file_id}/content") as response:
            if response.is_error:
                response.read()
                raise self._refusal(response)
            rest = b""
            for piece in response.iter_bytes(PIECE):
                *whole, rest = (rest + piece).split(b"\n")
                lines.extend(line for line in whole if line.strip())
                if len(lines) >= limit:
                    return lines[:limit]
            if rest.strip():
                lines.append(rest)
        return lines[:limit]

    # ---------------------------------------------------------------- batches

    def create_batch(
        self,
        input_file_id: str,
        *,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        if metadata:
            body["metadata"] = metadata
        return self._call("POST", "/batches", json=body)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        return self._call("GET", f"/batches/{batch_id}")

    def list_batches(self, *, limit: int = 20, after: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        return self._call("GET", "/batches", params=params)

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return self._call("POST", f"/batches/{batch_id}/cancel")

    def retry_batch(
        self,
        batch_id: str,
        *,
        outcomes: list[str] | None = None,
        completion_window: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if outcomes:
            body["outcomes"] = outcomes
        if completion_window:
            body["completion_window"] = completion_window
        return self._call("POST", f"/batches/{batch_id}/retry", json=body)

    def stream_results(
        self,
        batch_id: str,
        kind: str,
        sink: IO[bytes],
        *,
        merged: bool = False,
        progress: Progress | None = None,
    ) -> int:
        """Stream a batch's result lines of `kind` (`output` or `errors`)
        written so far, or merged with the batches it retries, into `sink`;
        returns how many bytes."""
        params = {"merged": "true"} if merged else {}
        return self._stream_into(f"/batches/{batch_id}/{kind}", params, sink, progress)

    # ---------------------------------------------------------------- the wire

    def _stream_into(
        self, route: str, params: dict[str, str], sink: IO[bytes], progress: Progress | None
    ) -> int:
        """GET `route` and write its body into `sink` piece by piece;
        returns how many bytes. A refusal is raised before anything is
        written."""
        written = 0
        with self._guarded(), self.http.stream("GET", route, params=params) as response:
            if response.is_error:
                response.read()
                raise self._refusal(response)
            for piece in response.iter_bytes(PIECE):
                sink.write(piece)
                written += len(piece)
                if progress is not None:
                    progress(len(piece))
        return written

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        with self._guarded():
            response = self.http.request(method, path, **kwargs)
        if response.is_error:
            raise self._refusal(response)
        try:
            answer = response.json()
        except ValueError:
            raise ServerRefused(
                f"{self.root} answered {path} with something that is not JSON; "
                "is it an overnight server?"
            ) from None
        if not isinstance(answer, dict):
            raise ServerRefused(f"{self.root} answered {path} with unexpected JSON")
        return answer

    def _guarded(self) -> AbstractContextManager[None]:
        return _transport_errors(self.root)

    def _refusal(self, response: httpx.Response) -> ServerRefused:
        message, code = _error_of(response)
        status = response.status_code
        refusal = ServerDeclined if status < 500 else ServerRefused
        if status == 401:
            return refusal(
                f"{self.root} refused the API key: {message} "
                "(set it with --api-key or OVERNIGHT_API_KEY)"
            )
        if status == 404 and code is None and message is None:
            return refusal(
                f"{self.root} has no {response.request.url.path}; is it an overnight server?"
            )
        detail = f" ({code})" if code else ""
        return refusal(f"{message or response.reason_phrase}{detail} [HTTP {status}]")


@contextmanager
def _transport_errors(root: str) -> Iterator[None]:
    """httpx's transport errors, as one line naming the server."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout) as error:
        raise ServerRefused(
            f"cannot reach an overnight server at {root} ({_reason(error)}); "
            "start one with `overnight serve`, or point --base-url / OVERNIGHT_BASE_URL at it"
        ) from None
    except httpx.TimeoutException as error:
        raise ServerRefused(f"{root} did not answer in time ({_reason(error)})") from None
    except httpx.TransportError as error:
        raise ServerRefused(f"talking to {root} failed: {_reason(error)}") from None


def _reason(error: Exception) -> str:
    text = str(error).strip()
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    return text or type(error).__name__


def _error_of(response: httpx.Response) -> tuple[str | None, str | None]:
    """The message and code of an OpenAI-shaped error body, if it is one."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        code = error.get("code") or error.get("type")
        return (str(message) if message else None), (str(code) if code else None)
    if isinstance(error, str):
        return error, None
    return None, None


class _Counted:
    """A readable file that reports each piece httpx reads from it, so an
    upload's progress moves as the bytes leave, not when they were read
    from disk. httpx takes the length from `fileno()` or `seek`/`tell`."""

    def __init__(self, inner: BinaryIO, progress: Progress | None) -> None:
        self.inner = inner
        self.progress = progress

    def read(self, size: int = -1) -> bytes:
        piece = self.inner.read(size)
        if self.progress is not None and piece:
            self.progress(len(piece))
        return piece

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.inner.seek(offset, whence)

    def tell(self) -> int:
        return self.inner.tell()

    def fileno(self) -> int:
        return self.inner.fileno()


def iter_pages(
    fetch: Callable[[str | None], dict[str, Any]], limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """Every item of a paginated list, following `last_id` while `has_more`."""
    after: str | None = None
    count = 0
    while True:
        page = fetch(after)
        for item in page.get("data", []):
            yield item
            count += 1
            if limit is not None and count >= limit:
                return
        if not page.get("has_more") or not page.get("data"):
            return
        after = page["data"][-1]["id"]
