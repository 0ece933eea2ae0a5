"""schemathesis against the running server's own OpenAPI document: no server error, and
every response has a documented status and matches the schema (examples, coverage, fuzzing
and stateful link phases).

The server runs as a real process (``concilia serve``) with the demo data, signed in as the
demo customer, so the fuzzer reaches the case operations and not only the 401s; then as the
demo scheduler (both sign-in steps, the code read from the outbox) for the scheduling
operations, which are refused to a customer before their bodies are even read."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parents[1]
RUN_SECONDS = 90  # the whole schemathesis run's budget
# Who signs in, which operations they fuzz (schemathesis filters) and for how long.
RUNS = {
    "demo.cliente": ([], RUN_SECONDS),
    "demo.pianificatore": (["--include-tag", "scheduling"], 40),
}


def second_step(session: requests.Session, base: str, var: Path, username: str) -> None:
    """A staff sign-in's second step, with the code of the mail kept in the outbox."""
    database = sqlite3.connect(f"file:{var / 'concilia.sqlite3'}?mode=ro", uri=True)
    try:
        row = database.execute(
            "SELECT body_text FROM mail_outbox WHERE to_addr = ? ORDER BY id DESC LIMIT 1",
            (username.replace(".", "-") + "@example.org",),
        ).fetchone()
    finally:
        database.close()
    code = re.search(r"^\s+(\d{6})\s*$", row[0], re.M)
    assert code, row
    page = session.get(f"{base}/login/code", timeout=5)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    done = session.post(
        f"{base}/login/code",
        data={"code": code.group(1), "next": "/", "csrf_token": token.group(1)},
        allow_redirects=False,
        timeout=10,
    )
    assert done.status_code == 303 and done.headers["Location"] == "/", done.text[-2000:]


@pytest.fixture(params=list(RUNS))
def server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, dict[str, str], list[str], int]]:
    username: str = request.param
    env = {
        **os.environ,
        # The code of this checkout, even when the venv's editable install points elsewhere.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
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
        found = re.search(re.escape(username) + r"\s+(\S+)", accounts)
        assert found
        session = requests.Session()
        page = session.get(f"{base}/login", timeout=5)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token
        signed = session.post(
            f"{base}/login",
            data={"username": username, "password": found.group(1), "next": "/"}
            | {"csrf_token": token.group(1)},
            allow_redirects=False,
            timeout=10,
        )
        assert signed.status_code == 303
        if signed.headers["Location"].startswith("/login/code"):
            second_step(session, base, tmp_path / "var", username)
        me = session.get(f"{base}/api/v1/me", timeout=5).json()
        headers = {
            "Cookie": "; ".join(f"{k}={v}" for k, v in session.cookies.items()),
            "X-CSRF-Token": me["csrf_token"],
        }
        only, seconds = RUNS[username]
        yield base, headers, only, seconds
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
        tail = (tmp_path / "server.log").read_text()[-5000:]
        # A handler that failed would be logged by aiohttp as an unhandled error.
        assert "Unhandled exception" not in tail, tail


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    server: tuple[str, dict[str, str], list[str], int], tmp_path: Path
) -> None:
    base, headers, only, seconds = server
    st = shutil.which("st", path=str(BIN))
    assert st, "schemathesis is a dev dependency"
    command = [
        st,
        "run",
        f"{base}/api/openapi.json",
        "--checks",
        "not_a_server_error,status_code_conformance,response_schema_conformance,"
        "content_type_conformance",
        "--max-examples",
        "15",
        "--seed",
        "20261123",
        "--max-time",
        str(seconds),
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
        *only,
    ]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
