"""What keying prompt prefixes costs validation (docs/benchmarks.md §11).

The `FileValidator` in this process, with and without the `PrefixGroups`
hook of `prefix_regroup`, over 50,000 lines: as 25 files of 2,000 lines
(one chunk each: keyed not at all) and as one file of 25 chunks. Runs
alternate off and keyed; the median of each is printed, in microseconds a
line. To compare two versions, run it on each, alternating.

    python bench/prefix_keying.py --lines system   # one system prompt of five
    python bench/prefix_keying.py --lines unique   # unrelated one-message prompts
"""

from __future__ import annotations

import argparse
import statistics
import time

import orjson

from overnight.domain.lines import LineRules
from overnight.domain.regrouping import PrefixGroups
from overnight.domain.validation import FileValidator

ENDPOINT = "/v1/chat/completions"
LINES = 50_000
CHUNK_LINES = 2000


def request(n: int, kind: str) -> bytes:
    if kind == "system":
        system = f"You are assistant {n % 5}. " + "Be helpful and precise. " * 45
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": f"question number {n}?"},
        ]
    else:
        topic = n * 7919 % 100003
        messages = [{"role": "user", "content": f"unique question number {n} about {topic}?"}]
    body = {"model": "m", "messages": messages}
    return orjson.dumps({"custom_id": f"r{n}", "method": "POST", "url": ENDPOINT, "body": body})


def with_offsets(raws: list[bytes]) -> tuple[list[tuple[bytes, int]], int]:
    lines, offset = [], 0
    for raw in raws:
        lines.append((raw, offset))
        offset += len(raw) + 1
    return lines, offset


def validate(files: list[tuple[list[tuple[bytes, int]], int]], keyed: bool) -> float:
    """Seconds to validate `files`, each with its own validator."""
    rules = LineRules(ENDPOINT, models=frozenset({"m"}))
    started = time.perf_counter()
    for lines, size in files:
        groups = PrefixGroups(ENDPOINT, 2048) if keyed else None
        validator = FileValidator(
            rules,
            chunk_lines=CHUNK_LINES,
            on_request=None if groups is None else groups.add_request,
        )
        for at in range(0, len(lines), CHUNK_LINES):
            validator.feed_many(lines[at : at + CHUNK_LINES])
        assert validator.finish(size).ok
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", choices=("system", "unique"), default="system")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    raws = [request(n, args.lines) for n in range(LINES)]
    shapes = {
        "1 chunk": [
            with_offsets(raws[at : at + CHUNK_LINES]) for at in range(0, LINES, CHUNK_LINES)
        ],
        f"{LINES // CHUNK_LINES} chunks": [with_offsets(raws)],
    }
    times: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.runs):
        for shape, files in shapes.items():
            for keyed in (False, True):
                seconds = validate(files, keyed)
                times.setdefault((shape, keyed), []).append(seconds / LINES * 1e6)
    for (shape, keyed), runs in times.items():
        label = "keyed" if keyed else "off"
        print(f"{args.lines:6} {shape:9} {label:5} {statistics.median(runs):6.2f} us/line")


if __name__ == "__main__":
    main()
