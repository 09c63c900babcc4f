"""Routes for operating the registry: health, liveness, Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from redis.exceptions import RedisError

from registry.routes.common import ERROR_RESPONSES, ServicesDep

log = logging.getLogger(__name__)


class Health(BaseModel):
    status: str
    redis: str


router = APIRouter(responses=ERROR_RESPONSES, tags=["ops"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(svc: ServicesDep) -> JSONResponse:
    """200 when Redis answers, 503 otherwise."""
    try:
        async with asyncio.timeout(svc.settings.redis_timeout_s):
            await svc.redis.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        return JSONResponse({"status": "degraded", "redis": str(exc) or "timeout"}, 503)
    return JSONResponse({"status": "ok", "redis": "ok"})


@router.get("/livez")
async def livez() -> dict[str, str]:
    """Liveness: this process answers HTTP (Redis is not asked: that is /healthz)."""
    return {"status": "ok"}


@router.get("/metrics", response_class=Response)
async def metrics(svc: ServicesDep) -> Response:
    """Prometheus metrics (text format)."""
    try:
        records = await svc.registry.list()
        active = await svc.redis.zcard(svc.registry.keys.sessions)
        seconds, micros = await svc.redis.time()  # after the reads: ages are never negative
    except RedisError as exc:
        log.warning("metrics gauges not refreshed", extra={"error": str(exc)})
        svc.metrics.forget_instances()
    else:
        svc.metrics.refresh(records, active, int(seconds) * 1000 + int(micros) // 1000)
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
