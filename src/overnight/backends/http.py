"""Any OpenAI-compatible model server (vLLM, SGLang, llama.cpp server, Ollama,
TGI, a hosted API): requests go to the replica with the fewest outstanding
requests, or to their prompt prefix's replica (`replicas.py`), over one of
two clients.

- `http://` servers (a model server on your own network, where a fast
  server makes the client's CPU the limit): overnight's own HTTP/1.1 client
  (`http1.py`), about 14 µs of CPU per request.
- `https://` servers (hosted APIs, where the network dominates), and any
  model configured with `http_client = "aiohttp"`: aiohttp, one pooled
  session per model, about 65 µs per request and every feature of a
  general client (TLS, redirects, proxies from the environment).

`send` makes one attempt. Retrying, with backoff and `Retry-After`, is the
dispatcher's job (runner/dispatch.py), because each attempt also feeds the
model's adaptive concurrency limit.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import msgspec
import orjson

from overnight import __version__
from overnight.backends.base import (
    UpstreamRequest,
    UpstreamResult,
    is_local_shortage,
    is_refused,
    out_of_files,
)
from overnight.backends.http1 import OpenConnections, Origin, UpstreamClosed
from overnight.backends.replicas import Replicas
from overnight.settings import ModelSettings

_encode = msgspec.json.Encoder().encode


class Transport(Protocol):
    async def post(self, url: str, payload: bytes) -> UpstreamResult: ...
    async def close(self) -> None: ...


class HttpBackend:
    def __init__(self, model: ModelSettings) -> None:
        self.model = model
        self.replicas = Replicas(
            model.urls, eject_after=model.eject_after, cooldown=model.eject_cooldown
        )
        native = NativeTransport(model) if model.http_client == "native" else None
        general = AiohttpTransport(model)
        self._transports: dict[str, Transport] = {
            url: native if native is not None and url.startswith("http://") else general
            for url in model.urls
        }
        self._single = model.urls[0] if len(model.urls) == 1 else None
        #: The native client's connections, kept to this worker's share of
        #: max_concurrency (runner/models.py); None with aiohttp only.
        self.connections = native.connections if native is not None else None

    async def start(self) -> None:
        pass  # connections are opened on first use

    async def close(self) -> None:
        for transport in set(self._transports.values()):
            await transport.close()

    async def send(self, request: UpstreamRequest) -> UpstreamResult:
        path = request.endpoint.removeprefix("/v1")
        # msgspec, the decoder of input lines: it writes back every value it
        # read, integers past 64 bits included (orjson refuses those).
        payload = _encode(request.body)
        if self._single is not None:  # one replica: nothing to choose or eject
            return await self._transports[self._single].post(self._single + path, payload)
        replica = self.replicas.pick(request.affinity)
        try:
            result = await self._transports[replica.url].post(replica.url + path, payload)
        except BaseException:
            self.replicas.release(replica, healthy=True)
            raise
        # Out of file descriptors here says nothing about the replica.
        healthy = result.out_of_files or (
            result.status_code is not None and result.status_code < 500
        )
        self.replicas.release(replica, healthy=healthy)
        return result


class NativeTransport:
    """`http1.py`'s client: one `Origin` (a keep-alive pool) per host:port,
    and the request head for each URL built once."""

    def __init__(self, model: ModelSettings) -> None:
        self.model = model
        self._origins: dict[tuple[str, int], Origin] = {}
        #: Over all replicas, at most max_concurrency connections kept open
        #: (lowered to this worker's share as workers join).
        self.connections = OpenConnections(keep=model.max_concurrency)
        #: URL -> (its origin, its request head); as many as replicas x endpoints.
        self._targets: dict[str, tuple[Origin, bytes]] = {}

    async def post(self, url: str, payload: bytes) -> UpstreamResult:
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = self._target(url)
        origin, head = target
        try:
            answer = await origin.post(head, payload)
        except TimeoutError:
            return timed_out(self.model.timeout)
        except UpstreamClosed as exc:
            return disconnected(str(exc))
        except OSError as exc:  # ConnectionError and the http1 errors among them
            return out_of_files(exc) if is_local_shortage(exc) else unreachable(exc)
        return UpstreamResult(
            answer.status,
            parse_body(answer.body),
            request_id=answer.request_id,
            retry_after=retry_after(answer.retry_after),
        )

    def _target(self, url: str) -> tuple[Origin, bytes]:
        parsed = urlsplit(url)
        host, port = parsed.hostname, parsed.port or 80
        assert host is not None, url
        origin = self._origins.get((host, port))
        if origin is None:
            origin = self._origins[host, port] = Origin(
                host, port, timeout=self.model.timeout, connections=self.connections
            )
        name = f"[{host}]" if ":" in host else host
        lines = [
            f"POST {parsed.path or '/'} HTTP/1.1",  # no query: settings refuse one
            f"Host: {name}" if port == 80 else f"Host: {name}:{port}",
            f"User-Agent: overnight/{__version__}",
            "Accept: application/json",
            "Content-Type: application/json",
        ]
        if self.model.api_key:
            lines.append(f"Authorization: Bearer {self.model.api_key}")
        head = "\r\n".join(lines) + "\r\nContent-Length: "
        return origin, head.encode("latin-1")

    async def close(self) -> None:
        for origin in self._origins.values():
            origin.close()
        self._origins.clear()
        self._targets.clear()


class AiohttpTransport:
    """aiohttp: one pooled session for the model, opened on first use."""

    def __init__(self, model: ModelSettings) -> None:
        self.model = model
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        headers = {"Content-Type": "application/json"}
        if self.model.api_key:
            headers["Authorization"] = f"Bearer {self.model.api_key}"
        connector = aiohttp.TCPConnector(
            limit=self.model.max_concurrency, limit_per_host=0, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.model.timeout),
        )
        return self._session

    async def post(self, url: str, payload: bytes) -> UpstreamResult:
        session = self._session or self._open()
        try:
            async with session.post(url, data=payload) as response:
                raw = await response.read()
                return UpstreamResult(
                    response.status,
                    parse_body(raw),
                    request_id=response.headers.get("x-request-id"),
                    retry_after=retry_after(response.headers.get("Retry-After")),
                )
        except TimeoutError:
            return timed_out(self.model.timeout)
        except aiohttp.ClientConnectorError as exc:
            return out_of_files(exc) if is_local_shortage(exc) else unreachable(exc)
        except aiohttp.ServerDisconnectedError:
            return disconnected("closed the connection before answering")
        except (aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
            return disconnected(f"broke off its answer: {type(exc).__name__}: {exc}")
        except aiohttp.ClientError as exc:
            return unreachable(exc)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def timed_out(timeout: float) -> UpstreamResult:
    return UpstreamResult(
        None,
        error_code="upstream_timeout",
        error_message=f"The model server did not answer within {timeout:g} s.",
    )


def unreachable(exc: BaseException) -> UpstreamResult:
    return UpstreamResult(
        None,
        error_code="upstream_unreachable",
        error_message=f"Could not reach the model server: {type(exc).__name__}: {exc}",
        refused=is_refused(exc),
    )


def disconnected(what_happened: str) -> UpstreamResult:
    """The request went out, and the server hung up before its answer was
    whole: reached, so not `upstream_unreachable`."""
    return UpstreamResult(
        None,
        error_code="upstream_disconnected",
        error_message=f"The model server {what_happened}.",
    )


def parse_body(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


def retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
