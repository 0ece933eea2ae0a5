"""The meeting room's chat under load, against a bare python-socketio server doing only the
broadcasting. Measured from a client process of its own.

300 meetings (``--meetings``) of 3 participants each (the conciliator, the applicant, the
company's representative) talk at once: every participant says something every 5 seconds, then
faster, step by step, until the 99th percentile of the delivery latency passes 100 ms (or a
message is refused, unanswered or lost). The same load then goes, in the same run, to the peer
(``bench.chat_peer``): a python-socketio server on its defaults that puts each client in its
meeting's room and re-emits every message to it, with no sign-in, no checks and no database.

- **concilia** (``bench.chat_server``): the real application with its clock frozen at the
  meetings' slot, on PostgreSQL by default (a database of its own, created, migrated and
  filled here: companies, accounts, admitted cases, meetings booked with ``Bookings.book_in``,
  portal sessions and room tokens). Each client connects with its session cookie and room
  token; conciliators join first (opening their rooms) and admit the parties, which join
  again once admitted, as ``docs/protocol.md`` tells a client to. Every message is stored
  before it is acknowledged; the database's count is checked against the acknowledgements.
- **the load** (this process; uvloop and orjson here when installed, to leave the servers as
  much of the machine as possible): one ``socketio.AsyncClient`` per participant over
  WebSocket only. A message's text starts with its send time (``time.perf_counter``, one
  clock for the whole process); its latency is the time it reaches each of the two other
  participants of its meeting. Deliveries are counted per second. Every message must be
  acknowledged with a sequence number and reach both others exactly once.

Each step's verdict counts a delivery still missing when it is judged (``--grace`` seconds
after the step) as later than anything: a step passes when its p99 is at most 100 ms and
nothing was refused. ``max_delivered_per_s`` is the delivery rate of the last step that
passed.

    python -m bench.chat [--quick] [--meetings 300] [--base-seconds 60] [--step-seconds 20]
                         [--step-factor 1.5] [--sqlite] [--only concilia|peer] [--keep]

The last line of output is ``RESULT {json}`` (latencies in ms, rates per second, RSS in MiB).
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
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import socketio
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from bench.upload import Processes, free_port, status_kb, tail, workdir
from cases.accounts import Account, Role, Status
from cases.casefile import Case, CaseEvent
from cases.companies import Company
from cases.lifecycle import CaseStatus
from core.clock import ROME, FakeClock
from core.db import Database
from core.mail import MailStatus, OutboxMail
from core.settings import load_settings
from rooms.models import MessageKind, RoomMessage
from scheduling.bookings import CompanyCapacity
from web.context import SESSION_COOKIE
from web.migrate import upgrade
from web.services import open_services

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "/meeting"
P99_LIMIT_MS = 100.0
BASE_INTERVAL = 5.0  # seconds between two messages of one participant at the base load
MAX_RATE = 8.0  # messages a second per participant at most (the server allows 10)
SIDES = ("conciliator", "applicant", "company")
ALL_THREE = 0b111
ADMITTED_AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # a Monday
SLOT = datetime(2026, 11, 30, 9, 0, tzinfo=ROME).astimezone(UTC)  # five working days later
SERVER_AT = SLOT + timedelta(minutes=1)  # the rooms opened 16 minutes ago
MEETINGS_PER_COMPANY = 30
FILLER = "Buongiorno, confermo quanto scritto nella bolletta di conguaglio del mese scorso."
# A database of this run's own (created and dropped here), so that runs never meet.
DEFAULT_PG = f"postgresql+asyncpg://postgres@127.0.0.1:5432/concilia_bench_{os.getpid()}"
CONNECT_AT_ONCE = 24  # meetings joining at the same time
CALL_TIMEOUT = 60.0


# --- what the clients saw ---------------------------------------------------------------------


@dataclass
class Sent:
    step: int
    sender: int  # 0..2 within the meeting
    at: float
    acked_at: float | None = None
    seq: int | None = None
    error: str | None = None
    receivers: int = 0  # a bit per participant that received it
    duplicates: int = 0

    def heard(self) -> bool:
        """Whether both other participants received it."""
        others = ALL_THREE & ~(1 << self.sender)
        return self.receivers & others == others


@dataclass
class Step:
    index: int
    rate: float  # messages a second per participant
    start: float
    end: float
    latencies: list[float] = field(default_factory=list)  # ms, deliveries to the others
    acks: list[float] = field(default_factory=list)  # ms, send to acknowledgement
    sent: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # percent of one core, per process
    verdict: dict[str, Any] = field(default_factory=dict)


class Stats:
    """Every message sent in a run, its acknowledgement and its deliveries."""

    def __init__(self, participants: int) -> None:
        self.participants = participants
        self.sent: dict[str, Sent] = {}
        self.steps: list[Step] = []
        self.per_second: dict[int, int] = {}  # deliveries received, by second since t0
        self.t0 = 0.0
        self.unknown = 0
        self.dropped = 0  # connections the server closed
        self.closing = False
        self.errors: dict[str, int] = {}

    def delivered(self, client_id: str, receiver: int, text: str, now: float) -> None:
        sent = self.sent.get(client_id)
        if sent is None:
            self.unknown += 1
            return
        bit = 1 << receiver
        if sent.receivers & bit:
            sent.duplicates += 1
            return
        sent.receivers |= bit
        if receiver == sent.sender:
            return  # its own message coming back: not a delivery
        at = float(text[: text.index(" ")])
        self.steps[sent.step].latencies.append((now - at) * 1000)
        second = int(now - self.t0)
        self.per_second[second] = self.per_second.get(second, 0) + 1

    def acked(self, client_id: str, answer: Any) -> None:
        now = time.perf_counter()
        sent = self.sent[client_id]
        sent.acked_at = now
        self.steps[sent.step].acks.append((now - sent.at) * 1000)
        if isinstance(answer, dict) and answer.get("ok") and isinstance(answer.get("seq"), int):
            sent.seq = answer["seq"]
            return
        code = str(answer.get("error", {}).get("code")) if isinstance(answer, dict) else "answer"
        sent.error = code
        self.errors[code] = self.errors.get(code, 0) + 1

    def outstanding(self) -> int:
        return sum(1 for s in self.sent.values() if s.acked_at is None or not s.heard())


# --- the clients ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seat:
    """What one participant needs to connect (the peer needs only the meeting)."""

    meeting: int
    side: int  # index in SIDES
    meeting_id: str
    account_id: str = ""
    session: str = ""
    token: str = ""


class Client:
    def __init__(self, stats: Stats, seat: Seat, json_module: ModuleType | None) -> None:
        self.stats = stats
        self.seat = seat
        self.sio = socketio.AsyncClient(reconnection=False, json=json_module)
        self.admitted = asyncio.Event()
        self.count = 0
        self.phase = random.random()  # noqa: S311 - spreads the senders over an interval
        self.sio.on("message", self.on_message, namespace=NAMESPACE)
        self.sio.on("me", self.on_me, namespace=NAMESPACE)
        self.sio.on("disconnect", self.on_disconnect, namespace=NAMESPACE)

    def on_message(self, data: Any) -> None:
        now = time.perf_counter()
        client_id = data.get("client_id")
        if client_id is not None:  # the room's own notices have none
            self.stats.delivered(client_id, self.seat.side, data["text"], now)

    def on_disconnect(self, *_reason: Any) -> None:
        if not self.stats.closing:  # the server closed it
            self.stats.dropped += 1

    def on_me(self, data: Any) -> None:
        if isinstance(data, dict) and data.get("state") == "admitted":
            self.admitted.set()

    async def connect(self, url: str, origin: str | None) -> None:
        seat = self.seat
        headers = {}
        if seat.session:
            headers["Cookie"] = f"{SESSION_COOKIE}={seat.session}"
        if origin is not None:
            headers["Origin"] = origin
        auth = {"token": seat.token} if seat.token else {"meeting": seat.meeting_id}
        await self.sio.connect(
            url,
            namespaces=[NAMESPACE],
            auth=auth,
            headers=headers,
            transports=["websocket"],
            wait_timeout=CALL_TIMEOUT,
        )

    async def call(self, event: str, data: Any) -> dict[str, Any]:
        answer = await self.sio.call(event, data, namespace=NAMESPACE, timeout=CALL_TIMEOUT)
        if not isinstance(answer, dict) or not answer.get("ok"):
            raise RuntimeError(f"{event} refused: {answer}")
        return answer

    async def say(self, step: int) -> None:
        self.count += 1
        seat = self.seat
        client_id = f"m{seat.meeting}-p{seat.side}-{self.count}"
        now = time.perf_counter()
        self.stats.sent[client_id] = Sent(step, seat.side, now)
        self.stats.steps[step].sent += 1
        await self.sio.emit(
            "say",
            {"client_id": client_id, "text": f"{now:.6f} {FILLER}"},
            namespace=NAMESPACE,
            callback=functools.partial(self.stats.acked, client_id),
        )

    async def talk(self, steps: list[Step], stopped: asyncio.Event) -> None:
        """Send on the plan: at each step's rate, at this client's own phase of the interval."""
        for step in steps:
            interval = 1.0 / step.rate
            at = step.start + self.phase * interval
            while at < step.end:
                delay = at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if stopped.is_set():
                    return
                await self.say(step.index)
                at += interval

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()
        http = self.sio.eio.http
        if http is not None and not http.closed:
            await http.close()


async def gather_limited(jobs: Sequence[Callable[[], Awaitable[None]]], limit: int) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(one(job) for job in jobs))


async def enter_ours(clients: list[list[Client]], url: str, origin: str) -> None:
    """Conciliators first (opening the room), then each party: lobby, admitted, joined again."""

    async def meeting(group: list[Client]) -> None:
        chair, parties = group[0], group[1:]
        await chair.connect(url, origin)
        await chair.call("join", {})
        for party in parties:
            await party.connect(url, origin)
            lobby = await party.call("join", {})
            if lobby["snapshot"]["me"]["state"] != "waiting":
                raise RuntimeError(f"expected the lobby: {lobby['snapshot']['me']}")
            await chair.call("admit", {"account": party.seat.account_id})
            await asyncio.wait_for(party.admitted.wait(), CALL_TIMEOUT)
            again = await party.call("join", {})
            if again["snapshot"]["me"]["state"] != "admitted":
                raise RuntimeError(f"not admitted: {again['snapshot']['me']}")

    await gather_limited([functools.partial(meeting, g) for g in clients], CONNECT_AT_ONCE)


async def enter_peer(clients: list[list[Client]], url: str) -> None:
    jobs = [functools.partial(c.connect, url, None) for group in clients for c in group]
    await gather_limited(jobs, CONNECT_AT_ONCE * 3)


# --- CPU from outside -------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU time of ``pid`` so far, apart (``/proc/<pid>/stat``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (``/proc/<pid>/stat``)."""
    return sum(cpu_split(pid))


def postgres_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    found.append(int(entry.name))
    return found


class CpuMeter:
    """CPU used between two readings by the server, this process and PostgreSQL."""

    def __init__(self, server_pid: int, with_postgres: bool) -> None:
        self.pids = {"server": server_pid, "client": os.getpid()}
        self.with_postgres = with_postgres
        self.last = self.read()

    def read(self) -> dict[str, float]:
        values = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        if self.with_postgres:
            values["postgres"] = sum(cpu_seconds(pid) for pid in postgres_pids())
        values["at"] = time.perf_counter()
        return values

    def lap(self) -> dict[str, float]:
        now = self.read()
        span = max(now["at"] - self.last["at"], 1e-6)
        used = {k: float(round(100 * (now[k] - self.last[k]) / span)) for k in now if k != "at"}
        self.last = now
        return used


# --- one run against one server ---------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.inf
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def judge(stats: Stats, step: Step) -> dict[str, Any]:
    """The step's numbers; a delivery still missing counts as later than any other."""
    expected = 2 * step.sent
    missing = max(0, expected - len(step.latencies))
    values = step.latencies + [math.inf] * missing
    seconds = [
        stats.per_second.get(s, 0)
        for s in range(int(step.start - stats.t0), int(step.end - stats.t0))
    ]
    p99 = percentile(values, 99)
    errors = sum(1 for s in stats.sent.values() if s.step == step.index and s.error is not None)
    return {
        "rate": step.rate,
        "sent_per_s": step.sent / (step.end - step.start),
        "delivered_per_s": sum(seconds) / max(len(seconds), 1),
        "p50_ms": percentile(values, 50),
        "p99_ms": p99,
        "max_ms": max(values) if values else math.inf,
        "ack_p50_ms": percentile(step.acks, 50),
        "ack_p99_ms": percentile(step.acks, 99),
        "missing": missing,
        "errors": errors,
        "dropped": stats.dropped,
        "passed": p99 <= P99_LIMIT_MS and errors == 0 and stats.dropped == 0 and step.sent > 0,
    }


def plan(args: argparse.Namespace, start: float) -> list[Step]:
    steps = [Step(0, 1.0 / BASE_INTERVAL, start, start + args.base_seconds)]
    rate = steps[0].rate
    while len(steps) <= args.max_steps:
        rate = min(rate * args.step_factor, MAX_RATE)
        begin = steps[-1].end
        steps.append(Step(len(steps), round(rate, 3), begin, begin + args.step_seconds))
        if rate >= MAX_RATE:
            break
    return steps


async def drive(
    args: argparse.Namespace,
    stats: Stats,
    clients: list[Client],
    meter: CpuMeter,
) -> None:
    """The base load, then faster steps until one fails; each step judged ``grace`` after."""
    stats.t0 = math.floor(time.perf_counter()) + 2.0
    steps = plan(args, stats.t0)
    stats.steps = steps
    stopped = asyncio.Event()
    talkers = [asyncio.create_task(c.talk(steps, stopped)) for c in clients]
    await asyncio.sleep(stats.t0 - time.perf_counter())
    meter.lap()
    try:
        for step in steps:
            await asyncio.sleep(max(0.0, step.end - time.perf_counter()))
            step.cpu = meter.lap()
            await asyncio.sleep(args.grace)
            step.verdict = judge(stats, step)
            show_step(step)
            if not step.verdict["passed"]:
                break
    finally:
        stopped.set()
        await asyncio.gather(*talkers, return_exceptions=True)
    # What is still on its way gets a while to arrive; what does not is lost.
    deadline = time.perf_counter() + args.drain
    while stats.outstanding() and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)


def show_step(step: Step) -> None:
    v = step.verdict
    cpu = " ".join(f"{k} {val}%" for k, val in step.cpu.items())
    print(
        f"  step {step.index:>2}  {v['rate']:>6.3f}/s each  sent {v['sent_per_s']:>7.1f}/s  "
        f"delivered {v['delivered_per_s']:>8.1f}/s  p50 {v['p50_ms']:>7.1f}  "
        f"p99 {v['p99_ms']:>8.1f}  max {v['max_ms']:>8.1f} ms  ack p99 {v['ack_p99_ms']:>7.1f}  "
        f"errors {v['errors']}  missing {v['missing']}  dropped {v['dropped']}  [{cpu}]"
        + ("" if v["passed"] else "  <- over"),
        flush=True,
    )


async def run_load(
    args: argparse.Namespace,
    name: str,
    url: str,
    seats: list[list[Seat]],
    server_pid: int,
    origin: str | None,
    json_module: ModuleType | None,
) -> tuple[Stats, dict[str, Any]]:
    stats = Stats(sum(len(g) for g in seats))
    groups = [[Client(stats, seat, json_module) for seat in group] for group in seats]
    clients = [c for g in groups for c in g]
    try:
        started = time.perf_counter()
        if origin is not None:
            await enter_ours(groups, url, origin)
        else:
            await enter_peer(groups, url)
        joined_s = time.perf_counter() - started
        print(f"{name}: {len(clients)} participants in the room in {joined_s:.1f} s", flush=True)
        await asyncio.sleep(args.settle)
        meter = CpuMeter(server_pid, with_postgres=origin is not None and not args.sqlite)
        # The instrument must not stall: a full collection over 900 clients' objects takes
        # hundreds of milliseconds here, so this process does not collect while it measures.
        gc.collect()
        gc.freeze()
        gc.disable()
        try:
            await drive(args, stats, clients, meter)
        finally:
            gc.enable()
            gc.unfreeze()
        rss = status_kb(server_pid, "VmRSS")
    finally:
        stats.closing = True
        await gather_limited([c.close for c in clients], 100)
    return stats, {"joined_s": joined_s, "rss_kb": rss}


def summary(stats: Stats) -> dict[str, Any]:
    judged = [s for s in stats.steps if s.verdict]
    passed = [s for s in judged if s.verdict["passed"]]
    last = passed[-1] if passed else None
    base = judged[0].verdict if judged else {}
    lost = sum(1 for s in stats.sent.values() if s.error is None and not s.heard())
    return {
        "base": base,
        "last_passed": last.verdict if last else None,
        "first_failed": next((s.verdict for s in judged if not s.verdict["passed"]), None),
        "max_delivered_per_s": round(last.verdict["delivered_per_s"], 1) if last else 0.0,
        "max_rate": last.rate if last else 0.0,
        "sent": len(stats.sent),
        "acked": sum(1 for s in stats.sent.values() if s.seq is not None),
        "unanswered": sum(1 for s in stats.sent.values() if s.acked_at is None),
        "refused": dict(stats.errors),
        "dropped": stats.dropped,
        "lost": lost,
        "duplicates": sum(s.duplicates for s in stats.sent.values()),
        "unknown": stats.unknown,
    }


# --- concilia's world ---------------------------------------------------------------------------


async def create_database(url: str) -> None:
    """Drop and create the bench's own PostgreSQL database (its name must say "bench")."""
    parsed = make_url(url)
    name = parsed.database or ""
    if "bench" not in name:
        raise SystemExit(f"refusing to drop and create {name!r}: the name must contain 'bench'")
    admin = parsed.set(drivername="postgresql", database="postgres")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False), timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(url: str) -> None:
    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False), timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
    finally:
        await conn.close()


class Laps:
    """How long each part of a setup took."""

    def __init__(self) -> None:
        self.at = time.perf_counter()
        self.laps: list[tuple[str, float]] = []

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.laps.append((name, now - self.at))
        self.at = now

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.laps)


def person(index: int, role: Role, company: uuid.UUID | None, now: datetime) -> Account:
    username = f"bench.{role.value}.{index:04d}"
    return Account(
        id=uuid.uuid4(),
        username=username,
        username_key=username,
        email=f"{username}@example.org",
        email_verified_at=now,
        first_name="Bench",
        last_name=f"{role.value.title()} {index}",
        tax_code="RSSMRA85T10A562S",
        mobile=f"+39 333 {index:07d}",
        role=role,
        company_id=company,
        status=Status.ACTIVE,
        created_at=now,
        approved_at=now,
    )


async def build_world(meetings: int, env: dict[str, str]) -> list[list[Seat]]:
    """Companies, accounts, admitted cases, meetings booked at ``SLOT``, then for each
    participant a portal session and a room token as of ``SERVER_AT``; with the server's own
    settings (``env``)."""
    settings = load_settings(
        **{
            k.removeprefix("CONCILIA_").lower(): v
            for k, v in env.items()
            if k.startswith("CONCILIA_")
        }
    )
    clock = FakeClock(ADMITTED_AT)
    services = await open_services(settings, clock)
    lap = Laps()
    try:
        await upgrade(services.db)
        lap("migrated")
        people: list[tuple[Account, Account, Account]] = []
        cases: list[uuid.UUID] = []
        async with services.db.session() as session:
            companies = []
            for c in range(math.ceil(meetings / MEETINGS_PER_COMPANY)):
                company = Company(
                    id=uuid.uuid4(),
                    name=f"Bench Energia {c}",
                    name_key=f"bench energia {c}",
                    vat_number="01234560017",
                    sectors="electricity",
                    active=True,
                    created_at=clock.now(),
                )
                session.add(company)
                companies.append(company.id)
            await session.flush()
            for company_id in companies:
                session.add(CompanyCapacity(company_id=company_id, per_slot=MEETINGS_PER_COMPANY))
            for i in range(meetings):
                company_id = companies[i // MEETINGS_PER_COMPANY]
                trio = (
                    person(i, Role.CONCILIATOR, None, clock.now()),
                    person(i, Role.CUSTOMER, None, clock.now()),
                    person(i, Role.COMPANY_REP, company_id, clock.now()),
                )
                session.add_all(trio)
                people.append(trio)
            await session.flush()
            for i, (_k, customer, _rep) in enumerate(people):
                case = Case(
                    id=uuid.uuid4(),
                    code=f"BENCH-2026-{i:06d}",
                    status=CaseStatus.ADMITTED,
                    created_by_id=customer.id,
                    customer_id=customer.id,
                    company_id=companies[i // MEETINGS_PER_COMPANY],
                    sector="electricity",
                    created_at=clock.now(),
                    submitted_at=clock.now(),
                    answers={},
                    customer_name=customer.full_name,
                    meeting_mode="chat",
                )
                session.add(case)
                cases.append(case.id)
            await session.flush()
            for case_id in cases:
                for kind in ("submit", "admit"):
                    session.add(
                        CaseEvent(
                            case_id=case_id,
                            at=clock.now(),
                            actor="desk",
                            kind=kind,
                            from_status=None,
                            to_status=CaseStatus.ADMITTED,
                        )
                    )
            await session.commit()
        lap("rows")
        # Booked half an hour before the slot: the reminders' times have passed.
        clock.set(SLOT - timedelta(minutes=30))
        meeting_ids = []
        async with services.db.session() as session:
            calendar = await services.bookings.calendar(session)
            for case_id, (conciliator, _c, _r) in zip(cases, people, strict=True):
                meeting = await services.bookings.book_in(
                    session, calendar, None, case_id, SLOT, conciliator.id
                )
                meeting_ids.append(meeting.id)
            await session.commit()
        lap("booked")
        # The invitations and alerts queued: kept, as the outbox keeps them with no SMTP, now
        # rather than by the server's mail worker during the measure.
        async with services.db.session() as session:
            await session.execute(
                update(OutboxMail)
                .where(OutboxMail.status == MailStatus.QUEUED)
                .values(status=MailStatus.KEPT, sent_at=clock.now(), attempts=1)
            )
            await session.commit()
        clock.set(SERVER_AT)
        seats = []
        for i, (meeting_id, trio) in enumerate(zip(meeting_ids, people, strict=True)):
            group = []
            for side, account in enumerate(trio):
                session_token, _data = await services.sessions.create(account.id, mfa_pending=False)
                group.append(
                    Seat(
                        meeting=i,
                        side=side,
                        meeting_id=str(meeting_id),
                        account_id=str(account.id),
                        session=session_token,
                        token=services.room_tokens.issue(meeting_id, account.id, SERVER_AT),
                    )
                )
            seats.append(group)
        lap("sessions")
        print(f"  setup: {lap}", flush=True)
        return seats
    finally:
        await services.close()


async def stored_chat(database_url: str) -> int:
    db = Database(database_url)
    try:
        async with db.session() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(RoomMessage)
                .where(RoomMessage.kind == MessageKind.CHAT)
            )
            return int(count or 0)
    finally:
        await db.close()


# --- the run ------------------------------------------------------------------------------------


def fast_json() -> ModuleType | None:
    """orjson behind the ``dumps``/``loads`` python-socketio calls, when installed."""
    try:
        import orjson
    except ImportError:
        return None
    module = ModuleType("bench_orjson")

    def dumps(value: Any, **_options: Any) -> str:
        encoded: bytes = orjson.dumps(value)
        return encoded.decode()

    module.dumps = dumps  # type: ignore[attr-defined]
    module.loads = orjson.loads  # type: ignore[attr-defined]
    return module


def ours_env(work: Path, database_url: str, public_url: str, secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCILIA_")}
    path = env.get("PYTHONPATH")
    env |= {
        "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""),
        "CONCILIA_ENV": "prod",
        "CONCILIA_VAR_DIR": str(work / "var"),
        "CONCILIA_DATABASE_URL": database_url,
        "CONCILIA_SECRET_KEY": secret,
        "CONCILIA_PUBLIC_URL": public_url,
        "CONCILIA_REDIS_URL": "",
        "CONCILIA_SMTP_HOST": "",
        "CONCILIA_LOG_LEVEL": "WARNING",
    }
    return env


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isinf(value) else round(value, 1)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


async def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    json_module = fast_json()
    results: dict[str, Any] = {}
    database_url = (
        f"sqlite+aiosqlite:///{work / 'bench.sqlite3'}" if args.sqlite else args.database_url
    )
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    env = ours_env(work, database_url, public_url, uuid.uuid4().hex + uuid.uuid4().hex)
    servers = Processes(work, env)
    try:
        if "concilia" in args.only:
            if not args.sqlite:
                await create_database(database_url)
            started = time.perf_counter()
            seats = await build_world(args.meetings, env)
            print(
                f"concilia: {args.meetings} meetings booked, {3 * args.meetings} sessions and "
                f"room tokens in {time.perf_counter() - started:.1f} s "
                f"({'SQLite' if args.sqlite else 'PostgreSQL'})",
                flush=True,
            )
            proc, _base, _log = servers.start(
                "concilia",
                "-m",
                "bench.chat_server",
                "--at",
                SERVER_AT.isoformat(),
                port=port,
            )
            stats, info = await run_load(
                args, "concilia", public_url, seats, proc.pid, public_url, json_module
            )
            results["concilia"] = (
                summary(stats) | info | {"stored": await stored_chat(database_url)}
            )
            results["concilia"]["log_problems"] = "Traceback" in tail(
                work / "concilia.log", 1_000_000
            )
            servers.close()
        if "peer" in args.only:
            peer_port = free_port()
            proc, _base, _log = servers.start("peer", "-m", "bench.chat_peer", port=peer_port)
            seats = [[Seat(m, s, f"meeting-{m}") for s in range(3)] for m in range(args.meetings)]
            stats, info = await run_load(
                args, "peer", f"http://127.0.0.1:{peer_port}", seats, proc.pid, None, json_module
            )
            results["peer"] = summary(stats) | info
    finally:
        servers.close()
        if not args.sqlite and "concilia" in args.only and not args.keep:
            with contextlib.suppress(Exception):
                await drop_database(database_url)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chat", description=__doc__)
    parser.add_argument("--meetings", type=int, help="meetings of 3 (300; 100 with --quick)")
    parser.add_argument("--base-seconds", type=float, default=60.0)
    parser.add_argument("--step-seconds", type=float, default=20.0)
    parser.add_argument("--step-factor", type=float, default=1.5)
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--grace", type=float, default=2.0, help="seconds before judging a step")
    parser.add_argument("--drain", type=float, default=15.0, help="seconds to wait for stragglers")
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds after joining")
    parser.add_argument(
        "--quick", action="store_true", help="100 meetings, short phases: about two minutes"
    )
    parser.add_argument("--sqlite", action="store_true", help="concilia on SQLite instead")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CONCILIA_BENCH_DATABASE_URL", DEFAULT_PG),
        help="concilia's PostgreSQL database, dropped and created (its name must say 'bench')",
    )
    parser.add_argument("--only", choices=("concilia", "peer"), action="append")
    parser.add_argument("--keep", action="store_true", help="keep the folder and the database")
    args = parser.parse_args()
    args.only = tuple(args.only or ("concilia", "peer"))
    if args.quick:
        args.base_seconds, args.step_seconds, args.step_factor = 10.0, 5.0, 2.0
        args.drain, args.settle = 5.0, 1.0
    if args.meetings is None:
        args.meetings = 100 if args.quick else 300

    with workdir("concilia-chat-", args.keep) as work:
        results = run(bench(args, work))
    return report(args, results)


def run(main_coroutine: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """The load on uvloop when installed: the clients' CPU is the servers' headroom."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main_coroutine)
    return uvloop.run(main_coroutine)


def report(args: argparse.Namespace, results: dict[str, Any]) -> int:
    ours, peer = results.get("concilia"), results.get("peer")
    for name, found in results.items():
        print(f"{name}: {json.dumps(rounded(found))}")
    out: dict[str, Any] = {"participants": 3 * args.meetings}
    if ours is not None:
        base = ours["base"]
        out |= {
            "p50_ms": rounded(base.get("p50_ms")),
            "p99_ms": rounded(base.get("p99_ms")),
            "max_delivered_per_s": ours["max_delivered_per_s"],
        }
    if peer is not None:
        out["peer_max_delivered_per_s"] = peer["max_delivered_per_s"]
        out["peer_p99_ms"] = rounded(peer["base"].get("p99_ms"))
    if ours is not None and peer is not None:
        out["ratio"] = round(
            ours["max_delivered_per_s"] / max(peer["max_delivered_per_s"], 1e-9), 2
        )
    if ours is not None:
        out["rss_mb"] = round((ours["rss_kb"] or 0) / 1024, 1)
        out["database"] = "sqlite" if args.sqlite else "postgresql"
        out["stored"] = ours["stored"]
        out["acked"] = ours["acked"]
        out["lost"] = ours["lost"]
    if peer is not None:
        out["peer_rss_mb"] = round((peer["rss_kb"] or 0) / 1024, 1)
    out["quick"] = args.quick
    print("RESULT " + json.dumps(out))
    ok = ours is None or (
        ours["stored"] == ours["acked"] and not ours["log_problems"] and ours["duplicates"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
