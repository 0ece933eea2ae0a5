"""The real services tests run against: PostgreSQL and Redis over real connections.

When a service is absent the tests that need it skip, saying why; with
``CONCILIA_REQUIRE_SERVICES=1`` (CI) they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg
import pytest
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from core.db import Database
from web.migrate import upgrade

REQUIRE = os.environ.get("CONCILIA_REQUIRE_SERVICES") == "1"
PG_URL = os.environ.get(
    "CONCILIA_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CONCILIA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unavailable(what: str, error: BaseException) -> None:
    """Skip (or fail, when services are required) because ``what`` cannot be reached."""
    message = f"{what} not reachable ({type(error).__name__}: {error})"
    if REQUIRE:
        pytest.fail(message + " and CONCILIA_REQUIRE_SERVICES=1")
    pytest.skip(message)


def _dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def _admin_exec(sql: str) -> None:
    conn = await asyncpg.connect(_dsn(PG_URL), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class PostgresDatabases:
    """A migrated template database, cloned for every test (fast), all dropped at the end."""

    def __init__(self) -> None:
        self.template = f"concilia_tpl_{uuid.uuid4().hex[:10]}"
        self.created: list[str] = []

    def url_for(self, name: str) -> str:
        return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)

    async def prepare(self) -> None:
        await _admin_exec(f'CREATE DATABASE "{self.template}"')
        self.created.append(self.template)
        db = Database(self.url_for(self.template))
        try:
            await upgrade(db)
        finally:
            await db.close()

    async def clone(self) -> str:
        name = f"concilia_t_{uuid.uuid4().hex[:12]}"
        await _admin_exec(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.created.append(name)
        return self.url_for(name)

    async def drop(self, name: str) -> None:
        await _admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    async def drop_all(self) -> None:
        for name in list(reversed(self.created)):
            await self.drop(name)


def postgres_reachable() -> BaseException | None:
    async def probe() -> None:
        await _admin_exec("SELECT 1")

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return exc
    return None


async def redis_reachable() -> BaseException | None:
    client = Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        return exc
    finally:
        await client.aclose()
    return None
