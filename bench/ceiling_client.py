"""The ceiling: a bare client sending the same requests to the same upstream
at the same concurrency, doing nothing else (bodies pre-serialised,
responses read and dropped). Run in its own process by dispatch.py.

`--client aiohttp` (the issue's ceiling) uses aiohttp as a user would;
`--client native` drives overnight's own HTTP/1.1 client (backends/http1.py)
the same way, to show how close the service comes to its own client."""

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


async def run_native(bodies: list[bytes], url: str, concurrency: int) -> dict[str, float]:
    from urllib.parse import urlsplit

    from overnight.backends.http1 import Origin

    parsed = urlsplit(url)
    assert parsed.hostname is not None and parsed.port is not None
    origin = Origin(parsed.hostname, parsed.port, timeout=600)
    head = (
        f"POST {parsed.path} HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    pending = iter(bodies)
    started = time.perf_counter()
    cpu = resource.getrusage(resource.RUSAGE_SELF)

    async def worker() -> None:
        for body in pending:
            await origin.post(head, body)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    origin.close()
    return measured(len(bodies), started, cpu)


def measured(requests: int, started: float, cpu: resource.struct_rusage) -> dict[str, float]:
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    return {"requests": requests, "seconds": seconds, "cpu_seconds": cpu_seconds}


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
    return measured(len(bodies), started, cpu)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--url", required=True, help="e.g. http://127.0.0.1:9001/v1/chat/completions"
    )
    parser.add_argument("--file", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--client", choices=["aiohttp", "native"], default="aiohttp")
    args = parser.parse_args()
    bodies = load(args.file)
    client = run_native if args.client == "native" else run
    print(json.dumps(uvloop.run(client(bodies, args.url, args.concurrency))))


if __name__ == "__main__":
    main()
