"""What one request to the embedded model asks for: its prompt as tokens,
its sampling settings, stop strings and token limit, worked out exactly as
llama-cpp-python's own `create_chat_completion` and `create_completion`
work them out, and the answer it gets, in their shapes.

The batching engine (llama_batching.py) decodes many requests at once, so
it cannot call those methods, which each run one request to the end. It
still wants what they decide before they generate: the chat template's
rendering and its extra stop strings and stop tokens, the grammar for a
`response_format`, each method's own defaults (a chat's temperature is 0.2,
a completion's 0.8). `Recorder` stands in for the `Llama` object: it lets
those methods run up to the point where generation starts and keeps the
arguments they would generate with. Nothing of theirs is copied, so the
prompt a request gets is the one the serial engine gave it.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

#: Generation stops here when a request sets no max_tokens: a small CPU model
#: must not run to the end of its context on every line by default.
DEFAULT_MAX_TOKENS = 256

#: The request fields handed to llama-cpp-python's methods as they are.
SAMPLING_FIELDS = (
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

Kind = Literal["chat", "text"]


class PromptTooLong(ValueError):
    """A prompt the context cannot hold: the request's line fails with 400."""


@dataclass
class Generation:
    """One request, ready to decode: everything the engine needs and
    nothing of the request body."""

    kind: Kind
    prompt: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    typical_p: float
    repeat_penalty: float
    frequency_penalty: float
    presence_penalty: float
    seed: int
    #: Every stop string, the chat template's (its end-of-turn text) too.
    stops: list[str] = field(default_factory=list)
    #: The request's own stop strings: the one that ends the text is named
    #: in the choice's `stop_reason`.
    named_stops: list[str] = field(default_factory=list)
    logit_bias: dict[int, float] = field(default_factory=dict)
    #: A `llama_cpp.LlamaGrammar` (a `response_format`), or None.
    grammar: Any = None
    #: llama-cpp-python's stopping criteria (the chat template's stop tokens).
    stopping_criteria: Any = None

    @property
    def reserved_tokens(self) -> int:
        """The most context cells this request can fill."""
        return len(self.prompt) + self.max_tokens


class _Captured(Exception):
    def __init__(self, arguments: dict[str, Any]) -> None:
        super().__init__("generation arguments captured")
        self.arguments = arguments


class Recorder:
    """A stand-in for a `llama_cpp.Llama`: every attribute is the real
    model's, except that generation does not start; its arguments are
    raised back to `capture` instead."""

    def __init__(self, llama: Any) -> None:
        self._llama = llama

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llama, name)

    def create_completion(self, **arguments: Any) -> Any:
        from llama_cpp import Llama

        return Llama.create_completion(self, **arguments)  # type: ignore[arg-type]

    def _create_completion(self, **arguments: Any) -> Any:
        raise _Captured(arguments)


def chat_generation(
    llama: Any, body: dict[str, Any], messages: list[Any], *, n_ctx: int, seeds: random.Random
) -> Generation:
    """A chat request as the chat template renders it."""
    from llama_cpp import Llama

    options = sampling(body)
    if isinstance(body.get("response_format"), dict):
        options["response_format"] = body["response_format"]
    return _recorded(
        Llama.create_chat_completion,
        llama,
        "chat",
        body,
        n_ctx=n_ctx,
        seeds=seeds,
        messages=messages,
        **options,
    )


def completion_generation(
    llama: Any, body: dict[str, Any], prompt: str, *, n_ctx: int, seeds: random.Random
) -> Generation:
    """A text completion request, with create_completion's defaults."""
    from llama_cpp import Llama

    return _recorded(
        Llama.create_completion,
        llama,
        "text",
        body,
        n_ctx=n_ctx,
        seeds=seeds,
        prompt=prompt,
        **sampling(body),
    )


def _recorded(
    method: Callable[..., Any],
    llama: Any,
    kind: Kind,
    body: dict[str, Any],
    *,
    n_ctx: int,
    seeds: random.Random,
    **arguments: Any,
) -> Generation:
    """Run llama-cpp-python's `method` on a Recorder up to where it would
    generate, and make the generation from the arguments it got there."""
    named = stops(body.get("stop"))
    try:
        method(Recorder(llama), max_tokens=max_tokens(body), stop=named, **arguments)
    except _Captured as captured:
        return _generation(llama, kind, captured.arguments, named, n_ctx=n_ctx, seeds=seeds)
    raise RuntimeError("llama-cpp-python generated instead of handing its arguments over")


def _generation(
    llama: Any,
    kind: Kind,
    arguments: dict[str, Any],
    named: list[str],
    *,
    n_ctx: int,
    seeds: random.Random,
) -> Generation:
    prompt = arguments["prompt"]
    tokens = prompt if isinstance(prompt, list) else _text_prompt(llama, prompt)
    if not tokens:
        raise ValueError("the prompt is empty")
    if len(tokens) >= n_ctx:
        raise PromptTooLong(
            f"the prompt is {len(tokens)} tokens; the model's context holds {n_ctx} "
            "(prompt and answer together): shorten the prompt"
        )
    limit = arguments["max_tokens"]
    if limit is None or limit <= 0:
        limit = n_ctx - len(tokens)
    stop = arguments.get("stop") or []
    seed = arguments.get("seed")
    return Generation(
        kind=kind,
        prompt=list(tokens),
        max_tokens=min(limit, n_ctx - len(tokens)),
        temperature=arguments["temperature"],
        top_p=arguments["top_p"],
        top_k=arguments["top_k"],
        min_p=arguments["min_p"],
        typical_p=arguments["typical_p"],
        repeat_penalty=arguments["repeat_penalty"],
        frequency_penalty=arguments["frequency_penalty"],
        presence_penalty=arguments["presence_penalty"],
        seed=seeds.randint(0, 2**32 - 1) if seed is None else int(seed) & 0xFFFFFFFF,
        stops=[s for s in ([stop] if isinstance(stop, str) else stop) if s],
        named_stops=named,
        logit_bias={int(k): float(v) for k, v in (arguments.get("logit_bias") or {}).items()},
        grammar=arguments.get("grammar"),
        stopping_criteria=arguments.get("stopping_criteria"),
    )


def _text_prompt(llama: Any, prompt: str) -> list[int]:
    """A completion's prompt as `_create_completion` tokenizes it: the
    model's BOS (or CLS) and EOS (or SEP) tokens where the GGUF asks."""
    model = llama._model
    bos = model.token_cls() if model.token_cls() != -1 else llama.token_bos()
    sep = model.token_sep()
    head = [bos] if model.add_bos_token() and bos != -1 else []
    tail = [sep if sep != -1 else llama.token_eos()] if model.add_eos_token() or sep != -1 else []
    body = llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True) if prompt else []
    return [*head, *body, *tail]


@dataclass
class Answer:
    """What one generation produced."""

    text: str
    finish_reason: str
    stop_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    #: The answer's tokens, as sampled.
    tokens: list[int] = field(default_factory=list)


def response(kind: Kind, answer: Answer, model: str) -> dict[str, Any]:
    """The answer in the shape the serial engine gave it (chat completion or
    text completion), with the matched stop string named as vLLM does."""
    usage = {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }
    created = int(time.time())
    if kind == "text":
        return {
            "id": f"cmpl-{uuid.uuid4()}",
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "text": answer.text,
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": answer.finish_reason,
                    "stop_reason": answer.stop_reason,
                }
            ],
            "usage": usage,
        }
    return {
        "id": f"chatcmpl-{uuid.uuid4()}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "logprobs": None,
                "finish_reason": answer.finish_reason,
                "stop_reason": answer.stop_reason,
            }
        ],
        "usage": usage,
    }


def stops(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise ValueError("stop must be a string or a list of strings")
    return [s for s in stop if s]


def sampling(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in SAMPLING_FIELDS if body.get(k) is not None}


def max_tokens(body: dict[str, Any]) -> int:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return DEFAULT_MAX_TOKENS
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError("max_tokens must be a positive integer")
    return value
