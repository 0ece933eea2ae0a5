"""Media forwarding under load: concilia's forwarding server against aiortc's stock
``MediaRelay``, measured from a load process of their own.

The media is encoded once, before anything is measured: 4 seconds of 640×480 VP8 at 30 fps
and about 1 Mbit/s with a frame counter drawn in it, and Opus (``bench.media_load``). The
load process's aiortc peers replay those RTP payloads, so no encoder runs in the load.

1. **Fan-out**: one publisher (audio and video) to K = 1, 2, 4, 8 subscribers (each receives
   the audio and the video), against concilia's server (``bench.media_server --mode
   forward``: ``media.room.MediaRooms``) and, in the same run, step by step, against the peer
   (``--mode relay``: aiortc's ``MediaRelay``, decoding once and encoding per subscriber).
   The server's CPU (``/proc/<pid>/stat``, user + system) is read over a window of
   ``--seconds`` after a warm-up; its slope over the video tracks delivered at full pace
   (K × fps / 30: a starved server spends less and delivers less) is the cost of one more
   subscriber's video track (with its audio); the same slope of the server's system time
   alone shows the kernel's share (on loopback, the kernel's side of sending a datagram
   includes the receiving end's, which a real network would not charge the server). K = 8
   widens the base of the slope: the per-step differences of a light server are a few tenths
   of a percent, within the noise of one window. The subscribers count the video frames
   that arrive complete and in order (``fps``); the first one decodes what it kept at the
   end and reads the frame counters back.
2. **Three-party meetings**: M meetings at once (M stepped up), each participant publishing
   audio and video and receiving the other two, against concilia's server only. The cost of
   a meeting is the server's CPU over M; a step passes when every subscriber's video stream
   arrives at 29 fps or more. The machine may not host enough clients to fill a core (the
   load process's own CPU is shown at each step; stepping stops when it nears a core): the
   meetings a core holds are then extrapolated from the cost of a meeting at the largest
   step that passed (its CPU less the idle server's, over the share of the packets that
   arrived), and the output says so (``rooms_per_core_extrapolated``).

    python -m bench.media [--quick] [--seconds 15] [--warmup 4] [--subscribers 1,2,4,8]
                          [--rooms 4,8,12,16,24,32] [--only fanout|rooms] [--keep]

The last line is ``RESULT {json}``: CPU in percent of one core, rates per second.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from bench.chat import cpu_seconds, cpu_split
from bench.upload import Processes, tail, workdir

ROOT = Path(__file__).resolve().parents[1]
FPS = 30.0  # the publishers' frame rate
FPS_FLOOR = 29.0
LOAD_CEILING = 90.0  # % of a core: past this the load process, not the server, is the limit
LATE_MS = 100.0  # the replay's timer this late: the load process was starved
RETRIES = 2


def bench_env(root: Path = ROOT) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCILIA_")}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(root) + (os.pathsep + path if path else "")
    return env


def run_load(
    work: Path, server_pid: int, base: str, args: argparse.Namespace, *scenario: str
) -> dict[str, Any]:
    """One load process against one server: its STATS, with the CPU of the server and of
    the load process between its START and END lines."""
    log_path = work / "load.log"
    command = [
        sys.executable,
        "-m",
        "bench.media_load",
        "--server",
        base,
        "--media",
        str(work / "media.json"),
        "--warmup",
        str(args.warmup),
        "--seconds",
        str(args.seconds),
        *scenario,
    ]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            command, cwd=ROOT, env=bench_env(), stdout=subprocess.PIPE, stderr=log
        )
        try:
            return _follow(proc, server_pid, args.seconds + args.warmup + 180, log_path)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _follow(
    proc: subprocess.Popen[bytes], server_pid: int, timeout: float, log_path: Path
) -> dict[str, Any]:
    stdout: IO[bytes] | None = proc.stdout
    assert stdout is not None
    deadline = time.monotonic() + timeout
    marks: dict[str, tuple[float, float, float, float]] = {}
    for raw in stdout:
        line = raw.decode().strip()
        if line in ("START", "END"):
            marks[line] = (time.monotonic(), *cpu_split(server_pid), cpu_seconds(proc.pid))
        elif line.startswith("STATS "):
            stats: dict[str, Any] = json.loads(line[6:])
            (t0, u0, k0, l0), (t1, u1, k1, l1) = marks["START"], marks["END"]
            stats["server_cpu_pct"] = round(100 * (u1 - u0 + k1 - k0) / (t1 - t0), 2)
            # The kernel's share (system time): on loopback it includes the receiving end's
            # side of every datagram the server sends.
            stats["server_system_cpu_pct"] = round(100 * (k1 - k0) / (t1 - t0), 2)
            stats["load_cpu_pct"] = round(100 * (l1 - l0) / (t1 - t0), 1)
            return stats
        if time.monotonic() > deadline:
            break
    raise RuntimeError(f"the load process gave no STATS:\n{tail(log_path)}")


def slope(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope and intercept of y over x."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0, mean_y
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return sxy / sxx, mean_y - sxy / sxx * mean_x


def per_track(runs: list[dict[str, Any]], field: str) -> tuple[float, float]:
    """Slope and intercept of ``field`` over the video tracks delivered at full pace."""
    return slope([(r["subscribers"] * r["fps_median"] / FPS, r[field]) for r in runs])


def show(label: str, stats: dict[str, Any]) -> None:
    print(
        f"{label:<28} server {stats['server_cpu_pct']:6.1f}%"
        f" (system {stats['server_system_cpu_pct']:5.1f}%)  load {stats['load_cpu_pct']:5.1f}%"
        f"  video fps min {stats['fps_min']:5.1f} median {stats['fps_median']:5.1f}"
        f" ({stats['video_streams']} streams)  audio pkt/s min {stats['audio_pps_min']:5.1f}"
        f"  late {stats['replay_late_ms']} ms"
        f"  delivered {stats['delivered_pps'] / max(stats['expected_pps'], 1):.0%}",
        flush=True,
    )


def fanout(
    args: argparse.Namespace, work: Path, servers: dict[str, tuple[int, str]]
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    for k in args.subscribers:
        for name, (pid, base) in servers.items():
            stats = run_load(
                work,
                pid,
                base,
                args,
                "--scenario",
                "fanout",
                "--subscribers",
                str(k),
                "--check-frames",
            )
            stats["subscribers"] = k
            show(f"fan-out {name} K={k}", stats)
            runs[name].append(stats)
    out: dict[str, Any] = {}
    for name, found in runs.items():
        # Over the video tracks delivered at full pace (K × fps / 30): a server the machine
        # starves delivers fewer frames and spends less, and must not look cheaper for it.
        cost, intercept = per_track(found, "server_cpu_pct")
        system, _ = per_track(found, "server_system_cpu_pct")
        out[name] = {
            "cpu_per_video_track_pct": round(cost, 3),
            "system_cpu_per_video_track_pct": round(system, 3),
            "publisher_cpu_pct": round(intercept, 2),
            "fps_min": min(r["fps_min"] for r in found),
            "frames_checked": [r["frames_checked"] for r in found],
            "runs": found,
        }
    return out


def idle_cpu(pid: int, seconds: float = 3.0) -> float:
    """The server's CPU with nobody connected (its timers), in % of a core."""
    before, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - start)


def meetings(args: argparse.Namespace, work: Path, pid: int, base: str) -> dict[str, Any]:
    idle = idle_cpu(pid)
    print(f"server idle {idle:.2f}%", flush=True)
    steps: list[dict[str, Any]] = []
    for m in args.rooms:
        for attempt in range(1 + RETRIES):
            stats = run_load(work, pid, base, args, "--scenario", "rooms", "--rooms", str(m))
            stats["rooms"] = m
            stats["passed"] = stats["fps_min"] >= FPS_FLOOR
            stats["attempt"] = attempt + 1
            show(f"meetings M={m}", stats)
            # A step whose own sender ran late measured the machine, not the server: again.
            if stats["passed"] or stats["replay_late_ms"] < LATE_MS:
                break
        steps.append(stats)
        if not stats["passed"] or stats["load_cpu_pct"] >= LOAD_CEILING:
            break
        if stats["server_cpu_pct"] >= 95:
            break
    passed = [s for s in steps if s["passed"]]
    last = steps[-1]
    if not last["passed"]:
        starved = last["replay_late_ms"] >= LATE_MS
        stop = "load starved (the machine is busy)" if starved else "fps below 29"
    elif last["load_cpu_pct"] >= LOAD_CEILING:
        stop = "the load process is at a core"
    elif last["server_cpu_pct"] >= 95:
        stop = "the server is at a core"
    else:
        stop = "last step"
    out: dict[str, Any] = {
        "steps": steps,
        "server_idle_cpu_pct": round(idle, 2),
        "stopped_by": stop,
    }
    if not passed:
        out |= {"rooms_passed": 0, "cpu_per_room_pct": None, "rooms_per_core": 0}
        return out
    best = passed[-1]
    # The cost of a meeting at full pace: the server's CPU (its idle timers aside) over
    # the meetings' worth of packets the subscribers actually got.
    delivered = min(1.0, best["delivered_pps"] / best["expected_pps"])
    per_room = max(best["server_cpu_pct"] - idle, 0.0) / (best["rooms"] * delivered)
    marginal, _ = slope([(s["rooms"], s["server_cpu_pct"]) for s in passed])
    # At a full core, as many meetings as this cost fits; no more than were measured if the
    # server itself was the limit.
    fits = math.floor(100 / per_room) if per_room > 0 else 0
    extrapolated = best["server_cpu_pct"] < 95
    out |= {
        "rooms_passed": best["rooms"],
        "cpu_per_room_pct": round(per_room, 3),
        "marginal_cpu_per_room_pct": round(marginal, 3),
        "rooms_per_core": fits if extrapolated else best["rooms"],
        "rooms_per_core_extrapolated": extrapolated,
        "load_cpu_pct": best["load_cpu_pct"],
        "delivered_fraction": round(delivered, 3),
    }
    return out


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    subprocess.run(  # noqa: S603 (our own interpreter and module)
        [
            sys.executable,
            "-m",
            "bench.media_load",
            "--server",
            "-",
            "--scenario",
            "fanout",
            "--media",
            str(work / "media.json"),
            "--encode-only",
        ],
        cwd=ROOT,
        env=bench_env(),
        check=True,
    )
    processes = Processes(work, bench_env(args.server_root))
    try:
        servers: dict[str, tuple[int, str]] = {}
        wanted = ["concilia"] + (["peer"] if "fanout" in args.only else [])
        for name in wanted:
            mode = "forward" if name == "concilia" else "relay"
            proc, base, _ = processes.start(name, "-m", "bench.media_server", "--mode", mode)
            servers[name] = (proc.pid, base)
        results: dict[str, Any] = {}
        if "fanout" in args.only:
            results["fanout"] = fanout(args, work, servers)
        if "rooms" in args.only:
            pid, base = servers["concilia"]
            results["rooms"] = meetings(args, work, pid, base)
        logs = {name: (work / f"{name}.log").read_text(errors="replace") for name in servers}
        results["log_problems"] = [n for n, text in logs.items() if "Traceback" in text]
        return results
    finally:
        processes.close()


def report(args: argparse.Namespace, results: dict[str, Any]) -> int:
    out: dict[str, Any] = {}
    ok = not results["log_problems"]
    fan = results.get("fanout")
    if fan is not None:
        ours, peer = fan["concilia"], fan.get("peer")
        print("fan-out: " + json.dumps({k: v for k, v in ours.items() if k != "runs"}))
        out["cpu_per_video_track_pct"] = ours["cpu_per_video_track_pct"]
        out["system_cpu_per_video_track_pct"] = ours["system_cpu_per_video_track_pct"]
        if peer is not None:
            print("fan-out peer: " + json.dumps({k: v for k, v in peer.items() if k != "runs"}))
            out["peer_cpu_per_video_track_pct"] = peer["cpu_per_video_track_pct"]
            out["peer_system_cpu_per_video_track_pct"] = peer["system_cpu_per_video_track_pct"]
            out["ratio"] = round(
                ours["cpu_per_video_track_pct"] / max(peer["cpu_per_video_track_pct"], 1e-9), 4
            )
        out["fps_delivered"] = ours["fps_min"]
        out["publisher_cpu_pct"] = ours["publisher_cpu_pct"]
        if peer is not None:
            out["peer_fps_delivered"] = peer["fps_min"]
        checked = ours["frames_checked"]
        out["frames_decoded"] = sum(c["decoded"] for c in checked if c)
        out["frames_consecutive"] = sum(c["consecutive"] for c in checked if c)
        ok = ok and ours["fps_min"] > 0
    rooms = results.get("rooms")
    if rooms is not None:
        print("meetings: " + json.dumps({k: v for k, v in rooms.items() if k != "steps"}))
        out["three_party_rooms_per_core"] = rooms["rooms_per_core"]
        out["server_idle_cpu_pct"] = rooms["server_idle_cpu_pct"]
        out["cpu_per_three_party_room_pct"] = rooms["cpu_per_room_pct"]
        out["three_party_rooms_measured"] = rooms["rooms_passed"]
        out["rooms_stopped_by"] = rooms["stopped_by"]
        out["rooms_per_core_extrapolated"] = rooms.get("rooms_per_core_extrapolated")
        steps = rooms["steps"]
        out["rooms_fps_min"] = steps[-1]["fps_min"] if steps else None
    out["video_kbps"] = next(
        (r["video_kbps"] for part in (fan or {}).values() for r in part["runs"]), None
    )
    out["loadavg_1min"] = float(Path("/proc/loadavg").read_text().split()[0])
    out["seconds"] = args.seconds
    out["quick"] = args.quick
    print("RESULT " + json.dumps(out))
    return 0 if ok else 1


def numbers(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.media", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short windows, few steps")
    parser.add_argument("--seconds", type=float, help="measurement window (15; 5 with --quick)")
    parser.add_argument("--warmup", type=float, help="seconds before measuring (4; 2 quick)")
    parser.add_argument("--subscribers", type=numbers, help="K steps (1,2,4,8; quick 1,2,4)")
    parser.add_argument("--rooms", type=numbers, help="M steps (4,8,12,16,24,32,48; quick 4,8)")
    parser.add_argument("--only", choices=("fanout", "rooms"), action="append")
    parser.add_argument("--keep", action="store_true", help="keep the folder and its logs")
    parser.add_argument(
        "--server-root",
        type=Path,
        default=ROOT,
        help="run the servers from another checkout (with bench/media_server.py): before/after",
    )
    args = parser.parse_args()
    args.only = tuple(args.only or ("fanout", "rooms"))
    if args.seconds is None:
        args.seconds = 5.0 if args.quick else 15.0
    if args.subscribers is None:
        args.subscribers = [1, 2, 4] if args.quick else [1, 2, 4, 8]
    if args.warmup is None:
        args.warmup = 2.0 if args.quick else 4.0
    if args.rooms is None:
        args.rooms = [4, 8] if args.quick else [4, 8, 12, 16, 24, 32, 48]

    with workdir("concilia-media-", args.keep) as work:
        results = bench(args, work)
    return report(args, results)


if __name__ == "__main__":
    raise SystemExit(main())
