"""A reference parallel processor, written the way a user would write one:
read the JSONL, send each request with aiohttp under an asyncio.Semaphore,
write each result with its custom_id to an output file. No retries, no
crash safety, no progress in a database: the peer overnight is compared with.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

import aiohttp


async def run(url: str, path: str, out: str, concurrency: int) -> dict[str, float]:
    semaphore = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    async with aiohttp.ClientSession() as session:
        with open(path) as source, open(out, "w") as sink:  # noqa: ASYNC230 - as users write it

            async def one(request: dict[str, object]) -> None:
                async with semaphore, session.post(url, json=request["body"]) as response:
                    body = await response.json()
                    row = {
                        "custom_id": request["custom_id"],
                        "status": response.status,
                        "body": body,
                    }
                    sink.write(json.dumps(row) + "\n")

            tasks = set()
            count = 0
            for line in source:
                if not line.strip():
                    continue
                await semaphore.acquire()  # keep a bounded number of tasks alive
                semaphore.release()
                task = asyncio.create_task(one(json.loads(line)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                count += 1
            await asyncio.gather(*tasks)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    return {"requests": count, "seconds": seconds, "cpu_seconds": cpu_seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.file, args.out, args.concurrency))))


if __name__ == "__main__":
    main()
