"""Socket.IO clients of the meeting room for tests: a real ``socketio.AsyncClient`` connected to
the test server with a participant's session cookie and room token; the ``meet`` fixture (a
meeting whose room just opened, its three participants signed in) and what a meeting leaves
behind (the agreement codes mailed, the minutes filed)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import socketio
from sqlalchemy import select

from cases.documents import Category, Document
from scheduling.bookings import Meeting
from tests.support import Browser, Env, registered, sign_in, staff_sign_in
from tests.worlds import FIRST, World, rome

ORIGIN = "http://concilia.test"


class RoomClient:
    def __init__(self, env: Env, browser: Browser, meeting_id: uuid.UUID) -> None:
        self.env = env
        self.browser = browser
        self.meeting_id = meeting_id
        self.events: list[tuple[str, Any]] = []
        self.refusals: list[Any] = []  # what each refused handshake said (connect_error)
        self.sio = socketio.AsyncClient(reconnection=False)
        self.disconnected = asyncio.Event()

        async def any_event(event: str, data: Any = None) -> None:
            self.events.append((event, data))

        async def gone(*_args: Any) -> None:
            self.disconnected.set()

        async def refused(data: Any = None) -> None:
            self.refusals.append(data)

        self.sio.on("*", any_event, namespace="/meeting")
        self.sio.on("connect_error", refused, namespace="/meeting")
        self.sio.on("disconnect", gone, namespace="/meeting")

    @property
    def url(self) -> str:
        return str(self.env.client.server.make_url("/")).rstrip("/")

    async def token(self) -> str:
        page = await self.browser.get(f"/meetings/{self.meeting_id}/token")
        assert page.status == 200, page.text
        return str(json.loads(page.text)["token"])

    def cookie(self) -> str:
        jar = self.browser.client.session.cookie_jar
        return "; ".join(f"{c.key}={c.value}" for c in jar)

    async def connect(self, token: str | None = None, origin: str = ORIGIN) -> None:
        await self.sio.connect(
            self.url,
            namespaces=["/meeting"],
            auth={"token": token if token is not None else await self.token()},
            headers={"Cookie": self.cookie(), "Origin": origin},
            transports=["websocket"],
            wait_timeout=5,
        )

    async def call(self, event: str, data: Any = None) -> dict[str, Any]:
        answer = await self.sio.call(event, data, namespace="/meeting", timeout=30)
        assert isinstance(answer, dict)
        return answer

    async def join(self, after: int | None = None) -> dict[str, Any]:
        answer = await self.call("join", {} if after is None else {"after": after})
        assert answer["ok"], answer
        snapshot: dict[str, Any] = answer["snapshot"]
        return snapshot

    async def say(self, text: str, client_id: str | None = None) -> dict[str, Any]:
        return await self.call("say", {"client_id": client_id or uuid.uuid4().hex, "text": text})

    async def wait_for(self, event: str, where: Callable[[Any], bool] = lambda _d: True) -> Any:
        """The first ``event`` received (now or within 5 s) whose data satisfies ``where``."""
        async with asyncio.timeout(5):
            while True:
                for name, data in self.events:
                    if name == event and where(data):
                        return data
                await asyncio.sleep(0.02)

    def received(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()
        http = self.sio.eio.http
        if http is not None and not http.closed:
            await http.close()  # left open by a refused connection


@dataclass
class Meet:
    world: World
    meeting: Meeting
    case_id: uuid.UUID
    customer: Browser
    rep: Browser
    conciliator: Browser
    clients: list[RoomClient]

    def client(self, browser: Browser) -> RoomClient:
        found = RoomClient(self.world.env, browser, self.meeting.id)
        self.clients.append(found)
        return found

    async def ids(self) -> dict[str, uuid.UUID]:
        accounts = self.world.env.services.accounts
        found = {}
        for name in ("cliente", "rep", "conciliatore1"):
            account = await accounts.by_username(name)
            assert account is not None
            found[name] = account.id
        return found


@pytest.fixture
async def meet(world: World) -> AsyncIterator[Meet]:
    env = world.env
    svc = env.services
    await registered(env, "rep", kind="company_rep", company_id=str(world.company_id))
    rep_account = await svc.accounts.by_username("rep")
    assert rep_account is not None
    await svc.accounts.do_activate(rep_account.id)
    case_id = await world.admitted_case()
    meeting = await svc.bookings.do_book(world.scheduler, case_id, rome(FIRST, 9), world.k1.id)
    env.clock.set(rome(FIRST, 8, 46))  # the room opened a minute ago
    customer = await env.new_browser()
    assert (await sign_in(customer, "cliente", "Lampada-Verde-42")).status == 303
    rep = await env.new_browser()
    assert (await sign_in(rep, "rep", "Lampada-Verde-42")).status == 303
    conciliator = await env.new_browser()
    await staff_sign_in(env, conciliator, "conciliatore1")
    found = Meet(world, meeting, case_id, customer, rep, conciliator, [])
    yield found
    for one in found.clients:
        await one.close()


async def code_for(meet: Meet, email: str) -> str:
    """The code in the latest agreement-code mail to ``email``."""
    for mail in reversed(await meet.world.env.mails(email)):
        found = re.search(r"^ {4}([0-9]{6})$", mail.body_text, re.M)
        if found:
            return found.group(1)
    raise AssertionError(f"no code mailed to {email}")


async def minutes_of(meet: Meet) -> Document:
    """The minutes filed in the meeting's case file (drawn up just after closing: waited for)."""
    for _ in range(300):
        async with meet.world.env.services.db.session() as session:
            found = await session.scalar(
                select(Document).where(
                    Document.case_id == meet.case_id, Document.category == Category.MINUTES
                )
            )
        if found is not None:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError("no minutes filed")


async def admitted(meet: Meet, *browsers: Browser) -> tuple[RoomClient, list[RoomClient]]:
    """The conciliator in the room and each party admitted, all joined."""
    chair = meet.client(meet.conciliator)
    await chair.connect()
    await chair.join()
    parties = []
    for browser in browsers:
        party = meet.client(browser)
        await party.connect()
        lobby = await party.join()
        assert lobby["me"]["state"] == "waiting"
        assert (await chair.call("admit", {"account": lobby["me"]["id"]}))["ok"]
        await party.wait_for("me", lambda d: d["state"] == "admitted")
        parties.append(party)
        assert (await party.join())["me"]["state"] == "admitted"
    return chair, parties
