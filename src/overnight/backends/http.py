"""Any OpenAI-compatible model server (vLLM, SGLang, llama.cpp server, Ollama,
TGI, a hosted API), over aiohttp: one pooled session per model, requests
sent to the replica with the fewest outstanding requests (`replicas.py`).

aiohttp costs about 70-100 µs of client CPU per request here, a twentieth of
httpx (docs/architecture.md), which is why the dispatch path uses it.

`send` makes one attempt. Retrying, with backoff and `Retry-After`, is the
dispatcher's job (runner/dispatch.py), because each attempt also feeds the
model's adaptive concurrency limit.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from overnight.backends.base import UpstreamRequest, UpstreamResult
from overnight.backends.replicas import Replicas
from overnight.settings import ModelSettings


class HttpBackend:
    def __init__(self, model: ModelSettings) -> None:
        self.model = model
        self.replicas = Replicas(
            model.urls, eject_after=model.eject_after, cooldown=model.eject_cooldown
        )
        self._single = model.urls[0] if len(model.urls) == 1 else None
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=model.timeout)

    async def start(self) -> None:
        headers = {"Content-Type": "application/json"}
        if self.model.api_key:
            headers["Authorization"] = f"Bearer {self.model.api_key}"
        connector = aiohttp.TCPConnector(
            limit=self.model.max_concurrency, limit_per_host=0, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector, headers=headers, timeout=self._timeout
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, request: UpstreamRequest) -> UpstreamResult:
        if self._session is None:
            await self.start()
        assert self._session is not None
        path = request.endpoint.removeprefix("/v1")
        if self._single is not None:  # one replica: nothing to choose or eject
            return await self._post(self._single + path, orjson.dumps(request.body))
        replica = self.replicas.pick()
        try:
            result = await self._post(replica.url + path, orjson.dumps(request.body))
        except BaseException:
            self.replicas.release(replica, healthy=True)
            raise
        healthy = result.status_code is not None and result.status_code < 500
        self.replicas.release(replica, healthy=healthy)
        return result

    async def _post(self, url: str, payload: bytes) -> UpstreamResult:
        assert self._session is not None
        try:
            async with self._session.post(url, data=payload) as response:
                raw = await response.read()
                return UpstreamResult(
                    response.status,
                    _parse_body(raw),
                    request_id=response.headers.get("x-request-id"),
                    retry_after=_retry_after(response.headers.get("Retry-After")),
                )
        except TimeoutError:
            return UpstreamResult(
                None,
                error_code="upstream_timeout",
                error_message=f"The model server did not answer within {self.model.timeout:g} s.",
            )
        except aiohttp.ClientError as exc:
            return UpstreamResult(
                None,
                error_code="upstream_unreachable",
                error_message=f"Could not reach the model server: {type(exc).__name__}: {exc}",
            )


def _parse_body(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
