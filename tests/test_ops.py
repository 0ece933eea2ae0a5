"""Health, readiness, metrics, the development outbox, and sessions kept in Redis."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pytest_aiohttp import AiohttpClient

from core.clock import FakeClock
from tests.conftest import free_port, make_settings
from tests.support import GOOD_PASSWORD, Env, change_password, registered, sign_in
from web.app import create_app
from web.context import SESSION_COOKIE


async def test_healthz_and_readyz(env: Env) -> None:
    async with env.client.get("/healthz") as resp:
        assert resp.status == 200 and (await resp.json()) == {"status": "ok"}
    async with env.client.get("/readyz") as resp:
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        assert (await resp.json()) == {
            "status": "ready",
            "checks": {"database": "ok"},
            "down": {},
            "outages": [],
        }


async def test_metrics_in_prometheus_format(env: Env) -> None:
    await registered(env, "misurato")
    await sign_in(env.browser(), "misurato", "Sbagliata-123")
    async with env.client.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert 'concilia_http_requests_total{method="GET",route="/register",status="200"}' in text
    assert 'concilia_sign_ins_total{outcome="login_failed"} 1.0' in text


async def test_outbox_page_only_in_development(env: Env) -> None:
    page = await env.browser().get("/dev/outbox")
    assert page.status == 404


async def test_outbox_page_in_development(
    sqlite_url: str, tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    settings = make_settings(sqlite_url, tmp_path, env="dev")
    clock = FakeClock()
    client = await aiohttp_client(create_app(settings, clock=clock))
    env = Env(client=client, clock=clock, db_url=sqlite_url)
    await registered(env, "sviluppo")
    page = await env.browser().get("/dev/outbox")
    assert page.status == 200
    assert "sviluppo@example.org" in page.text and "/verify/" in page.text


async def test_readyz_reports_redis_down(
    sqlite_url: str, tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    port = free_port()  # nothing listens there
    settings = make_settings(sqlite_url, tmp_path, redis_url=f"redis://127.0.0.1:{port}/0")
    client = await aiohttp_client(create_app(settings, background=False))
    async with client.get("/readyz") as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"
        body = await resp.json()
    assert body["checks"] == {"database": "ok", "redis": "unreachable"}
    assert body["error"] == {"code": "unavailable", "params": {"dependency": ["redis"]}}
    assert body["down"]["redis"]["error"].startswith("ConnectionError")
    # A request that needs Redis (the session store) is a clear 503, not a 500.
    async with client.get("/api/v1/cases", headers={"Cookie": "concilia_session=x"}) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"
        error = (await resp.json())["error"]
    assert error["code"] == "unavailable" and error["params"] == {"dependency": "redis"}
    # A browser's page: the error page, saying so, with the same status and Retry-After.
    async with client.get("/account", headers={"Cookie": "concilia_session=x"}) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"
        page = await resp.text()
    assert 'data-error-code="unavailable"' in page
    assert "momentaneamente non disponibile" in page


async def test_sessions_in_redis(
    db_url: str,
    tmp_path: Path,
    aiohttp_client: AiohttpClient,
    redis_url: str,
    redis_prefix: str,
) -> None:
    clock = FakeClock()
    settings = make_settings(db_url, tmp_path, redis_url=redis_url, redis_prefix=redis_prefix)
    client = await aiohttp_client(create_app(settings, clock=clock))
    env = Env(client=client, clock=clock, db_url=db_url)
    async with client.get("/readyz") as resp:
        assert (await resp.json())["checks"] == {"database": "ok", "redis": "ok"}
    await registered(env, "volatile")
    here, there = env.browser(), await env.new_browser()
    assert (await sign_in(here, "volatile", GOOD_PASSWORD)).status == 303
    assert (await sign_in(there, "volatile", GOOD_PASSWORD)).status == 303
    token = here.cookie(SESSION_COOKIE)
    assert token
    redis = env.services.redis
    assert redis is not None
    keys = [k async for k in redis.scan_iter(match=f"{redis_prefix}:sess:*")]
    assert len(keys) == 2
    assert all(token not in k.decode() for k in keys)  # only hashes are stored
    # Idle expiry is judged by the clock.
    clock.advance(timedelta(minutes=31))
    assert (await here.get("/account")).status == 303
    # A password change ends the other sessions.
    assert (await sign_in(here, "volatile", GOOD_PASSWORD)).status == 303
    assert (await sign_in(there, "volatile", GOOD_PASSWORD)).status == 303
    page = await change_password(here, GOOD_PASSWORD, "Nuova-Chiave-9")
    assert page.status == 303
    assert (await here.get("/account")).status == 200
    assert (await there.get("/account")).status == 303
    await env.close_extra()
    async for key in redis.scan_iter(match=f"{redis_prefix}:*"):
        await redis.delete(key)


async def test_metrics_only_for_allowed_networks(
    sqlite_url: str, tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    settings = make_settings(sqlite_url, tmp_path, metrics_allow="10.0.0.0/8")
    client = await aiohttp_client(create_app(settings, background=False))
    async with client.get("/metrics") as resp:
        assert resp.status == 404
