"""``make cluster``: the deployment of ``deploy/`` rehearsed on loopback.

nginx (the Debian package's binary, run as a plain process, not the system service) in front
of two ``concilia serve`` nodes sharing one PostgreSQL database and one Redis, as in
production but in plain HTTP on 127.0.0.1. The nginx configuration is ``deploy/nginx/
concilia.conf`` itself, rendered by :func:`render_site`: its TLS lines go, the nodes' loopback
addresses replace the tagged ones, the logs move under ``var/cluster/``. Each node gets the
settings ``deploy/concilia.env.example`` describes, its own ``CONCILIA_NODE_URL`` (its path
through nginx) and its own var directory; uploaded files are shared.

Run it with ``make cluster`` or ``python -m deploy.cluster`` from the checkout; Ctrl-C (or
SIGTERM) stops everything. ``tests/test_cluster_nginx.py`` starts the same cluster through
:func:`running`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from core.db import Database
from web.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "deploy" / "nginx" / "concilia.conf"
NODES = ("node1", "node2")  # the tags of deploy/nginx/concilia.conf
HOST = "127.0.0.1"
START_PATIENCE = 120.0  # seconds for a node (imports, database, Redis) to answer /readyz
STOP_PATIENCE = 20.0  # seconds a node has to close its connections after SIGTERM
UPSTREAM_HEADER = "X-Concilia-Upstream"  # rehearsal only: the node that answered

# Under the environment of whoever runs the rehearsal: a development service, readable logs.
DEFAULTS = {"CONCILIA_ENV": "dev", "CONCILIA_LOG_JSON": "false"}


class ClusterError(Exception):
    """The cluster cannot start: the message says why and where to look."""


# ---- the nginx configuration -------------------------------------------------------------------

# `server 10.0.0.11:8080 …;  # node1` in an upstream block.
_NODE_LINE = re.compile(
    r"^(?P<head>\s*server\s+)(?P<address>\S+)(?P<tail>[^#]*;\s*#\s*)(?P<tag>\w+)\s*$"
)
_LOG_LINE = re.compile(
    r"^(?P<head>\s*(?:access|error)_log\s+)/var/log/nginx/(?P<name>\S+)(?P<tail>.*)$"
)


def _code(line: str) -> str:
    return line.split("#", 1)[0].strip()


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def render_site(template: str, *, listen: str, nodes: Mapping[str, str], log_dir: Path) -> str:
    """The production site of ``deploy/nginx/concilia.conf`` for the rehearsal: plain HTTP on
    ``listen``, the server lines tagged ``# <node>`` pointing at ``nodes[<node>]``, the logs in
    ``log_dir``, and a response header naming the node that answered. Raises ``ValueError``
    when the file no longer has what the rehearsal changes (the two must not drift apart)."""
    out: list[str] = []
    seen: set[str] = set()
    block: list[str] = []  # a top-level server block, decided on when it closes
    depth = 0
    for line in template.splitlines():
        code = _code(line)
        opening = depth == 0 and re.fullmatch(r"server\s*\{", code) is not None
        depth += code.count("{") - code.count("}")
        if opening or block:
            block.append(line)
            if depth == 0:
                out.extend(_server_block(block, listen))
                block = []
            continue
        out.append(line)
    if depth != 0 or block:
        raise ValueError("unbalanced braces in the nginx configuration")
    result = [_line(line, nodes, seen, log_dir) for line in out]
    if seen != set(nodes):
        raise ValueError(f"node tags found {sorted(seen)}, expected {sorted(nodes)}")
    listens = [_code(line) for line in result if _code(line).startswith("listen ")]
    if listens != [f"listen {listen};"]:
        raise ValueError(f"expected one TLS server block to listen on {listen}: {listens}")
    for line in result:
        if re.search(r"\bssl\b|\bssl_|http2", _code(line)):
            raise ValueError(f"a TLS line the rehearsal does not know: {line.strip()}")
    return "\n".join(result) + "\n"


def _server_block(block: list[str], listen: str) -> list[str]:
    """A top-level ``server`` block for the rehearsal: the port-80 redirect to HTTPS goes (there
    is no HTTPS), the TLS server listens on ``listen`` without its ``ssl_*`` lines."""
    if any(_code(line).startswith("return 301") for line in block):
        return []
    kept: list[str] = []
    listened = False
    for line in block:
        code = _code(line)
        if code.startswith("ssl_"):
            continue
        if code.startswith("listen "):
            if not listened:
                kept.append(f"{_indent(line)}listen {listen};")
                listened = True
            continue
        kept.append(line)
        if code.startswith("server_name "):
            kept.append(f"{_indent(line)}add_header {UPSTREAM_HEADER} $upstream_addr always;")
    return kept


def _line(line: str, nodes: Mapping[str, str], seen: set[str], log_dir: Path) -> str:
    found = _NODE_LINE.match(line)
    if found:
        tag = found["tag"]
        if tag not in nodes:
            raise ValueError(f"unknown node tag {tag!r}: {line.strip()}")
        seen.add(tag)
        return f"{found['head']}{nodes[tag]}{found['tail']}{tag}"
    logged = _LOG_LINE.match(line)
    if logged:
        return f"{logged['head']}{log_dir / logged['name']}{logged['tail']}"
    return line


def main_config(site: str, prefix: Path) -> str:
    """A whole nginx configuration around ``site``, every file of it under ``prefix``."""
    user = ""
    if os.geteuid() == 0:
        # nginx's workers would run as nobody, who may not enter the checkout: the rehearsal's
        # files belong to whoever runs it, and so do its workers.
        name = pwd.getpwuid(os.geteuid()).pw_name
        user = f"user {name};\n"
    temp = prefix / "tmp"
    return (
        "# Written by deploy/cluster.py from deploy/nginx/concilia.conf: do not edit.\n"
        f"{user}"
        "worker_processes 1;\n"
        f"pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'logs' / 'error.log'} notice;\n"
        "events {\n    worker_connections 1024;\n}\n"
        "http {\n"
        "    default_type application/octet-stream;\n"
        "    access_log off;\n"
        f"    client_body_temp_path {temp / 'body'};\n"
        f"    proxy_temp_path {temp / 'proxy'};\n"
        f"    fastcgi_temp_path {temp / 'fastcgi'};\n"
        f"    uwsgi_temp_path {temp / 'uwsgi'};\n"
        f"    scgi_temp_path {temp / 'scgi'};\n\n"
        + "".join(f"    {line}\n" if line else "\n" for line in site.splitlines())
        + "}\n"
    )


def find_nginx() -> str | None:
    """The nginx binary (Debian puts it in /usr/sbin, not on every user's PATH)."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


# ---- the parts ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


async def ensure_database(url: str) -> bool:
    """Create the PostgreSQL database of ``url`` when missing; True when it was created."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        raise ClusterError(f"the nodes share a PostgreSQL database, not {parsed.drivername}")
    name = parsed.database or ""
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ClusterError(f"database name {name!r}: letters, digits and _ only")
    admin = parsed.set(drivername="postgresql", database="postgres")
    try:
        conn = await asyncpg.connect(admin.render_as_string(hide_password=False), timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise ClusterError(f"PostgreSQL not reachable at {admin.host}:{admin.port}: {exc}") from exc
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        await conn.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await conn.close()


async def migrate(url: str) -> None:
    """Bring the database schema up to date (what ``concilia db upgrade`` does)."""
    db = Database(url)
    try:
        await upgrade(db)
    finally:
        await db.close()


async def check_redis(url: str) -> None:
    client = Redis.from_url(url, socket_connect_timeout=5)
    try:
        await client.ping()
    except Exception as exc:
        raise ClusterError(f"Redis not reachable at {url}: {exc}") from exc
    finally:
        await client.aclose()


def secret_key(var_dir: Path) -> str:
    """The cluster's shared secret, made once into ``var_dir/secret_key`` (sessions and CSRF
    tokens survive a restart of the rehearsal)."""
    path = var_dir / "secret_key"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


@dataclass
class Spec:
    """What to start: where the files go, which database and Redis, nginx's port (0: any free
    one), settings for the nodes (under the cluster's own) and the environment they start from."""

    var_dir: Path
    database_url: str
    redis_url: str
    redis_prefix: str = "concilia-cluster"
    port: int = 8080
    secret_key: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass
class Node:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def address(self) -> str:
        """The node as nginx names it in ``$upstream_addr``."""
        return f"{HOST}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Cluster:
    spec: Spec
    url: str  # nginx: the public URL
    nodes: list[Node]
    nginx: subprocess.Popen[bytes]
    config: Path
    access_log: Path
    error_log: Path

    def node_at(self, address: str) -> Node:
        """The node nginx names ``address`` (``$upstream_addr``, the X-Concilia-Upstream header)."""
        for node in self.nodes:
            if node.address == address:
                return node
        raise KeyError(address)

    def exited(self) -> list[str]:
        """What stopped by itself, with the end of its log."""
        gone = [
            f"{node.name} exited ({node.proc.returncode}):\n{node.log()[-3000:]}"
            for node in self.nodes
            if node.proc.poll() is not None
        ]
        if self.nginx.poll() is not None:
            gone.append(f"nginx exited ({self.nginx.returncode}):\n{_tail(self.error_log)}")
        return gone

    def summary(self) -> str:
        def rel(path: Path) -> str:
            with contextlib.suppress(ValueError):
                return str(path.relative_to(Path.cwd()))
            return str(path)

        lines = [
            f"concilia cluster: {self.url}/  (nginx, {rel(self.config)})",
            *(
                f"  {n.name}: {n.url}/  (through nginx: {self.url}/{n.name}/socket.io/), "
                f"log {rel(n.log_path)}"
                for n in self.nodes
            ),
            f"  nginx logs: {rel(self.access_log)} (upstream= names the node), "
            f"{rel(self.error_log)}",
            f"  PostgreSQL {make_url(self.spec.database_url).render_as_string()}, "
            f"Redis {self.spec.redis_url} (prefix {self.spec.redis_prefix})",
            f"  demo accounts: {rel(self.spec.var_dir / 'demo-accounts.txt')}; staff sign-in "
            f"codes: {self.url}/dev/outbox",
            "Ctrl-C stops everything.",
        ]
        return "\n".join(lines)

    async def stop(self) -> None:
        """nginx and both nodes: SIGTERM (the nodes close their meeting connections first),
        then SIGKILL for whatever is still there after a while. Safe to call twice."""
        procs = [self.nginx, *(node.proc for node in self.nodes)]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        await asyncio.gather(*(asyncio.to_thread(_reap, proc) for proc in procs))


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(timeout=STOP_PATIENCE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


def node_environment(
    spec: Spec, name: str, port: int, public_url: str, secret: str
) -> dict[str, str]:
    """A node's environment: the rehearsal's defaults, then the caller's environment and
    settings, then what makes the cluster (database, Redis, secret, addresses), which wins."""
    env = dict(DEFAULTS)
    env.update(spec.environ)
    env.update(spec.settings)
    pythonpath = env.get("PYTHONPATH")
    env.update(
        {
            # The checkout's code, whatever the venv has installed.
            "PYTHONPATH": str(ROOT) + (os.pathsep + pythonpath if pythonpath else ""),
            # Not ./concilia.env (make run's): the cluster's settings are all here.
            "CONCILIA_SETTINGS_FILE": os.devnull,
            "CONCILIA_DATABASE_URL": spec.database_url,
            "CONCILIA_REDIS_URL": spec.redis_url,
            "CONCILIA_REDIS_PREFIX": spec.redis_prefix,
            "CONCILIA_SECRET_KEY": secret,
            "CONCILIA_PUBLIC_URL": public_url,
            "CONCILIA_NODE_URL": f"{public_url}/{name}",
            "CONCILIA_TRUST_FORWARDED_FOR": "true",
            "CONCILIA_HOST": HOST,
            "CONCILIA_PORT": str(port),
            "CONCILIA_VAR_DIR": str(spec.var_dir / name),
            "CONCILIA_FILES_DIR": str(spec.var_dir / "files"),
        }
    )
    return env


def start_node(spec: Spec, name: str, port: int, public_url: str, secret: str) -> Node:
    """``concilia serve`` (this checkout's), as the systemd unit runs it: settings from the
    environment only."""
    log_path = spec.var_dir / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "serve"],
            cwd=ROOT,
            env=node_environment(spec, name, port, public_url, secret),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the rehearsal, which stops it in order
        )
    return Node(name, port, proc, log_path)


def start_nginx(nginx: str, config: Path, prefix: Path) -> subprocess.Popen[bytes]:
    """nginx in the foreground (``daemon off``), checked with ``-t`` first."""
    error_log = prefix / "logs" / "error.log"
    command = [nginx, "-p", str(prefix), "-c", str(config), "-e", str(error_log)]
    # The command is nginx's binary and paths of ours; no shell.
    checked = subprocess.run([*command, "-t", "-q"], capture_output=True, check=False)  # noqa: S603
    if checked.returncode != 0:
        raise ClusterError(
            f"nginx refuses {config}:\n{checked.stderr.decode(errors='replace')}{_tail(error_log)}"
        )
    with (prefix / "logs" / "nginx.out").open("ab") as out:
        return subprocess.Popen(  # noqa: S603
            [*command, "-g", "daemon off;"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def wait_ready(
    http: aiohttp.ClientSession,
    url: str,
    what: str,
    watched: Sequence[tuple[str, subprocess.Popen[bytes], Path]],
) -> None:
    """Wait until ``url/readyz`` answers 200; fail when a watched process exits meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_PATIENCE
    while True:
        for name, proc, log in watched:
            if proc.poll() is not None:
                raise ClusterError(f"{name} exited ({proc.returncode}):\n{_tail(log)}")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status == 200:
                    return
        if loop.time() > deadline:
            logs = "\n".join(f"--- {name}\n{_tail(log)}" for name, _p, log in watched)
            raise ClusterError(f"{what} not ready after {START_PATIENCE:.0f} s:\n{logs}")
        await asyncio.sleep(0.25)


async def load_demo(spec: Spec, public_url: str, secret: str) -> None:
    """``concilia demo --if-empty``, as ``make run`` does (it prints the demo accounts)."""
    env = node_environment(spec, NODES[0], 0, public_url, secret)
    env["CONCILIA_VAR_DIR"] = str(spec.var_dir)  # demo-accounts.txt goes there
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "web.cli", "demo", "--if-empty", cwd=ROOT, env=env
    )
    if await proc.wait() != 0:
        raise ClusterError("loading the demo data failed (see above)")


@contextlib.asynccontextmanager
async def running(spec: Spec, *, demo: bool = True) -> AsyncIterator[Cluster]:
    """The cluster of ``spec``, ready (every node and nginx answer ``/readyz``); stopped on
    the way out, whatever happened."""
    nginx = find_nginx()
    if nginx is None:
        raise ClusterError("nginx not found: apt-get install nginx (the Debian package)")
    port = spec.port or free_port()
    if _port_taken(port):
        raise ClusterError(f"127.0.0.1:{port} is taken (make run?): choose another, PORT=…")
    public_url = f"http://{HOST}:{port}"
    await check_redis(spec.redis_url)
    if await ensure_database(spec.database_url):
        print(f"created the database {make_url(spec.database_url).database}", flush=True)
    await migrate(spec.database_url)
    spec.var_dir.mkdir(parents=True, exist_ok=True)
    secret = spec.secret_key or secret_key(spec.var_dir)
    if demo:
        await load_demo(spec, public_url, secret)

    prefix = spec.var_dir / "nginx"
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in NODES}
    site = render_site(
        SITE.read_text(),
        listen=f"{HOST}:{port}",
        nodes={name: f"{HOST}:{p}" for name, p in ports.items()},
        log_dir=prefix / "logs",
    )
    config = prefix / "nginx.conf"
    config.write_text(main_config(site, prefix))
    access = re.search(r"access_log\s+(\S+)", site)
    cluster: Cluster | None = None
    nodes: list[Node] = []
    proxy: subprocess.Popen[bytes] | None = None
    try:
        nodes = [start_node(spec, name, p, public_url, secret) for name, p in ports.items()]
        proxy = start_nginx(nginx, config, prefix)
        cluster = Cluster(
            spec,
            public_url,
            nodes,
            proxy,
            config,
            Path(access.group(1)) if access else prefix / "logs" / "access.log",
            prefix / "logs" / "error.log",
        )
        watched = [(n.name, n.proc, n.log_path) for n in nodes]
        watched.append(("nginx", proxy, cluster.error_log))
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(wait_ready(http, n.url, n.name, watched) for n in nodes))
            await wait_ready(http, public_url, "nginx", watched)
        yield cluster
    finally:
        if cluster is not None:
            await cluster.stop()
        else:
            for proc in [*(n.proc for n in nodes), *([proxy] if proxy else [])]:
                if proc.poll() is None:
                    proc.terminate()
                await asyncio.to_thread(_reap, proc)


async def serve(spec: Spec, *, demo: bool = True) -> int:
    """Run the cluster until Ctrl-C or SIGTERM (or until a part of it dies: exit status 1)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        async with running(spec, demo=demo) as cluster:
            print(cluster.summary(), flush=True)
            while True:
                gone = cluster.exited()
                if gone:
                    print("\n".join(gone), file=sys.stderr)
                    print("stopping the cluster", file=sys.stderr)
                    return 1
                await asyncio.sleep(1)
    except asyncio.CancelledError:
        print("\nstopped: nginx and both nodes", flush=True)
        return 0
    except ClusterError as exc:
        print(f"make cluster: {exc}", file=sys.stderr)
        return 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m deploy.cluster",
        description="nginx before two concilia nodes sharing PostgreSQL and Redis, on loopback",
    )
    top.add_argument("--port", type=int, default=8080, help="nginx's port on 127.0.0.1 (0: any)")
    top.add_argument(
        "--database-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/concilia_cluster",
        help="the nodes' database (created when missing, then migrated)",
    )
    top.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    top.add_argument("--redis-prefix", default="concilia-cluster")
    top.add_argument("--var-dir", type=Path, default=ROOT / "var" / "cluster")
    top.add_argument("--no-demo", action="store_true", help="no demo data, even when empty")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    spec = Spec(
        var_dir=args.var_dir.resolve(),
        database_url=args.database_url,
        redis_url=args.redis_url,
        redis_prefix=args.redis_prefix,
        port=args.port,
    )
    return asyncio.run(serve(spec, demo=not args.no_demo))


if __name__ == "__main__":
    raise SystemExit(main())
