"""A fake OpenAI-compatible model server ("fake upstream") for tests and benchmarks.

overnight spends its life sending requests to model servers. Testing retries,
timeouts, back-pressure and throughput against a real one needs a GPU, is slow and
cannot fail on demand; this server answers in the same shapes as OpenAI/vLLM, as
fast or as slowly as asked, and misbehaves in the ways real upstreams do.

Endpoints (all answers are JSON and carry an ``x-request-id`` header):

- ``POST /v1/chat/completions``: answers ``"echo: <text of the last message>"``. A
  ``stop`` string found in that answer cuts it there, and the choice names it in
  ``stop_reason``, as vLLM does. With ``tools`` and a ``tool_choice`` that names a
  function (or is ``"required"``: the first tool), and a last message that is not a
  tool's result, it answers a call of that function instead, its arguments
  ``{"text": <text of the last message>}``.
- ``POST /v1/messages``: Anthropic's Messages shape, the same echo as a Message.
- ``POST /v1/responses``: OpenAI's Responses shape, the same echo as a Response.
- ``POST /v1/completions``: answers ``"echo: <prompt>"``, one choice per prompt.
- ``POST /v1/embeddings``: 8 floats per input, derived from a hash of the text, so
  the same text always gets the same vector.
- ``GET /v1/models`` and ``GET /health``: for clients that probe before sending.
- ``GET /_control`` reads the knobs; ``POST /_control`` with a JSON object holding any
  subset of them changes them at runtime (and answers the new set).
- ``GET /_stats`` and ``POST /_stats/reset``: counters, see below (a reset
  also empties the modelled prefix cache).

Usage counts whitespace-separated words: ``prompt_tokens`` over every message (or
prompt, or input), at least 1; ``completion_tokens`` over the reply.

Knobs (server-wide, class `Knobs`):

- ``latency`` (s, default 0) plus ``latency_jitter`` (s, a uniform extra 0..jitter):
  how long each answer (also an injected error or reset) is delayed.
- ``error_rate`` (0..1) answered with ``error_status`` (default 500) and an OpenAI
  error body.
- ``rate_limit_rate`` (0..1) answered 429 with ``Retry-After: <retry_after>``
  (default 1 s; fractions are sent as they are, for fast tests).
- ``reset_rate`` (0..1): the connection is dropped without an answer (TCP RST), so
  the client sees a connection reset / ``ServerDisconnectedError``.
- ``hang_rate`` (0..1): no answer at all for an hour, until the client gives up.
- ``seed`` (int or null): seeds the random source, for reproducible runs.
- ``prefix_cache`` (int, default 0: off): model an engine's prefix cache, an LRU of
  this many prompt prefixes held by this server (one replica). A request's prefix is
  what precedes its last turn: ``system`` / ``instructions`` and every message (or
  Responses input item) but the last. A request whose prefix is in the LRU is a hit,
  else a miss and the prefix goes in (evicting the least recently used); a request
  with nothing before its last turn is neither. The answer carries
  ``x-prefix-cache: hit`` or ``miss``, and the stats count ``prefix_hits`` and
  ``prefix_misses``.
- ``prefix_miss_latency`` (s, default 0): added to a miss's delay, the prefill a
  hit saves.

The four rates share one random draw per request, tried in the order reset, hang,
rate limit, error; their sum should stay at or below 1.

Directives (per request, in the body under ``"x_fake"``; they override the knobs for
that request and are otherwise ignored):

- ``{"status": 503}``: answer that status (400..599) with an error body; ``200``
  forces a normal answer, with no knob-drawn fault.
- ``{"latency": 0.2}``: delay exactly this long (no jitter).
- ``{"hang": true}`` / ``{"reset": true}``: hang / drop the connection.
- ``{"tag": "abc"}``: a label counted in the stats' ``by_tag``.

Directives are applied before the body is checked, so ``{"x_fake": {"status": 500}}``
alone is enough; a body that is not a JSON object, or lacks ``model`` (or
``messages``/``prompt``/``input``), is answered 400 at once, without latency.

Statistics (``GET /_stats``) count inference requests only (not control, stats or
probe requests): ``requests`` (counted on arrival), ``in_flight``,
``max_in_flight`` (the peak of concurrent requests), ``by_status``, ``resets``,
``hangs``, ``by_tag``, and ``prefix_hits`` / ``prefix_misses`` (with ``prefix_cache``).

In-process use (tests): ``with FakeUpstream(latency=0.01) as up:`` runs the server on
127.0.0.1 and a free port in a background thread with its own event loop; hand
``up.url`` to the client as its base URL. Command line (benchmarks, manual use)::

    python -m overnight.testing.fake_upstream --host 127.0.0.1 --port 9001 \\
        --latency 0.05 --error-rate 0.1

prints ``fake upstream listening on http://HOST:PORT/v1`` once it listens (so a
parent can read the port when ``--port 0`` is given) and serves until SIGINT or
SIGTERM.

The request path is kept cheap, because benchmarks push hundreds of thousands of
requests through it: orjson, no access log, no per-request logging, and no random
draw unless a fault rate or jitter is set.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import random
import secrets
import signal
import socket
import struct
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypedDict, TypeVar, Unpack

import orjson
from aiohttp import web

__all__ = [
    "STATE_KEY",
    "FakeUpstream",
    "FakeUpstreamState",
    "KnobValues",
    "Knobs",
    "main",
    "make_app",
    "serve",
]

HANG_SECONDS: Final = 3600.0
"""How long a hanging request waits: longer than any client timeout in a test."""

EMBEDDING_DIM: Final = 8

MAX_BODY_BYTES: Final = 64 * 1024 * 1024
"""Batch lines can be large (long prompts, images); aiohttp's default is 1 MiB."""

_RATES: Final = ("error_rate", "rate_limit_rate", "reset_rate", "hang_rate")
_FLOATS: Final = frozenset(
    {"latency", "latency_jitter", "retry_after", "prefix_miss_latency", *_RATES}
)

_T = TypeVar("_T")


class KnobValues(TypedDict, total=False):
    """The knobs as keyword arguments, for `FakeUpstream` and `FakeUpstream.configure`."""

    latency: float
    latency_jitter: float
    error_rate: float
    error_status: int
    rate_limit_rate: float
    retry_after: float
    reset_rate: float
    hang_rate: float
    seed: int | None
    prefix_cache: int
    prefix_miss_latency: float


@dataclasses.dataclass(frozen=True, slots=True)
class Knobs:
    """Server-wide behaviour; see the module docstring.

    Frozen, so a request reads one consistent set even while `/_control` swaps in a
    new one.
    """

    latency: float = 0.0
    latency_jitter: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    reset_rate: float = 0.0
    hang_rate: float = 0.0
    seed: int | None = None
    prefix_cache: int = 0
    prefix_miss_latency: float = 0.0

    def __post_init__(self) -> None:
        if self.prefix_cache < 0:
            raise ValueError("prefix_cache must be >= 0")
        for name in ("latency", "latency_jitter", "retry_after", "prefix_miss_latency"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in _RATES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if not 400 <= self.error_status <= 599:
            raise ValueError("error_status must be between 400 and 599")

    def updated(self, changes: Mapping[str, Any]) -> "Knobs":
        """A copy with `changes` applied, checked and coerced (they may come from JSON)."""
        values: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in _KNOB_NAMES:
                raise ValueError(f"unknown knob {name!r}")
            if name == "seed":
                values[name] = None if value is None else _as_int(name, value)
            elif name in ("error_status", "prefix_cache"):
                values[name] = _as_int(name, value)
            else:
                values[name] = _as_float(name, value)
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def fault_rate(self) -> float:
        """The share of requests drawn for some fault; 0 skips the random draw."""
        return self.error_rate + self.rate_limit_rate + self.reset_rate + self.hang_rate


_KNOB_NAMES: Final = frozenset(f.name for f in dataclasses.fields(Knobs))


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    return float(value)


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    return value


class _BadRequest(Exception):
    """A malformed request; answered 400 like OpenAI does."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}

# Sentinels for the fault a request gets; any other non-zero value is an HTTP status.
_NO_FAULT: Final = 0
_RESET: Final = -1
_HANG: Final = -2


class FakeUpstreamState:
    """Knobs, random source and counters of one server; shared by its handlers.

    Everything here runs on the server's event loop; `FakeUpstream` calls in from
    other threads through that loop, so no lock is needed.
    """

    def __init__(self, knobs: Knobs | None = None) -> None:
        self.knobs = knobs if knobs is not None else Knobs()
        self._rng = random.Random(self.knobs.seed)
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4)
        # Set when the server shuts down, so hanging requests end at once instead
        # of holding shutdown up for the full shutdown timeout.
        self.stopping = asyncio.Event()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.resets = 0
        self.hangs = 0
        self.by_status: dict[int, int] = {}
        self.by_tag: dict[str, int] = {}
        #: The modelled prefix cache: prefix hashes, least recently used first.
        self.prefixes: OrderedDict[bytes, None] = OrderedDict()
        self.prefix_hits = 0
        self.prefix_misses = 0

    # ---- control -------------------------------------------------------------

    def configure(self, changes: Mapping[str, Any]) -> Knobs:
        """Apply `changes` (a subset of the knobs); a given `seed` reseeds the draws."""
        knobs = self.knobs.updated(changes)
        self.knobs = knobs
        if "seed" in changes:
            self._rng.seed(knobs.seed)
        return knobs

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "resets": self.resets,
            "hangs": self.hangs,
            "by_tag": dict(self.by_tag),
            "prefix_hits": self.prefix_hits,
            "prefix_misses": self.prefix_misses,
        }

    def reset_stats(self) -> None:
        """Zero the counters and empty the prefix cache; requests still in
        flight stay counted as in flight."""
        self.requests = 0
        self.max_in_flight = self.in_flight
        self.resets = 0
        self.hangs = 0
        self.by_status.clear()
        self.by_tag.clear()
        self.prefix_hits = self.prefix_misses = 0
        self.prefixes.clear()

    # ---- HTTP handlers -------------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, _chat_payload)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, _completion_payload)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, _message_payload)

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, _response_payload)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, _embedding_payload)

    async def get_control(self, request: web.Request) -> web.StreamResponse:
        return _plain_json(200, self.knobs.to_dict())

    async def post_control(self, request: web.Request) -> web.StreamResponse:
        try:
            changes = orjson.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object of knobs")
            knobs = self.configure(changes)
        except (ValueError, TypeError) as exc:
            return _plain_json(400, _error_body(400, str(exc)))
        return _plain_json(200, knobs.to_dict())

    async def get_stats(self, request: web.Request) -> web.StreamResponse:
        return _plain_json(200, self.stats())

    async def post_stats_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset_stats()
        return _plain_json(200, self.stats())

    async def models(self, request: web.Request) -> web.StreamResponse:
        model = {"id": "fake-model", "object": "model", "created": 0, "owned_by": "overnight"}
        return _plain_json(200, {"object": "list", "data": [model]})

    async def health(self, request: web.Request) -> web.StreamResponse:
        return _plain_json(200, {"status": "ok"})

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        message = f"fake upstream: no route for {request.method} {request.path}"
        return _plain_json(404, _error_body(404, message))

    # ---- the request path ----------------------------------------------------

    async def _handle(
        self, request: web.Request, build: Callable[[dict[str, Any], str], dict[str, Any]]
    ) -> web.StreamResponse:
        self.requests += 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        try:
            return await self._answer(request, build)
        finally:
            # Also runs when the client goes away mid-request: the handler is
            # cancelled (handler_cancellation), so in_flight stays truthful.
            self.in_flight -= 1

    async def _answer(
        self, request: web.Request, build: Callable[[dict[str, Any], str], dict[str, Any]]
    ) -> web.StreamResponse:
        rid = f"{self._id_prefix}{next(self._ids):x}"
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self._error(400, "fake upstream: the body is not valid JSON", rid)
        if not isinstance(body, dict):
            return self._error(400, "fake upstream: the body must be a JSON object", rid)

        knobs = self.knobs
        delay: float | None = None
        fault = _NO_FAULT
        forced_ok = False
        directives = body.pop("x_fake", None)
        if directives is not None:
            try:
                delay, fault, forced_ok = self._directives(directives)
            except _BadRequest as exc:
                return self._error(400, exc.message, rid, param="x_fake")

        cached: bool | None = None
        if fault == _NO_FAULT:
            try:
                payload = build(body, rid)
            except _BadRequest as exc:
                return self._error(400, exc.message, rid, param=exc.param)
            if not forced_ok and knobs.fault_rate > 0.0:
                fault = self._draw_fault(knobs)
            if knobs.prefix_cache:
                cached = self._look_up_prefix(body, knobs.prefix_cache)
        else:
            payload = {}

        if fault == _HANG:
            return await self._hang(request)
        if delay is None:
            delay = knobs.latency
            if knobs.latency_jitter > 0.0:
                delay += self._rng.uniform(0.0, knobs.latency_jitter)
        if cached is False:
            delay += knobs.prefix_miss_latency
        if delay > 0.0:
            await asyncio.sleep(delay)
        if fault == _NO_FAULT:
            response = self._json(200, payload, rid)
            if cached is not None:
                response.headers["x-prefix-cache"] = "hit" if cached else "miss"
            return response
        if fault == _RESET:
            self.resets += 1
            return _drop_connection(request)
        if fault == 429:
            return self._error(429, "fake upstream: rate limited", rid)
        return self._error(fault, f"fake upstream: injected error {fault}", rid)

    def _directives(self, directives: Any) -> tuple[float | None, int, bool]:
        """Read `x_fake`: (latency or None, fault, whether a plain 200 is forced)."""
        if not isinstance(directives, dict):
            raise _BadRequest("x_fake must be an object")
        tag = directives.get("tag")
        if tag is not None:
            key = str(tag)
            self.by_tag[key] = self.by_tag.get(key, 0) + 1
        delay: float | None = None
        latency = directives.get("latency")
        if latency is not None:
            if isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0:
                raise _BadRequest("x_fake.latency must be a number >= 0")
            delay = float(latency)
        if directives.get("hang"):
            return delay, _HANG, False
        if directives.get("reset"):
            return delay, _RESET, False
        status = directives.get("status")
        if status is None:
            return delay, _NO_FAULT, False
        if isinstance(status, bool) or not isinstance(status, int):
            raise _BadRequest("x_fake.status must be an integer")
        if status == 200:
            return delay, _NO_FAULT, True
        if not 400 <= status <= 599:
            raise _BadRequest("x_fake.status must be 200 or between 400 and 599")
        return delay, status, False

    def _look_up_prefix(self, body: dict[str, Any], capacity: int) -> bool | None:
        """Hit or miss in the modelled prefix cache (None: no prefix), and
        the prefix made the most recently used."""
        prefix = _prompt_prefix(body)
        if prefix is None:
            return None
        key = hashlib.blake2b(prefix, digest_size=16).digest()
        lru = self.prefixes
        if key in lru:
            lru.move_to_end(key)
            self.prefix_hits += 1
            return True
        self.prefix_misses += 1
        lru[key] = None
        while len(lru) > capacity:
            lru.popitem(last=False)
        return False

    def _draw_fault(self, knobs: Knobs) -> int:
        r = self._rng.random()
        if r < knobs.reset_rate:
            return _RESET
        r -= knobs.reset_rate
        if r < knobs.hang_rate:
            return _HANG
        r -= knobs.hang_rate
        if r < knobs.rate_limit_rate:
            return 429
        r -= knobs.rate_limit_rate
        if r < knobs.error_rate:
            return knobs.error_status
        return _NO_FAULT

    async def _hang(self, request: web.Request) -> web.StreamResponse:
        self.hangs += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HANG_SECONDS):
                await self.stopping.wait()
        # Shutting down (or an hour passed): the client gets no answer, just a drop.
        return _drop_connection(request)

    def _json(self, status: int, payload: dict[str, Any], rid: str) -> web.Response:
        self.by_status[status] = self.by_status.get(status, 0) + 1
        return web.Response(
            body=orjson.dumps(payload),
            status=status,
            headers={"Content-Type": "application/json", "x-request-id": rid},
        )

    def _error(self, status: int, message: str, rid: str, param: str | None = None) -> web.Response:
        response = self._json(status, _error_body(status, message, param), rid)
        if status == 429:
            response.headers["Retry-After"] = f"{self.knobs.retry_after:g}"
        return response


def _error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def _plain_json(status: int, payload: dict[str, Any]) -> web.Response:
    """A JSON answer outside the counted request path (control, stats, probes)."""
    return web.Response(
        body=orjson.dumps(payload),
        status=status,
        headers={"Content-Type": "application/json", "x-request-id": secrets.token_hex(8)},
    )


def _drop_connection(request: web.Request) -> web.Response:
    """Abort the connection with a TCP RST, the way a crashing upstream does.

    SO_LINGER 0 makes the kernel send RST instead of FIN, so the client sees a
    reset rather than an orderly close. The response returned is never written:
    aiohttp notices the closed transport and drops it quietly.
    """
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response(status=499)


def _prompt_prefix(body: dict[str, Any]) -> bytes | None:
    """What an engine could reuse from an earlier prompt: everything before
    the last turn, as bytes; None when there is nothing before it."""
    turns = body.get("messages", body.get("input"))
    leading = [body.get("system"), body.get("instructions")]
    if isinstance(turns, list):
        leading.extend(turns[:-1])
    if not any(leading):
        return None
    return orjson.dumps([body.get("model"), leading])


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("you must provide a model parameter", "model")
    return model


def _words(text: str) -> int:
    return len(text.split())


def _content_text(content: Any) -> str:
    """The text of a message's content: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict):
                raise _BadRequest("content parts must be objects", "messages")
            if part.get("type") in ("text", "input_text", "output_text"):
                text = part.get("text")
                if not isinstance(text, str):
                    raise _BadRequest("a text part needs a string 'text'", "messages")
                texts.append(text)
        return " ".join(texts)
    raise _BadRequest("message content must be a string or a list of parts", "messages")


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    prompt_tokens = max(prompt_tokens, 1)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _last_text(messages: Any) -> tuple[str, int]:
    """The text of the last message, and the words of them all."""
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("'messages' must be a non-empty array", "messages")
    prompt_tokens = 0
    text = ""
    for message in messages:
        if not isinstance(message, dict):
            raise _BadRequest("each message must be an object", "messages")
        text = _content_text(message.get("content"))
        prompt_tokens += _words(text)
    return text, prompt_tokens


def _chat_payload(body: dict[str, Any], rid: str) -> dict[str, Any]:
    model = _model(body)
    text, prompt_tokens = _last_text(body.get("messages"))
    choice: dict[str, Any]
    called = _called_tool(body)
    if called is not None:
        arguments = orjson.dumps({"text": text}).decode()
        call = {
            "id": f"call_{rid}",
            "type": "function",
            "function": {"name": called, "arguments": arguments},
        }
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": None, "tool_calls": [call]},
            "finish_reason": "tool_calls",
        }
        reply = arguments
    else:
        reply, matched = _stopped(f"echo: {text}", body.get("stop"))
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": reply},
            "finish_reason": "stop",
            "stop_reason": matched,
        }
    return {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": _usage(prompt_tokens, _words(reply)),
    }


def _called_tool(body: dict[str, Any]) -> str | None:
    """The function a request forces a call of, unless its last message is
    already a tool's result."""
    tools, choice, messages = body.get("tools"), body.get("tool_choice"), body.get("messages")
    if not isinstance(tools, list) or not tools or not isinstance(messages, list):
        return None
    if isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
        return None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return str(choice["function"].get("name"))
    if choice == "required" and isinstance(tools[0], dict):
        return str((tools[0].get("function") or {}).get("name"))
    return None


def _stopped(reply: str, stop: Any) -> tuple[str, str | None]:
    """`reply` cut at the first stop string in it, and that string."""
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    found = [(reply.find(s), s) for s in stops if isinstance(s, str) and s and s in reply]
    if not found:
        return reply, None
    at, matched = min(found)
    return reply[:at], matched


def _message_payload(body: dict[str, Any], rid: str) -> dict[str, Any]:
    """Anthropic's Messages API: the chat echo, as a Message."""
    model = _model(body)
    if not isinstance(body.get("max_tokens"), int):
        raise _BadRequest("max_tokens: Field required", "max_tokens")
    text, prompt_tokens = _last_text(body.get("messages"))
    reply = f"echo: {text}"
    return {
        "id": f"msg_{rid}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": reply}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": max(prompt_tokens, 1), "output_tokens": _words(reply)},
    }


def _response_payload(body: dict[str, Any], rid: str) -> dict[str, Any]:
    """OpenAI's Responses API: the chat echo, as a Response."""
    model = _model(body)
    given = body.get("input")
    if isinstance(given, str):
        given = [{"role": "user", "content": given}]
    text, prompt_tokens = _last_text(given)
    reply = f"echo: {text}"
    completion_tokens = _words(reply)
    return {
        "id": f"resp_{rid}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": model,
        "output": [
            {
                "type": "message",
                "id": f"msg_{rid}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply, "annotations": []}],
            }
        ],
        "usage": {
            "input_tokens": max(prompt_tokens, 1),
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": max(prompt_tokens, 1) + completion_tokens,
        },
    }


def _strings(value: Any, param: str) -> list[str]:
    """A string or a non-empty list of strings, as `prompt` and `input` allow."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise _BadRequest(f"'{param}' must be a string or a non-empty array of strings", param)


def _completion_payload(body: dict[str, Any], rid: str) -> dict[str, Any]:
    model = _model(body)
    prompts = _strings(body.get("prompt"), "prompt")
    choices = []
    prompt_tokens = completion_tokens = 0
    for index, prompt in enumerate(prompts):
        reply = f"echo: {prompt}"
        prompt_tokens += _words(prompt)
        completion_tokens += _words(reply)
        choices.append({"index": index, "text": reply, "logprobs": None, "finish_reason": "stop"})
    return {
        "id": f"cmpl-{rid}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": _usage(prompt_tokens, completion_tokens),
    }


def _vector(text: str) -> list[float]:
    """Eight floats in [-1, 1] from a hash of `text`: same text, same vector."""
    digest = hashlib.blake2b(text.encode(), digest_size=2 * EMBEDDING_DIM).digest()
    return [round(v / 32767.5 - 1.0, 6) for v in struct.unpack(f"<{EMBEDDING_DIM}H", digest)]


def _embedding_payload(body: dict[str, Any], rid: str) -> dict[str, Any]:
    model = _model(body)
    inputs = _strings(body.get("input"), "input")
    prompt_tokens = max(sum(_words(text) for text in inputs), 1)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": _vector(text)}
            for index, text in enumerate(inputs)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


STATE_KEY: Final = web.AppKey("fake_upstream_state", FakeUpstreamState)
"""Where `make_app` keeps the server's `FakeUpstreamState` in the application."""


def make_app(state: FakeUpstreamState | None = None) -> web.Application:
    """The aiohttp application, for callers that run it on their own loop.

    Run it with `access_log=None` and `handler_cancellation=True` (as `serve` and
    `FakeUpstream` do), so that requests whose client left stop counting as in
    flight.
    """
    if state is None:
        state = FakeUpstreamState()
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE_KEY] = state

    async def on_shutdown(app: web.Application) -> None:
        app[STATE_KEY].stopping.set()

    app.on_shutdown.append(on_shutdown)
    router = app.router
    router.add_post("/v1/chat/completions", state.chat_completions)
    router.add_post("/v1/completions", state.completions)
    router.add_post("/v1/messages", state.messages)
    router.add_post("/v1/responses", state.responses)
    router.add_post("/v1/embeddings", state.embeddings)
    router.add_get("/v1/models", state.models)
    router.add_get("/health", state.health)
    router.add_get("/_control", state.get_control)
    router.add_post("/_control", state.post_control)
    router.add_get("/_stats", state.get_stats)
    router.add_post("/_stats/reset", state.post_stats_reset)
    router.add_route("*", "/{tail:.*}", state.not_found)
    return app


def _runner(state: FakeUpstreamState, shutdown_timeout: float) -> web.AppRunner:
    return web.AppRunner(
        make_app(state),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=shutdown_timeout,
    )


def _base_url(host: str, port: int) -> str:
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def serve(
    host: str = "127.0.0.1",
    port: int = 9001,
    knobs: Knobs | None = None,
    *,
    backlog: int = 1024,
    shutdown_timeout: float = 1.0,
) -> None:
    """Serve until SIGINT or SIGTERM; announce the URL on stdout once listening."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    runner = _runner(FakeUpstreamState(knobs), shutdown_timeout)
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=backlog)
        await site.start()
        bound_port = runner.addresses[0][1]
        print(f"fake upstream listening on {_base_url(host, bound_port)}/v1", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        for signum in signals:
            loop.remove_signal_handler(signum)


class FakeUpstream:
    """A fake upstream running in a background thread, for tests.

    ``with FakeUpstream(latency=0.01) as up:`` starts it on a free port of
    127.0.0.1; ``up.url`` is the base URL a client puts in front of
    ``/chat/completions``. The thread has its own event loop, so the server keeps
    answering while the test's loop (or a blocking client) waits on it. `close`
    stops it, ends hanging requests, and joins the thread.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        backlog: int = 1024,
        shutdown_timeout: float = 0.1,
        **knobs: Unpack[KnobValues],
    ) -> None:
        self._knobs = Knobs().updated(knobs)  # fail here, in the caller's thread
        self._host = host
        self._port = port
        self._backlog = backlog
        self._shutdown_timeout = shutdown_timeout
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state: FakeUpstreamState | None = None
        self._stop: asyncio.Event | None = None
        self._bound_port: int | None = None

    def __enter__(self) -> "FakeUpstream":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> "FakeUpstream":
        """Start serving; returns once the socket listens."""
        if self._thread is not None:
            raise RuntimeError("FakeUpstream is already started")
        self._ready.clear()
        self._startup_error = None
        thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)
        self._thread = thread
        thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            thread.join()
            self._thread = None
            raise RuntimeError("fake upstream failed to start") from self._startup_error
        return self

    def close(self) -> None:
        """Stop the server, drop open connections and join the thread (idempotent)."""
        thread = self._thread
        if thread is None:
            return
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(stop.set)
        thread.join()
        self._thread = None
        self._loop = None
        self._stop = None

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("FakeUpstream is not started")
        return self._bound_port

    @property
    def root(self) -> str:
        """``http://127.0.0.1:PORT``, for the control and stats endpoints."""
        return _base_url(self._host, self.port)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, the base URL of the OpenAI-style API."""
        return f"{self.root}/v1"

    def stats(self) -> dict[str, Any]:
        """The counters, as ``GET /_stats`` shows them."""
        return self._call(lambda state: state.stats())

    def reset_stats(self) -> None:
        self._call(lambda state: state.reset_stats())

    def configure(self, **knobs: Unpack[KnobValues]) -> Knobs:
        """Change some knobs at runtime; returns the full new set."""
        return self._call(lambda state: state.configure(knobs))

    @property
    def knobs(self) -> Knobs:
        return self._call(lambda state: state.knobs)

    def _call(self, fn: Callable[[FakeUpstreamState], _T]) -> _T:
        """Run `fn` on the server's loop, where the state lives, and wait for it."""
        loop, state = self._loop, self._state
        if loop is None or state is None:
            raise RuntimeError("FakeUpstream is not running")

        async def call() -> _T:
            return fn(state)

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            if not self._ready.is_set():
                self._startup_error = exc
            else:
                raise
        finally:
            self._ready.set()

    async def _main(self) -> None:
        state = FakeUpstreamState(self._knobs)
        stop = asyncio.Event()
        runner = _runner(state, self._shutdown_timeout)
        try:
            await runner.setup()
            site = web.TCPSite(runner, self._host, self._port, backlog=self._backlog)
            await site.start()
            self._bound_port = runner.addresses[0][1]
            self._loop = asyncio.get_running_loop()
            self._state = state
            self._stop = stop
            self._ready.set()
            await stop.wait()
        finally:
            await runner.cleanup()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m overnight.testing.fake_upstream",
        description="A fake OpenAI-compatible model server with latency and fault knobs.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    add("--port", type=int, default=9001, help="port to bind; 0 picks a free one (default 9001)")
    add("--backlog", type=int, default=1024, help="listen backlog (default 1024)")
    add("--latency", type=float, default=0.0, help="seconds before each answer")
    add("--latency-jitter", type=float, default=0.0, help="uniform extra 0..J seconds")
    add("--error-rate", type=float, default=0.0, help="share answered with --error-status")
    add("--error-status", type=int, default=500, help="status of injected errors (500)")
    add("--rate-limit-rate", type=float, default=0.0, help="share answered 429")
    add("--retry-after", type=float, default=1.0, help="Retry-After seconds on 429 (1)")
    add("--reset-rate", type=float, default=0.0, help="share whose connection is reset")
    add("--hang-rate", type=float, default=0.0, help="share that never gets an answer")
    add("--seed", type=int, default=None, help="seed for reproducible fault draws")
    add("--prefix-cache", type=int, default=0, help="prompt prefixes an LRU holds (0: off)")
    add("--prefix-miss-latency", type=float, default=0.0, help="extra seconds on a miss")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        knobs = Knobs(
            latency=args.latency,
            latency_jitter=args.latency_jitter,
            error_rate=args.error_rate,
            error_status=args.error_status,
            rate_limit_rate=args.rate_limit_rate,
            retry_after=args.retry_after,
            reset_rate=args.reset_rate,
            hang_rate=args.hang_rate,
            seed=args.seed,
            prefix_cache=args.prefix_cache,
            prefix_miss_latency=args.prefix_miss_latency,
        )
    except ValueError as exc:
        print(f"fake upstream: {exc}", file=sys.stderr)
        return 2
    coro = serve(args.host, args.port, knobs, backlog=args.backlog)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
