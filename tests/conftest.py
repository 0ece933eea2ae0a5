"""Fixtures: the application on SQLite and on PostgreSQL, a clock, a real SMTP server."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiosmtpd.controller import Controller
from pydantic import SecretStr
from pytest_aiohttp import AiohttpClient

from core.clock import FakeClock
from core.db import Database
from core.settings import Settings
from tests.rooms_support import meet  # noqa: F401  (a fixture for the room tests)
from tests.services import (
    REDIS_URL,
    PostgresDatabases,
    postgres_reachable,
    redis_reachable,
    unavailable,
)
from tests.support import Env
from tests.worlds import world  # noqa: F401  (a fixture for the scheduling tests)
from web.app import create_app
from web.migrate import upgrade

START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated once; each test copies it."""
    path = tmp_path_factory.mktemp("tpl") / "template.sqlite3"

    async def migrate() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            await upgrade(db)
        finally:
            await db.close()

    asyncio.run(migrate())
    return path


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PostgresDatabases | BaseException]:
    error = postgres_reachable()
    if error is not None:
        yield error
        return
    dbs = PostgresDatabases()
    asyncio.run(dbs.prepare())
    yield dbs
    asyncio.run(dbs.drop_all())


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_template: Path,
    pg_databases: PostgresDatabases | BaseException,
) -> AsyncIterator[str]:
    """A freshly migrated, empty database on each backend."""
    async with fresh_database(request.param, tmp_path, sqlite_template, pg_databases) as url:
        yield url


@contextlib.asynccontextmanager
async def fresh_database(
    backend: str,
    tmp_path: Path,
    sqlite_template: Path,
    pg_databases: PostgresDatabases | BaseException,
) -> AsyncIterator[str]:
    """The URL of a freshly migrated, empty database on ``backend`` (``sqlite`` or
    ``postgresql``), dropped afterwards."""
    if backend == "sqlite":
        path = tmp_path / "concilia.sqlite3"
        shutil.copy(sqlite_template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    if isinstance(pg_databases, BaseException):
        unavailable("PostgreSQL", pg_databases)
        raise AssertionError("unreachable")
    url = await pg_databases.clone()
    try:
        yield url
    finally:
        await pg_databases.drop(url.rsplit("/", 1)[1])


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "concilia.sqlite3"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


def make_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "var_dir": tmp_path / "var",
        "database_url": db_url,
        "secret_key": SecretStr("test-secret-" + "x" * 40),
        "public_url": "http://concilia.test",
        # Cheap hashing keeps the suite fast; production defaults are tested on their own.
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "argon2_parallelism": 1,
        "mail_poll_seconds": 0.05,
        "log_json": False,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Tests override this fixture (or parametrize it) to change settings; a test marked
    ``smtp`` gets the mail server of its ``smtp_server`` fixture."""
    if request.node.get_closest_marker("smtp") is None:
        return {}
    _sink, port = request.getfixturevalue("smtp_server")
    return {"smtp_host": "127.0.0.1", "smtp_port": port}


@pytest.fixture
async def env(
    db_url: str,
    tmp_path: Path,
    clock: FakeClock,
    aiohttp_client: AiohttpClient,
    settings_overrides: dict[str, Any],
    request: pytest.FixtureRequest,
) -> AsyncIterator[Env]:
    settings = make_settings(db_url, tmp_path, **settings_overrides)
    client = await aiohttp_client(create_app(settings, clock=clock))
    environment = Env(client=client, clock=clock, db_url=db_url)
    if request.node.get_closest_marker("smtp") is not None:
        sink, _port = request.getfixturevalue("smtp_server")
        environment.delivered = sink.messages
    yield environment
    await environment.close_extra()


@pytest.fixture
async def redis_url() -> str:
    error = await redis_reachable()
    if error is not None:
        unavailable("Redis", error)
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    return f"concilia-test-{uuid.uuid4().hex[:10]}"


class MailSink:
    """What a real SMTP server on loopback received."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.refuse_with: str | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_with is not None:
            return self.refuse_with
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    async def wait_for(self, count: int, patience: float = 10.0) -> list[Message]:
        """Wait until ``count`` messages arrived (the server runs in its own thread)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while len(self.messages) < count:
            if loop.time() > deadline:
                raise AssertionError(f"only {len(self.messages)} of {count} mails arrived")
            await asyncio.sleep(0.02)
        return self.messages


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serving(
    db_url: str, tmp_path: Path, clock: FakeClock, **overrides: Any
) -> AsyncIterator[Env]:
    """The application on a real loopback port, its public URL that port (the room accepts
    connections from the service's own origin only), media on loopback only; ``overrides``
    are further settings. For the browser tests."""
    port = free_port()
    settings = make_settings(
        db_url,
        tmp_path,
        public_url=f"http://127.0.0.1:{port}",
        media_bind_address="127.0.0.1",  # the media server's host candidate: loopback only
        **overrides,
    )
    server = TestServer(create_app(settings, clock=clock), host="127.0.0.1", port=port)
    client: TestClient[web.Request, web.Application] = TestClient(server)
    await client.start_server()
    environment = Env(client=client, clock=clock, db_url=db_url)
    try:
        yield environment
    finally:
        await environment.close_extra()
        await client.close()


@pytest.fixture
def smtp_server() -> Iterator[tuple[MailSink, int]]:
    sink = MailSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, ready_timeout=15)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()
