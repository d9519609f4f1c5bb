"""overnight's own batch routes (results so far, retry), through the openai
SDK's generic `get`/`post`: the SDK has no method for them, and these are
how a user of it would call them."""

from __future__ import annotations

from typing import Any

import httpx
import openai
from openai.types import Batch

from helpers import jsonl, read_jsonl

INCOMPLETE = "X-Overnight-Incomplete"
NEXT_AFTER = "X-Overnight-Next-After"


def submit(client: openai.OpenAI, lines: list[dict[str, Any]]) -> Batch:
    file = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    return client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def read(client: openai.OpenAI, batch_id: str, kind: str, **params: Any) -> httpx.Response:
    """`GET /v1/batches/{id}/{kind}` (`output` or `errors`)."""
    response: httpx.Response = client.get(
        f"/batches/{batch_id}/{kind}", cast_to=httpx.Response, options={"params": params}
    )
    return response


def retry(client: openai.OpenAI, batch_id: str, **body: Any) -> Batch:
    return client.post(f"/batches/{batch_id}/retry", body=body, cast_to=Batch)


def file_lines(client: openai.OpenAI, file_id: str | None) -> list[str]:
    return client.files.content(file_id).text.splitlines() if file_id else []


def ids_of(lines: list[str]) -> list[str]:
    return [row["custom_id"] for row in read_jsonl("\n".join(lines))]
