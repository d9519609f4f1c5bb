"""Benchmark 5: the embedded engine through overnight vs llama-cpp-python
called directly in a loop, on the same prompts, in tokens per second.
Target: overnight at least 0.9x.

    python bench/embedded.py                # 24 prompts, 48 tokens each
    python bench/embedded.py --prompts 3    # smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).parent))
from _common import overnight_server, table, wait_until_ended, write_config
from overnight.settings import EMBEDDED_MODEL_NAME, bundled_gguf_path

TOPICS = [
    "the sea",
    "a city at night",
    "autumn",
    "a robot",
    "mountains",
    "coffee",
    "rain",
    "a library",
]


def prompts(count: int) -> list[str]:
    return [f"Write two sentences about {TOPICS[i % len(TOPICS)]} (#{i})." for i in range(count)]


def direct(texts: list[str], max_tokens: int) -> tuple[int, float]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(bundled_gguf_path()), n_ctx=2048, verbose=False)
    tokens = 0
    started = time.perf_counter()
    for text in texts:
        result = llm.create_chat_completion(
            messages=[{"role": "user", "content": text}], max_tokens=max_tokens, temperature=0
        )
        tokens += result["usage"]["completion_tokens"]
    return tokens, time.perf_counter() - started


def through_overnight(workdir: Path, texts: list[str], max_tokens: int) -> tuple[int, float]:
    path = workdir / "input.jsonl"
    with path.open("w") as handle:
        for i, text in enumerate(texts):
            body = {
                "model": EMBEDDED_MODEL_NAME,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            handle.write(
                json.dumps(
                    {
                        "custom_id": f"p{i}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": body,
                    }
                )
                + "\n"
            )
    config = write_config(workdir / "overnight.toml", None, 1)  # no models: the embedded one
    with overnight_server(workdir, config) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="bench")
        with path.open("rb") as handle:
            file = client.files.create(file=handle, purpose="batch")
        started = time.perf_counter()
        batch = client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        batch = wait_until_ended(client, batch, 0.05)
        seconds = time.perf_counter() - started
        assert batch.status == "completed" and batch.usage is not None, batch
        return batch.usage.output_tokens, seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    texts = prompts(args.prompts)
    with tempfile.TemporaryDirectory(prefix="overnight-bench-") as tmp:
        ours_tokens, ours_seconds = through_overnight(Path(tmp), texts, args.max_tokens)
    direct_tokens, direct_seconds = direct(texts, args.max_tokens)
    direct_rate = direct_tokens / direct_seconds
    ours_rate = ours_tokens / ours_seconds
    print(
        table(
            f"Embedded SmolLM2-135M: {args.prompts} chats, up to {args.max_tokens} tokens each, temperature 0",
            ["engine", "output tokens", "seconds", "tokens/s", "x direct"],
            [
                [
                    "llama-cpp-python, direct loop",
                    direct_tokens,
                    f"{direct_seconds:.1f}",
                    f"{direct_rate:.1f}",
                    "1.00",
                ],
                [
                    "overnight batch (validate + run + finalise)",
                    ours_tokens,
                    f"{ours_seconds:.1f}",
                    f"{ours_rate:.1f}",
                    f"{ours_rate / direct_rate:.2f}",
                ],
            ],
        )
    )


if __name__ == "__main__":
    main()
