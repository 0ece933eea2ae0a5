"""Load and soak: 1,000 participants in 333 chat meetings on one node for 10 minutes, with
joins, leaves, reconnects and uploads mixed in.

- **the node**: a real ``concilia serve`` (``python -m web.cli serve``, this checkout's code)
  on PostgreSQL — a database of this run's own, created, migrated and filled as ``bench.chat``
  fills it (companies, accounts, admitted cases, meetings booked with ``Bookings.book_in``,
  portal sessions and room tokens) — and Redis as a node of a cluster uses it (sessions,
  presence, python-socketio's Redis manager), under a key prefix of this run's own. Its clock
  stands still one minute after the meetings' slot (``CONCILIA_CLOCK_FIXED``), so the rooms stay
  open however long the run takes.
- **the load** (this process, separate from the node): one ``socketio.AsyncClient`` per
  participant with its session cookie and a room token; conciliators open their rooms and admit
  the parties. Each participant says something every ``--interval`` seconds at its own phase.
  Meanwhile, at random (exponential) times: a participant *reconnects* (drops its connection,
  fetches a new room token from ``/meetings/{id}/token`` and joins again with ``after``, the
  last sequence number it holds), a party *leaves* for a few seconds and comes back the same
  way, and a party *uploads* a document into the case file from the room (the room page's own
  upload, ``POST /cases/{id}/documents?csrf_token=…&next=/meetings/{id}/documents``, then
  ``share``).

Measured: the latency of every chat message from its send to its arrival at each other
participant connected when it was sent; errors (a refused or unanswered event, an HTTP error, a
connection the server closed, a failed connect); lost messages (an acknowledged message missing
from the database, or from what any other participant of its meeting holds at the end — live
or resynced by its ``join``); and the server's RSS and open file descriptors (``/proc``) after
the warm-up and at the end, both read with every participant in its room.

    python -m bench.load [--quick] [--participants 1000] [--minutes 10] [--keep]

The last line of output is ``RESULT {json}``; the exit status is 1 when an error or a lost
message was seen, or the server's log holds a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import math
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import socketio
from redis.asyncio import Redis
from sqlalchemy import select

from bench.chat import (
    ADMITTED_AT,
    DEFAULT_PG,
    FILLER,
    SERVER_AT,
    CpuMeter,
    build_world,
    create_database,
    drop_database,
    fast_json,
    gather_limited,
    ours_env,
    percentile,
    person,
    run,
)
from bench.upload import Processes, free_port, status_kb, tail, workdir
from cases.accounts import Account, Role
from cases.documents import Document
from core.clock import FakeClock
from core.db import Database
from core.settings import load_settings
from rooms.models import MessageKind, RoomMessage
from scheduling.bookings import Meeting
from web.context import SESSION_COOKIE
from web.services import open_services

NAMESPACE = "/meeting"
CALL_TIMEOUT = 30.0
CONNECT_AT_ONCE = 24  # meetings entering at the same time
LIVE_GRACE = 1.0  # a receiver that left this soon after a send may have missed it live
# A receiver whose connection stayed open this long after a send and never got it live lost it;
# one that left between LIVE_GRACE and this got it late (resynced by its next join).
LIVE_LOST = CALL_TIMEOUT
P99_TARGET_MS = 100.0
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
SAMPLE_SECONDS = 10.0


# --- what the clients saw ---------------------------------------------------------------------


@dataclass
class Sent:
    """One chat message: its sender, when, who was there to receive it live, who did."""

    room: Room
    sender: int
    client_id: str
    at: float
    measured: bool  # sent in the measured window (after the warm-up)
    expected: dict[int, int]  # receiver -> its connection number when this was sent
    live: set[int] = field(default_factory=set)
    seq: int | None = None


@dataclass
class Share:
    room: Room
    sender: int
    document: str
    name: str


class Stats:
    """Everything the run counts."""

    def __init__(self) -> None:
        self.sent: dict[str, Sent] = {}
        self.shares: list[Share] = []
        self.latencies: list[float] = []  # ms, live deliveries of measured messages
        self.errors: dict[str, int] = {}
        self.examples: list[str] = []
        self.actions: dict[str, int] = {"reconnect": 0, "leave": 0, "upload": 0}
        self.resynced = 0  # messages a participant got from a join's snapshot, not live

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {detail}"[:300])


@dataclass
class Room:
    """One meeting of the run and its participants."""

    index: int
    meeting_id: str
    case_id: str
    people: list[Participant] = field(default_factory=list)


class Participant:
    """One participant: its connections one after the other, what it holds (sequence numbers,
    shared documents), and its actions; ``lock`` keeps a send, an upload and a leave apart."""

    def __init__(
        self,
        stats: Stats,
        room: Room,
        index: int,
        account_id: str,
        session: str,
        token: str,
        chair: bool,
        http: aiohttp.ClientSession,
        base: str,
        json_module: ModuleType | None,
    ) -> None:
        self.stats = stats
        self.room = room
        self.index = index
        self.account_id = account_id
        self.session = session
        self.first_token = token
        self.chair = chair
        self.http = http
        self.base = base
        self.json_module = json_module
        self.sio: socketio.AsyncClient | None = None
        self.conn = 0
        self.closing = False
        self.closed_at: dict[int, float] = {}
        self.joined = False
        self.admitted = asyncio.Event()
        self.held: set[int] = set()
        self.documents: set[str] = set()
        self.lock = asyncio.Lock()
        self.count = 0
        self.uploads = 0
        self.csrf: str | None = None
        self.phase = random.random()  # noqa: S311 - spreads the senders over an interval

    @property
    def cookie(self) -> dict[str, str]:
        return {"Cookie": f"{SESSION_COOKIE}={self.session}"}

    # ---- events from the server

    def on_message(self, data: Any) -> None:
        now = time.perf_counter()
        if not isinstance(data, dict):
            return
        self.take(data, live=True, now=now)

    def take(self, message: dict[str, Any], live: bool, now: float) -> None:
        seq = message.get("seq")
        if isinstance(seq, int):
            if seq in self.held:
                return
            self.held.add(seq)
        if message.get("document"):
            self.documents.add(str(message["document"]))
        sent = self.stats.sent.get(str(message.get("client_id")))
        if sent is None or sent.room is not self.room or sent.sender == self.index:
            return
        if live:
            sent.live.add(self.index)
            if sent.measured:
                self.stats.latencies.append((now - sent.at) * 1000)
        else:
            self.stats.resynced += 1

    def on_disconnect(self, *_reason: Any) -> None:
        self.joined = False
        if not self.closing:
            self.closed_at[self.conn] = time.perf_counter()
            self.stats.error("server_disconnect", f"meeting {self.room.index} p{self.index}")

    def on_me(self, data: Any) -> None:
        if isinstance(data, dict) and data.get("state") == "admitted":
            self.admitted.set()

    # ---- the connection

    async def fetch_token(self) -> str:
        url = f"{self.base}/meetings/{self.room.meeting_id}/token"
        async with self.http.get(url, headers=self.cookie) as answer:
            if answer.status != 200:
                raise Failure("http", f"GET token {answer.status}")
            body = await answer.json()
        return str(body["token"])

    async def connect(self, fresh_token: bool) -> None:
        token = await self.fetch_token() if fresh_token else self.first_token
        sio = socketio.AsyncClient(reconnection=False, json=self.json_module)
        sio.on("message", self.on_message, namespace=NAMESPACE)
        sio.on("me", self.on_me, namespace=NAMESPACE)
        sio.on("disconnect", self.on_disconnect, namespace=NAMESPACE)
        self.conn += 1
        self.closing = False
        self.sio = sio
        try:
            await sio.connect(
                self.base,
                namespaces=[NAMESPACE],
                auth={"token": token},
                headers=self.cookie | {"Origin": self.base},
                transports=["websocket"],
                wait_timeout=CALL_TIMEOUT,
            )
        except Exception as exc:
            raise Failure("connect", f"{type(exc).__name__}: {exc}") from None

    async def call(self, event: str, data: Any) -> dict[str, Any]:
        assert self.sio is not None
        try:
            answer = await self.sio.call(event, data, namespace=NAMESPACE, timeout=CALL_TIMEOUT)
        except socketio.exceptions.TimeoutError:
            raise Failure("unanswered", event) from None
        except Exception as exc:
            raise Failure("call", f"{event}: {type(exc).__name__}: {exc}") from None
        if not isinstance(answer, dict) or not answer.get("ok"):
            raise Failure("refused", f"{event}: {answer}")
        return answer

    async def join(self) -> dict[str, Any]:
        """(Re)enter the room, asking for what was said since the last message held."""
        payload = {"after": max(self.held)} if self.held else {}
        answer = await self.call("join", payload)
        snapshot: dict[str, Any] = answer["snapshot"]
        now = time.perf_counter()
        for message in snapshot.get("messages", []):
            self.take(message, live=False, now=now)
        return snapshot

    async def close(self) -> None:
        sio = self.sio
        if sio is None:
            return
        self.closing = True
        self.joined = False
        self.closed_at[self.conn] = time.perf_counter()
        with contextlib.suppress(Exception):
            await sio.disconnect()
        http = sio.eio.http
        if http is not None and not http.closed:
            await http.close()

    # ---- actions

    async def say(self, measured: bool) -> None:
        async with self.lock:
            if not self.joined:
                return
            self.count += 1
            client_id = f"m{self.room.index}-p{self.index}-{self.count}"
            expected = {p.index: p.conn for p in self.room.people if p is not self and p.joined}
            sent = Sent(self.room, self.index, client_id, time.perf_counter(), measured, expected)
            self.stats.sent[client_id] = sent
            answer = await self.call("say", {"client_id": client_id, "text": FILLER})
            sent.seq = int(answer["seq"])
            self.held.add(sent.seq)

    async def come_back(self, away: float) -> None:
        """Leave (``away`` seconds) or reconnect (``away`` 0): the connection closes, a new
        one with a new token joins again, still admitted, and resyncs."""
        async with self.lock:
            await self.close()
            if away:
                await asyncio.sleep(away)
            await self.connect(fresh_token=True)
            snapshot = await self.join()
            if snapshot["me"]["state"] != "admitted":
                raise Failure("state", f"back as {snapshot['me']['state']}")
            self.joined = True

    async def upload(self, size: int) -> None:
        """Upload a document into the case file as the room page does, then share it."""
        async with self.lock:
            if not self.joined:
                return
            if self.csrf is None:
                async with self.http.get(f"{self.base}/api/v1/me", headers=self.cookie) as me:
                    if me.status != 200:
                        raise Failure("http", f"GET /api/v1/me {me.status}")
                    self.csrf = str((await me.json())["csrf_token"])
            self.uploads += 1
            name = f"nota-m{self.room.index}-p{self.index}-{self.uploads}.txt"
            back = f"/meetings/{self.room.meeting_id}/documents"
            form = aiohttp.FormData()
            form.add_field("category", "other")
            form.add_field("description", f"Nota {self.uploads} dalla stanza")
            form.add_field("visible_to_other_party", "on")
            form.add_field(
                "file",
                (FILLER + "\n").encode() * (size // 90 + 1),
                filename=name,
                content_type="text/plain",
            )
            url = f"{self.base}/cases/{self.room.case_id}/documents"
            async with self.http.post(
                url,
                params={"csrf_token": self.csrf, "next": back},
                data=form,
                headers=self.cookie,
                allow_redirects=False,
            ) as answer:
                if answer.status != 303 or answer.headers.get("Location") != back:
                    raise Failure("http", f"upload {answer.status} {await answer.text()}"[:300])
            async with self.http.get(self.base + back, headers=self.cookie) as listing:
                if listing.status != 200:
                    raise Failure("http", f"GET documents {listing.status}")
                documents = (await listing.json())["documents"]
            found = [d["id"] for d in documents if d["name"] == name]
            if len(found) != 1:
                raise Failure("upload", f"{name} is not in the case file once: {found}")
            await self.call("share", {"document": found[0]})
            self.stats.shares.append(Share(self.room, self.index, found[0], name))


class Failure(Exception):
    """Something the script did not cause: counted as an error of ``kind``."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


# --- the script -------------------------------------------------------------------------------


class Script:
    """The run's phases: churn goes on only while ``churning`` is set; ``busy`` counts the
    actions under way, so that the measures can wait for everyone to be back in the room."""

    def __init__(self, args: argparse.Namespace, stats: Stats, rooms: list[Room]) -> None:
        self.args = args
        self.stats = stats
        self.rooms = rooms
        self.people = [p for r in rooms for p in r.people]
        self.churning = asyncio.Event()
        self.stopped = asyncio.Event()
        self.talking = True
        self.measured = False
        self.busy = 0
        self.rng = random.Random(args.seed)  # noqa: S311 - a load, not a secret

    async def guarded(self, what: str, action: Any, churn: bool = True) -> None:
        """Run ``action``, counting what it raises as an error; ``churn``: count it in ``busy``."""
        self.busy += churn
        try:
            await action
        except Failure as failure:
            self.stats.error(failure.kind, f"{what}: {failure.detail}")
        except Exception as exc:  # the instrument itself must go on
            self.stats.error("client", f"{what}: {type(exc).__name__}: {exc}")
        finally:
            self.busy -= churn

    async def talk(self, person: Participant) -> None:
        interval = self.args.interval
        at = time.perf_counter() + person.phase * interval
        while not self.stopped.is_set() and self.talking:
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            at += interval
            if self.talking and not self.stopped.is_set():
                await self.guarded(
                    f"say m{person.room.index}", person.say(self.measured), churn=False
                )

    async def churn(self, person: Participant) -> None:
        """Reconnects for everyone; leaves and uploads for the parties."""
        rates = {"reconnect": 1 / self.args.reconnect_every}
        if not person.chair:
            rates |= {"leave": 1 / self.args.leave_every, "upload": 1 / self.args.upload_every}
        total = sum(rates.values())
        kinds, weights = list(rates), list(rates.values())
        while not self.stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), self.rng.expovariate(total))
            await self.churning.wait()
            if self.stopped.is_set():
                return
            kind = self.rng.choices(kinds, weights)[0]
            what = f"{kind} m{person.room.index} p{person.index}"
            self.stats.actions[kind] += 1
            if kind == "reconnect":
                await self.guarded(what, person.come_back(0.0))
            elif kind == "leave":
                away = self.rng.uniform(self.args.away_min, self.args.away_max)
                await self.guarded(what, person.come_back(away))
            else:
                await self.guarded(what, person.upload(self.args.upload_kb * 1024))

    async def quiet(self, patience: float) -> None:
        """Churn paused, and every action under way finished (everyone back in the room)."""
        self.churning.clear()
        deadline = time.perf_counter() + patience
        while self.busy and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        missing = [p for p in self.people if not p.joined]
        for p in missing:
            self.stats.error("absent", f"m{p.room.index} p{p.index} not back in the room")


async def enter(room: Room) -> None:
    """The conciliator opens the room; each party joins the lobby, is admitted, joins again."""
    chair, parties = room.people[0], room.people[1:]
    await chair.connect(fresh_token=False)
    await chair.join()
    chair.joined = True
    for party in parties:
        await party.connect(fresh_token=False)
        lobby = await party.join()
        if lobby["me"]["state"] != "waiting":
            raise Failure("state", f"expected the lobby: {lobby['me']}")
        await chair.call("admit", {"account": party.account_id})
        try:
            await asyncio.wait_for(party.admitted.wait(), CALL_TIMEOUT)
        except TimeoutError:
            raise Failure("unanswered", "admitted") from None
        again = await party.join()
        if again["me"]["state"] != "admitted":
            raise Failure("state", f"not admitted: {again['me']}")
        party.joined = True


# --- the server from outside ------------------------------------------------------------------


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sampler:
    """The server's RSS and open descriptors every ``SAMPLE_SECONDS``: the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss_max_kb = 0
        self.fds_max = 0

    def read(self) -> tuple[int, int]:
        rss, fds = status_kb(self.pid, "VmRSS") or 0, open_fds(self.pid)
        self.rss_max_kb, self.fds_max = max(self.rss_max_kb, rss), max(self.fds_max, fds)
        return rss, fds

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            with contextlib.suppress(OSError):
                self.read()


# --- the world --------------------------------------------------------------------------------


async def build_rooms(
    args: argparse.Namespace,
    env: dict[str, str],
    stats: Stats,
    http: aiohttp.ClientSession,
    base: str,
    json_module: ModuleType | None,
) -> list[Room]:
    """``bench.chat``'s world (meetings of three), plus one more company representative in the
    first meetings for participants beyond a multiple of three."""
    meetings, extra = divmod(args.participants, 3)
    seats = await build_world(meetings, env)
    settings = load_settings(
        **{
            k.removeprefix("CONCILIA_").lower(): v
            for k, v in env.items()
            if k.startswith("CONCILIA_")
        }
    )
    services = await open_services(settings, FakeClock(SERVER_AT))
    rooms: list[Room] = []
    try:
        async with services.db.session() as session:
            found = {
                str(m.id): (str(m.case_id), m.case_id)
                for m in await session.scalars(select(Meeting))
            }
        for group in seats:
            meeting_id = group[0].meeting_id
            rooms.append(Room(group[0].meeting, meeting_id, found[meeting_id][0]))
        for i, group in enumerate(seats):
            room = rooms[i]
            members = [(s.account_id, s.session, s.token) for s in group]
            if i < extra:
                members.append(
                    await extra_rep(
                        services, i, uuid.UUID(group[2].account_id), uuid.UUID(room.meeting_id)
                    )
                )
            room.people = [
                Participant(stats, room, n, a, s, t, n == 0, http, base, json_module)
                for n, (a, s, t) in enumerate(members)
            ]
    finally:
        await services.close()
    return rooms


async def extra_rep(
    services: Any, index: int, colleague: uuid.UUID, meeting_id: uuid.UUID
) -> tuple[str, str, str]:
    """A second representative of ``colleague``'s company, signed in, with a room token."""
    async with services.db.session() as session:
        other = await session.get(Account, colleague)
        assert other is not None
        rep = person(10_000 + index, Role.COMPANY_REP, other.company_id, ADMITTED_AT)
        session.add(rep)
        await session.commit()
    token, _data = await services.sessions.create(rep.id, mfa_pending=False)
    return str(rep.id), token, services.room_tokens.issue(meeting_id, rep.id, SERVER_AT)


# --- the run ----------------------------------------------------------------------------------


async def drive(
    args: argparse.Namespace, stats: Stats, rooms: list[Room], pid: int
) -> dict[str, Any]:
    """Enter, warm up, measure, quiet down, drain; the server read from outside."""
    script = Script(args, stats, rooms)
    people = script.people

    async def enter_one(room: Room) -> None:
        await script.guarded(f"enter m{room.index}", enter(room))

    started = time.perf_counter()
    await gather_limited([functools.partial(enter_one, r) for r in rooms], CONNECT_AT_ONCE)
    joined_s = time.perf_counter() - started
    print(f"  {len(people)} participants in {len(rooms)} rooms in {joined_s:.1f} s", flush=True)
    # The instrument must not stall: a collection over a thousand clients' objects and every
    # message's record takes long enough here to show up as latency (as in bench.chat), so
    # this process does not collect while it measures; what its reconnects leave behind (old
    # clients) is a few tens of MB over ten minutes.
    gc.collect()
    gc.freeze()
    gc.disable()
    sampler = Sampler(pid)
    sampling = asyncio.create_task(sampler.loop())
    meter = CpuMeter(pid, with_postgres=True)
    talkers = [asyncio.create_task(script.talk(p)) for p in people]
    churners = [asyncio.create_task(script.churn(p)) for p in people]
    out: dict[str, Any] = {"joined_s": round(joined_s, 1)}
    try:
        script.churning.set()
        await asyncio.sleep(args.warmup)
        await script.quiet(CALL_TIMEOUT * 2)
        out["rss_start_kb"], out["fds_start"] = sampler.read()
        print(
            f"  warmed up ({args.warmup:.0f} s): server RSS {out['rss_start_kb'] / 1024:.1f} MB, "
            f"{out['fds_start']} descriptors",
            flush=True,
        )
        script.measured = True
        meter.lap()
        script.churning.set()
        end = time.perf_counter() + args.minutes * 60
        shown = 0
        while (left := end - time.perf_counter()) > 0:
            await asyncio.sleep(min(left, args.report_every))
            shown = progress(stats, sampler, end, shown)
        await script.quiet(CALL_TIMEOUT * 2)
        out["rss_end_kb"], out["fds_end"] = sampler.read()
        out["cpu"] = meter.lap()
        script.talking = False
        script.stopped.set()
        script.churning.set()  # the churners see ``stopped`` and end
        await asyncio.gather(*talkers, *churners, return_exceptions=True)
        deadline = time.perf_counter() + args.drain
        while undelivered(stats) and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    finally:
        script.stopped.set()
        script.churning.set()
        for task in [*talkers, *churners, sampling]:
            task.cancel()
        await asyncio.gather(*talkers, *churners, sampling, return_exceptions=True)
        gc.enable()
        gc.unfreeze()
        await gather_limited([p.close for p in people], 100)
    out["rss_max_kb"], out["fds_max"] = sampler.rss_max_kb, sampler.fds_max
    return out


def progress(stats: Stats, sampler: Sampler, end: float, shown: int) -> int:
    """One line since the last: deliveries, their p99, errors, the server's RSS and fds."""
    fresh = stats.latencies[shown:]
    rss, fds = sampler.read()
    print(
        f"  {max(0.0, end - time.perf_counter()):6.0f} s left: {len(fresh)} deliveries, "
        f"p99 {percentile(fresh, 99):.1f} ms, errors {sum(stats.errors.values())}, "
        f"actions {stats.actions}, RSS {rss / 1024:.1f} MB, {fds} fds",
        flush=True,
    )
    return len(stats.latencies)


def undelivered(stats: Stats) -> bool:
    for sent in stats.sent.values():
        if sent.seq is None:
            continue
        for p in sent.room.people:
            if p.index != sent.sender and sent.seq not in p.held:
                return True
    return False


def losses(stats: Stats) -> dict[str, Any]:
    """What every participant holds at the end against what was acknowledged; the live
    deliveries a participant that was there missed: lost when its connection stayed open
    ``LIVE_LOST`` after the send, late otherwise (both as late as can be in the latencies)."""
    acked = [s for s in stats.sent.values() if s.seq is not None]
    unheld = 0
    missed_live = 0
    late = 0
    for sent in acked:
        if any(p.index != sent.sender and sent.seq not in p.held for p in sent.room.people):
            unheld += 1
        for receiver, conn in sent.expected.items():
            if receiver in sent.live:
                continue
            closed = sent.room.people[receiver].closed_at.get(conn)
            if closed is None or closed > sent.at + LIVE_LOST:
                missed_live += 1
            elif closed > sent.at + LIVE_GRACE:
                late += 1
            else:
                continue
            if sent.measured:
                stats.latencies.append(math.inf)
    lost_documents = sum(
        1
        for share in stats.shares
        if any(share.document not in p.documents for p in share.room.people)
    )
    return {
        "acked": len(acked),
        "unacked": len(stats.sent) - len(acked),
        "unheld": unheld,
        "missed_live": missed_live,
        "late_live": late,
        "lost_documents": lost_documents,
    }


async def check_database(url: str, stats: Stats) -> dict[str, Any]:
    """Every acknowledged message stored with its sequence number and client id; every shared
    document in the case file."""
    db = Database(url)
    try:
        async with db.session() as session:
            rows = await session.execute(
                select(
                    RoomMessage.meeting_id, RoomMessage.seq, RoomMessage.client_id, RoomMessage.kind
                )
            )
            stored: dict[tuple[str, int], str | None] = {}
            chat = 0
            for meeting_id, seq, client_id, kind in rows:
                stored[(str(meeting_id), seq)] = client_id
                chat += kind == MessageKind.CHAT
            shared = {s.document for s in stats.shares}
            documents = set()
            if shared:
                documents = {
                    str(d)
                    for d in await session.scalars(
                        select(Document.id).where(Document.id.in_([uuid.UUID(d) for d in shared]))
                    )
                }
    finally:
        await db.close()
    not_stored = sum(
        1
        for s in stats.sent.values()
        if s.seq is not None and stored.get((s.room.meeting_id, s.seq)) != s.client_id
    )
    return {
        "stored_chat": chat,
        "not_stored": not_stored,
        "documents_missing": len(shared - documents),
    }


async def forget_redis(url: str, prefix: str) -> int:
    """This run's own keys out of the shared Redis (nothing else is touched)."""
    redis = Redis.from_url(url)
    try:
        gone = 0
        async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
            gone += await redis.delete(key)
        return gone
    finally:
        await redis.aclose()


async def bench(args: argparse.Namespace, work: Path, stats: Stats) -> dict[str, Any]:
    json_module = fast_json()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    prefix = f"concilia-load-{os.getpid()}"
    env = ours_env(work, args.database_url, base, uuid.uuid4().hex + uuid.uuid4().hex)
    env |= {
        # `concilia serve` on a clock standing still in the meetings' slot (tests only: so
        # the environment says "test"; it changes nothing else a node does but the seal).
        "CONCILIA_ENV": "test",
        "CONCILIA_CLOCK_FIXED": SERVER_AT.isoformat(),
        "CONCILIA_REDIS_URL": args.redis_url,
        "CONCILIA_REDIS_PREFIX": prefix,
    }
    if args.pool_size is not None:
        env["CONCILIA_DATABASE_POOL_SIZE"] = str(args.pool_size)
    servers = Processes(work, env)
    results: dict[str, Any] = {}
    try:
        await create_database(args.database_url)
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT),
        ) as http:
            started = time.perf_counter()
            rooms = await build_rooms(args, env, stats, http, base, json_module)
            print(
                f"  {len(rooms)} meetings booked, {sum(len(r.people) for r in rooms)} sessions "
                f"and room tokens in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            proc, _base, _log = servers.start("concilia", "-m", "web.cli", "serve", port=port)
            results |= await drive(args, stats, rooms, proc.pid)
            results["participants"] = sum(len(r.people) for r in rooms)
            results["meetings"] = len(rooms)
        results |= losses(stats)
        results |= await check_database(args.database_url, stats)
        servers.close()
        log = tail(work / "concilia.log", 50_000_000)
        results["log_problems"] = "Traceback" in log
        if results["log_problems"]:  # the first one, to say what went wrong
            at = log.index("Traceback")
            print("  the server's log holds a traceback:\n" + log[max(0, at - 400) : at + 2500])
    finally:
        servers.close()
        with contextlib.suppress(Exception):
            await forget_redis(args.redis_url, prefix)
        if not args.keep:
            with contextlib.suppress(Exception):
                await drop_database(args.database_url)
    return results


def report(args: argparse.Namespace, stats: Stats, found: dict[str, Any]) -> int:
    latencies = stats.latencies
    errors = sum(stats.errors.values())  # an unanswered or refused message is one of them
    lost = found["unheld"] + found["not_stored"] + found["missed_live"]
    cpu = found.get("cpu", {})
    print(f"  errors: {stats.errors or 'none'}")
    for example in stats.examples:
        print(f"    {example}")
    print(f"  checks: {json.dumps({k: v for k, v in found.items() if k != 'cpu'})}")
    out = {
        "participants": found["participants"],
        "p99_ms": rounded(percentile(latencies, 99)),
        "errors": errors,
        "lost_messages": lost,
        "rss_start_mb": round(found["rss_start_kb"] / 1024, 1),
        "rss_end_mb": round(found["rss_end_kb"] / 1024, 1),
        "open_fds_start": found["fds_start"],
        "open_fds_end": found["fds_end"],
        "meetings": found["meetings"],
        "minutes": args.minutes,
        "p50_ms": rounded(percentile(latencies, 50)),
        "max_ms": rounded(max(latencies, default=math.inf)),
        "deliveries": len(latencies),
        "messages": found["acked"],
        "stored": found["stored_chat"],
        "missed_live": found["missed_live"],
        "late_live": found["late_live"],
        "lost_documents": found["lost_documents"] + found["documents_missing"],
        "reconnects": stats.actions["reconnect"],
        "leaves": stats.actions["leave"],
        "uploads": stats.actions["upload"],
        "resynced": stats.resynced,
        "rss_max_mb": round(found["rss_max_kb"] / 1024, 1),
        "open_fds_max": found["fds_max"],
        "server_cpu_pct": cpu.get("server"),
        "postgres_cpu_pct": cpu.get("postgres"),
        "client_cpu_pct": cpu.get("client"),
        "quick": args.quick,
    }
    print("RESULT " + json.dumps(out))
    bad = errors or lost or out["lost_documents"] or found["log_problems"]
    return 1 if bad else 0


def rounded(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 1)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--participants", type=int, help="1000 (90 with --quick)")
    parser.add_argument("--minutes", type=float, help="measured minutes: 10 (0.75 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a short run for CI: ~1 minute")
    parser.add_argument("--warmup", type=float, help="seconds of load before the first reading")
    parser.add_argument("--interval", type=float, help="seconds between two messages of one")
    parser.add_argument("--reconnect-every", type=float, help="mean seconds, per participant")
    parser.add_argument("--leave-every", type=float, help="mean seconds, per party")
    parser.add_argument("--upload-every", type=float, help="mean seconds, per party")
    parser.add_argument("--away-min", type=float, help="seconds a leave lasts at least")
    parser.add_argument("--away-max", type=float, help="seconds a leave lasts at most")
    parser.add_argument("--upload-kb", type=int, default=64)
    parser.add_argument("--drain", type=float, default=15.0, help="seconds for stragglers")
    parser.add_argument("--report-every", type=float, help="seconds between progress lines")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pool-size", type=int, help="CONCILIA_DATABASE_POOL_SIZE for the node")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CONCILIA_BENCH_DATABASE_URL", DEFAULT_PG),
        help="the node's PostgreSQL database, dropped and created (its name must say 'bench')",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("CONCILIA_BENCH_REDIS_URL", DEFAULT_REDIS),
        help="the node's Redis (shared: the run's keys have a prefix of their own)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the folder and the database")
    args = parser.parse_args()
    quick = args.quick
    defaults = {
        "participants": 90 if quick else 1000,
        "minutes": 0.75 if quick else 10.0,
        "warmup": 10.0 if quick else 60.0,
        "interval": 5.0 if quick else 10.0,
        "reconnect_every": 20.0 if quick else 600.0,
        "leave_every": 30.0 if quick else 900.0,
        "upload_every": 30.0 if quick else 900.0,
        "away_min": 1.0 if quick else 3.0,
        "away_max": 3.0 if quick else 15.0,
        "report_every": 15.0 if quick else 60.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.participants < 3:
        parser.error("--participants: at least 3 (one meeting)")
    if args.minutes <= 0 or args.warmup < 0 or not 0 <= args.away_min <= args.away_max:
        parser.error("--minutes must be positive, --warmup and the away times not negative")

    stats = Stats()
    with workdir("concilia-load-", args.keep) as work:
        found = run(bench(args, work, stats))
    return report(args, stats, found)


if __name__ == "__main__":
    raise SystemExit(main())
