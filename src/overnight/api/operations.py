"""Operational endpoints: health and Prometheus metrics."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from overnight import __version__, metrics
from overnight.api import schemas
from overnight.api.responses import JSONBytes, ok, ok_bytes, runtime_of

router = APIRouter(
    tags=["operations"],
    responses={"default": {"model": schemas.ErrorBody, "description": "An error."}},
)


@router.get("/health", responses=ok(schemas.Health))
async def health(request: Request) -> JSONBytes:
    runtime = runtime_of(request)
    workers = await runtime.store.live_workers(time.time(), runtime.settings.lease_ttl)
    return JSONBytes(
        {
            "status": "ok",
            "version": __version__,
            "workers": workers,
            "models": sorted(runtime.models.names),
        }
    )


@router.get("/metrics", responses=ok_bytes("text/plain"), response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    runtime = runtime_of(request)
    await metrics.observe_store(runtime.store, runtime.settings.lease_ttl)
    return Response(metrics.scrape(), media_type=CONTENT_TYPE_LATEST)
