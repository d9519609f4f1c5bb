"""Benchmark 5: the embedded engine. On the quickstart's kind of workload
(short chat prompts, up to 32 new tokens, temperature 0), in one run, in
interleaved rounds so that the machine's load falls on every engine alike:

- serial: llama-cpp-python's `create_chat_completion`, one request after
  another (the embedded engine before continuous batching, on half the
  cores as it was); serial-Nt: the same on every core;
- batching, direct: overnight's batching engine (backends/llamacpp.py)
  driven by `asyncio.gather`, for each number of sequences asked for;
- overnight: the same engine through a whole batch (`overnight serve`,
  the OpenAI SDK; validate + run + finalise), default settings, with the
  peak RSS of its processes.

Targets: batching >= 3x serial in requests/s; overnight >= 0.9x batching
direct (at the default sequences) in tokens/s; RSS < 400 MB. Also reported:
how many answers match the serial engine's word for word, and the prompt
tokens a shared system prompt saves.

    python bench/embedded.py                       # 20 prompts x 3 rounds
    python bench/embedded.py --prompts 3 --rounds 1 --sequences 2   # smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).parent))
from _common import overnight_server, table, wait_until_ended
from overnight.backends.base import UpstreamRequest
from overnight.settings import EMBEDDED_MODEL_NAME, EMBEDDED_SEQUENCES, ModelSettings

ROOT = Path(__file__).resolve().parent.parent


def questions(count: int) -> list[str]:
    lines = (ROOT / "examples" / "quickstart.jsonl").read_text().splitlines()
    asked = [json.loads(line)["body"]["messages"][-1]["content"] for line in lines]
    return [asked[i % len(asked)] + ("" if i < len(asked) else f" ({i})") for i in range(count)]


def body(question: str, max_tokens: int, system: str | None = None) -> dict[str, Any]:
    messages = [{"role": "user", "content": question}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return {
        "model": EMBEDDED_MODEL_NAME,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
    }


class Run:
    def __init__(self, answers: list[str], tokens: int, seconds: float, prompt: int = 0) -> None:
        self.answers, self.tokens, self.seconds, self.prompt = answers, tokens, seconds, prompt


def serial(llm: Any, bodies: list[dict[str, Any]]) -> Run:
    answers, tokens = [], 0
    started = time.perf_counter()
    for b in bodies:
        result = llm.create_chat_completion(
            messages=b["messages"], max_tokens=b["max_tokens"], temperature=0
        )
        answers.append(result["choices"][0]["message"]["content"])
        tokens += result["usage"]["completion_tokens"]
    return Run(answers, tokens, time.perf_counter() - started)


async def batched(backend: Any, bodies: list[dict[str, Any]]) -> Run:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(backend.send(UpstreamRequest("/v1/chat/completions", b)) for b in bodies)
    )
    seconds = time.perf_counter() - started
    assert all(r.ok for r in results), [r.body for r in results if not r.ok]
    return Run(
        [r.body["choices"][0]["message"]["content"] for r in results],
        sum(r.body["usage"]["completion_tokens"] for r in results),
        seconds,
        sum(r.body["usage"]["prompt_tokens"] for r in results),
    )


def through_overnight(
    client: Any, server: Any, workdir: Path, bodies: list[dict[str, Any]], quiet_for: float = 0.0
) -> tuple[Run, float]:
    """One batch through the server, timed from its create until a poll
    sees it end. Polling every 50 ms takes about a tenth of the engine's
    speed on 2 cores (measured: the direct engine, 16 sequences, 3.13 s
    alone and 3.43 s while a thread polled the server every 50 ms), which
    the direct runs do not pay; so the client first waits `quiet_for`
    seconds without asking. A batch that ended sooner counts as ending at
    the first poll: the wait can only understate overnight."""
    path = workdir / f"input-{time.monotonic_ns()}.jsonl"
    with path.open("w") as handle:
        for i, b in enumerate(bodies):
            line = {
                "custom_id": f"p{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": b,
            }
            handle.write(json.dumps(line) + "\n")
    with path.open("rb") as handle:
        file = client.files.create(file=handle, purpose="batch")
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for process in server.tree():
                try:
                    peak[0] = max(peak[0], process.memory_info().rss / 2**20)
                except Exception:
                    pass
            done.wait(0.5)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    time.sleep(max(0.0, quiet_for - (time.perf_counter() - started)))
    batch = wait_until_ended(client, batch, 0.05)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    assert batch.status == "completed" and batch.usage is not None, batch
    assert batch.request_counts.completed == len(bodies), batch.request_counts
    return Run([], batch.usage.output_tokens, seconds), peak[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--sequences",
        type=int,
        nargs="+",
        default=[EMBEDDED_SEQUENCES],
        help="sequences in flight for the direct batching runs",
    )
    args = parser.parse_args()
    from overnight.backends.llamacpp import LlamaCppBackend, load_llama, usable_cores

    bodies = [body(q, args.max_tokens) for q in questions(args.prompts)]

    # The serial engine as it was before continuous batching: half the
    # cores, which is what it ran on (its threads spun at their barriers,
    # so more would only have slowed it on a busy machine). The batching
    # engine runs on every core (n_threads' default); so that the table
    # shows how much of the gain is the batching and how much the second
    # core, the serial engine also runs on every core ("serial-Nt").
    half, every = max(1, (os.cpu_count() or 2) // 2), usable_cores()
    serial_engines = {"serial": _serial_engine(load_llama, half)}
    if every != half:
        serial_engines[f"serial-{every}t"] = _serial_engine(load_llama, every)
    backends = {}
    for n in args.sequences:
        backends[n] = LlamaCppBackend(
            ModelSettings(name=EMBEDDED_MODEL_NAME, backend="llama-cpp", max_concurrency=n)
        )
    loop = asyncio.new_event_loop()
    for backend in backends.values():
        loop.run_until_complete(backend.start())

    runs: dict[str, list[Run]] = {}
    rss: list[float] = []
    default_key = (
        f"direct-{EMBEDDED_SEQUENCES}"
        if EMBEDDED_SEQUENCES in backends
        else f"direct-{max(backends)}"
    )
    with tempfile.TemporaryDirectory(prefix="overnight-bench-") as tmp:
        workdir = Path(tmp)
        config = workdir / "overnight.toml"
        config.write_text("")  # no models: the embedded one, its defaults
        with overnight_server(workdir, config) as server:
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="bench")
            through_overnight(client, server, workdir, bodies[:2])  # the model loads
            for _ in range(args.rounds):
                for key, llm in serial_engines.items():
                    runs.setdefault(key, []).append(serial(llm, bodies))
                for n, backend in backends.items():
                    runs.setdefault(f"direct-{n}", []).append(
                        loop.run_until_complete(batched(backend, bodies))
                    )
                # Quiet for 90% of this round's direct run (see through_overnight).
                quiet = 0.9 * runs[default_key][-1].seconds
                run, peak = through_overnight(client, server, workdir, bodies, quiet)
                runs.setdefault("overnight", []).append(run)
                rss.append(peak)

        # Shared system prompt: the prompt tokens decoded, with and without copying.
        system = "You are a concise assistant for a public library. " * 10
        shared = [body(q, 4, system) for q in questions(args.prompts)]
        engine = backends[max(backends)].engine
        before = engine.prompt_tokens_decoded
        prompted = loop.run_until_complete(batched(backends[max(backends)], shared)).prompt
        decoded = engine.prompt_tokens_decoded - before

    def rate(key: str, what: str) -> float:
        values = [(len(bodies) if what == "requests" else r.tokens) / r.seconds for r in runs[key]]
        return statistics.median(values)

    base_requests = rate("serial", "requests")
    base_tokens = rate(default_key, "tokens")
    rows = []
    for key in runs:
        same = sum(
            a == b
            for r, s in zip(runs[key], runs["serial"], strict=True)
            for a, b in zip(r.answers, s.answers, strict=False)
        )
        compared = sum(len(r.answers) for r in runs[key]) or 1
        rows.append(
            [
                key,
                f"{statistics.median(r.seconds for r in runs[key]):.1f}",
                f"{rate(key, 'requests'):.2f}",
                f"{rate(key, 'tokens'):.1f}",
                f"{rate(key, 'requests') / base_requests:.2f}",
                f"{rate(key, 'tokens') / base_tokens:.2f}",
                f"{same}/{compared}" if runs[key][0].answers else "-",
            ]
        )
    print(
        table(
            f"Embedded SmolLM2-135M: {args.prompts} chats, up to {args.max_tokens} tokens, "
            f"temperature 0, median of {args.rounds} interleaved rounds",
            [
                "engine",
                "seconds",
                "requests/s",
                "tokens/s",
                "x serial (requests/s)",
                f"x {default_key} (tokens/s)",
                "answers = serial's",
            ],
            rows,
        )
    )
    print(f"overnight peak RSS (largest process): {max(rss):.0f} MiB")
    print(
        f"shared system prompt, {len(shared)} requests, {max(backends)} sequences: "
        f"{decoded} of {prompted} prompt tokens decoded ({decoded / prompted:.0%})"
    )
    for backend in backends.values():
        loop.run_until_complete(backend.close())
    for llm in serial_engines.values():
        llm.close()


def _serial_engine(load_llama: Any, threads: int) -> Any:
    from overnight.settings import bundled_gguf_path

    return load_llama(
        repack=False,
        model_path=str(bundled_gguf_path()),
        n_ctx=2048,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )


if __name__ == "__main__":
    main()
