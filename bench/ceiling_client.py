"""The ceiling: a bare aiohttp client sending the same requests to the same
upstream at the same concurrency, doing nothing else (bodies pre-serialised,
responses read and dropped). Run in its own process by dispatch.py."""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

import aiohttp
import orjson
import uvloop


def load(path: str) -> list[bytes]:
    with open(path, "rb") as handle:
        return [orjson.dumps(orjson.loads(line)["body"]) for line in handle if line.strip()]


async def run(bodies: list[bytes], url: str, concurrency: int) -> dict[str, float]:
    pending = iter(bodies)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    headers = {"Content-Type": "application/json"}
    started = time.perf_counter()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            for body in pending:
                async with session.post(url, data=body) as response:
                    await response.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    return {"requests": len(bodies), "seconds": seconds, "cpu_seconds": cpu_seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--url", required=True, help="e.g. http://127.0.0.1:9001/v1/chat/completions"
    )
    parser.add_argument("--file", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    bodies = load(args.file)
    print(json.dumps(uvloop.run(run(bodies, args.url, args.concurrency))))


if __name__ == "__main__":
    main()
