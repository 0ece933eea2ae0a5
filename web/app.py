"""The aiohttp application factory: the only place where the parts are put together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from core.clock import Clock, SystemClock
from core.settings import Settings
from web.context import SERVICES, context_middleware, security_headers
from web.services import open_services
from web.views import (
    account,
    admin,
    api,
    api_cases,
    api_schedule,
    auth,
    cases,
    helpdesk,
    meetings,
    ops,
    pages,
    schedule,
)

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
VENDOR = Path(__file__).parents[1] / "node_modules" / "bootstrap-italia" / "dist"
MAX_BODY = 1024**2  # forms only for now; uploads will raise it per route


def create_app(
    settings: Settings, *, clock: Clock | None = None, background: bool = True
) -> web.Application:
    """Build the application; services open on start-up and close on clean-up."""
    app = web.Application(middlewares=[context_middleware], client_max_size=MAX_BODY)
    the_clock = clock or SystemClock()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        services = await open_services(settings, the_clock)
        app[SERVICES] = services
        if background:
            services.start_background()
        try:
            yield
        finally:
            await services.close()

    app.cleanup_ctx.append(lifecycle)
    app.on_response_prepare.append(security_headers(settings.secure_cookies))
    for table in (
        pages.routes,
        auth.routes,
        account.routes,
        admin.routes,
        cases.routes,
        helpdesk.routes,
        schedule.routes,
        meetings.routes,
        api.routes,
        api_cases.routes,
        api_schedule.routes,
        ops.routes,
    ):
        app.router.add_routes(table)
    app.router.add_static("/static/app", STATIC, name="static")
    if VENDOR.is_dir():
        app.router.add_static("/static/vendor/bootstrap-italia", VENDOR, name="vendor")
    else:
        log.warning("bootstrap-italia not installed (run npm ci): pages will be unstyled")
    return app
