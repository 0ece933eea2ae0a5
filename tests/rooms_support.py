"""Socket.IO clients of the meeting room for tests: a real ``socketio.AsyncClient`` connected to
the test server (or to a served node) with a participant's session cookie and room token; the
``meet`` fixture (a meeting whose room just opened, its three participants signed in) and what
a meeting leaves behind (the agreement codes mailed, the minutes filed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import socketio
from sqlalchemy import select

from cases.documents import Category, Document
from rooms.models import Room, RoomMessage
from scheduling.bookings import Meeting
from signaling.server import Signaling
from tests.support import Browser, Env, registered, sign_in, staff_sign_in
from tests.worlds import FIRST, World, rome
from web.app import SIGNALING

ORIGIN = "http://concilia.test"


class RoomClient:
    """One participant's Socket.IO client of the meeting room at ``url``: a real
    ``socketio.AsyncClient`` (a new one at each connection) sending the portal session's
    ``cookie`` and a room token from ``fetch_token`` (given the server's URL), with every event it
    received across its connections; ``patience`` bounds the connection and each wait."""

    def __init__(
        self,
        url: str,
        cookie: Callable[[], str],
        fetch_token: Callable[[str], Awaitable[str]],
        *,
        patience: float = 5,
    ) -> None:
        self.url = url
        self.cookie = cookie
        self.fetch_token = fetch_token
        self.patience = patience
        self.events: list[tuple[str, Any]] = []
        self.refusals: list[Any] = []  # what each refused handshake said (connect_error)
        self.sio: Any = None
        self.disconnected = asyncio.Event()

    @property
    def sid(self) -> str:
        return str(self.sio.get_sid(namespace="/meeting"))

    async def token(self) -> str:
        return await self.fetch_token(self.url)

    async def connect(
        self, token: str | None = None, origin: str = ORIGIN, url: str | None = None
    ) -> None:
        """Connect (to ``url`` from now on, when given: another server of the same room)."""
        if url is not None:
            self.url = url
        auth = {"token": token if token is not None else await self.token()}
        await self.close()  # a connection lost with its server: a new client, the same events
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
        await self.sio.connect(
            self.url,
            namespaces=["/meeting"],
            auth=auth,
            headers={"Cookie": self.cookie(), "Origin": origin},
            transports=["websocket"],
            wait_timeout=self.patience,
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

    async def wait_for(
        self,
        event: str,
        where: Callable[[Any], bool] = lambda _d: True,
        patience: float | None = None,
    ) -> Any:
        """The first ``event`` received (now or within the client's ``patience`` unless another
        is given) whose data satisfies ``where``."""
        async with asyncio.timeout(self.patience if patience is None else patience):
            while True:
                for name, data in self.events:
                    if name == event and where(data):
                        return data
                await asyncio.sleep(0.02)

    def received(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    def seqs(self) -> list[int]:
        """The sequence numbers of the chat messages received."""
        return [m["seq"] for m in self.received("message")]

    async def close(self) -> None:
        if self.sio is None:
            return
        with contextlib.suppress(Exception):  # its server may be gone
            if self.sio.connected:
                await self.sio.disconnect()
        http = self.sio.eio.http
        if http is not None and not http.closed:
            await http.close()  # left open by a refused connection


def browser_client(env: Env, browser: Browser, meeting_id: uuid.UUID) -> RoomClient:
    """A client of the test server with ``browser``'s cookies, fetching its tokens as it does."""

    def cookie() -> str:
        return "; ".join(f"{c.key}={c.value}" for c in browser.client.session.cookie_jar)

    async def token(_url: str) -> str:
        page = await browser.get(f"/meetings/{meeting_id}/token")
        assert page.status == 200, page.text
        return str(json.loads(page.text)["token"])

    return RoomClient(str(env.client.server.make_url("/")).rstrip("/"), cookie, token)


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
        found = browser_client(self.world.env, browser, self.meeting.id)
        self.clients.append(found)
        return found

    def namespace(self) -> Signaling:
        """The application's ``/meeting`` namespace (its sweeps, its connections)."""
        app = self.world.env.client.app
        assert app is not None
        return app[SIGNALING]

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


async def said_while_away(meet: Meet, author: uuid.UUID, count: int) -> list[int]:
    """``count`` chat messages of ``author`` stored straight in the room (as many as the
    rate limit would never let one client say quickly); returns their seqs."""
    svc = meet.world.env.services
    async with svc.db.session() as session:
        room = await session.get(Room, meet.meeting.id, with_for_update=True)
        assert room is not None
        seqs = list(range(room.seq + 1, room.seq + 1 + count))
        session.add_all(
            RoomMessage(
                meeting_id=meet.meeting.id,
                seq=seq,
                author_id=author,
                kind="chat",
                body=f"mentre eri via {seq}",
                at=svc.clock.now(),
            )
            for seq in seqs
        )
        room.seq = seqs[-1]
        await session.commit()
    return seqs
