"""The quick start behind `make run`.

Starts `overnight serve` with the embedded model, submits quickstart.jsonl
through the official `openai` SDK exactly as you would against OpenAI (only
`base_url` differs), shows progress until the batch completes, prints a few
results, and leaves the server running until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from openai import OpenAI
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

HERE = Path(__file__).resolve().parent
HOST = os.environ.get("OVERNIGHT_HOST", "127.0.0.1")
PORT = int(os.environ.get("OVERNIGHT_PORT", "8000"))
BASE = f"http://{HOST}:{PORT}"
DATA_DIR = Path(os.environ.get("OVERNIGHT_DATA_DIR", ".overnight"))
console = Console()


def start_server() -> subprocess.Popen[bytes]:
    http = httpx.Client(timeout=1)  # one client for every poll: each new one loads the CA bundle
    try:
        if http.get(f"{BASE}/health").status_code == 200:
            console.print(
                f"[red]Something already answers on {BASE}.[/red] Stop it, or set OVERNIGHT_PORT."
            )
            sys.exit(1)
    except httpx.HTTPError:
        pass
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    log_path = DATA_DIR / "server.log"
    log = log_path.open("ab")
    server = subprocess.Popen(
        [sys.executable, "-m", "overnight", "serve", "--host", HOST, "--port", str(PORT)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    console.print(f"Starting overnight on {BASE} (log: {log_path}) ...")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            console.print(f"[red]The server exited.[/red] Last lines of {log_path}:")
            console.print("\n".join(log_path.read_text(errors="replace").splitlines()[-20:]))
            sys.exit(1)
        try:
            if http.get(f"{BASE}/health").status_code == 200:
                http.close()
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.terminate()
    console.print("[red]The server did not start within 120 s.[/red]")
    sys.exit(1)


def run_batch(client: OpenAI) -> None:
    source = HERE / "quickstart.jsonl"
    with source.open("rb") as handle:
        file = client.files.create(file=handle, purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    console.print(f"Uploaded {file.filename} as {file.id}; created batch [bold]{batch.id}[/bold]")

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(batch.status, total=None)
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.5)
            batch = client.batches.retrieve(batch.id)
            counts = batch.request_counts
            total = counts.total if counts and counts.total else None
            done = (counts.completed + counts.failed) if counts else 0
            progress.update(task, description=batch.status, total=total, completed=done)

    counts = batch.request_counts
    console.print(
        f"Batch {batch.status}: {counts.completed} succeeded, {counts.failed} failed"
        if counts
        else f"Batch {batch.status}"
    )
    if batch.status == "failed" and batch.errors:
        for error in batch.errors.data or []:
            console.print(f"  line {error.line}: {error.code}: {error.message}")
        return
    if batch.output_file_id is None:
        return
    prompts = {
        json.loads(line)["custom_id"]: json.loads(line)["body"]["messages"][-1]["content"]
        for line in source.read_text().splitlines()
        if line.strip()
    }
    rows = [
        json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()
    ]
    rows.sort(key=lambda r: int(r["custom_id"].rsplit("-", 1)[-1]))
    table = Table(
        "custom_id", "prompt", "answer", title=f"First results from {batch.output_file_id}"
    )
    for row in rows[:5]:
        answer = row["response"]["body"]["choices"][0]["message"]["content"].strip()
        table.add_row(row["custom_id"], prompts.get(row["custom_id"], ""), answer)
    console.print(table)


def main() -> None:
    server = start_server()
    try:
        with OpenAI(base_url=f"{BASE}/v1", api_key="local") as client:
            run_batch(client)
        console.print(
            f"\novernight is running at [bold]{BASE}/v1[/bold]: point the openai SDK at it "
            '(OpenAI(base_url="' + f"{BASE}/v1" + '", api_key="local")). Press Ctrl-C to stop.'
        )
        server.wait()
    except KeyboardInterrupt:
        console.print("\nStopping overnight ...")
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
    console.print("Stopped.")


if __name__ == "__main__":
    main()
