"""Does the server's memory stay flat while a 15 MB file uploads? Measured from outside.

Starts the real server (``python -m web.cli serve``, this checkout's code, SQLite and a fresh
var dir with the demo data) and, side by side, two processes of a naive peer
(``bench.buffered_peer``: ``request.post()`` then the file written to disk, by ``read()`` and
by ``copyfileobj``). A thread samples every server process's RSS (``/proc/<pid>/status``)
every few milliseconds while this process, the client, uploads the same streamed multipart
body of 15 MiB minus a little (a PDF by its first bytes) to each of them in turn, ``--runs``
times, then one of 15 MiB + 1 byte to concilia, which must be refused (413). The kernel's own
peak (``VmHWM``, reset through ``/proc/<pid>/clear_refs`` once warmed up) cross-checks the
sampled peak.

    python -m bench.upload [--runs 5] [--interval-ms 5] [--keep]

The last line of output is ``RESULT {json}``; sizes are in MiB ("MB" below), times in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import aiohttp
import requests

from cases.uploads import CONCILIATION_MAX_FILE

MB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[1]  # the checkout whose code the servers run
CHUNK = 64 * 1024
FILE_SIZE = CONCILIATION_MAX_FILE - 4096  # "15 MiB minus a little"
OVERSIZE = CONCILIATION_MAX_FILE + 1
WARMUP_SIZE = 256 * 1024
WARMUP_UPLOADS = 3
SETTLE_SECONDS = 1.0  # idle time before a baseline, and after the uploads
PAUSE_SECONDS = 0.2  # between two uploads, so every upload has its own window
START_SECONDS = 30.0
HTTP_TIMEOUT = 300.0
FIELDS = {
    "category": "other",
    "description": "Benchmark upload",
    "visible_to_other_party": "",
}


# --- the body ---------------------------------------------------------------------------------


def file_chunks(size: int) -> Iterator[bytes]:
    """``size`` bytes that look like a PDF (``%PDF-`` first), made as they are sent."""
    block = hashlib.shake_256(b"concilia bench").digest(CHUNK)
    head = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
    first = head + block[len(head) :]
    sent = 0
    while sent < size:
        piece = (first if sent == 0 else block)[: size - sent]
        sent += len(piece)
        yield piece


def file_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for piece in file_chunks(size):
        digest.update(piece)
    return digest.hexdigest()


class MultipartBody:
    """A ``multipart/form-data`` body (the text fields, then one file) streamed by the client:
    ``requests`` sends an iterable with a length as it iterates, with a ``Content-Length``
    header as a browser would, and never holds the file."""

    def __init__(self, fields: dict[str, str], filename: str, size: int) -> None:
        self.boundary = "concilia-bench-" + os.urandom(12).hex()
        dash = b"--" + self.boundary.encode()
        head = b""
        for name, value in fields.items():
            head += dash + b"\r\n"
            head += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            head += value.encode() + b"\r\n"
        head += dash + b"\r\n"
        head += f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode()
        head += b"Content-Type: application/pdf\r\n\r\n"
        self.head = head
        self.tail = b"\r\n" + dash + b"--\r\n"
        self.size = size

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        yield from file_chunks(self.size)
        yield self.tail


# --- memory from outside ----------------------------------------------------------------------


def status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` line of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``), ``None`` once gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(key.encode() + b":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def reset_peak(pid: int) -> bool:
    """Reset the kernel's peak RSS of ``pid`` (``VmHWM``) to its current RSS (Linux >= 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class Sampler(threading.Thread):
    """Every ``interval`` seconds, the RSS (bytes) of every watched process, with the time."""

    def __init__(self, pids: dict[str, int], interval: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pids = pids
        self.interval = interval
        self.samples: dict[str, list[tuple[float, int]]] = {name: [] for name in pids}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for name, pid in self.pids.items():
                kb = status_kb(pid, "VmRSS")
                if kb is not None:
                    self.samples[name].append((time.perf_counter(), kb * 1024))
            self.halt.wait(self.interval)

    def stop(self) -> None:
        self.halt.set()
        if self.is_alive():
            self.join(timeout=5)

    def between(self, name: str, start: float, end: float) -> list[int]:
        return [rss for at, rss in list(self.samples[name]) if start <= at <= end]


# --- the servers ------------------------------------------------------------------------------


@dataclass
class Target:
    """One server under measure and how to upload to it."""

    name: str
    label: str
    proc: subprocess.Popen[bytes]
    base: str
    upload_path: str
    session: requests.Session = field(default_factory=requests.Session)
    headers: dict[str, str] = field(default_factory=dict)
    checks_sha256: bool = False
    times: list[float] = field(default_factory=list)
    windows: list[tuple[float, float]] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(work: Path) -> dict[str, str]:
    """This checkout's code first on the path, a fresh var dir, SQLite, no Redis, no mail; none
    of the caller's own ``CONCILIA_*`` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCILIA_")}
    path = env.get("PYTHONPATH")
    env |= {
        "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""),
        "TMPDIR": str(work / "tmp"),
        "CONCILIA_VAR_DIR": str(work / "var"),
        "CONCILIA_ENV": "test",
        "CONCILIA_DATABASE_URL": "",
        "CONCILIA_REDIS_URL": "",
        "CONCILIA_SMTP_HOST": "",
        "CONCILIA_LOG_LEVEL": "WARNING",
    }
    return env


def wait_healthy(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{base}: the server exited ({proc.returncode}):\n{tail(log)}")
        with contextlib.suppress(requests.ConnectionError, requests.Timeout):
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{base}: no answer after {START_SECONDS:.0f} s:\n{tail(log)}")


def tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return ""


@contextlib.contextmanager
def workdir(prefix: str, keep: bool) -> Iterator[Path]:
    """A fresh temporary folder for one benchmark run, deleted at the end unless ``keep``
    (then its path is printed). A SIGTERM ends the run as an exit, so that the folder is
    removed and the servers the run started are stopped."""

    def terminated(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


class Processes:
    """The server processes started here and their log files: all ended by ``close``."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []

    def run(self, *args: str) -> None:
        done = subprocess.run(  # noqa: S603 (our own interpreter and module)
            [sys.executable, *args], cwd=self.work, env=self.env, capture_output=True, check=False
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")[-3000:]
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{output}")

    def start(
        self, name: str, *args: str, port: int | None = None
    ) -> tuple[subprocess.Popen[bytes], str, Path]:
        port = port or free_port()
        log_path = self.work / f"{name}.log"
        log = log_path.open("wb")
        self.logs.append(log)
        proc = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, *args, "--host", "127.0.0.1", "--port", str(port)],
            cwd=self.work,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        wait_healthy(proc, base, log_path)
        return proc, base, log_path

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for log in self.logs:
            log.close()


def sign_in(base: str, var_dir: Path) -> tuple[requests.Session, dict[str, str], str]:
    """demo.cliente's session, the API's CSRF header and the id of the demo case."""
    accounts = (var_dir / "demo-accounts.txt").read_text()
    found = re.search(r"\sdemo\.cliente\s+(\S+)", accounts)
    if not found:
        raise RuntimeError("demo.cliente is not in demo-accounts.txt")
    session = requests.Session()
    page = session.get(f"{base}/login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    if not token:
        raise RuntimeError("no CSRF token on the sign-in page")
    form = {"username": "demo.cliente", "password": found.group(1), "next": "/"}
    answer = session.post(
        f"{base}/login",
        data=form | {"csrf_token": token.group(1)},
        allow_redirects=False,
        timeout=30,
    )
    if answer.status_code != 303:
        raise RuntimeError(f"sign-in refused: {answer.status_code}")
    me = session.get(f"{base}/api/v1/me", timeout=10).json()
    cases = session.get(f"{base}/api/v1/cases", timeout=10).json()["cases"]
    if not cases:
        raise RuntimeError("demo.cliente has no case: did `concilia demo` run?")
    return session, {"X-CSRF-Token": me["csrf_token"]}, cases[0]["id"]


# --- uploads ----------------------------------------------------------------------------------


def upload(target: Target, size: int) -> tuple[int | None, float, float, str]:
    """One streamed upload: status (``None`` if the connection broke), start, end, detail."""
    body = MultipartBody(FIELDS, "bench.pdf", size)
    headers = target.headers | {"Content-Type": body.content_type}
    start = time.perf_counter()
    try:
        answer = target.session.post(
            target.base + target.upload_path, data=body, headers=headers, timeout=HTTP_TIMEOUT
        )
    except requests.ConnectionError as error:
        return None, start, time.perf_counter(), f"connection error: {error}"
    end = time.perf_counter()
    return answer.status_code, start, end, answer.text


def upload_ok(target: Target, size: int, sha256: str) -> tuple[float, float]:
    """An upload that must be stored whole (201 and the right size, and hash if reported)."""
    status, start, end, detail = upload(target, size)
    if status != 201:
        raise RuntimeError(f"{target.name}: upload answered {status}: {detail[:500]}")
    data: dict[str, Any] = json.loads(detail)
    if data.get("size") != size or (target.checks_sha256 and data.get("sha256") != sha256):
        raise RuntimeError(f"{target.name}: stored something else: {detail[:500]}")
    return start, end


def mb(value: float) -> float:
    return round(value / MB, 2)


def kernel_mb(stats: dict[str, Any]) -> float | None:
    peak: int | None = stats["kernel_peak"]
    return None if peak is None else mb(peak)


def summarize(
    target: Target, sampler: Sampler, baseline: int, span: tuple[float, float]
) -> dict[str, Any]:
    during = sampler.between(target.name, *span)
    peak = max(during)
    per_run = [
        max(sampler.between(target.name, s, e + 0.05) or [0]) - baseline for s, e in target.windows
    ]
    return {
        "baseline": baseline,
        "peak": peak,
        "growth": peak - baseline,
        "growth_runs": per_run,
        "upload_median": statistics.median(target.times),
    }


# --- the run ----------------------------------------------------------------------------------


def settle(sampler: Sampler, targets: list[Target]) -> dict[str, int]:
    """Wait idle for a moment; each server's median RSS over it."""
    start = time.perf_counter()
    time.sleep(SETTLE_SECONDS)
    end = time.perf_counter()
    return {t.name: int(statistics.median(sampler.between(t.name, start, end))) for t in targets}


def bench(args: argparse.Namespace, work: Path, processes: Processes) -> dict[str, Any]:
    var_dir = work / "var"
    (work / "tmp").mkdir()
    processes.run("-m", "web.cli", "db", "upgrade")
    processes.run("-m", "web.cli", "demo")

    proc, base, concilia_log = processes.start("concilia", "-m", "web.cli", "serve")
    session, csrf, case_id = sign_in(base, var_dir)
    concilia = Target(
        "concilia",
        "concilia (streamed to storage)",
        proc,
        base,
        f"/api/v1/cases/{case_id}/documents",
        session,
        csrf,
        checks_sha256=True,
    )
    targets = [concilia]
    for name, mode, label in (
        ("peer", "read", "peer (post(), file.read())"),
        ("peer_copy", "copy", "peer (post(), copyfileobj)"),
    ):
        dest = str(work / name)
        proc, base, _log = processes.start(
            name, "-m", "bench.buffered_peer", "--dest", dest, "--mode", mode
        )
        targets.append(Target(name, label, proc, base, "/upload"))

    sampler = Sampler({t.name: t.proc.pid for t in targets}, args.interval_ms / 1000)
    sampler.start()
    try:
        warm_sha = file_sha256(WARMUP_SIZE)
        for _ in range(WARMUP_UPLOADS):
            for target in targets:
                upload_ok(target, WARMUP_SIZE, warm_sha)
        baselines = settle(sampler, targets)
        kernel_peak = all(reset_peak(t.proc.pid) for t in targets)

        sha = file_sha256(FILE_SIZE)
        span_start = time.perf_counter()
        for run in range(args.runs):
            turn = run % len(targets)  # who goes first changes from run to run
            for target in targets[turn:] + targets[:turn]:
                start, end = upload_ok(target, FILE_SIZE, sha)
                target.times.append(end - start)
                target.windows.append((start, end))
                time.sleep(PAUSE_SECONDS)
        oversize_status, start, end, detail = upload(concilia, OVERSIZE)
        oversize_peak = max(sampler.between("concilia", start, end + 0.05) or [0])
        after = settle(sampler, targets)
        span = (span_start, time.perf_counter())
        hwm = {t.name: status_kb(t.proc.pid, "VmHWM") for t in targets}
    finally:
        sampler.stop()

    stats = {t.name: summarize(t, sampler, baselines[t.name], span) for t in targets}
    stats["concilia"]["growth_oversize"] = oversize_peak - baselines["concilia"]
    for target in targets:
        stats[target.name]["after"] = after[target.name]
        kb = hwm[target.name]
        stats[target.name]["kernel_peak"] = kb * 1024 if kernel_peak and kb is not None else None
    problems = "Traceback" in tail(concilia_log, 100_000)
    return {
        "targets": targets,
        "stats": stats,
        "oversize_status": oversize_status,
        "oversize_detail": detail,
        "log_problems": problems,
        "concilia_log": concilia_log,
    }


def report(args: argparse.Namespace, outcome: dict[str, Any]) -> dict[str, Any]:
    stats: dict[str, dict[str, Any]] = outcome["stats"]
    print(
        f"{args.runs} uploads of {mb(FILE_SIZE)} MB (15 MiB - 4 KiB) to each server, streamed "
        f"by a client process; server RSS sampled every {args.interval_ms:g} ms "
        f"(MB = MiB; growth = peak - baseline after warm-up)"
    )
    print(
        f"{'server':<32}{'baseline':>9}{'peak':>9}{'growth':>8}{'kernel':>8}{'after':>8}"
        f"{'upload':>9}  growth per upload"
    )
    for target in outcome["targets"]:
        s = stats[target.name]
        kernel = f"{mb(s['kernel_peak']):8.2f}" if s["kernel_peak"] is not None else f"{'-':>8}"
        runs = " ".join(f"{mb(g):.2f}" for g in s["growth_runs"])
        print(
            f"{target.label:<32}{mb(s['baseline']):9.2f}{mb(s['peak']):9.2f}"
            f"{mb(s['growth']):8.2f}{kernel}{mb(s['after']):8.2f}"
            f"{s['upload_median']:8.3f}s  {runs}"
        )
    print("kernel = the kernel's peak RSS (VmHWM) over the uploads; upload = median wall time")
    status = outcome["oversize_status"]
    print(
        f"15 MiB + 1 byte to concilia: {status}"
        + ("" if status == 413 else " (expected 413)")
        + f", growth {mb(stats['concilia']['growth_oversize']):.2f}"
    )
    if outcome["log_problems"]:
        print(f"concilia's log has a traceback:\n{tail(outcome['concilia_log'])}")
    concilia, peer, peer_copy = stats["concilia"], stats["peer"], stats["peer_copy"]
    floor = CHUNK  # a growth under one read chunk is noise: keep the ratio finite
    return {
        "file_mb": mb(FILE_SIZE),
        "runs": args.runs,
        "concilia_rss_baseline_mb": mb(concilia["baseline"]),
        "concilia_rss_peak_mb": mb(concilia["peak"]),
        "concilia_growth_mb": mb(concilia["growth"]),
        "concilia_kernel_peak_mb": kernel_mb(concilia),
        "peer_kernel_peak_mb": kernel_mb(peer),
        "peer_rss_baseline_mb": mb(peer["baseline"]),
        "peer_rss_peak_mb": mb(peer["peak"]),
        "peer_growth_mb": mb(peer["growth"]),
        "peer_copy_growth_mb": mb(peer_copy["growth"]),
        "growth_ratio_peer_over_concilia": round(
            peer["growth"] / max(concilia["growth"], floor), 1
        ),
        "concilia_upload_median_s": round(concilia["upload_median"], 3),
        "peer_upload_median_s": round(peer["upload_median"], 3),
        "peer_copy_upload_median_s": round(peer_copy["upload_median"], 3),
        "oversize_status": status,
        "sample_interval_ms": args.interval_ms,
        "aiohttp": aiohttp.__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upload", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="uploads to each server (5)")
    parser.add_argument("--interval-ms", type=float, default=5.0, help="RSS sampling period (5)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    with workdir("concilia-bench-", args.keep) as work:
        processes = Processes(work, server_env(work))
        try:
            outcome = bench(args, work, processes)
        finally:
            processes.close()
    result = report(args, outcome)
    print("RESULT " + json.dumps(result))
    return 0 if result["oversize_status"] == 413 and not outcome["log_problems"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
