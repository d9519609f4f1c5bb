"""Operational endpoints: health and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
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
    return JSONBytes(
        {
            "status": "ok",
            "version": __version__,
            "worker": runtime.worker.id if runtime.worker else None,
            "models": sorted(runtime.models.names),
        }
    )


@router.get("/metrics", responses=ok_bytes("text/plain"), response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    for model in runtime_of(request).models.all():
        metrics.concurrency_limit.labels(model.settings.name).set(model.limiter.limit)
        metrics.in_flight.labels(model.settings.name).set(model.limiter.in_flight)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
