"""Liveness, readiness, metrics, and the development outbox."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from aiohttp import web

from core.errors import ErrorCode, UserError
from core.mail import list_outbox
from web.context import render, services

routes = web.RouteTableDef()
log = logging.getLogger(__name__)
PROBE_TIMEOUT = 3.0


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(svc.db.ping(), PROBE_TIMEOUT)
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("readiness: database unreachable (%s)", type(exc).__name__)
        checks["database"] = "unreachable"
    if svc.redis is not None:
        try:
            await asyncio.wait_for(svc.redis.ping(), PROBE_TIMEOUT)
            checks["redis"] = "ok"
        except Exception as exc:
            log.warning("readiness: redis unreachable (%s)", type(exc).__name__)
            checks["redis"] = "unreachable"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.StreamResponse:
    """Metrics for the monitoring system only: other addresses get a 404."""
    svc = services(request)
    if not _allowed(request.remote, svc.settings.metrics_allow):
        return web.json_response(
            {"error": {"code": "not_found", "message": "not found"}}, status=404
        )
    return web.Response(
        body=svc.metrics.render(), headers={"Content-Type": svc.metrics.content_type}
    )


def _allowed(remote: str | None, networks: str) -> bool:
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return False
    for network in networks.split(","):
        network = network.strip()
        if network and address in ipaddress.ip_network(network, strict=False):
            return True
    return False


@routes.get("/dev/outbox")
async def outbox(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    if not svc.settings.dev:
        raise UserError(ErrorCode.NOT_FOUND)
    return render(request, "outbox.html", mails=await list_outbox(svc.db))
