"""The meeting room on two served nodes (``concilia serve`` processes on loopback) sharing one
PostgreSQL database and one Redis: participants on different nodes see the lobby, the chat,
typing and presence of each other; a separate session stays private across nodes; a removal
closes a connection on the other node; when a node is killed its clients move to the other one
and lose no acknowledged message; a flushed or restarted Redis loses nothing that matters.

The world (company, people, an admitted case, a meeting at a real slot) is made in-process
through the services, and so are the portal sessions (in Redis, as the nodes keep them). The
nodes read the time from ``CONCILIA_CLOCK_FIXED``, standing still 14 minutes before the slot, so
the room is open whatever the real time is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from pydantic import SecretStr
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select

from cases.accounts import Account, Role
from cases.companies import do_create_company
from cases.lifecycle import Action
from core.clock import FakeClock
from core.db import Database
from core.settings import Settings
from rooms.models import RoomMessage, RoomPresence
from signaling.presence import text
from tests.conftest import START, free_port
from tests.rooms_support import ORIGIN, RoomClient
from tests.services import PostgresDatabases, unavailable
from tests.support import GOOD_PASSWORD, TAX_CODE, VALID_VAT, services_request
from tests.worlds import FIRST, rome
from web.context import SESSION_COOKIE
from web.services import open_services

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_URL = ORIGIN  # the nodes' public URL, the origin a RoomClient sends
SECRET = "cluster-secret-" + "k" * 40
OPEN_AT = rome(FIRST, 8, 46)  # the room opened a minute ago (the slot is 9:00 in Rome)
PRESENCE_TTL = 6  # seconds: a killed node's connections stop counting this soon
PATIENCE = 20.0  # seconds for one event to cross nodes on a busy two-core machine
START_PATIENCE = 120.0  # seconds for a node to answer /readyz
PEOPLE = ("customer", "rep", "conciliator")


# ---- the nodes -------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no goodbye to anyone, as when a machine dies."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def start_node(name: str, tmp_path: Path, settings: dict[str, str]) -> Node:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCILIA_")}
    env.update(settings)
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "CONCILIA_SETTINGS_FILE": os.devnull,
            "CONCILIA_VAR_DIR": str(tmp_path / f"var-{name}"),
            "CONCILIA_LOG_JSON": "false",
            "CONCILIA_LOG_LEVEL": "INFO",
        }
    )
    log_path = tmp_path / f"node-{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "web.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Node(name, port, proc, log_path)


async def ready(http: aiohttp.ClientSession, node: Node) -> None:
    """Wait until the node answers ``/readyz`` with 200 (database and Redis reached)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_PATIENCE
    while True:
        if node.proc.poll() is not None:
            raise AssertionError(f"node {node.name} exited:\n{node.log()[-4000:]}")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(f"{node.url}/readyz", timeout=aiohttp.ClientTimeout(5)) as resp:
                if resp.status == 200:
                    return
        if loop.time() > deadline:
            raise AssertionError(f"node {node.name} not ready:\n{node.log()[-4000:]}")
        await asyncio.sleep(0.25)


# ---- the cluster -------------------------------------------------------------------------------


@dataclass
class Cluster:
    db_url: str
    redis_url: str
    prefix: str
    meeting_id: uuid.UUID
    ids: dict[str, str]  # who → the account's id
    sessions: dict[str, str]  # who → the portal session's cookie value
    http: aiohttp.ClientSession
    redis: Redis
    a: Node
    b: Node
    peers: list[RoomClient] = field(default_factory=list)

    def cookie(self, who: str) -> str:
        return f"{SESSION_COOKIE}={self.sessions[who]}"

    async def token(self, who: str, url: str) -> str:
        """A room token from ``GET /meetings/{id}/token`` on the node at ``url``, with the
        session cookie."""
        async with self.http.get(
            f"{url}/meetings/{self.meeting_id}/token",
            headers={"Cookie": self.cookie(who)},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 200, (resp.status, await resp.text())
            assert resp.headers["Cache-Control"] == "no-store"
            return str((await resp.json())["token"])

    async def peer(self, who: str, node: Node) -> RoomClient:
        """``who`` connected to ``node`` with a room token from that node (and from the node it
        is on when connecting again)."""
        found = RoomClient(
            node.url,
            lambda: self.cookie(who),
            lambda url: self.token(who, url),
            patience=PATIENCE,
        )
        self.peers.append(found)
        await found.connect()
        return found

    async def admitted(self, chair: RoomClient, who: str, node: Node) -> RoomClient:
        """A party connected to ``node``, waiting in the lobby, admitted by ``chair``, joined."""
        party = await self.peer(who, node)
        lobby = await party.join()
        assert lobby["me"]["state"] == "waiting"
        await chair.wait_for(
            "participant", lambda d: d["id"] == self.ids[who] and d["state"] == "waiting"
        )
        assert (await chair.call("admit", {"account": self.ids[who]}))["ok"]
        await party.wait_for("me", lambda d: d["state"] == "admitted")
        assert (await party.join())["me"]["state"] == "admitted"
        return party

    async def our_keys(self) -> list[bytes]:
        return [k async for k in self.redis.scan_iter(match=f"{self.prefix}:*")]

    async def presence_hash(self) -> dict[str, str]:
        stored = await self.redis.hgetall(f"{self.prefix}:presence:{self.meeting_id}")
        return {text(k): text(v) for k, v in stored.items()}

    async def presence_back(self, connections: set[str]) -> None:
        """Wait until Redis holds exactly ``connections`` as the meeting's presence."""
        async with asyncio.timeout(PATIENCE):
            while True:
                if set(await self.presence_hash()) == connections:
                    return
                await asyncio.sleep(0.2)


def seeding_settings(
    db_url: str, redis_url: str, prefix: str, var_dir: Path, secret: str = SECRET
) -> Settings:
    """The settings of an in-process seeding of the nodes' database: theirs, with cheap
    password hashing."""
    return Settings(
        env="test",
        var_dir=var_dir,
        database_url=db_url,
        redis_url=redis_url,
        redis_prefix=prefix,
        secret_key=SecretStr(secret),
        public_url=PUBLIC_URL,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        argon2_parallelism=1,
        log_json=False,
    )


async def make_world(
    db_url: str, redis_url: str, prefix: str, var_dir: Path
) -> tuple[uuid.UUID, dict[str, str], dict[str, str]]:
    """Company, customer, company representative, desk, scheduler and conciliator; an admitted
    case with its meeting booked at 9:00 on the first possible day; a portal session for each
    participant, made at the nodes' fixed time. Returns the meeting, the ids and the sessions."""
    settings = seeding_settings(db_url, redis_url, prefix, var_dir)
    clock = FakeClock(START)
    svc = await open_services(settings, clock)
    try:
        company = await do_create_company(
            svc.db, name="Energia A", vat=VALID_VAT, sectors=["electricity"], now=clock.now()
        )
        people: dict[str, Account] = {}
        for who, username, role in (
            ("customer", "cliente", Role.CUSTOMER),
            ("rep", "azienda", Role.COMPANY_REP),
            ("desk", "sportello", Role.HELPDESK),
            ("scheduler", "pianificatore", Role.SCHEDULER),
            ("conciliator", "conciliatore", Role.CONCILIATOR),
        ):
            form = {
                "role": role.value,
                "username": username,
                "first_name": who.capitalize(),
                "last_name": "Rossi",
                "tax_code": TAX_CODE,
                "email": f"{username}@example.org",
                "mobile": "+39 333 765 4321",
            }
            if role == Role.COMPANY_REP:
                form["company_id"] = str(company.id)
            people[who], _link = await svc.accounts.do_create_account(
                form, password=GOOD_PASSWORD, allowed=frozenset(Role)
            )
        case_id = uuid.UUID(await services_request(svc, "cliente", str(company.id)))
        await svc.files.do_step(people["desk"], case_id, Action.ADMIT)
        meeting = await svc.bookings.do_book(
            people["scheduler"], case_id, rome(FIRST, 9), people["conciliator"].id
        )
        clock.set(OPEN_AT)
        sessions = {}
        for who in PEOPLE:
            token, _data = await svc.sessions.create(people[who].id, mfa_pending=False)
            sessions[who] = token
        return meeting.id, {who: str(people[who].id) for who in PEOPLE}, sessions
    finally:
        await svc.close()


@contextlib.asynccontextmanager
async def running_cluster(
    tmp_path: Path, pg: PostgresDatabases, redis_url: str
) -> AsyncIterator[Cluster]:
    """A fresh database cloned from the migrated template, the world in it, and two nodes
    sharing it and Redis (under a prefix of their own); everything is stopped, dropped and
    deleted afterwards, whatever happened."""
    db_url = await pg.clone()
    prefix = f"concilia-cluster-{uuid.uuid4().hex[:10]}"
    redis = Redis.from_url(redis_url)
    http = aiohttp.ClientSession()
    nodes: list[Node] = []
    cluster: Cluster | None = None
    try:
        meeting_id, ids, sessions = await make_world(db_url, redis_url, prefix, tmp_path / "world")
        settings = {
            "CONCILIA_ENV": "test",
            "CONCILIA_DATABASE_URL": db_url,
            "CONCILIA_REDIS_URL": redis_url,
            "CONCILIA_REDIS_PREFIX": prefix,
            "CONCILIA_SECRET_KEY": SECRET,
            "CONCILIA_PUBLIC_URL": PUBLIC_URL,
            "CONCILIA_CLOCK_FIXED": OPEN_AT.isoformat(),
            "CONCILIA_PRESENCE_TTL_SECONDS": str(PRESENCE_TTL),
        }
        nodes = [start_node(name, tmp_path, settings) for name in ("a", "b")]
        await asyncio.gather(*(ready(http, node) for node in nodes))
        a, b = nodes
        cluster = Cluster(db_url, redis_url, prefix, meeting_id, ids, sessions, http, redis, a, b)
        yield cluster
    finally:
        if cluster is not None:
            for peer in cluster.peers:
                await peer.close()
        for node in nodes:
            node.stop()
        await http.close()
        with contextlib.suppress(Exception):
            async for key in redis.scan_iter(match=f"{prefix}:*"):
                await redis.delete(key)
        await redis.aclose()
        await pg.drop(db_url.rsplit("/", 1)[1])


@pytest.fixture
def postgres(pg_databases: PostgresDatabases | BaseException) -> PostgresDatabases:
    if isinstance(pg_databases, BaseException):
        unavailable("PostgreSQL", pg_databases)
        raise AssertionError("unreachable")
    return pg_databases


@pytest.fixture
async def cluster(
    tmp_path: Path, postgres: PostgresDatabases, redis_url: str
) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path, postgres, redis_url) as found:
        yield found


async def count_where(db_url: str, *conditions: Any) -> int:
    db = Database(db_url)
    try:
        async with db.session() as session:
            return int(
                await session.scalar(
                    select(func.count()).select_from(RoomMessage).where(*conditions)
                )
                or 0
            )
    finally:
        await db.close()


# ---- the tests ---------------------------------------------------------------------------------


async def test_lobby_chat_typing_and_presence_across_nodes(cluster: Cluster) -> None:
    c = cluster
    # What the nodes tell each other goes over Redis as JSON, never pickle.
    listener = c.redis.pubsub(ignore_subscribe_messages=True)
    await listener.subscribe(f"{c.prefix}-meeting")
    chair = await c.peer("conciliator", c.a)
    opened = await chair.join()
    assert opened["room"]["opened"] and opened["me"]["side"] == "conciliator"
    # The customer waits on the other node; the conciliator sees it and admits it.
    customer = await c.peer("customer", c.b)
    lobby = await customer.join()
    assert lobby["me"]["state"] == "waiting" and "messages" not in lobby
    waiting = await chair.wait_for("participant", lambda d: d["id"] == c.ids["customer"])
    assert waiting["state"] == "waiting" and waiting["online"] is True
    assert (await chair.call("admit", {"account": c.ids["customer"]}))["ok"]
    await customer.wait_for("me", lambda d: d["state"] == "admitted")
    # Its connection on node B entered the room's audiences at once (the rooms it enters are
    # sent over Redis to the node holding it): it hears the room before joining again.
    welcome = await chair.say("Benvenuto")
    await customer.wait_for("message", lambda d: d["seq"] == welcome["seq"])
    inside = await customer.join()
    assert inside["me"]["state"] == "admitted"
    online = {p["id"]: p["online"] for p in inside["participants"]}
    # The conciliator is on the other node.
    assert online == {c.ids["conciliator"]: True, c.ids["customer"]: True}
    # Chat, both ways.
    hello = await customer.say("Buongiorno <b>da B</b>")
    assert hello["ok"] and not hello["duplicate"]
    heard = await chair.wait_for("message", lambda d: d["seq"] == hello["seq"])
    assert heard["text"] == "Buongiorno <b>da B</b>" and heard["author"] == c.ids["customer"]
    answer = await chair.say("Buongiorno da A")
    assert (await customer.wait_for("message", lambda d: d["seq"] == answer["seq"]))[
        "text"
    ] == "Buongiorno da A"
    # Typing, both ways.
    assert (await customer.call("typing", {"on": True}))["ok"]
    await chair.wait_for("typing", lambda d: d == {"id": c.ids["customer"], "on": True})
    assert (await chair.call("typing", {"on": True}))["ok"]
    await customer.wait_for("typing", lambda d: d == {"id": c.ids["conciliator"], "on": True})
    # The representative on node A is admitted; the customer on B sees it come and go.
    rep = await c.admitted(chair, "rep", c.a)
    await customer.wait_for("participant", lambda d: d["id"] == c.ids["rep"] and d["online"])
    assert {p["id"]: p["online"] for p in (await chair.join())["participants"]} == {
        c.ids["conciliator"]: True,
        c.ids["customer"]: True,
        c.ids["rep"]: True,
    }
    await rep.close()
    await customer.wait_for("participant", lambda d: d["id"] == c.ids["rep"] and not d["online"])
    online = {p["id"]: p["online"] for p in (await customer.join())["participants"]}
    assert online[c.ids["rep"]] is False
    # Every message on the channel was JSON.
    raw, idle = [], 0
    while idle < 3:
        message = await listener.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is None:
            idle += 1
        else:
            idle = 0
            raw.append(message["data"])
    await listener.aclose()  # type: ignore[no-untyped-call]
    decoded = [json.loads(data) for data in raw]
    assert decoded and all(isinstance(d, dict) and "method" in d for d in decoded)
    assert any(
        d["method"] == "emit" and d["event"] == "message" and d["data"][0]["seq"] == hello["seq"]
        for d in decoded
    )


async def test_a_separate_session_reaches_nobody_else_on_the_other_node(cluster: Cluster) -> None:
    c = cluster
    chair = await c.peer("conciliator", c.a)
    await chair.join()
    customer = await c.admitted(chair, "customer", c.b)
    rep = await c.admitted(chair, "rep", c.b)  # the same node as the party left out
    assert (await chair.call("separate", {"side": "company"}))["ok"]
    await customer.wait_for(
        "room", lambda d: d["session"] is not None and d["session"]["kind"] == "separate"
    )
    assert (await customer.say("Are you there?"))["error"]["code"] == "separate_session"
    assert (await customer.call("typing", {"on": True}))["error"]["code"] == "separate_session"
    assert (await rep.call("typing", {"on": True}))["ok"]
    secret = await rep.say("Our best offer is 300 euro")
    reply = await chair.say("Thank you, I will explore it")
    await chair.wait_for("message", lambda d: d["seq"] == secret["seq"])
    await chair.wait_for("typing", lambda d: d["id"] == c.ids["rep"])
    await rep.wait_for("message", lambda d: d["seq"] == reply["seq"])
    assert (await chair.call("separate", {"side": None}))["ok"]
    public = await chair.say("We are all back together")
    await customer.wait_for("message", lambda d: d["seq"] == public["seq"])
    await rep.wait_for("message", lambda d: d["seq"] == public["seq"])
    secrets = {secret["seq"], reply["seq"]}
    assert not secrets & set(customer.seqs())
    assert c.ids["rep"] not in [t["id"] for t in customer.received("typing")]
    for source in (
        (await customer.call("history", {"after": 0}))["messages"],
        (await customer.join())["messages"],
    ):
        assert not secrets & {m["seq"] for m in source}
        assert all(m["side"] is None for m in source)
    assert secrets <= {m["seq"] for m in (await rep.call("history", {"after": 0}))["messages"]}


async def test_a_removal_closes_the_connection_on_the_other_node(cluster: Cluster) -> None:
    c = cluster
    chair = await c.peer("conciliator", c.a)
    await chair.join()
    customer = await c.admitted(chair, "customer", c.b)
    rep = await c.admitted(chair, "rep", c.b)
    assert (await chair.call("remove", {"account": c.ids["customer"]}))["ok"]
    async with asyncio.timeout(PATIENCE):
        await customer.disconnected.wait()
    await customer.wait_for("me", lambda d: d["state"] == "removed")
    for node in (c.a, c.b):  # refused at the handshake ("removed"), whichever the node
        with pytest.raises(socketio.exceptions.ConnectionError):
            await c.peer("customer", node)
    # The other party on that node stays and hears of it.
    notice = await rep.wait_for("message", lambda d: d["text"] == "removed")
    assert notice["author"] == c.ids["customer"] and rep.sio.connected
    assert (await rep.say("still here"))["ok"]


async def test_a_killed_node_s_clients_move_to_the_other_and_lose_nothing(
    cluster: Cluster,
) -> None:
    c = cluster
    chair = await c.peer("conciliator", c.a)
    await chair.join()
    customer = await c.admitted(chair, "customer", c.b)
    rep = await c.admitted(chair, "rep", c.b)
    acked: list[int] = []
    for i in range(3):
        acked.append((await customer.say(f"before {i}", client_id=f"before-{i}"))["seq"])
        acked.append((await chair.say(f"chair before {i}"))["seq"])
    await customer.wait_for("message", lambda d: d["seq"] == acked[-1])
    on_b = {customer.sid, rep.sid}

    async def chatter() -> list[int]:
        """The conciliator goes on talking on node A while node B dies."""
        seqs = []
        for i in range(12):
            seqs.append((await chair.say(f"during {i}"))["seq"])
            await asyncio.sleep(0.1)
        return seqs

    talking = asyncio.create_task(chatter())
    # A message in flight when its node dies: its answer may never come.
    in_flight = asyncio.create_task(customer.say("sent as B died", client_id="in-flight"))
    await asyncio.sleep(0.05)
    c.b.kill()
    async with asyncio.timeout(PATIENCE):
        await customer.disconnected.wait()
        await rep.disconnected.wait()
    first: dict[str, Any] | None = None
    if in_flight.done() and in_flight.exception() is None:
        first = in_flight.result()  # answered before the node died
    else:
        in_flight.cancel()  # its answer died with the node
        with contextlib.suppress(BaseException):
            await in_flight
    # The customer comes back on node A with a fresh token and resyncs from its last seq.
    held = max(customer.seqs())
    await customer.connect(url=c.a.url)
    snapshot = await customer.join(after=held)
    assert snapshot["me"]["state"] == "admitted"  # no second pass through the lobby
    resynced = [m["seq"] for m in snapshot["messages"]]
    assert resynced == sorted(set(resynced)) and all(seq > held for seq in resynced)
    acked += await talking
    # Sent again with the same client_id: stored once, whatever happened to the first answer.
    again = await customer.say("sent as B died", client_id="in-flight")
    assert again["ok"]
    if first is not None and first["ok"]:
        assert again == {"ok": True, "seq": first["seq"], "duplicate": True}
    assert await count_where(c.db_url, RoomMessage.client_id == "in-flight") == 1
    acked.append(again["seq"])
    await customer.wait_for("message", lambda d: d["seq"] == max(acked))
    seen = set(customer.seqs()) | set(resynced)
    assert set(acked) <= seen, sorted(set(acked) - seen)
    # The representative did not come back: once node B's heartbeat expired, node A records
    # its departure and the room hears it went away; the customer, back on A, stays online.
    gone = await chair.wait_for(
        "participant",
        lambda d: d["id"] == c.ids["rep"] and not d["online"],
        patience=PRESENCE_TTL + 30,
    )
    assert gone["state"] == "admitted"
    db = Database(c.db_url)
    try:
        async with db.session() as session:
            open_on_b = await session.scalar(
                select(func.count())
                .select_from(RoomPresence)
                .where(RoomPresence.connection.in_(on_b), RoomPresence.left_at.is_(None))
            )
    finally:
        await db.close()
    assert open_on_b == 0
    online = {p["id"]: p["online"] for p in (await chair.join())["participants"]}
    assert online == {c.ids["conciliator"]: True, c.ids["customer"]: True, c.ids["rep"]: False}
    assert not on_b & set(await c.presence_hash())


async def test_a_stopped_node_hands_its_connections_over_at_once(cluster: Cluster) -> None:
    c = cluster
    chair = await c.peer("conciliator", c.a)
    await chair.join()
    customer = await c.admitted(chair, "customer", c.b)
    on_b = customer.sid
    c.b.proc.terminate()  # SIGTERM: a rolling restart
    async with asyncio.timeout(PATIENCE):
        await customer.disconnected.wait()
    # The departure is recorded by node B itself, long before its heartbeat could expire.
    gone = await chair.wait_for(
        "participant", lambda d: d["id"] == c.ids["customer"] and not d["online"]
    )
    assert gone["state"] == "admitted"
    assert await asyncio.to_thread(c.b.proc.wait, PATIENCE) == 0
    db = Database(c.db_url)
    try:
        async with db.session() as session:
            stretch = await session.scalar(
                select(RoomPresence).where(RoomPresence.connection == on_b)
            )
            assert stretch is not None and stretch.left_at is not None
    finally:
        await db.close()
    assert on_b not in await c.presence_hash()
    await customer.connect(url=c.a.url)
    assert (await customer.join())["me"]["state"] == "admitted"
    await chair.wait_for("participant", lambda d: d["id"] == c.ids["customer"] and d["online"])


async def test_a_flushed_redis_loses_nothing_and_presence_comes_back(cluster: Cluster) -> None:
    c = cluster
    chair = await c.peer("conciliator", c.a)
    await chair.join()
    customer = await c.admitted(chair, "customer", c.b)
    assert set(await c.presence_hash()) == {chair.sid, customer.sid}
    # Everything of ours in Redis goes (presence, heartbeats; the portal sessions too).
    keys = await c.our_keys()
    assert keys
    await c.redis.delete(*keys)
    assert await c.presence_hash() == {}
    # The chat goes on: the database is the record and the channel is no key.
    first = await customer.say("after the flush")
    assert (await chair.wait_for("message", lambda d: d["seq"] == first["seq"]))[
        "text"
    ] == "after the flush"
    second = await chair.say("heard you")
    await customer.wait_for("message", lambda d: d["seq"] == second["seq"])
    # Each node puts its own connections back at its next heartbeat.
    await c.presence_back({chair.sid, customer.sid})
    online = {p["id"]: p["online"] for p in (await chair.join())["participants"]}
    assert online == {c.ids["conciliator"]: True, c.ids["customer"]: True}
    resync = await customer.join(after=0)
    assert {first["seq"], second["seq"]} <= {m["seq"] for m in resync["messages"]}


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A Redis server of this test's own on another loopback port, with ways to kill it and
    start it again (on the same port, empty: nothing saved)."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server", FileNotFoundError("redis-server"))
        raise AssertionError("unreachable")
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def up() -> None:
        log = (tmp_path / "redis.log").open("ab")
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(tmp_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
        probe = SyncRedis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        try:
            for _ in range(200):
                with contextlib.suppress(RedisError):
                    if probe.ping():
                        return
                if procs[-1].poll() is not None:
                    break
                time.sleep(0.1)
        finally:
            probe.close()
        raise AssertionError((tmp_path / "redis.log").read_text())

    def down() -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    up()
    try:
        yield f"redis://127.0.0.1:{port}/0", down, up
    finally:
        down()


async def test_nodes_log_a_redis_outage_recover_and_clients_resync(
    tmp_path: Path,
    postgres: PostgresDatabases,
    private_redis: tuple[str, Callable[[], None], Callable[[], None]],
) -> None:
    url, down, up = private_redis
    async with running_cluster(tmp_path, postgres, url) as c:
        chair = await c.peer("conciliator", c.a)
        await chair.join()
        customer = await c.admitted(chair, "customer", c.b)
        before = await chair.say("before the outage")
        await customer.wait_for("message", lambda d: d["seq"] == before["seq"])
        down()
        # Node A still stores and acknowledges; what it says cannot reach node B now.
        during = await chair.say("while Redis is down")
        assert during["ok"]
        # /readyz probes at most once a second (a cached answer): it says so within a moment.
        async with asyncio.timeout(PATIENCE):
            while True:
                async with c.http.get(f"{c.a.url}/readyz") as resp:
                    if resp.status == 503:
                        assert (await resp.json())["checks"]["redis"] == "unreachable"
                        break
                await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        up()
        # Once subscribed again, each node asks its own connections to resync.
        await customer.wait_for("resync", patience=60)
        await chair.wait_for("resync", patience=60)
        held = max(customer.seqs())
        caught_up = await customer.join(after=held)
        assert during["seq"] in [m["seq"] for m in caught_up["messages"]]
        # And the nodes talk again.
        after = await chair.say("after the outage")
        await customer.wait_for("message", lambda d: d["seq"] == after["seq"])
        heard = await customer.say("me too")
        await chair.wait_for("message", lambda d: d["seq"] == heard["seq"])
        await c.presence_back({chair.sid, customer.sid})
        for node in (c.a, c.b):
            await ready(c.http, node)
            log = node.log()
            assert "Redis lost" in log and "Redis is back" in log, log[-3000:]
