"""The aiohttp application factory: the only place where the parts are put together."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from core.clock import Clock, SystemClock
from core.settings import Settings
from media.config import MediaConfig
from media.room import MediaRooms
from signaling.presence import LocalPresence, RedisPresence
from signaling.server import FanOut, RoomBroadcaster, Signaling, build_server, presence_for
from web.context import (
    SERVICES,
    context_middleware,
    security_headers,
    session_account,
)
from web.context import SIGNALING as SIGNALING  # re-exported: tests reach the namespace
from web.health import HEALTH, health_for
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
    resources,
    room,
    schedule,
)

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
NODE_MODULES = Path(__file__).parents[1] / "node_modules"
VENDOR = NODE_MODULES / "bootstrap-italia" / "dist"
# The room page's Socket.IO client (socket.io-client from npm), served by the app: no CDN.
SOCKETIO_CLIENT = NODE_MODULES / "socket.io-client" / "dist"
MAX_BODY = 1024**2  # forms only for now; uploads will raise it per route


async def account_id_of(request: web.Request) -> uuid.UUID | None:
    account = await session_account(request)
    return account.id if account is not None else None


class MalformedRequests(logging.Filter):
    """aiohttp logs every request it cannot parse (a NUL in a header, a bad character in the
    path: what scanners send) as an ERROR with a traceback whose message quotes the request's
    bytes — a cookie among them. It was answered 400: that is a warning, named by the parse
    error's type, without the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if (
            record.levelno >= logging.ERROR
            and isinstance(error, HttpProcessingError)
            and (error.code or 400) < 500
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "bad_http_request", None
            record.exc_info = record.exc_text = None
            record.__dict__["error"] = type(error).__name__
        return True


def create_app(
    settings: Settings, *, clock: Clock | None = None, background: bool = True
) -> web.Application:
    """Build the application; services open on start-up and close on clean-up."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequests) for f in server_log.filters):
        server_log.addFilter(MalformedRequests())
    app = web.Application(middlewares=[context_middleware], client_max_size=MAX_BODY)
    the_clock = clock or SystemClock()

    namespace = Signaling(
        rooms=lambda: app[SERVICES].rooms,
        account_of=account_id_of,
        tokens=lambda: app[SERVICES].room_tokens,
        now=the_clock.now,
        presence=LocalPresence(),
    )
    sio = build_server(
        settings.public_url,
        settings.redis_url,
        channel=f"{settings.redis_prefix}-meeting",
        on_back=namespace.resync,
        ping_interval=settings.socket_ping_interval_seconds,
        ping_timeout=settings.socket_ping_timeout_seconds,
    )
    sio.register_namespace(namespace)
    sio.attach(app)
    app[SIGNALING] = namespace

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        services = await open_services(settings, the_clock)
        app[SERVICES] = services
        namespace.presence = presence_for(
            services.redis, settings.redis_prefix, settings.presence_ttl_seconds
        )
        await namespace.presence.start()
        services.rooms.broadcaster = RoomBroadcaster(namespace)
        # Video: this node's media rooms; with Redis each meeting's media is pinned to one node.
        media = MediaRooms(MediaConfig.from_settings(settings), events=namespace)
        namespace.media = media
        namespace.redis = services.redis
        namespace.redis_prefix = settings.redis_prefix
        namespace.node_url = settings.node_url or settings.public_url
        namespace.pin_seconds = settings.presence_ttl_seconds
        if isinstance(namespace.presence, RedisPresence):
            namespace.presence.on_beat = namespace.refresh_pins
        if isinstance(sio.manager, FanOut):
            sio.manager.on_emit = namespace.room_event
        health = health_for(
            services.db.ping, services.redis.ping if services.redis is not None else None
        )
        app[HEALTH] = health
        stop = asyncio.Event()
        sweeper = watcher = None
        if background:
            services.start_background()
            sweeper = asyncio.create_task(namespace.sweep_forever(stop), name="room-sweep")
            watcher = asyncio.create_task(health.watch(stop), name="dependency-watch")
        try:
            yield
        finally:
            stop.set()
            if sweeper is not None:
                await sweeper
            if watcher is not None:
                await watcher
            await namespace.presence.close()
            await media.close()
            await namespace.drain()
            await services.close()

    async def hand_over(_app: web.Application) -> None:
        # Before the server waits for open requests (Socket.IO connections never end by
        # themselves) and before the services close.
        await namespace.close_all()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(hand_over)
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
        room.routes,
        resources.routes,
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
    if SOCKETIO_CLIENT.is_dir():
        app.router.add_static("/static/vendor/socket.io", SOCKETIO_CLIENT, name="socketio-client")
    else:
        log.warning("socket.io-client not installed (run npm ci): the meeting room cannot connect")
    return app
