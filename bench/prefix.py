"""Benchmark: prefix-aware dispatch (`prefix_dispatch`) on and off.

A shuffled batch over 8 distinct system prompts of about 300 tokens, each
line one short question. Two measures:

- `embedded`: the engine of `overnight serve` with no models configured (the
  embedded SmolLM2 through overnight's batching engine, whose sequences
  keep and share prompt caches within a 4,096-cell KV cache; `--prompts`
  sets how many system prompts, and so whether all of them fit), or any OpenAI-compatible server with
  `--base-url` (vLLM, SGLang, llama.cpp server: prefix caching on). Tokens
  (prompt + completion) per second, from create to end, grouped vs file
  order. Target: 3x or more on the embedded engine. With `--chunk-lines`
  below `--lines` the batch spans several chunks, and a third run groups
  within chunks only (`prefix_regroup = false`), beside the default that
  groups across them at validation.
- `replicas`: 4 fake upstreams (overnight.testing.fake_upstream), each
  modelling a prefix cache (an LRU of `--cache` prefixes, `--miss-latency`
  extra seconds on a miss), behind one model. The share of requests that hit
  a replica's cache. Target: 0.9 or more grouped (file order with
  least-outstanding replicas: about 1/4).

    python bench/prefix.py                                 # both, 400 + 2000 lines
    python bench/prefix.py --part embedded --lines 120     # fewer lines
    python bench/prefix.py --part embedded --chunk-lines 50  # 8 chunks: across vs within
    python bench/prefix.py --part embedded --prompts 64  # more prompts than the cache holds
    python bench/prefix.py --part embedded --base-url http://gpu:8000/v1 --model NAME
    python bench/prefix.py --part replicas --replica-lines 200   # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).parent))
from _common import Proc, fake_upstream, local_http, overnight_server, table, wait_until_ended
from overnight.settings import EMBEDDED_MODEL_NAME

ROLES = ["a tax adviser", "a ship's navigator", "a pastry chef", "a chess coach",
         "a museum guide", "a network engineer", "a gardener", "a train dispatcher"]  # fmt: skip
RULES = [
    "Answer in one short sentence and never invent facts you cannot check.",
    "If the question is unclear, say what you would need to know to answer it.",
    "Prefer plain words to jargon, and explain any term a newcomer may not know.",
    "When numbers matter, give them with their units and round them sensibly.",
    "Do not repeat the question back; start with the answer itself.",
    "Keep a calm and friendly tone, even when the question is rude or odd.",
    "Mention a risk or a common mistake when one is worth knowing about.",
    "Refuse politely anything dangerous, and say briefly why you refuse it.",
]


def system_prompt(index: int) -> str:
    """About 300 tokens, distinct from its first words."""
    role = ROLES[index % len(ROLES)]
    body = " ".join(f"Rule {n + 1} for {role}: {rule}" for n, rule in enumerate(RULES + RULES[:4]))
    return f"You are {role}, number {index}. {body} Remember: you are {role}."


def batch_lines(
    count: int, model: str, max_tokens: int, prompts: int = 8, seed: int = 19
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    systems = [system_prompt(i) for i in range(prompts)]
    lines = []
    for n in range(count):
        body = {
            "model": model,
            "messages": [
                {"role": "system", "content": systems[rng.randrange(prompts)]},
                {"role": "user", "content": f"Question {n}: what matters most today?"},
            ],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        lines.append(
            {"custom_id": f"q{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        )
    return lines


def config(path: Path, grouped: bool, models: list[dict[str, Any]], **settings: Any) -> Path:
    text = [f"prefix_dispatch = {json.dumps(grouped)}"]
    settings = {key: value for key, value in settings.items() if value is not None}
    text += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    for model in models:
        text.append("[[models]]")
        text += [f"{key} = {json.dumps(value)}" for key, value in model.items()]
    path.write_text("\n".join(text) + "\n")
    return path


def run(
    workdir: Path, grouped: bool, models: list[dict[str, Any]], lines: list[Any], **settings: Any
) -> Any:
    """One batch through `overnight serve`; (the ended batch, seconds)."""
    run_dir = workdir / f"{'grouped' if grouped else 'file-order'}-{len(list(workdir.iterdir()))}"
    run_dir.mkdir()
    data = run_dir / "input.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    settings_file = config(run_dir / "overnight.toml", grouped, models, **settings)
    with overnight_server(run_dir, settings_file) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="bench")
        with data.open("rb") as handle:
            file = client.files.create(file=handle, purpose="batch")
        started = time.perf_counter()
        batch = client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        batch = wait_until_ended(client, batch, 0.05)
        seconds = time.perf_counter() - started
    assert batch.status == "completed", batch
    assert batch.request_counts.completed == len(lines), batch.request_counts
    return batch, seconds


def embedded(workdir: Path, args: argparse.Namespace) -> str:
    if args.base_url:
        model = args.model or "bench-model"
        models = [{"name": model, "base_url": args.base_url, "max_concurrency": args.concurrency}]
        engine = f"{model} at {args.base_url}"
    else:
        model, models = EMBEDDED_MODEL_NAME, []
        engine = "embedded SmolLM2-135M (llama-cpp-python)"
    lines = batch_lines(args.lines, model, args.max_tokens, args.prompts)
    chunked = args.chunk_lines is not None and args.chunk_lines < args.lines
    runs: list[tuple[str, bool, dict[str, Any]]] = [("file order", False, {})]
    if chunked:
        runs.append(("grouped within chunks", True, {"prefix_regroup": False}))
    runs.append(("grouped (prefix_dispatch)", True, {}))
    rows = []
    base = 0.0
    for name, grouped, settings in runs:
        batch, seconds = run(
            workdir, grouped, models, lines, chunk_lines=args.chunk_lines, **settings
        )
        usage = batch.usage
        rate = (usage.input_tokens + usage.output_tokens) / seconds
        base = base or rate
        rows.append(
            [
                name,
                usage.input_tokens,
                usage.output_tokens,
                f"{seconds:.1f}",
                f"{rate:.0f}",
                f"{rate / base:.2f}",
            ]
        )
    chunks = f", chunk_lines {args.chunk_lines}" if chunked else ""
    return table(
        f"{engine}: {args.lines} shuffled lines over {args.prompts} system prompts of ~300 tokens, "
        f"max_tokens {args.max_tokens}{chunks}",
        ["order", "prompt tokens", "output tokens", "seconds", "tokens/s", "x file order"],
        rows,
    )


@contextlib.contextmanager
def replicas(workdir: Path, count: int, **knobs: float) -> Iterator[list[Proc]]:
    with contextlib.ExitStack() as stack:
        procs = []
        for n in range(count):
            replica_dir = workdir / f"replica-{n}"
            replica_dir.mkdir()
            procs.append(stack.enter_context(fake_upstream(replica_dir, **knobs)))
        yield procs


def replica_stats(procs: list[Proc], reset: bool = False) -> tuple[int, int]:
    hits = misses = 0
    for proc in procs:
        root = proc.url.removesuffix("/v1")
        if reset:
            local_http().post(f"{root}/_stats/reset")
            continue
        stats = local_http().get(f"{root}/_stats").json()
        hits += stats["prefix_hits"]
        misses += stats["prefix_misses"]
    return hits, misses


def with_replicas(workdir: Path, args: argparse.Namespace) -> str:
    lines = batch_lines(args.replica_lines, "bench-model", 8)
    rows = []
    knobs = {"prefix_cache": args.cache, "latency": 0.005, "prefix_miss_latency": args.miss_latency}
    with replicas(workdir, 4, **knobs) as procs:
        model = {
            "name": "bench-model",
            "base_urls": [proc.url for proc in procs],
            "max_concurrency": args.concurrency,
            "adaptive": False,
        }
        chunked = args.replica_lines // 8
        runs = [(False, {}), (True, {}), (True, {"chunk_lines": chunked})]
        for grouped, settings in runs:
            replica_stats(procs, reset=True)
            _, seconds = run(workdir, grouped, [model], lines, **settings)
            hits, misses = replica_stats(procs)
            name = "grouped, replica by prefix" if grouped else "file order, least-outstanding"
            if settings:
                name += f", chunk_lines {chunked} (4 chunks at once)"
            rows.append(
                [
                    name,
                    hits,
                    misses,
                    f"{hits / (hits + misses):.2f}",
                    f"{seconds:.1f}",
                ]
            )
    return table(
        f"4 fake replicas, LRU of {args.cache} prefixes each, +{args.miss_latency} s a miss: "
        f"{args.replica_lines} shuffled lines over 8 prefixes, max_concurrency {args.concurrency}",
        ["dispatch", "hits", "misses", "hit rate", "seconds"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["embedded", "replicas", "both"], default="both")
    parser.add_argument("--lines", type=int, default=400, help="embedded: lines")
    parser.add_argument("--max-tokens", type=int, default=8, help="embedded: tokens a line")
    parser.add_argument("--prompts", type=int, default=8, help="embedded: system prompts")
    parser.add_argument("--chunk-lines", type=int, help="embedded: chunk_lines (default 2000)")
    parser.add_argument("--base-url", help="embedded: another engine (OpenAI-compatible)")
    parser.add_argument("--model", help="with --base-url: the model's name")
    parser.add_argument("--replica-lines", type=int, default=2000)
    parser.add_argument("--cache", type=int, default=2, help="replicas: prefixes per LRU")
    parser.add_argument("--miss-latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="overnight-bench-") as tmp:
        if args.part in ("replicas", "both"):
            (Path(tmp) / "replicas").mkdir()
            print(with_replicas(Path(tmp) / "replicas", args), flush=True)
        if args.part in ("embedded", "both"):
            (Path(tmp) / "embedded").mkdir()
            print(embedded(Path(tmp) / "embedded", args), flush=True)


if __name__ == "__main__":
    main()
