"""Logs carry no passwords, tokens, codes or personal data; the access log names routes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient

from core.clock import FakeClock
from core.logs import configure_logging
from tests.conftest import make_settings
from tests.support import GOOD_PASSWORD, Env, link_in, registered, sign_in
from web.app import create_app
from web.cli import RouteAccessLogger


async def test_no_secrets_in_logs(
    sqlite_url: str, tmp_path: Path, aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    configure_logging("DEBUG", json=True)
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    server = TestServer(create_app(make_settings(sqlite_url, tmp_path), clock=clock))
    await server.start_server(access_log_class=RouteAccessLogger)
    client = cast("TestClient[web.Request, web.Application]", await aiohttp_client(server))
    env = Env(client=client, clock=clock, db_url=sqlite_url)
    await registered(env, "riservato", email="riservato.privato@example.org")
    browser = env.browser()
    await sign_in(browser, "riservato", "Sbagliata-Davvero-1")
    await browser.submit("/recover/password", {"identifier": "riservato"})
    mail = await env.last_mail("riservato.privato@example.org", "/reset/")
    link = link_in(mail.body_text, "/reset/")
    await browser.submit(
        link, {"password": "Segreto-Nuovo-77", "password_confirm": "Segreto-Nuovo-77"}
    )
    text = "\n".join(record.getMessage() + " " + str(record.__dict__) for record in caplog.records)
    assert "GET /reset/{token}" in text  # the access log names the route…
    token = link.rsplit("/", 1)[1]
    for secret in (
        token,
        GOOD_PASSWORD,
        "Sbagliata-Davvero-1",
        "Segreto-Nuovo-77",
        "riservato.privato",
        "RSSMRA85T10A562S",
    ):
        assert secret not in text, [
            r.name + ": " + r.getMessage()[:300]
            for r in caplog.records
            if secret in r.getMessage() + str(r.__dict__)
        ][:3]  # …never the path, the password or personal data


async def test_requests_aiohttp_cannot_parse_are_warnings_without_their_bytes(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What scanners send (a NUL in a header, a bad character in the path) is answered 400
    and logged as a warning naming the parse error, never with the request's bytes (a
    cookie among them) or a traceback."""
    configure_logging("INFO", json=True)
    caplog.set_level(logging.INFO)
    server = TestServer(create_app(make_settings(sqlite_url, tmp_path), clock=FakeClock()))
    await server.start_server(access_log_class=RouteAccessLogger)
    try:
        secret = "session-secret-0123456789"
        for request in (
            f"GET / HTTP/1.1\r\nHost: x\r\nCookie: s={secret}\x00\r\n\r\n",
            f"GET /\x00{secret} HTTP/1.1\r\nHost: x\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection(server.host, server.port)
            writer.write(request.encode("latin-1"))
            await writer.drain()
            assert (await reader.read(100)).startswith(b"HTTP/1.0 400")
            writer.close()
            await writer.wait_closed()
    finally:
        await server.close()
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) == 2
    for record in records:
        assert (record.levelname, record.getMessage()) == ("WARNING", "bad_http_request")
        assert record.__dict__["error"] in ("BadHttpMessage", "InvalidURLError")
        assert record.exc_info is None
    text = "\n".join(r.getMessage() + " " + str(r.__dict__) for r in caplog.records)
    assert secret not in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
