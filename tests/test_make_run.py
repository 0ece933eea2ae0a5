"""`make run` tried as a new user would: a fresh clone, one command, the demo accounts work."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port
from tests.support import CSRF_RE

ROOT = Path(__file__).parents[1]
SETUP_PATIENCE = 900.0  # a first run installs every dependency


def _port() -> int:
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", 8080)) != 0:
            return 8080  # the documented port, when nothing else uses it
    return free_port()


async def _form(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as resp:
        found = CSRF_RE.search(await resp.text())
    assert found
    return found.group(1)


async def _sign_in(session: aiohttp.ClientSession, base: str, username: str, password: str) -> str:
    token = await _form(session, f"{base}/login")
    async with session.post(
        f"{base}/login",
        data={"username": username, "password": password, "csrf_token": token},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303, await resp.text()
        return resp.headers["Location"]


@pytest.mark.slow
async def test_make_run_in_a_fresh_clone(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    clone = tmp_path / "concilia"
    cloning = await asyncio.create_subprocess_exec("git", "clone", "--quiet", str(ROOT), str(clone))
    assert await cloning.wait() == 0
    port = _port()
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("CONCILIA_", "VIRTUAL_ENV"))
    }
    environ["PATH"] = os.pathsep.join(
        p
        for p in environ.get("PATH", "").split(os.pathsep)
        if not p.startswith(str(ROOT / ".venv"))
    )
    proc = await asyncio.create_subprocess_exec(
        "make",
        "run",
        f"PORT={port}",
        cwd=clone,
        env=environ,
        start_new_session=True,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output: list[str] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            output.append(line.decode(errors="replace"))

    reader = asyncio.create_task(read())
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as probe:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SETUP_PATIENCE
            while True:
                assert proc.returncode is None, "".join(output[-40:])
                with contextlib.suppress(aiohttp.ClientError):
                    async with probe.get(f"{base}/healthz") as resp:
                        if resp.status == 200:
                            break
                assert loop.time() < deadline, "".join(output[-40:])
                await asyncio.sleep(1)
        text = "".join(output)
        accounts = dict(re.findall(r"^\s+\w+\s+(demo\.\w+)\s+(\S+)$", text, re.M))
        assert "demo.cliente" in accounts and "demo.admin" in accounts, text[-3000:]
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as user:
            assert await _sign_in(user, base, "demo.cliente", accounts["demo.cliente"]) == "/"
            async with user.get(f"{base}/") as resp:
                assert "demo.cliente" in await resp.text()
            # The UI kit is installed from npm and served by the app itself.
            async with user.get(
                f"{base}/static/vendor/bootstrap-italia/css/bootstrap-italia.min.css"
            ) as resp:
                assert resp.status == 200
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as admin:
            step = await _sign_in(admin, base, "demo.admin", accounts["demo.admin"])
            assert step.startswith("/login/code")
            # Development mode: the code is in the outbox page.
            async with admin.get(f"{base}/dev/outbox") as resp:
                code = re.search(r"^\s+(\d{6})\s*$", await resp.text(), re.M)
            assert code
            token = await _form(admin, f"{base}/login/code")
            async with admin.post(
                f"{base}/login/code",
                data={"code": code.group(1), "csrf_token": token, "next": "/admin/accounts"},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 303
            async with admin.get(f"{base}/admin/accounts") as resp:
                assert resp.status == 200 and "demo.pianificatore" in await resp.text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 20)
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
        reader.cancel()
