"""Liveness, readiness, metrics, and the development outbox."""

from __future__ import annotations

import ipaddress
import logging

from aiohttp import web

from core.errors import ErrorCode, UserError
from core.mail import list_outbox
from core.outage import RETRY_AFTER_SECONDS
from web.context import render, services
from web.health import HEALTH

routes = web.RouteTableDef()
log = logging.getLogger(__name__)


@routes.get("/healthz")
async def healthz(_request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.StreamResponse:
    """200 when the database and Redis answer; 503 naming what does not (the probes are real
    and shared, at most about one a second: see ``web.health``), with the outages under way
    and the last ones that ended."""
    health = request.app[HEALTH]
    checks = await health.check()
    down = sorted(name for name, state in checks.items() if state != "ok")
    body: dict[str, object] = {"status": "not ready" if down else "ready", "checks": checks}
    body.update(health.report())
    if down:
        body["error"] = {"code": ErrorCode.UNAVAILABLE.value, "params": {"dependency": down}}
        response = web.json_response(body, status=503)
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    else:
        response = web.json_response(body)
    response.headers["Cache-Control"] = "no-store"
    return response


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
