"""Any OpenAI-compatible model server (vLLM, SGLang, llama.cpp server, Ollama,
TGI, a hosted API), over aiohttp: one pooled session per model, requests
spread round-robin over the model's replicas.

aiohttp costs about 70-100 µs of client CPU per request here, a twentieth of
httpx (docs/architecture.md), which is why the dispatch path uses it.

Retries: connection errors, timeouts, 408, 429 and 5xx are retried up to
`max_attempts` times with exponential backoff and full jitter; a
`Retry-After` header sets the wait instead. What is left after the last
attempt is returned as the result: the last status and body, or an error
code when no answer came at all.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import aiohttp
import orjson

from overnight.backends.base import UpstreamRequest, UpstreamResult
from overnight.settings import ModelSettings

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class HttpBackend:
    def __init__(self, model: ModelSettings) -> None:
        self.model = model
        self._urls = itertools.cycle(model.urls)
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
        payload = orjson.dumps(request.body)
        result = UpstreamResult(None, error_code="upstream_unreachable")
        for attempt in range(1, self.model.max_attempts + 1):
            result, retry_after = await self._attempt(next(self._urls) + path, payload, attempt)
            retryable = result.status_code is None or result.status_code in RETRYABLE_STATUS
            if not retryable or attempt == self.model.max_attempts:
                break
            await asyncio.sleep(self._delay(attempt, retry_after))
        return result

    async def _attempt(
        self, url: str, payload: bytes, attempt: int
    ) -> tuple[UpstreamResult, float | None]:
        assert self._session is not None
        try:
            async with self._session.post(url, data=payload) as response:
                raw = await response.read()
                return (
                    UpstreamResult(
                        response.status,
                        _parse_body(raw),
                        request_id=response.headers.get("x-request-id"),
                        attempts=attempt,
                    ),
                    _retry_after(response.headers.get("Retry-After")),
                )
        except TimeoutError:
            return (
                UpstreamResult(
                    None,
                    error_code="upstream_timeout",
                    error_message=f"The model server did not answer within {self.model.timeout:g} s.",
                    attempts=attempt,
                ),
                None,
            )
        except aiohttp.ClientError as exc:
            return (
                UpstreamResult(
                    None,
                    error_code="upstream_unreachable",
                    error_message=f"Could not reach the model server: {type(exc).__name__}: {exc}",
                    attempts=attempt,
                ),
                None,
            )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, max(self.model.max_retry_delay, 0.0))
        ceiling = min(self.model.max_retry_delay, self.model.retry_backoff * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)


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
