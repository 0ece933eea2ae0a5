"""schemathesis against the running server's own OpenAPI document: no server error, and
every response has a documented status and matches the schema, in the examples, coverage,
fuzzing and stateful phases.

The server runs as a real process (``python -m web.cli serve``) with the demo data. Each role
of the service signs in (staff with both steps, the code read from the outbox) and fuzzes the
operations it has a part in, so the fuzzer reaches past the 401s and 403s; the stateful phase
follows the document's OpenAPI ``links`` (a draft started, then its sections, review,
documents and submission; a ticket written, then read, answered and closed; a meeting
booked, then held, adjourned or cancelled; a proposal started, then read, committed or
discarded). About two minutes of schemathesis in all (``RUNS``)."""

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
# Who signs in, which operations they fuzz (schemathesis filters) and for how many seconds:
# every role of the service, about two minutes of schemathesis in all. Each run
# goes through the examples, coverage, fuzzing and stateful phases; the stateful one follows
# the document's `links` (a draft started -> its sections, review, documents, submission; a
# ticket written -> read, messages, answer, close; a meeting booked -> held, adjourned...).
CASES = "^/api/v1/(cases|documents|companies|me)"
# What every response must satisfy: no server error; status, headers, content type and body as
# documented; a 405 with its Allow header; in the stateful phase, what was created can be read
# (ensure_resource_availability) and what was deleted cannot (use_after_free).
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "response_schema_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "unsupported_method",
    "missing_required_header",
    "use_after_free",
    "ensure_resource_availability",
)
RUNS: dict[str, tuple[list[str], int]] = {
    "demo.cliente": ([], 30),
    "demo.delegato": ([], 12),
    "demo.azienda": (["--include-path-regex", CASES], 12),
    "demo.conciliatore": (["--include-tag", "scheduling"], 10),
    "demo.pianificatore": (["--include-tag", "scheduling"], 25),
    "demo.helpdesk": (["--include-path-regex", "^/api/v1/(helpdesk|cases|me)"], 15),
    "demo.admin": (["--include-path-regex", "^/api/v1/(helpdesk/queue|cases|meetings|me)"], 8),
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


class Server:
    """``concilia serve`` with the demo data, as a real process."""

    def __init__(self, base: str, var: Path, log: Path) -> None:
        self.base = base
        self.var = var
        self.log = log

    def sign_in(self, username: str) -> dict[str, str]:
        """The headers of a signed-in session of ``username`` (cookie and CSRF token)."""
        accounts = (self.var / "demo-accounts.txt").read_text()
        found = re.search(re.escape(username) + r"\s+(\S+)", accounts)
        assert found
        session = requests.Session()
        page = session.get(f"{self.base}/login", timeout=5)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token
        signed = session.post(
            f"{self.base}/login",
            data={"username": username, "password": found.group(1), "next": "/"}
            | {"csrf_token": token.group(1)},
            allow_redirects=False,
            timeout=10,
        )
        assert signed.status_code == 303
        if signed.headers["Location"].startswith("/login/code"):
            second_step(session, self.base, self.var, username)
        me = session.get(f"{self.base}/api/v1/me", timeout=5).json()
        return {
            "Cookie": "; ".join(f"{k}={v}" for k, v in session.cookies.items()),
            "X-CSRF-Token": me["csrf_token"],
        }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp_path = tmp_path_factory.mktemp("fuzz")
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
    python = str(BIN / "python")
    for command in (["db", "upgrade"], ["demo"]):
        subprocess.run(
            [python, "-m", "web.cli", *command], env=env, check=True, capture_output=True
        )
    port = free_port()
    log_path = tmp_path / "server.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [python, "-m", "web.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            assert proc.poll() is None, log_path.read_text()[-3000:]
        yield Server(base, tmp_path / "var", log_path)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.mark.slow
@pytest.mark.parametrize("username", list(RUNS))
def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    server: Server, username: str, tmp_path: Path
) -> None:
    only, seconds = RUNS[username]
    headers = server.sign_in(username)
    logged = len(server.log.read_text())
    st = shutil.which("st", path=str(BIN))
    assert st, "schemathesis is a dev dependency"
    command = [
        st,
        "run",
        f"{server.base}/api/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "examples,coverage,fuzzing,stateful",
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
    assert "Stateful" in done.stdout, done.stdout[-4000:]
    print(done.stdout[-3000:])
    # A handler that failed would be logged by aiohttp as an unhandled error.
    tail = server.log.read_text()[logged:]
    assert "Unhandled exception" not in tail, tail[-5000:]
