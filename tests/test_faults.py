"""Faults during a meeting on the cluster of ``make cluster`` (nginx in front of two nodes,
``deploy/cluster.py``): Redis restarted, PostgreSQL restarted, a node killed (-9), one client's
network cut for 30 seconds. The PostgreSQL cluster (initdb, pg_ctl) and the redis-server are the
test's own, on free ports, so restarting them disturbs nothing else on the machine.

Three participants talk all along, each like the meeting page does: a fresh room token for each
connection, ``join`` with ``after`` = the last gap-free ``seq`` on every connection and on every
``resync``, a ``say`` sent again with the same ``client_id`` until it is acknowledged, and
another try later when the answer is ``unavailable``; the customer's meeting page runs in
Chromium as well. The scheduler books one more case at each fault. The representative reaches
nginx through a TCP relay of the test's that stops carrying its bytes for 30 seconds and then
drops the stalled connections, as a network that went away does. At the end the database is
checked against what was acknowledged: every acknowledged message, document and booking is
there exactly once, and every participant (the page too) holds every message. The nodes tell
what happened in their logs and in ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from playwright.async_api import Browser, async_playwright, expect
from redis import Redis as SyncRedis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from yarl import URL

from cases.casefile import Case
from cases.documents import Document
from cases.lifecycle import Action
from core.clock import FakeClock
from core.db import Database
from deploy.cluster import (
    UPSTREAM_HEADER,
    Cluster,
    Node,
    Spec,
    ensure_database,
    find_nginx,
    free_port,
    migrate,
    running,
)
from rooms.models import RoomMessage
from scheduling.bookings import Meeting
from tests.conftest import START
from tests.services import unavailable
from tests.support import CSRF_RE, GOOD_PASSWORD, PDF, services_request
from tests.test_room_browser import CHROMIUM, launch
from tests.test_room_cluster import OPEN_AT, make_world, seeding_settings
from tests.worlds import FIRST, rome
from web.context import SESSION_COOKIE
from web.services import open_services

pytestmark = pytest.mark.faults

NAMESPACE = "/meeting"
SECRET = "faults-cluster-secret-" + "f" * 40
PRESENCE_TTL = 6  # seconds: a killed node's connections stop counting this soon
PING_INTERVAL = 2  # seconds: CONCILIA_SOCKET_PING_*: a cut client is let go within 5 s
PING_TIMEOUT = 3
CUT_SECONDS = 30.0
PATIENCE = 40.0  # seconds for one recovery on a busy two-core machine
TALK_EVERY = 0.3  # seconds between two messages of one participant
SIGN_INS = 16  # sign-ins of the representative until its session lands on the other node
# The scheduler books one more case at each fault (Wednesday of the meeting's week).
BOOKINGS = tuple(rome(FIRST + timedelta(days=2), h, m) for h, m in ((9, 0), (10, 30), (12, 0)))


# ---- PostgreSQL and Redis of the test's own ---------------------------------------------------


def pg_bin() -> Path | None:
    """The newest PostgreSQL server binaries (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(re.sub(r"\D", "", Path(p).parts[-3]) or 0),
    )
    return Path(found[-1]).parent if found else None


class OwnPostgres:
    """A PostgreSQL cluster in a temporary directory, on a free port. As root it runs as the
    ``postgres`` user (the server refuses root)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                self.user = None
        self.dir = Path(tempfile.mkdtemp(prefix="concilia-faults-pg-"))
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user.pw_name, "--", *command]
        done = subprocess.run(command, capture_output=True, check=False, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise AssertionError(f"{args[0]} failed: {done.stderr.decode()}\n{log}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=60"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def crash(self) -> None:
        """Stop at once, without a clean shutdown (the next start recovers from the WAL)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"


class OwnRedis:
    """A redis-server on a free port that writes every change to its append-only file, as a
    production Redis should (the portal's sessions survive its restart)."""

    def __init__(self, binary: str, where: Path) -> None:
        self.binary = binary
        self.dir = where
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with (self.dir / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
                    *("--dir", str(self.dir)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        probe = SyncRedis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        try:
            for _ in range(300):
                with contextlib.suppress(RedisError):
                    if probe.ping():
                        return
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        finally:
            probe.close()
        raise AssertionError((self.dir / "redis.log").read_text())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


# ---- a network that can go away ---------------------------------------------------------------


class Cable:
    """A TCP relay from a local port to ``target``. ``cut()`` stops carrying bytes either way
    (they wait, like packets on a dead link: nobody is told) and holds new connections;
    ``mend()`` drops the connections that lived through the cut, as their peers gave up on
    them, and carries again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.up = asyncio.Event()
        self.up.set()
        self._server: asyncio.Server | None = None
        self._live: set[asyncio.StreamWriter] = set()
        self._cut_through: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.up.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._live |= {writer, up_writer}
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
                self._tasks.discard(pump)
            for one in (writer, up_writer):
                self._live.discard(one)
                one.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                await self.up.wait()
                if writer in self._cut_through:
                    return
                writer.write(data)
                await writer.drain()

    def cut(self) -> None:
        self.up.clear()
        self._cut_through = set(self._live)

    def mend(self) -> None:
        for writer in self._cut_through:
            writer.close()
        self.up.set()

    async def close(self) -> None:
        self.up.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._live):
            writer.close()
        for task in list(self._tasks):
            task.cancel()


# ---- the participants ---------------------------------------------------------------------------


class Unavailable(Exception):
    """The service answered 503 ``unavailable``: try again later."""


@dataclass
class Party:
    """One participant, behaving like the meeting page (``web/static/room.js``)."""

    who: str
    account: str
    base: str  # where it reaches the service: nginx, or the cable in front of it
    origin: str  # the service's public URL (the Origin it sends)
    meeting_id: uuid.UUID
    session: str
    http: aiohttp.ClientSession = field(init=False)
    sio: Any = None
    node: str = ""  # the node (address) that gave the last room token
    messages: dict[int, str] = field(default_factory=dict)
    synced: int = 0  # every message up to this seq is held
    admitted: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    connections: int = 0
    resyncs: int = 0
    unavailable_answers: list[dict[str, Any]] = field(default_factory=list)
    acked: dict[str, tuple[int, str]] = field(default_factory=dict)  # client_id → (seq, text)
    tried: set[str] = field(default_factory=set)
    events: list[tuple[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # unsafe: keep cookies of an address (127.0.0.1), as a browser does.
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.http.cookie_jar.update_cookies(
            {SESSION_COOKIE: self.session}, response_url=URL(self.base)
        )

    def hold(self, message: dict[str, Any]) -> None:
        self.messages[int(message["seq"])] = str(message["text"])
        while self.synced + 1 in self.messages:
            self.synced += 1

    async def token(self) -> str:
        """A room token; a 503 is ``unavailable`` JSON with Retry-After (asserted)."""
        async with self.http.get(
            f"{self.base}/meetings/{self.meeting_id}/token",
            headers={"Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as resp:
            if resp.status == 503:
                body = await resp.json()
                assert body["error"]["code"] == "unavailable", body
                assert int(resp.headers["Retry-After"]) > 0
                self.unavailable_answers.append(body["error"])
                raise Unavailable(body["error"]["params"]["dependency"])
            assert resp.status == 200, (resp.status, await resp.text())
            # nginx names each node it tried: the last one answered.
            self.node = resp.headers.get(UPSTREAM_HEADER, "").split(", ")[-1]
            return str((await resp.json())["token"])

    async def connect(self) -> None:
        token = await self.token()
        client = socketio.AsyncClient(reconnection=False, http_session=self.http)

        async def any_event(event: str, data: Any = None) -> None:
            self.events.append((event, data))
            if event == "message":
                self.hold(data)
            elif event == "resync":
                self.resyncs += 1
                self.ready.clear()  # the keeper joins again

        async def gone(*_args: Any) -> None:
            self.ready.clear()

        client.on("*", any_event, namespace=NAMESPACE)
        client.on("disconnect", gone, namespace=NAMESPACE)
        if self.sio is not None:
            with contextlib.suppress(Exception):
                await self.sio.disconnect()
        self.sio = client
        await client.connect(
            self.base,
            namespaces=[NAMESPACE],
            auth={"token": token},
            headers={"Origin": self.origin},
            transports=["websocket"],
            wait_timeout=10,
        )
        self.connections += 1

    async def call(self, event: str, data: Any, wait: float = 10) -> dict[str, Any]:
        answer = await self.sio.call(event, data, namespace=NAMESPACE, timeout=wait)
        assert isinstance(answer, dict), answer
        if not answer["ok"] and answer["error"]["code"] == "unavailable":
            assert answer["error"]["params"]["dependency"] in ("database", "redis"), answer
            self.unavailable_answers.append(answer["error"])
            raise Unavailable(answer["error"]["params"]["dependency"])
        return answer

    async def join(self) -> dict[str, Any]:
        answer = await self.call("join", {"after": self.synced} if self.admitted else {})
        assert answer["ok"], answer
        snapshot: dict[str, Any] = answer["snapshot"]
        if snapshot["me"]["state"] == "admitted":
            self.admitted = True
            for message in snapshot["messages"]:
                self.hold(message)
            if snapshot["messages"]:
                self.synced = max(self.synced, max(m["seq"] for m in snapshot["messages"]))
        return snapshot

    async def keep(self) -> None:
        """Stay connected and joined: connect again when the connection drops, join again on
        ``resync`` (as the page does)."""
        while True:
            if self.sio is not None and self.sio.connected and self.ready.is_set():
                await asyncio.sleep(0.1)
                continue
            try:
                if self.sio is None or not self.sio.connected:
                    await self.connect()
                await self.join()
                self.ready.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.5)

    async def say(self, text: str) -> int:
        """Say ``text`` until acknowledged, with one ``client_id`` whatever happens."""
        client_id = uuid.uuid4().hex
        self.tried.add(client_id)
        while True:
            await self.ready.wait()
            try:
                answer = await self.call("say", {"client_id": client_id, "text": text}, 8)
            except Unavailable:
                await asyncio.sleep(1)
                continue
            except (socketio.exceptions.SocketIOError, AttributeError):
                await asyncio.sleep(0.3)  # no answer: the connection went; sent again later
                continue
            assert answer["ok"], answer
            seq = int(answer["seq"])
            self.acked[client_id] = (seq, text)
            return seq

    async def shared(self, document: str) -> None:
        """Share a document in the room once the connection is there (again, on
        ``unavailable``: nothing was done)."""
        deadline = time.monotonic() + PATIENCE
        while True:
            await self.ready.wait()
            try:
                answer = await self.call("share", {"document": document}, 8)
            except (Unavailable, socketio.exceptions.SocketIOError, AttributeError):
                assert time.monotonic() < deadline, "never shared"
                await asyncio.sleep(0.5)
                continue
            assert answer["ok"], answer
            return

    async def talk(self) -> None:
        for i in range(100_000):
            await self.say(f"{self.who} {i}")
            await asyncio.sleep(TALK_EVERY)

    async def sign_in(self, username: str) -> None:
        """A new portal session through the login form (nginx may hash it to another node)."""
        self.http.cookie_jar.clear()
        async with self.http.get(f"{self.base}/login") as resp:
            found = CSRF_RE.search(await resp.text())
        assert found
        async with self.http.post(
            f"{self.base}/login",
            data={"username": username, "password": GOOD_PASSWORD, "csrf_token": found.group(1)},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303, await resp.text()

    async def csrf(self) -> str:
        async with self.http.get(f"{self.base}/api/v1/me") as resp:
            if resp.status == 503:
                raise Unavailable((await resp.json())["error"]["params"]["dependency"])
            return str((await resp.json())["csrf_token"])

    async def upload(self, case_id: uuid.UUID, description: str) -> dict[str, Any]:
        """What the page's upload does: the case file's upload form, back to the meeting's
        documents (JSON); raises ``Unavailable`` on a 503 (whose JSON it checks)."""
        form = aiohttp.FormData()
        form.add_field("category", "other")
        form.add_field("description", description)
        form.add_field("visible_to_other_party", "on")
        form.add_field("file", PDF, filename="faults.pdf", content_type="application/pdf")
        target = (
            f"{self.base}/cases/{case_id}/documents?csrf_token={await self.csrf()}"
            f"&next=/meetings/{self.meeting_id}/documents"
        )
        async with self.http.post(
            target, data=form, headers={"Accept": "application/json"}
        ) as resp:
            if resp.status == 503:
                body = await resp.json()
                assert body["error"]["code"] == "unavailable", body
                assert resp.headers["Retry-After"]
                raise Unavailable(body["error"]["params"]["dependency"])
            assert resp.status == 200, (resp.status, await resp.text())
            documents = (await resp.json())["documents"]
        return next(d for d in documents if d["description"] == description)

    async def book(self, case_id: uuid.UUID, starts_at: datetime, conciliator: str) -> Any:
        """The scheduler's booking through the JSON API; raises ``Unavailable`` on a 503."""
        async with self.http.put(
            f"{self.base}/api/v1/cases/{case_id}/meeting",
            json={"starts_at": starts_at.isoformat(), "conciliator_id": conciliator},
            headers={"X-CSRF-Token": await self.csrf()},
        ) as resp:
            if resp.status == 503:
                body = await resp.json()
                assert body["error"]["code"] == "unavailable", body
                assert resp.headers["Retry-After"]
                raise Unavailable(body["error"]["params"]["dependency"])
            assert resp.status in (200, 201), (resp.status, await resp.text())
            return await resp.json()

    async def booked(self, case_id: uuid.UUID, starts_at: datetime, conciliator: str) -> Any:
        """Book until acknowledged (the same booking again is a move to the same slot)."""
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                return await self.book(case_id, starts_at, conciliator)
            except (Unavailable, aiohttp.ClientError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def uploaded(self, case_id: uuid.UUID, description: str) -> dict[str, Any]:
        """Upload until acknowledged: a 503 says nothing was stored, so the page's person tries
        again (a dependency may answer one more refusal just after it came back)."""
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                return await self.upload(case_id, description)
            except (Unavailable, aiohttp.ClientError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def close(self) -> None:
        if self.sio is not None:
            with contextlib.suppress(Exception):
                await self.sio.disconnect()
        await self.http.close()


# ---- the rehearsal ------------------------------------------------------------------------------


@dataclass
class Rig:
    cluster: Cluster
    pg: OwnPostgres
    redis: OwnRedis
    db_url: str
    meeting_id: uuid.UUID
    case_id: uuid.UUID
    ids: dict[str, str]
    sessions: dict[str, str]
    to_book: list[uuid.UUID]  # admitted cases the scheduler books during the faults
    scheduler: str  # the scheduler's portal session
    conciliator: str  # the conciliator's account id


async def more_cases(
    db_url: str, redis_url: str, prefix: str, var_dir: Path, company: uuid.UUID, count: int
) -> tuple[list[uuid.UUID], str]:
    """``count`` more admitted cases of the customer (other supply points), and a portal session
    of the scheduler, made in-process like ``make_world``'s."""
    settings = seeding_settings(db_url, redis_url, prefix, var_dir, SECRET)
    clock = FakeClock(START)
    svc = await open_services(settings, clock)
    try:
        desk = await svc.accounts.by_username("sportello")
        scheduler = await svc.accounts.by_username("pianificatore")
        assert desk is not None and scheduler is not None
        cases = []
        for i in range(count):
            case_id = uuid.UUID(
                await services_request(
                    svc, "cliente", str(company), supply={"pod": f"IT001E9000000{i}"}
                )
            )
            await svc.files.do_step(desk, case_id, Action.ADMIT)
            cases.append(case_id)
        clock.set(OPEN_AT)
        token, _data = await svc.sessions.create(scheduler.id, mfa_pending=False)
        return cases, token
    finally:
        await svc.close()


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    bindir = pg_bin()
    if bindir is None:
        unavailable("PostgreSQL server binaries", FileNotFoundError("/usr/lib/postgresql/*/bin"))
        raise AssertionError("unreachable")
    pg = OwnPostgres(bindir)
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(pg.dir, ignore_errors=True)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server", FileNotFoundError("redis-server"))
        raise AssertionError("unreachable")
    where = tmp_path / "redis"
    where.mkdir()
    redis = OwnRedis(binary, where)
    redis.start()
    try:
        yield redis
    finally:
        redis.kill()


@pytest.fixture
async def rig(tmp_path: Path, own_postgres: OwnPostgres, own_redis: OwnRedis) -> AsyncIterator[Rig]:
    if find_nginx() is None:
        unavailable("nginx", FileNotFoundError("nginx (Debian package nginx)"))
    db_url = own_postgres.url("concilia_faults")
    await ensure_database(db_url)
    await migrate(db_url)
    prefix = "concilia-faults"
    meeting_id, ids, sessions = await make_world(db_url, own_redis.url, prefix, tmp_path / "world")
    db = Database(db_url)
    try:
        async with db.session() as session:
            case_id = await session.scalar(select(Meeting.case_id).where(Meeting.id == meeting_id))
            company = await session.scalar(select(Case.company_id).where(Case.id == case_id))
    finally:
        await db.close()
    assert case_id is not None and company is not None
    to_book, scheduler = await more_cases(
        db_url, own_redis.url, prefix, tmp_path / "more", company, len(BOOKINGS)
    )
    spec = Spec(
        var_dir=tmp_path / "cluster",
        database_url=db_url,
        redis_url=own_redis.url,
        redis_prefix=prefix,
        port=0,
        secret_key=SECRET,
        settings={
            "CONCILIA_ENV": "test",
            "CONCILIA_LOG_LEVEL": "INFO",
            "CONCILIA_CLOCK_FIXED": OPEN_AT.isoformat(),
            "CONCILIA_PRESENCE_TTL_SECONDS": str(PRESENCE_TTL),
            "CONCILIA_SOCKET_PING_INTERVAL_SECONDS": str(PING_INTERVAL),
            "CONCILIA_SOCKET_PING_TIMEOUT_SECONDS": str(PING_TIMEOUT),
            "CONCILIA_ARGON2_TIME_COST": "1",
            "CONCILIA_ARGON2_MEMORY_KIB": "1024",
            "CONCILIA_ARGON2_PARALLELISM": "1",
        },
        environ={k: v for k, v in os.environ.items() if not k.startswith("CONCILIA_")},
    )
    async with running(spec, demo=False) as cluster:
        yield Rig(
            cluster,
            own_postgres,
            own_redis,
            db_url,
            meeting_id,
            case_id,
            ids,
            sessions,
            to_book,
            scheduler,
            ids["conciliator"],
        )


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    """The system Chromium (Playwright; never a downloaded browser)."""
    if not CHROMIUM.exists():
        unavailable("Chromium", FileNotFoundError(f"{CHROMIUM} (apt-get install chromium)"))
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            yield browser
        finally:
            await browser.close()


SEQS_ON_PAGE = (
    "() => [...document.querySelectorAll('#messages li[data-seq]')].map(li => +li.dataset.seq)"
)


async def readyz(http: aiohttp.ClientSession, node: Node) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{node.url}/readyz", timeout=aiohttp.ClientTimeout(total=10)) as resp:
        return resp.status, await resp.json()


async def until(what: str, check: Any, patience: float = PATIENCE) -> Any:
    """Poll ``check()`` (async) until it returns something true."""
    deadline = time.monotonic() + patience
    while True:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            found = await check()
            if found:
                return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {patience:.0f} s: {what}")
        await asyncio.sleep(0.2)


async def acks_after(parties: list[Party], count: int = 2) -> None:
    """Each talking participant gets ``count`` more messages acknowledged."""
    start = {p.who: len(p.acked) for p in parties}
    await until(
        "messages acknowledged again",
        lambda: _true(all(len(p.acked) >= start[p.who] + count for p in parties)),
    )


async def _true(value: bool) -> bool:
    return value


def outages(body: dict[str, Any]) -> set[str]:
    return {o["dependency"] for o in body["outages"]}


async def test_the_meeting_survives_redis_postgres_a_node_and_a_network_cut(
    rig: Rig, chromium: Browser
) -> None:
    c = rig.cluster
    cable = Cable("127.0.0.1", int(c.url.rsplit(":", 1)[1]))
    await cable.start()
    http = aiohttp.ClientSession()

    def party(who: str, base: str) -> Party:
        return Party(who, rig.ids[who], base, c.url, rig.meeting_id, rig.sessions[who])

    chair = party("conciliator", c.url)
    customer = party("customer", c.url)
    rep = party("rep", f"http://127.0.0.1:{cable.port}")
    people = [chair, customer, rep]
    scheduler = Party("scheduler", "", c.url, c.url, rig.meeting_id, rig.scheduler)
    bookings: dict[uuid.UUID, datetime] = {}  # acknowledged
    keepers: list[asyncio.Task[None]] = []
    talkers: list[asyncio.Task[None]] = []
    uploads: dict[str, str] = {}  # description → document id, acknowledged
    try:
        # The two parties on two nodes (nginx hashes the session cookie): the representative
        # signs in again until its session lands on the other node.
        await customer.token()
        for _ in range(SIGN_INS):
            await rep.token()
            if rep.node != customer.node:
                break
            await rep.sign_in("azienda")
        assert rep.node != customer.node, f"{SIGN_INS} sessions all hashed to {rep.node}"
        # The meeting: the conciliator opens the room, admits both parties; all talk.
        await chair.connect()
        await chair.join()
        for one in (customer, rep):
            await one.connect()
            assert (await one.join())["me"]["state"] == "waiting"
            assert (await chair.call("admit", {"account": one.account}))["ok"]
            assert (await one.join())["me"]["state"] == "admitted"
        for one in people:
            one.ready.set()
            keepers.append(asyncio.create_task(one.keep()))
            talkers.append(asyncio.create_task(one.talk()))
        # The customer's meeting page too (web/static/room.js, in Chromium), on the customer's
        # node: it misses what the other node says while Redis is down, and that node dies.
        context = await chromium.new_context(base_url=c.url, locale="it-IT")
        await context.add_cookies(
            [{"name": SESSION_COOKIE, "value": rig.sessions["customer"], "url": c.url}]
        )
        page = await context.new_page()
        page.set_default_timeout(PATIENCE * 1000)
        page_errors: list[str] = []
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        await page.goto(f"/meetings/{rig.meeting_id}/room")
        await expect(page.locator("#inside")).to_be_visible()
        await acks_after(people)
        document = await customer.uploaded(rig.case_id, "before the faults")
        uploads["before the faults"] = document["id"]
        await customer.shared(document["id"])

        # (1) Redis restarted (killed, started again on its append-only file).
        rig.redis.kill()
        for node in c.nodes:
            status, body = await until(
                "readyz says Redis is down",
                lambda node=node: _down(http, node, "redis"),
            )
            assert body["error"] == {"code": "unavailable", "params": {"dependency": ["redis"]}}
            assert body["down"]["redis"]["started"]
        with pytest.raises(Unavailable, match="redis"):  # the sessions are in Redis
            await scheduler.book(rig.to_book[0], BOOKINGS[0], rig.conciliator)
        await asyncio.sleep(1)
        rig.redis.start()
        for node in c.nodes:
            await until("readyz ready after Redis", lambda node=node: _up(http, node))
        # Each node subscribed again asks its connections to resync: they join again from
        # their last gap-free seq.
        await until("resync after Redis", lambda: _true(all(p.resyncs for p in people)))
        await acks_after(people)
        await scheduler.booked(rig.to_book[0], BOOKINGS[0], rig.conciliator)
        bookings[rig.to_book[0]] = BOOKINGS[0]

        # (2) PostgreSQL restarted (an immediate stop: recovery from the WAL at the start).
        rig.pg.crash()
        for node in c.nodes:
            await until(
                "readyz says the database is down", lambda node=node: _down(http, node, "database")
            )
        # A request that needs the database: a clear 503, JSON, Retry-After; and an upload.
        async with http.get(
            f"{c.url}/api/v1/cases",
            headers={"Cookie": f"{SESSION_COOKIE}={rig.sessions['customer']}"},
        ) as resp:
            assert resp.status == 503, await resp.text()
            assert int(resp.headers["Retry-After"]) > 0
            error = (await resp.json())["error"]
        assert error["code"] == "unavailable" and error["params"] == {"dependency": "database"}
        with pytest.raises(Unavailable, match="database"):
            await customer.upload(rig.case_id, "refused while the database is down")
        with pytest.raises(Unavailable, match="database"):
            await scheduler.book(rig.to_book[1], BOOKINGS[1], rig.conciliator)
        # The chat's answers meanwhile: unavailable (sent again later by the talkers).
        await until(
            "a say answered unavailable",
            lambda: _true(
                any(
                    a["params"]["dependency"] == "database"
                    for p in people
                    for a in p.unavailable_answers
                )
            ),
        )
        await asyncio.sleep(1)
        rig.pg.start()
        for node in c.nodes:
            await until("readyz ready after PostgreSQL", lambda node=node: _up(http, node))
        await acks_after(people)
        await scheduler.booked(rig.to_book[1], BOOKINGS[1], rig.conciliator)
        bookings[rig.to_book[1]] = BOOKINGS[1]
        document = await customer.uploaded(rig.case_id, "after the database came back")
        uploads["after the database came back"] = document["id"]
        await customer.shared(document["id"])

        # (3) The customer's node killed: its clients come back through nginx on the other.
        victim = c.node_at(customer.node)
        survivor = next(n for n in c.nodes if n is not victim)
        before = customer.connections
        booking = asyncio.create_task(
            scheduler.booked(rig.to_book[2], BOOKINGS[2], rig.conciliator)
        )
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=30)
        await until("the customer connected again", lambda: _true(customer.connections > before))
        assert customer.node == survivor.address
        await booking
        bookings[rig.to_book[2]] = BOOKINGS[2]
        await acks_after(people)
        document = await rep.uploaded(rig.case_id, "after a node died")
        uploads["after a node died"] = document["id"]
        await rep.shared(document["id"])

        # (4) The representative's network cut for 30 s: the node lets its connection go
        # (Socket.IO heartbeat), the room sees it go offline; the others go on talking.
        rep_acked = len(rep.acked)
        seen = len(chair.events)
        cut_at = time.monotonic()
        cable.cut()
        gone = await until(
            "the representative offline",
            lambda: _event(
                chair, seen, "participant", lambda d: d["id"] == rep.account and not d["online"]
            ),
            patience=PING_INTERVAL + PING_TIMEOUT + 15,
        )
        assert gone["state"] == "admitted"
        await asyncio.sleep(max(0.0, CUT_SECONDS - (time.monotonic() - cut_at)))
        assert len(rep.acked) <= rep_acked + 1  # at most the one in flight as the cable went
        seen = len(chair.events)
        cable.mend()
        await until(
            "the representative back online",
            lambda: _event(
                chair, seen, "participant", lambda d: d["id"] == rep.account and d["online"]
            ),
        )
        await acks_after(people)
    finally:
        for task in [*talkers, *keepers]:
            task.cancel()
        for task in [*talkers, *keepers]:
            with contextlib.suppress(BaseException):
                await task

    try:
        # Everyone catches up from its last gap-free seq, as on a resync, and holds every
        # acknowledged message.
        acked = {cid: ack for p in people for cid, ack in p.acked.items()}
        for one in people:
            await one.join()
            missing = {seq for seq, _t in acked.values()} - set(one.messages)
            assert not missing, (one.who, sorted(missing))
        # The page too, by itself: every acknowledged message once, connected again.
        wanted = {seq for seq, _t in acked.values()}
        on_page: list[int] = []
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            on_page = await page.evaluate(SEQS_ON_PAGE)
            if wanted <= set(on_page):
                break
            await asyncio.sleep(0.5)
        assert not wanted - set(on_page), sorted(wanted - set(on_page))
        assert len(on_page) == len(set(on_page))  # each message once
        await expect(page.locator("#connection")).to_have_text("Collegato alla stanza.")
        assert not page_errors, page_errors
        await context.close()
        # The database against what was acknowledged: each acknowledged message once, with its
        # seq and text; a message tried and never acknowledged at most once.
        tried = set().union(*(p.tried for p in people))
        db = Database(rig.db_url)
        try:
            async with db.session() as session:
                rows = (
                    await session.execute(
                        select(RoomMessage.client_id, RoomMessage.seq, RoomMessage.body).where(
                            RoomMessage.meeting_id == rig.meeting_id,
                            RoomMessage.client_id.in_(tried),
                        )
                    )
                ).all()
                meetings = (
                    await session.execute(
                        select(Meeting.case_id, Meeting.starts_at, Meeting.status).where(
                            Meeting.case_id.in_(rig.to_book)
                        )
                    )
                ).all()
                documents = (
                    await session.execute(
                        select(Document.description, func.count())
                        .where(Document.case_id == rig.case_id)
                        .group_by(Document.description)
                    )
                ).all()
        finally:
            await db.close()
        stored: dict[str, list[tuple[int, str]]] = {}
        for client_id, seq, body in rows:
            stored.setdefault(str(client_id), []).append((seq, body))
        assert all(len(v) == 1 for v in stored.values()), {
            k: v for k, v in stored.items() if len(v) > 1
        }
        for client_id, (seq, text) in acked.items():
            assert stored.get(client_id) == [(seq, text)], (client_id, seq, text)
        assert len(acked) > 30  # they talked all along
        counted = dict(documents)
        for description in uploads:
            assert counted.get(description) == 1, counted
        assert "refused while the database is down" not in counted
        # Each acknowledged booking once, in its slot.
        assert sorted((m.case_id, m.starts_at, m.status) for m in meetings) == sorted(
            (case_id, starts_at, "scheduled") for case_id, starts_at in bookings.items()
        )

        # What the nodes say: their logs and /readyz.
        status, body = await readyz(http, survivor)
        assert status == 200 and body["down"] == {}
        assert outages(body) == {"redis", "database"}, body
        assert all(o["seconds"] > 0 for o in body["outages"])
        for node in c.nodes:
            log = node.log()
            for line in (
                "redis unreachable",
                "redis is back after",
                "database unreachable",
                "database is back after",
                "Redis lost",
                "Redis is back",
            ):
                assert line in log, (node.name, line, log[-3000:])
        for node in c.nodes:
            for dependency in ("redis", "database"):
                late = refused_after_recovery(node.log(), dependency)
                assert not late, (node.name, late)
        log = survivor.log()
        assert "database unavailable" in log  # the requests refused meanwhile, one line each
        # No request or event failed with a traceback (aiohttp's 500s, the events' internal
        # errors): each was a clear "unavailable".
        assert "Error handling request" not in log, log[-5000:]
        assert not re.search(r"event \w+ failed in meeting", log), log[-5000:]
        # The killed node's connections: recorded as gone by the survivor.
        await until(
            "the dead node's connections recorded as gone",
            lambda: _true("connections of a dead node" in survivor.log()),
            patience=PRESENCE_TTL + 20,
        )
        assert "(ping timeout)" in survivor.log()  # the cut client, let go by the heartbeat
        status, body = await readyz(http, survivor)
        assert status == 200
        # Presence in Redis expires by itself unless a live node keeps refreshing it.
        probe = SyncRedis(host="127.0.0.1", port=rig.redis.port)
        try:
            ttl = probe.ttl(f"concilia-faults:presence:{rig.meeting_id}")
        finally:
            probe.close()
        assert 0 < int(ttl) <= 3 * PRESENCE_TTL
    finally:
        for one in [*people, scheduler]:
            await one.close()
        await cable.close()
        await http.close()


def refused_after_recovery(log: str, dependency: str) -> list[str]:
    """The requests and events refused for ``dependency`` after the node's watch saw it back
    (the clients' connections to it are opened again, not failed)."""
    lines = log.splitlines()
    back = [i for i, line in enumerate(lines) if f"{dependency} is back after" in line]
    assert back, f"no recovery of {dependency} logged"
    return [line for line in lines[back[-1] + 1 :] if f": {dependency} unavailable (" in line]


async def _down(
    http: aiohttp.ClientSession, node: Node, dependency: str
) -> tuple[int, dict[str, Any]] | None:
    status, body = await readyz(http, node)
    if status == 503 and body["checks"].get(dependency) == "unreachable":
        return status, body
    return None


async def _up(http: aiohttp.ClientSession, node: Node) -> bool:
    status, _body = await readyz(http, node)
    return status == 200


async def _event(party: Party, start: int, name: str, where: Any) -> Any:
    for event, data in party.events[start:]:
        if event == name and where(data):
            return data
    return None
