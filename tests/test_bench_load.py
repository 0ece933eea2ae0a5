"""``python -m bench.load`` end to end in a very small configuration: a real ``concilia serve``
on a PostgreSQL database of its own and the shared Redis, clients in the benchmark's process,
joins, reconnects, leaves and uploads mixed in; nothing refused, nothing lost."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.services import PG_URL, postgres_reachable, unavailable
from tests.support import result_line

ROOT = Path(__file__).resolve().parents[1]


def test_quick_load_loses_nothing(redis_url: str) -> None:
    error = postgres_reachable()
    if error is not None:
        unavailable("PostgreSQL", error)
    database = make_url(PG_URL).set(
        drivername="postgresql+asyncpg", database=f"concilia_bench_load_{uuid.uuid4().hex[:8]}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCILIA_")}
    env["PYTHONPATH"] = str(ROOT)
    # 10 meetings (one of four), half a minute measured after a 5-second warm-up; every party
    # reconnects, leaves or uploads about every 5 seconds, so each kind happens many times.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.load",
            "--quick",
            "--participants",
            "31",
            "--minutes",
            "0.5",
            "--warmup",
            "5",
            "--reconnect-every",
            "15",
            "--leave-every",
            "15",
            "--upload-every",
            "15",
            "--drain",
            "10",
            "--database-url",
            database.render_as_string(hide_password=False),
            "--redis-url",
            redis_url,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = done.stdout + done.stderr
    result = result_line(done.stdout, output)
    assert result["errors"] == 0, output[-4000:]
    assert result["lost_messages"] == 0, output[-4000:]
    assert result["lost_documents"] == 0, output[-4000:]
    assert done.returncode == 0, output[-4000:]
    assert (result["participants"], result["meetings"]) == (31, 10)
    # The load really happened, and all of it is in the database.
    assert result["messages"] == result["stored"] > 100
    assert result["deliveries"] > 100
    assert min(result["reconnects"], result["leaves"], result["uploads"]) > 0
    assert result["rss_start_mb"] > 0 and result["open_fds_start"] > 0
    assert result["rss_end_mb"] > 0 and result["open_fds_end"] > 0
