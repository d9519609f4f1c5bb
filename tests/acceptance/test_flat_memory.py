"""Memory stays flat: a 200 MB file is uploaded and validated while the
server's resident memory grows by a small, fixed amount."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from helpers import ServerProcess, fake_model, wait_for_batch, write_config

pytestmark = pytest.mark.slow

SIZE = 200 * 1024 * 1024
#: Allowed growth of the server's peak RSS over its RSS before the upload.
BUDGET = 80 * 1024 * 1024


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def write_big_file(path: Path) -> int:
    padding = "x" * 1800
    lines = 0
    with path.open("w") as handle:
        while handle.tell() < SIZE:
            handle.write(
                json.dumps(
                    {
                        "custom_id": f"line-{lines}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": {
                            "model": "fake-model",
                            "messages": [{"role": "user", "content": padding}],
                        },
                    }
                )
                + "\n"
            )
            lines += 1
        handle.write("this last line is not JSON\n")
    return lines + 1


def test_a_200_mb_upload_and_validation_run_in_flat_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    line_count = write_big_file(path)
    assert path.stat().st_size >= SIZE

    config = write_config(tmp_path / "c.toml", [fake_model("http://127.0.0.1:9/v1")])
    server = ServerProcess(tmp_path / "data", config=config).start()
    try:
        with openai.OpenAI(
            base_url=f"{server.url}/v1", api_key="k", max_retries=0, timeout=300
        ) as client:
            client.files.list()  # warm up the paths the upload will use
            before = status_kib(server.pid, "VmRSS")
            with path.open("rb") as handle:
                file = client.files.create(file=handle, purpose="batch")
            assert file.bytes == path.stat().st_size
            batch = client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            batch = wait_for_batch(client, batch.id, timeout=300)
            peak = status_kib(server.pid, "VmHWM")
    finally:
        server.stop()

    # Validation read every line: the only error is the last one.
    assert batch.status == "failed"
    assert [(e.line, e.code) for e in batch.errors.data] == [(line_count, "invalid_json_line")]  # type: ignore[union-attr]
    growth = peak - before
    print(f"peak RSS growth {growth / 2**20:.1f} MiB for a {SIZE / 2**20:.0f} MiB file")
    assert growth < BUDGET, f"peak RSS grew by {growth / 2**20:.1f} MiB"
