"""The cluster rehearsal (``make cluster``, ``deploy/cluster.py``): nginx, the Debian package's
binary, in front of two served nodes sharing PostgreSQL and Redis, configured by
``deploy/nginx/concilia.conf`` itself; and the chat part of the journey through it, with the two
parties on different nodes — one on WebSocket, the other on long-polling, which works only if
nginx keeps all of its requests on one node.

Like ``tests/test_room_cluster.py``, the world (an admitted case, its meeting at 9:00 on the
first possible day, the conciliator's portal session) is made in-process and the nodes' clock
stands still 14 minutes before the slot. The parties sign in through nginx with the login form.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.asyncio import Redis
from yarl import URL

from core.settings import Settings
from deploy.cluster import (
    ROOT,
    SITE,
    UPSTREAM_HEADER,
    Cluster,
    Node,
    Spec,
    find_nginx,
    main_config,
    render_site,
    running,
)
from signaling.presence import text
from tests.services import PostgresDatabases, unavailable
from tests.support import CSRF_RE, GOOD_PASSWORD
from tests.test_room_cluster import OPEN_AT, make_world
from web.context import SESSION_COOKIE

SECRET = "nginx-cluster-secret-" + "n" * 40
NAMESPACE = "/meeting"
PATIENCE = 20.0  # seconds for one event to cross nodes on a busy two-core machine
SIGN_INS = 16  # sign-ins of the company's representative until its session lands elsewhere


@pytest.fixture
def nginx() -> str:
    found = find_nginx()
    if found is None:
        unavailable("nginx", FileNotFoundError("nginx (Debian package nginx)"))
        raise AssertionError("unreachable")
    return found


@dataclass
class Rehearsal:
    cluster: Cluster
    meeting_id: uuid.UUID
    ids: dict[str, str]
    sessions: dict[str, str]
    redis: Redis
    prefix: str


@pytest.fixture
async def rehearsal(
    tmp_path: Path,
    pg_databases: PostgresDatabases | BaseException,
    redis_url: str,
    nginx: str,
) -> AsyncIterator[Rehearsal]:
    """The cluster of ``make cluster`` on free ports, with a database of its own (cloned from
    the migrated template) holding the world, and a Redis prefix of its own."""
    if isinstance(pg_databases, BaseException):
        unavailable("PostgreSQL", pg_databases)
        raise AssertionError("unreachable")
    db_url = await pg_databases.clone()
    prefix = f"concilia-nginx-{uuid.uuid4().hex[:10]}"
    redis = Redis.from_url(redis_url)
    try:
        meeting_id, ids, sessions = await make_world(db_url, redis_url, prefix, tmp_path / "world")
        spec = Spec(
            var_dir=tmp_path / "cluster",
            database_url=db_url,
            redis_url=redis_url,
            redis_prefix=prefix,
            port=0,
            secret_key=SECRET,
            settings={
                "CONCILIA_ENV": "test",
                "CONCILIA_CLOCK_FIXED": OPEN_AT.isoformat(),
                "CONCILIA_ARGON2_TIME_COST": "1",
                "CONCILIA_ARGON2_MEMORY_KIB": "1024",
                "CONCILIA_ARGON2_PARALLELISM": "1",
            },
            environ={k: v for k, v in os.environ.items() if not k.startswith("CONCILIA_")},
        )
        async with running(spec, demo=False) as cluster:
            yield Rehearsal(cluster, meeting_id, ids, sessions, redis, prefix)
    finally:
        async for key in redis.scan_iter(match=f"{prefix}:*"):
            await redis.delete(key)
        await redis.aclose()
        await pg_databases.drop(db_url.rsplit("/", 1)[1])


class Person:
    """One person's browser through nginx: cookies kept and sent with every request (pages,
    the room token, each long-polling request and the WebSocket handshake), and a Socket.IO
    connection to the meeting with every event it received."""

    def __init__(self, r: Rehearsal, who: str) -> None:
        self.r = r
        self.who = who
        self.url = r.cluster.url
        # unsafe: keep cookies of an address (127.0.0.1), as a browser does.
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.sio: Any = None
        self.events: list[tuple[str, Any]] = []

    @property
    def id(self) -> str:
        return self.r.ids[self.who]

    @property
    def sid(self) -> str:
        return str(self.sio.get_sid(namespace=NAMESPACE))

    def use_session(self, token: str) -> None:
        self.http.cookie_jar.update_cookies({SESSION_COOKIE: token}, response_url=URL(self.url))

    async def sign_in(self, username: str) -> None:
        async with self.http.get(f"{self.url}/login") as resp:
            found = CSRF_RE.search(await resp.text())
        assert found
        async with self.http.post(
            f"{self.url}/login",
            data={"username": username, "password": GOOD_PASSWORD, "csrf_token": found.group(1)},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303, await resp.text()

    async def token(self) -> tuple[str, Node]:
        """A room token, and the node nginx sent this person to for it."""
        async with self.http.get(f"{self.url}/meetings/{self.r.meeting_id}/token") as resp:
            assert resp.status == 200, (resp.status, await resp.text())
            node = self.r.cluster.node_at(resp.headers[UPSTREAM_HEADER])
            return str((await resp.json())["token"]), node

    async def node(self) -> Node:
        return (await self.token())[1]

    async def connect(self, transport: str) -> None:
        token, _node = await self.token()
        client = socketio.AsyncClient(reconnection=False, http_session=self.http)

        async def any_event(event: str, data: Any = None) -> None:
            self.events.append((event, data))

        client.on("*", any_event, namespace=NAMESPACE)
        self.sio = client
        await client.connect(
            self.url,
            namespaces=[NAMESPACE],
            auth={"token": token},
            headers={"Origin": self.url},
            transports=[transport],
            wait_timeout=PATIENCE,
        )

    async def call(self, event: str, data: Any = None) -> dict[str, Any]:
        answer = await self.sio.call(event, data, namespace=NAMESPACE, timeout=PATIENCE)
        assert isinstance(answer, dict)
        return answer

    async def join(self) -> dict[str, Any]:
        answer = await self.call("join", {})
        assert answer["ok"], answer
        snapshot: dict[str, Any] = answer["snapshot"]
        return snapshot

    async def say(self, words: str) -> int:
        answer = await self.call("say", {"client_id": uuid.uuid4().hex, "text": words})
        assert answer["ok"], answer
        return int(answer["seq"])

    async def wait_for(self, event: str, where: Callable[[Any], bool] = lambda _d: True) -> Any:
        async with asyncio.timeout(PATIENCE):
            while True:
                for name, data in self.events:
                    if name == event and where(data):
                        return data
                await asyncio.sleep(0.05)

    async def heard(self, seq: int) -> str:
        message = await self.wait_for("message", lambda d: d["seq"] == seq)
        return str(message["text"])

    def seqs(self) -> set[int]:
        return {data["seq"] for name, data in self.events if name == "message"}

    async def close(self) -> None:
        if self.sio is not None and self.sio.connected:
            await self.sio.disconnect()
        await self.http.close()


async def admitted(chair: Person, party: Person, transport: str) -> None:
    """``party`` connects, waits in the lobby and is admitted by ``chair``."""
    await party.connect(transport)
    assert (await party.join())["me"]["state"] == "waiting"
    await chair.wait_for("participant", lambda d: d["id"] == party.id and d["state"] == "waiting")
    assert (await chair.call("admit", {"account": party.id}))["ok"]
    await party.wait_for("me", lambda d: d["state"] == "admitted")
    assert (await party.join())["me"]["state"] == "admitted"


async def test_the_chat_through_nginx_with_the_parties_on_two_nodes(
    rehearsal: Rehearsal,
) -> None:
    r = rehearsal
    chair = Person(r, "conciliator")
    customer = Person(r, "customer")
    people = [chair, customer]
    try:
        chair.use_session(r.sessions["conciliator"])
        await customer.sign_in("cliente")
        customer_node = await customer.node()
        # Each sign-in is a new session cookie, hashed anew: the representative signs in (from
        # a fresh browser each time) until nginx's sticky hash sends it to the other node.
        for _ in range(SIGN_INS):
            rep = Person(r, "rep")
            people.append(rep)
            await rep.sign_in("azienda")
            rep_node = await rep.node()
            if rep_node != customer_node:
                break
        assert rep_node != customer_node, f"{SIGN_INS} sessions all hashed to {rep_node.name}"
        # Sticky: the same person keeps reaching the same node.
        assert {(await rep.node()).name for _ in range(5)} == {rep_node.name}

        await chair.connect("websocket")
        await chair.join()
        # A party waits in the lobby until the conciliator admits it; the representative's
        # connection is long-polling only: many HTTP requests, each of which must reach the
        # node holding the connection.
        await admitted(chair, customer, "websocket")
        await admitted(chair, rep, "polling")

        # The two parties' connections are held by two nodes (presence in Redis:
        # connection → account|node).
        stored = await r.redis.hgetall(f"{r.prefix}:presence:{r.meeting_id}")
        holder = {text(k): text(v).partition("|")[2] for k, v in stored.items()}
        assert holder[customer.sid] != holder[rep.sid], holder

        # The chat, both ways, across the nodes.
        hello = await customer.say("Buongiorno, sono il cliente")
        assert await rep.heard(hello) == "Buongiorno, sono il cliente"
        assert await chair.heard(hello) == "Buongiorno, sono il cliente"
        answer = await rep.say("Buongiorno, per l'azienda")
        assert await customer.heard(answer) == "Buongiorno, per l'azienda"

        # A separate session with the applicant: the company's side hears nothing of it.
        assert (await chair.call("separate", {"side": "applicant"}))["ok"]
        refused = await rep.call("say", {"client_id": uuid.uuid4().hex, "text": "posso?"})
        assert refused["error"]["code"] == "separate_session"
        private = await chair.say("Solo per il cliente: cosa accettereste?")
        assert await customer.heard(private) == "Solo per il cliente: cosa accettereste?"
        reply = await customer.say("Il rimborso della bolletta")
        assert await chair.heard(reply) == "Il rimborso della bolletta"
        assert (await chair.call("separate", {"side": None}))["ok"]
        together = await chair.say("Di nuovo insieme")
        assert await rep.heard(together) == "Di nuovo insieme"
        assert await customer.heard(together) == "Di nuovo insieme"
        assert not {private, reply} & rep.seqs()
        history = await rep.call("history", {"after": 0})
        seen = {m["seq"] for m in history["messages"]}
        assert {hello, answer, together} <= seen
        assert not {private, reply} & seen
    finally:
        for person in people:
            await person.close()

    # nginx's access log: the long-polling requests (every /socket.io/ request but the two
    # WebSocket handshakes, 101) all went to the representative's node; the WebSockets went
    # to their own people's nodes.
    lines = await logged_socketio(r.cluster.access_log, polls=3, sockets=2)
    polls = [upstream for status, upstream in lines if status != "101"]
    assert set(polls) == {rep_node.address}, lines
    sockets = [upstream for status, upstream in lines if status == "101"]
    assert len(sockets) == 2 and customer_node.address in sockets, lines


async def logged_socketio(path: Path, polls: int, sockets: int) -> list[tuple[str, str]]:
    """(status, upstream) of each ``/socket.io/`` request in nginx's access log, once at least
    ``polls`` long-polling requests and ``sockets`` WebSockets are written (nginx writes each
    when it ends)."""
    found: list[tuple[str, str]] = []
    async with asyncio.timeout(PATIENCE):
        while True:
            found = re.findall(
                r'"(?:GET|POST) /socket\.io/ [^"]*" (\d{3}) .* upstream=(\S+)',
                await asyncio.to_thread(path.read_text),
            )
            upgraded = sum(status == "101" for status, _u in found)
            if upgraded >= sockets and len(found) - upgraded >= polls:
                return found
            await asyncio.sleep(0.1)


# ---- the deployment files ----------------------------------------------------------------------


def test_the_rehearsal_renders_the_production_site_without_tls(tmp_path: Path) -> None:
    site = render_site(
        SITE.read_text(),
        listen="127.0.0.1:18080",
        nodes={"node1": "127.0.0.1:18081", "node2": "127.0.0.1:18082"},
        log_dir=tmp_path,
    )
    code = [line.split("#", 1)[0].strip() for line in site.splitlines()]
    assert [c for c in code if c.startswith("listen")] == ["listen 127.0.0.1:18080;"]
    assert not [c for c in code if "ssl" in c or "return 301" in c]
    servers = [c for c in code if c.startswith("server 127.0.0.1:")]
    assert servers == [
        "server 127.0.0.1:18081 max_fails=1 fail_timeout=5s;",
        "server 127.0.0.1:18082 max_fails=1 fail_timeout=5s;",
        "server 127.0.0.1:18081;",
        "server 127.0.0.1:18082;",
    ]
    assert f"access_log {tmp_path}/concilia.access.log concilia;" in code
    # What is rehearsed is what goes to production.
    for kept in (
        "hash $concilia_affinity consistent;",
        "client_max_body_size 16m;",
        "proxy_request_buffering off;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    ):
        assert kept in code
    with pytest.raises(ValueError, match="node tag"):
        render_site(SITE.read_text(), listen="127.0.0.1:1", nodes={"node1": "a"}, log_dir=tmp_path)


def test_the_production_nginx_configuration_passes_nginx_t(tmp_path: Path, nginx: str) -> None:
    """``deploy/nginx/concilia.conf`` as is, TLS included (a self-signed certificate in place of
    the real one, the logs in a temporary directory), is accepted by the Debian nginx."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "conciliazione.example.org")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for sub in ("logs", "tmp"):
        (tmp_path / sub).mkdir()
    site = (
        SITE.read_text()
        .replace("/etc/letsencrypt/live/conciliazione.example.org/", f"{tmp_path}/")
        .replace("/var/log/nginx/", f"{tmp_path}/logs/")
    )
    config = tmp_path / "nginx.conf"
    config.write_text(main_config(site, tmp_path))
    checked = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(config), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr.decode()


def test_the_example_environment_names_real_settings_and_makes_a_node() -> None:
    example = (ROOT / "deploy" / "concilia.env.example").read_text()
    named = re.findall(r"^#?(CONCILIA_[A-Z0-9_]+)=", example, re.M)
    fields = {f"CONCILIA_{name.upper()}" for name in Settings.model_fields}
    assert named and not set(named) - fields, set(named) - fields
    values = dict(re.findall(r"^(CONCILIA_[A-Z0-9_]+)=(.*)$", example, re.M))
    assert values.pop("CONCILIA_SECRET_KEY") == ""  # never a real one; a node refuses to start
    settings = Settings(
        _env_file=None,
        secret_key="s" * 48,
        **{name.removeprefix("CONCILIA_").lower(): value for name, value in values.items()},
    )
    assert settings.env == "prod" and settings.trust_forwarded_for
    assert settings.node_url == settings.public_url + "/node1"
    unit = (ROOT / "deploy" / "systemd" / "concilia@.service").read_text()
    assert "EnvironmentFile=/etc/concilia/%i.env" in unit
    assert re.search(r"^ExecStart=\S+/\.venv/bin/concilia serve$", unit, re.M)
