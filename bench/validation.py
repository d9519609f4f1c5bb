"""Benchmark 3: validation speed, in lines per second.

Two measurements on the same file: the whole service (create a batch, time
until it leaves `validating`: stream from storage, check every line, cut
chunks, store them), and the validator alone in this process (the same
FileValidator over the same bytes, no I/O) to show where the time goes.
Target: 500k lines/s or more.

    python bench/validation.py                 # 1M lines
    python bench/validation.py --lines 20000   # smoke test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).parent))
from _common import chat_file, overnight_server, table, write_config
from overnight.domain.lines import LineRules
from overnight.domain.validation import FileValidator


def validator_alone(path: Path) -> float:
    rules = LineRules("/v1/chat/completions", models={"bench-model"})
    validator = FileValidator(rules)
    started = time.perf_counter()
    offset = 0
    feed = validator.feed_many
    with path.open("rb") as handle:
        carry = b""
        while piece := handle.read(1 << 20):
            lines = (carry + piece).split(b"\n")
            carry = lines.pop()
            batch = []
            for line in lines:
                batch.append((line, offset))
                offset += len(line) + 1
            feed(batch)
    validator.duplicate_candidates()
    report = validator.finish(offset)
    assert report.ok, report.errors[:3]
    return time.perf_counter() - started


def through_the_service(workdir: Path, path: Path) -> tuple[float, int]:
    config = write_config(workdir / "overnight.toml", "http://127.0.0.1:9/v1", 64)
    with overnight_server(workdir, config) as server:
        client = openai.OpenAI(
            base_url=f"{server.url}/v1", api_key="bench", max_retries=3, timeout=600
        )
        with path.open("rb") as handle:
            file = client.files.create(file=handle, purpose="batch")
        started = time.perf_counter()
        batch = client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while batch.status == "validating":
            time.sleep(0.05)
            batch = client.batches.retrieve(batch.id)
        seconds = time.perf_counter() - started
        assert batch.status == "in_progress", batch
        client.batches.cancel(batch.id)
        assert batch.request_counts is not None
        return seconds, batch.request_counts.total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="overnight-bench-") as tmp:
        workdir = Path(tmp)
        path = chat_file(workdir / "input.jsonl", args.lines)
        size = path.stat().st_size
        alone = validator_alone(path)
        service, total = through_the_service(workdir, path)
    assert total == args.lines
    print(
        table(
            f"Validation of {args.lines:,} lines ({size / 2**20:.0f} MiB)",
            ["what", "seconds", "lines/s", "MiB/s"],
            [
                [
                    "validator alone (in process, no I/O)",
                    f"{alone:.2f}",
                    f"{args.lines / alone:,.0f}",
                    f"{size / 2**20 / alone:.0f}",
                ],
                [
                    "the service (create -> in_progress)",
                    f"{service:.2f}",
                    f"{args.lines / service:,.0f}",
                    f"{size / 2**20 / service:.0f}",
                ],
            ],
        )
    )


if __name__ == "__main__":
    main()
