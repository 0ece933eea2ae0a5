"""``python -m bench.media`` end to end in its smallest configuration: both servers, the
load process, one and two subscribers, one three-party meeting. Checks the shape of its
RESULT line and that the subscribers got whole frames whose counters read back in order;
the figures themselves are the benchmark's business, not a test's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import result_line

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_media_smallest_run() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.media",
            "--quick",
            "--subscribers",
            "1,2",
            "--rooms",
            "1",
            "--seconds",
            "2",
            "--warmup",
            "1",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = result_line(done.stdout)
    for key in (
        "cpu_per_video_track_pct",
        "peer_cpu_per_video_track_pct",
        "ratio",
        "fps_delivered",
        "three_party_rooms_per_core",
    ):
        assert isinstance(result[key], int | float), key
    # Frames arrived whole, at about the publisher's pace (the machine may be busy), and
    # the first subscriber decoded them back to consecutive frame counters.
    assert result["fps_delivered"] > 15
    assert result["rooms_fps_min"] > 15
    assert result["frames_decoded"] > 30
    assert result["frames_consecutive"] >= result["frames_decoded"] - 6
    assert result["peer_cpu_per_video_track_pct"] > result["cpu_per_video_track_pct"]
    assert result["quick"] is True
