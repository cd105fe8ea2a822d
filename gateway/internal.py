"""Internal endpoints for operators: liveness, readiness, Prometheus metrics, provider health."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from gateway.app import CTX_KEY
from gateway.metrics import render


async def health(request: web.Request) -> web.Response:
    """Liveness: the process and its event loop answer."""
    ctx = request.app[CTX_KEY]
    return web.json_response({"status": "ok", "live_calls": len(ctx.live), "draining": ctx.draining})


async def ready(request: web.Request) -> web.Response:
    """Readiness: the database answers and we are not draining (503 otherwise)."""
    ctx = request.app[CTX_KEY]
    if ctx.draining:
        return web.json_response({"ready": False, "reason": "draining"}, status=503)
    try:
        await asyncio.wait_for(ctx.db.fetchone("SELECT 1"), 2.0)
    except Exception as exc:
        return web.json_response({"ready": False, "reason": f"database: {type(exc).__name__}"}, status=503)
    return web.json_response({"ready": True, "writer_queue": ctx.writer.depth})


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CTX_KEY]
    body = render(ctx.stats, ctx.writer_stats)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def providers(request: web.Request) -> web.Response:
    """The health board: per provider and region, status, breaker, error rate, latency, last error."""
    ctx = request.app[CTX_KEY]
    return web.json_response(ctx.selector.board.as_json(time.monotonic()))


def routes() -> list[web.RouteDef]:
    return [
        web.get("/health", health),
        web.get("/ready", ready),
        web.get("/metrics", metrics),
        web.get("/health/providers", providers),
    ]
