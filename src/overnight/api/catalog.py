"""The served models, as each dialect lists them: `GET /v1/models` (OpenAI's
list object) and `GET /together/v1/models` (Together's bare array). They are
the names a batch line's `body.model` may use; which server answers them
stays private."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from overnight.api import schemas
from overnight.api.responses import JSONBytes, ok, runtime_of
from overnight.runner.models import ServedModel

#: `created` of every model: when this process started serving it.
STARTED = int(time.time())
OWNER = "overnight"

openai_router = APIRouter(
    tags=["openai"], default_response_class=JSONBytes, responses=schemas.error_responses()
)
together_router = APIRouter(
    tags=["together"], default_response_class=JSONBytes, responses=schemas.error_responses()
)


def served(request: Request) -> list[ServedModel]:
    return sorted(runtime_of(request).models.all(), key=lambda m: m.settings.name)


def openai_model(model: ServedModel) -> dict[str, Any]:
    return {"id": model.settings.name, "object": "model", "created": STARTED, "owned_by": OWNER}


def together_model(model: ServedModel) -> dict[str, Any]:
    settings = model.settings
    return {
        "id": settings.name,
        "object": "model",
        "created": STARTED,
        "type": "chat",
        "display_name": settings.name,
        "organization": OWNER,
        "context_length": settings.n_ctx if settings.backend == "llama-cpp" else None,
    }


@openai_router.get("/models", responses=ok(schemas.ModelList))
async def list_openai_models(request: Request) -> JSONBytes:
    return JSONBytes({"object": "list", "data": [openai_model(m) for m in served(request)]})


@together_router.get(
    "/models",
    responses={200: {"model": list[schemas.TogetherModel], "description": "Success."}},
)
async def list_together_models(request: Request) -> JSONBytes:
    return JSONBytes([together_model(m) for m in served(request)])
