"""What an outage looks like to the edges (``core/outage.py``) and the node's watch over its
dependencies (``web/health.py``), against real failures: a PostgreSQL and a Redis address where
nothing listens, the real Redis coming back, and a redis-server of the test's own restarted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
from pathlib import Path

import asyncpg.exceptions._base as asyncpg_base
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from core.db import Database
from core.outage import DATABASE, REDIS, dependency_down, log_failure
from tests.conftest import free_port
from tests.services import unavailable
from web import health as health_module
from web.health import Health
from web.services import redis_client


async def test_the_failures_of_an_outage_name_their_dependency(sqlite_url: str) -> None:
    nowhere = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test")
    try:
        with pytest.raises(OSError) as refused:  # asyncpg's refusal comes as it is
            await nowhere.ping()
        assert dependency_down(refused.value) == DATABASE
    finally:
        await nowhere.close()
    client = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(Exception) as lost:
            await client.get("key")
        assert dependency_down(lost.value) == REDIS
    finally:
        await client.aclose()
    # What caused an error counts too; a bug or a refused write is no outage.
    try:
        try:
            await Redis.from_url(f"redis://127.0.0.1:{free_port()}/0").ping()
        except Exception as inner:
            raise RuntimeError("while reading a session") from inner
    except RuntimeError as outer:
        assert dependency_down(outer) == REDIS
    assert dependency_down(ValueError("bad input")) is None
    assert dependency_down(ConnectionRefusedError("not from a dependency's code")) is None
    assert dependency_down(IntegrityError("INSERT", {}, Exception("duplicate"))) is None
    # Bad input and bugs that come as a driver's "interface" or "operational" errors are no
    # outage either: the client must not be told to try again.
    bad_argument = asyncpg_base.DataError("invalid input for query argument $1")
    wrapped = DBAPIError("SELECT", {}, bad_argument)
    wrapped.__cause__ = bad_argument
    assert dependency_down(wrapped) is None
    assert dependency_down(OperationalError("SELECT", {}, Exception("no such table"))) is None
    assert dependency_down(asyncpg_base.InterfaceError("another operation is in progress")) is None
    db = Database(sqlite_url)
    try:
        await db.ping()  # the real one answers
    finally:
        await db.close()


def test_log_failure_writes_one_line_for_an_outage_and_the_traceback_for_a_bug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("concilia.test")
    with caplog.at_level(logging.WARNING, logger="concilia.test"):
        try:
            raise ConnectionError("Connection refused") from OSError(111, "refused")
        except ConnectionError:
            log_failure(log, "pass failed")  # not raised from a dependency's code: a bug
        outage = _redis_error()
        try:
            raise outage
        except Exception:
            log_failure(log, "pass failed; retrying in %.0f s", 2.0)
    bug, down = caplog.records
    assert bug.exc_info is not None
    assert down.exc_info is None and down.levelno == logging.WARNING
    assert down.getMessage().startswith("pass failed; retrying in 2 s (redis unavailable: ")


def _redis_error() -> BaseException:
    async def fail() -> BaseException:
        client = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
        try:
            await client.ping()
        except Exception as exc:
            return exc
        finally:
            await client.aclose()
        raise AssertionError("nothing listens there")

    return asyncio.run(fail())


async def test_readiness_probes_at_most_once_a_second_and_logs_the_outage_and_recovery(
    redis_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health_module, "CACHE_SECONDS", 0.3)
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    live = Redis.from_url(redis_url)
    target = {"client": dead}
    probes = 0

    async def ping() -> None:
        nonlocal probes
        probes += 1
        await target["client"].ping()

    health = Health({REDIS: ping})
    try:
        with caplog.at_level(logging.INFO, logger="web.health"):
            # Many askers at once: one probe, one answer.
            answers = await asyncio.gather(*(health.check() for _ in range(20)))
            assert answers == [{REDIS: "unreachable"}] * 20 and probes == 1
            assert await health.check() == {REDIS: "unreachable"} and probes == 1
            report = health.report()
            assert list(report["down"]) == [REDIS]  # type: ignore[call-overload]
            await asyncio.sleep(0.35)
            target["client"] = live
            assert await health.check() == {REDIS: "ok"} and probes == 2
        outages = health.report()["outages"]
        assert isinstance(outages, list) and len(outages) == 1
        assert outages[0]["dependency"] == REDIS and outages[0]["seconds"] >= 0.3
        assert outages[0]["error"].startswith("ConnectionError")
        lines = [r.getMessage() for r in caplog.records]
        assert any(line.startswith("redis unreachable (ConnectionError") for line in lines)
        assert any(line.startswith("redis is back after ") for line in lines)
    finally:
        await dead.aclose()
        await live.aclose()


async def test_the_node_s_redis_client_survives_a_redis_restart(tmp_path: Path) -> None:
    """Connections left in the pool by a restarted Redis are opened again, not failed."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server", FileNotFoundError("redis-server"))
        raise AssertionError("unreachable")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(tmp_path)]

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL)

    async def started() -> subprocess.Popen[bytes]:
        proc = spawn()
        probe = Redis.from_url(f"redis://127.0.0.1:{port}/0")
        try:
            for _ in range(100):
                with contextlib.suppress(RedisError):
                    await probe.ping()
                    return proc
                await asyncio.sleep(0.1)
        finally:
            await probe.aclose()
        proc.kill()
        raise AssertionError("redis-server did not start")

    proc = await started()
    client = redis_client(f"redis://127.0.0.1:{port}/0")
    try:
        # Several connections in the pool, all left broken by the restart.
        await asyncio.gather(*(client.set(f"k{i}", "v") for i in range(5)))
        proc.kill()
        proc.wait()
        proc = await started()
        answers = await asyncio.gather(*(client.get(f"k{i}") for i in range(5)))
        assert answers == [None] * 5  # an empty Redis, and no error
        assert await client.set("k", "v") and await client.get("k") == b"v"
    finally:
        await client.aclose()
        proc.kill()
        proc.wait()
