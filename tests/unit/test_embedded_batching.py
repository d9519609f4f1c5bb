"""The embedded engine decodes many requests together: each gets its own
limits, stop strings and sampling, a cancelled one frees its sequence
while the others go on, one that cannot fit fails alone, and at
temperature 0 the answers are the serial engine's.

One model, loaded once for the module (the suite runs on 2 cores); every
request is short.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from overnight.backends.base import UpstreamRequest, UpstreamResult
from overnight.settings import ModelSettings

pytestmark = pytest.mark.embedded

pytest.importorskip("llama_cpp", reason="the engine is installed only in the main venv")

from overnight.backends.llamacpp import LlamaCppBackend, load_llama  # noqa: E402

N_CTX = 512
SEQUENCES = 4
#: One thread: the suite runs three test processes on 2 cores, where a
#: second llama.cpp thread only adds wake-ups (what threads gain is
#: measured in bench/embedded.py, not here).
ONE: dict[str, Any] = {"n_threads": 1}


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    backend = LlamaCppBackend(
        ModelSettings(
            name="tiny", backend="llama-cpp", n_ctx=N_CTX, max_concurrency=SEQUENCES, **ONE
        )
    )
    engine = backend.engine
    engine.call(engine.generator).result(timeout=120)
    yield backend
    engine.close()


def chat(question: str, **body: Any) -> UpstreamRequest:
    return UpstreamRequest(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": question}], "temperature": 0, **body},
    )


def answer(result: UpstreamResult) -> dict[str, Any]:
    assert result.status_code == 200, result.body
    choice: dict[str, Any] = result.body["choices"][0]
    return choice


async def until(condition: Any, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


async def test_requests_of_mixed_lengths_each_get_their_own_limit(
    backend: LlamaCppBackend,
) -> None:
    long_question = "Summarise this: " + "the quick brown fox jumps over the lazy dog. " * 30
    requests = [
        chat("Say hello.", max_tokens=1),
        chat("Write a long story about a dragon.", max_tokens=12),
        chat(long_question, max_tokens=5),
        chat("Name a colour.", max_tokens=3),
        chat("Write a poem about rain.", max_tokens=9),  # waits for a free sequence
        UpstreamRequest("/v1/completions", {"prompt": "One, two, three,", "max_tokens": 4}),
    ]
    results = await asyncio.gather(*(backend.send(r) for r in requests))
    limits = [1, 12, 5, 3, 9, 4]
    for result, limit in zip(results, limits, strict=True):
        choice = answer(result)
        usage = result.body["usage"]
        assert 0 < usage["completion_tokens"] <= limit
        assert choice["finish_reason"] in ("stop", "length")
        if choice["finish_reason"] == "length":
            assert usage["completion_tokens"] == limit
    assert results[2].body["usage"]["prompt_tokens"] > 300
    assert answer(results[5])["text"]  # the text completion's shape
    assert results[0].body["object"] == "chat.completion"
    assert results[5].body["object"] == "text_completion"


async def test_a_stop_string_ends_one_answer_and_is_named(backend: LlamaCppBackend) -> None:
    count = "Count from one to ten in words, separated by spaces."  # it answers 1234...
    stopped, free = await asyncio.gather(
        backend.send(chat(count, max_tokens=12, stop=["5", "never"])),
        backend.send(chat(count, max_tokens=12)),
    )
    choice = answer(stopped)
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", "5")
    assert choice["message"]["content"] and "5" not in choice["message"]["content"]
    other = answer(free)
    assert other["stop_reason"] is None
    assert other["message"]["content"].startswith(choice["message"]["content"])
    assert "5" in other["message"]["content"]


async def test_a_cancelled_request_frees_its_sequence_while_the_others_go_on(
    backend: LlamaCppBackend,
) -> None:
    engine = backend.engine
    story = "Write a long story about a dragon who learns to fly."
    tasks = [
        asyncio.create_task(backend.send(chat(f"{story} ({i})", max_tokens=40)))
        for i in range(SEQUENCES)
    ]
    await until(lambda: engine.decoding == SEQUENCES)
    tasks[1].cancel()
    await until(lambda: engine.decoding == SEQUENCES - 1)
    assert not any(task.done() for i, task in enumerate(tasks) if i != 1)
    # The freed sequence takes a new request at once, while the others decode.
    late = await backend.send(chat("Say hello.", max_tokens=2))
    assert answer(late)["message"]["content"]
    assert not all(task.done() for i, task in enumerate(tasks) if i != 1)
    results = await asyncio.gather(*(t for i, t in enumerate(tasks) if i != 1))
    for result in results:
        assert answer(result)["finish_reason"] == "length"
        assert result.body["usage"]["completion_tokens"] == 40
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    await until(lambda: engine.decoding == 0)


async def test_a_prompt_longer_than_the_context_fails_alone(backend: LlamaCppBackend) -> None:
    too_long = "word " * (N_CTX + 50)
    failed, fine = await asyncio.gather(
        backend.send(chat(too_long, max_tokens=4)), backend.send(chat("Say hi.", max_tokens=2))
    )
    assert failed.status_code == 400
    message = failed.body["error"]["message"]
    assert message.startswith("the prompt is ") and f"the model's context holds {N_CTX}" in message
    assert answer(fine)["message"]["content"]


async def test_prompts_sharing_a_system_prompt_decode_it_once(backend: LlamaCppBackend) -> None:
    system = "You are a helpful assistant for a library. " * 8  # about 80 tokens

    def ask(question: str) -> UpstreamRequest:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        return UpstreamRequest(
            "/v1/chat/completions", {"messages": messages, "temperature": 0, "max_tokens": 2}
        )

    engine = backend.engine
    before = engine.prompt_tokens_decoded
    questions = [f"Where are the books about topic {i}?" for i in range(SEQUENCES)]
    results = await asyncio.gather(*(backend.send(ask(q)) for q in questions))
    prompt_tokens = [r.body["usage"]["prompt_tokens"] for r in results]
    decoded = engine.prompt_tokens_decoded - before
    # The first decodes the shared part; the others copy it and decode
    # their own questions (and whatever of the system prompt a cache held).
    assert decoded < sum(prompt_tokens) - (SEQUENCES - 1) * 70


async def test_requests_sharing_a_system_prompt_fit_together_where_copies_would_not() -> None:
    # A KV cache of one context, 512 cells: four copies of a 200-token
    # system prompt would need 800, but the copies share their cells, so
    # all four requests decode at once.
    tight = LlamaCppBackend(
        ModelSettings(
            name="tight",
            backend="llama-cpp",
            n_ctx=N_CTX,
            kv_cache_tokens=N_CTX,
            max_concurrency=SEQUENCES,
            **ONE,
        )
    )
    engine = tight.engine
    try:
        system = "You are a helpful assistant for a library. " * 20
        story = "Write a long story about a dragon who learns to fly"
        tasks = [
            asyncio.create_task(
                tight.send(
                    UpstreamRequest(
                        "/v1/chat/completions",
                        {
                            "messages": [
                                {"role": "system", "content": system},
                                {"role": "user", "content": f"{story} ({i})."},
                            ],
                            "temperature": 0,
                            "max_tokens": 24,
                        },
                    )
                )
            )
            for i in range(SEQUENCES)
        ]
        await until(lambda: engine.decoding == SEQUENCES, within=30)
        results = await asyncio.gather(*tasks)
        prompt_tokens = results[0].body["usage"]["prompt_tokens"]
        assert SEQUENCES * prompt_tokens > N_CTX
        for result in results:
            assert answer(result)["finish_reason"] == "length"
    finally:
        engine.close()


async def test_a_system_prompt_cached_once_outlives_requests_under_other_prompts() -> None:
    # Two requests at a time, four sequence ids. A's prompt is cached in
    # one; three requests under B fill the other three (sharing B's
    # cells); a request under C must take one of the four: it takes one
    # whose loss is a question, not A's only copy, so A is still cached.
    small = LlamaCppBackend(
        ModelSettings(name="small", backend="llama-cpp", n_ctx=N_CTX, max_concurrency=2, **ONE)
    )
    engine = small.engine

    def under(system: str, question: str) -> UpstreamRequest:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        return UpstreamRequest(
            "/v1/chat/completions", {"messages": messages, "temperature": 0, "max_tokens": 2}
        )

    a = "You are a tax adviser. Answer briefly. " * 5
    b = "You are a ship's navigator who knows every star and every current. " * 6
    try:
        await small.send(under(a, "What is a deduction?"))
        await asyncio.gather(*(small.send(under(b, f"Where is port {i}?")) for i in range(3)))
        await small.send(under("You are a gardener.", "When do tulips bloom?"))
        before = engine.prompt_tokens_decoded
        again = await small.send(under(a, "What is a receipt?"))
        decoded = engine.prompt_tokens_decoded - before
        # Only the new question is decoded: A's system prompt (about 45
        # tokens) comes from the cache.
        assert decoded < again.body["usage"]["prompt_tokens"] - 35, decoded
    finally:
        engine.close()


async def test_at_temperature_0_answers_differ_from_the_serial_engines_only_at_near_ties(
    backend: LlamaCppBackend,
) -> None:
    """Batched arithmetic is not bit-identical to one sequence at a time:
    a sequence's attention runs over the cache the others share, so its
    sums are taken in another order. (With one sequence in flight the
    answers are the serial engine's, token for token: bench/embedded.py.)
    A near tie between two tokens may then break the other way, and the
    answer goes on from there. Bounded: where a batched answer leaves the
    serial engine's greedy path, the serial engine's two best tokens were
    within 0.5 logits of each other; and most answers do not leave it."""
    import numpy as np
    from llama_cpp import llama_get_logits_ith

    from overnight.backends.llama_requests import chat_generation

    questions = [
        "What is the capital of France?",
        "Name three primary colors.",
        "What is 2+2?",
        "Name a fruit.",
        "Say goodbye.",
        "What colour is the sky?",
        "Name a large animal.",
        "Say hello.",
    ]
    engine = backend.engine
    futures = [
        engine.generate(
            lambda llama, q=q: chat_generation(
                llama,
                {"temperature": 0, "max_tokens": 16},
                [{"role": "user", "content": q}],
                n_ctx=N_CTX,
                seeds=engine.seeds,
            )
        )
        for q in questions
    ]
    batched = [(await asyncio.wrap_future(f)) for f in futures]

    serial = load_llama(
        repack=False,
        model_path=backend.path,
        n_ctx=N_CTX,
        n_threads=1,
        n_threads_batch=1,
        verbose=False,
    )
    identical = 0
    try:
        for question, answer_ in zip(questions, batched, strict=True):
            generation = chat_generation(
                serial,
                {"temperature": 0},
                [{"role": "user", "content": question}],
                n_ctx=N_CTX,
                seeds=engine.seeds,
            )
            serial.reset()
            serial.eval(generation.prompt)
            for at, token in enumerate(answer_.tokens):
                logits = np.ctypeslib.as_array(
                    llama_get_logits_ith(serial.ctx, -1), shape=(serial.n_vocab(),)
                )
                best, runner_up = np.sort(logits)[-2:][::-1]
                if int(np.argmax(logits)) != token:
                    assert best - runner_up < 0.5, (question, at, best - runner_up)
                    break
                serial.eval([token])
            else:
                identical += 1
    finally:
        serial.close()
    assert identical >= len(questions) // 2


async def test_embeddings_of_requests_waiting_together_are_their_own(
    backend: LlamaCppBackend,
) -> None:
    texts = ["the cat sat", "a dog ran", "hello world", "the cat sat"]
    alone = await backend.send(UpstreamRequest("/v1/embeddings", {"input": texts[0]}))
    together = await asyncio.gather(
        *(backend.send(UpstreamRequest("/v1/embeddings", {"input": t})) for t in texts)
    )
    vectors = [r.body["data"][0]["embedding"] for r in together]
    assert {len(v) for v in vectors} == {576}
    assert vectors[0] != vectors[1]
    first = alone.body["data"][0]["embedding"]
    for again in (vectors[0], vectors[3]):
        assert max(abs(a - b) for a, b in zip(first, again, strict=True)) < 1e-3
    counted = [r.body["usage"]["prompt_tokens"] for r in together]
    assert counted[0] == counted[3] == alone.body["usage"]["prompt_tokens"]


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]
