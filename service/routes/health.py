"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from s2d.service.auth import require_scope
from s2d.service.deps import RegistryDep, ShutdownDep
from s2d.service.errors import InferenceUnavailableError, NotReadyError, ShuttingDownError, error_responses
from s2d.service.schemas import HealthResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthResponse, summary="The process is alive (no API key needed)")
async def healthz() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get(
    "/readyz",
    response_model=HealthResponse,
    responses=error_responses(503),
    summary="Every model is loaded, warmed up at every batch size and servable now (no API key needed)",
)
async def readyz(registry: RegistryDep, shutdown: ShutdownDep) -> HealthResponse:
    if shutdown.started:
        raise ShuttingDownError()
    if not registry.ready:
        raise NotReadyError()
    unready = await asyncio.to_thread(registry.unready_engines)
    if unready:  # a load balancer moves on while the inference tier is away, and comes back once it is up
        described = "; ".join(f"model {name!r}: {reason}" for name, reason in unready.items())
        raise InferenceUnavailableError(f"not servable now: {described}")
    return HealthResponse(status="ready", models=list(registry.models))


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "metrics"}, **error_responses(401)},
    dependencies=[Depends(require_scope("metrics"))],
)
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
