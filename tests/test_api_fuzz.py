"""schemathesis against the running server's own OpenAPI document: no server error, and
every response matches the schema (examples, coverage, fuzzing and stateful link phases).

The server runs as a real process (``concilia serve``) with the demo data, signed in as the
demo customer, so the fuzzer reaches the case operations and not only the 401s."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port

BIN = Path(sys.executable).parent
RUN_SECONDS = 90  # the whole schemathesis run's budget


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = {
        **os.environ,
        "CONCILIA_VAR_DIR": str(tmp_path / "var"),
        "CONCILIA_ENV": "test",
        "CONCILIA_DATABASE_URL": "",
        "CONCILIA_REDIS_URL": "",
        "CONCILIA_SMTP_HOST": "",
        "CONCILIA_LOG_LEVEL": "WARNING",
    }
    concilia = str(BIN / "concilia")
    for command in (["db", "upgrade"], ["demo"]):
        subprocess.run([concilia, *command], env=env, check=True, capture_output=True)
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [concilia, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        accounts = (tmp_path / "var" / "demo-accounts.txt").read_text()
        found = re.search(r"demo\.cliente\s+(\S+)", accounts)
        assert found
        session = requests.Session()
        page = session.get(f"{base}/login", timeout=5)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token
        signed = session.post(
            f"{base}/login",
            data={"username": "demo.cliente", "password": found.group(1), "next": "/"}
            | {"csrf_token": token.group(1)},
            allow_redirects=False,
            timeout=10,
        )
        assert signed.status_code == 303
        me = session.get(f"{base}/api/v1/me", timeout=5).json()
        headers = {
            "Cookie": "; ".join(f"{k}={v}" for k, v in session.cookies.items()),
            "X-CSRF-Token": me["csrf_token"],
        }
        yield base, headers
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
        tail = (tmp_path / "server.log").read_text()[-5000:]
        # A handler that failed would be logged by aiohttp as an unhandled error.
        assert "Unhandled exception" not in tail, tail


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    base, headers = server
    st = shutil.which("st", path=str(BIN))
    assert st, "schemathesis is a dev dependency"
    command = [
        st,
        "run",
        f"{base}/api/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance,content_type_conformance",
        "--max-examples",
        "15",
        "--seed",
        "20261123",
        "--max-time",
        str(RUN_SECONDS),
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_SECONDS + 120)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
