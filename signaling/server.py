"""The ``/meeting`` Socket.IO namespace: authentication, limits, and the room's events.

A connection is accepted only from the service's own origin, with a live portal session and a
room token for the same account (``signaling.tokens``); the token names the meeting. Every event
is then checked in this order: the connection is known, its rate is within limits, the payload
matches its model exactly (``signaling.protocol``), and ``rooms.Rooms`` checks again, against
the database, that the account still takes part and may do this. Answers are acks:
``{"ok": true, …}`` or ``{"ok": false, "error": {"code", "params"}}``.

This module implements the room's ``Broadcaster``: audiences are Socket.IO rooms named
``<meeting>:<audience>``, entered by each connection as its member's state allows. With
``CONCILIA_REDIS_URL`` set, python-socketio's Redis manager (JSON messages) carries emits, room
changes and disconnections to whichever node holds the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
import socketio
from aiohttp import web
from pydantic import BaseModel, ValidationError

from core.errors import ConciliaError, ErrorCode, UserError
from rooms.room import CONCILIATOR, IN, Emit, Rooms, side_audience
from signaling import protocol as p
from signaling.presence import LocalPresence, Presence, RedisPresence
from signaling.tokens import RoomTokens

log = logging.getLogger(__name__)
NAMESPACE = "/meeting"
FRAME_MAX = 64 * 1024  # bytes of one Socket.IO frame; larger ones close the connection
RATE_PER_SECOND = 10.0  # events a connection may send, sustained
RATE_BURST = 20.0
FLOOD_LIMIT = 50  # events refused for rate in a row before the connection is closed
ENDED_GRACE_SECONDS = 1.0
SWEEP_SECONDS = 5.0  # how soon a disabled account or a revoked delegation loses its connections
MEMBER_AUDIENCES = (IN, CONCILIATOR, side_audience("applicant"), side_audience("company"))


def room_name(meeting_id: uuid.UUID, audience: str) -> str:
    return f"{meeting_id}:{audience}"


@dataclass
class Bucket:
    """A token bucket: ``RATE_BURST`` events at once, ``RATE_PER_SECOND`` sustained."""

    tokens: float = RATE_BURST
    at: float = field(default_factory=time.monotonic)
    refused: int = 0

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(RATE_BURST, self.tokens + (now - self.at) * RATE_PER_SECOND)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.refused = 0
            return True
        self.refused += 1
        return False


@dataclass
class Connection:
    account_id: uuid.UUID
    meeting_id: uuid.UUID
    bucket: Bucket = field(default_factory=Bucket)
    entered: bool = False


def error(code: ErrorCode | str, **params: Any) -> dict[str, Any]:
    return {"ok": False, "error": {"code": str(code), "params": params}}


Handler = Callable[[str, Connection, Any], Awaitable[dict[str, Any] | None]]


class Signaling(socketio.AsyncNamespace):  # type: ignore[misc]
    """The namespace and the room's broadcaster."""

    def __init__(
        self,
        rooms: Callable[[], Rooms],
        account_of: Callable[[web.Request], Awaitable[uuid.UUID | None]],
        tokens: Callable[[], RoomTokens],
        now: Callable[[], Any],
        presence: Presence,
    ) -> None:
        super().__init__(NAMESPACE)
        self._rooms = rooms
        self._account_of = account_of
        self._tokens = tokens
        self._now = now
        self.presence = presence
        self._connections: dict[str, Connection] = {}
        self._events: dict[str, tuple[type[BaseModel], Handler]] = {
            "join": (p.Join, self._join),
            "say": (p.Say, self._say),
            "typing": (p.Typing, self._typing),
            "history": (p.History, self._history),
            "admit": (p.Target, self._admit),
            "turn_away": (p.TurnAway, self._turn_away),
            "lobby_note": (p.LobbyNote, self._lobby_note),
            "separate": (p.Separate, self._separate),
            "mute": (p.Mute, self._mute),
            "remove": (p.Target, self._remove),
            "share": (p.Share, self._share),
            "ask_proposal": (p.Empty, self._ask_proposal),
            "draft": (p.Draft, self._draft),
            "send_code": (p.Empty, self._send_code),
            "accept": (p.Accept, self._accept),
            "close": (p.Close, self._close),
        }

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def sweep(self) -> int:
        """Close this node's connections whose account may no longer be there (disabled, a
        revoked delegation, removed, the meeting ended); returns how many."""
        live = dict(self._connections)
        gone = await self._rooms().revoked(
            sorted({(c.account_id, c.meeting_id) for c in live.values()})
        )
        closed = 0
        for sid, connection in live.items():
            if (connection.account_id, connection.meeting_id) in gone:
                await self.disconnect(sid)
                closed += 1
        return closed

    async def sweep_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                closed = await self.sweep()
                if closed:
                    log.info("closed %d connections that lost their access", closed)
            except Exception:
                log.exception("the connections' access sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SWEEP_SECONDS)

    # ---- connecting ------------------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        request: web.Request = environ["aiohttp.request"]
        account_id = await self._account_of(request)
        if account_id is None:
            raise socketio.exceptions.ConnectionRefusedError({"code": "unauthenticated"})
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            room_pass = self._tokens().check(token, self._now())
        except UserError:
            raise socketio.exceptions.ConnectionRefusedError({"code": "token_invalid"}) from None
        if room_pass.account_id != account_id:
            raise socketio.exceptions.ConnectionRefusedError({"code": "token_invalid"})
        try:
            audiences = await self._rooms().audiences(account_id, room_pass.meeting_id)
        except ConciliaError as exc:
            raise socketio.exceptions.ConnectionRefusedError({"code": exc.code.value}) from None
        self._connections[sid] = Connection(account_id, room_pass.meeting_id)
        await self._enter(sid, room_pass.meeting_id, audiences)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        connection = self._connections.pop(sid, None)
        if connection is None:
            return
        await self.presence.remove(connection.meeting_id, sid)
        if connection.entered:
            try:
                await self._rooms().leave(sid)
                still = await self.presence.connections(connection.meeting_id)
                if connection.account_id not in still.values():
                    await self._rooms().presence_changed(
                        connection.account_id, connection.meeting_id, online=False
                    )
            except Exception:
                log.exception("could not record a departure from meeting %s", connection.meeting_id)

    async def _enter(self, sid: str, meeting_id: uuid.UUID, audiences: Sequence[str]) -> None:
        """Put the connection in exactly ``audiences`` of its meeting."""
        for audience in MEMBER_AUDIENCES:
            if audience not in audiences:
                await self.leave_room(sid, room_name(meeting_id, audience))
        for audience in audiences:
            await self.enter_room(sid, room_name(meeting_id, audience))

    # ---- events ----------------------------------------------------------------------------

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if event == "connect":
            return await self.on_connect(*args)
        if event == "disconnect":
            return await self.on_disconnect(*args)
        sid = args[0]
        data = args[1] if len(args) > 1 else None
        connection = self._connections.get(sid)
        if connection is None:
            return error(ErrorCode.UNAUTHENTICATED)
        if not connection.bucket.take():
            if connection.bucket.refused > FLOOD_LIMIT:
                log.warning("closing a flooding connection to meeting %s", connection.meeting_id)
                await self.disconnect(sid)
            return error(ErrorCode.RATE_LIMITED)
        found = self._events.get(event)
        if found is None:
            return error(ErrorCode.BAD_REQUEST, event=str(event)[:40])
        model, handler = found
        try:
            payload = model.model_validate({} if data is None else data)
        except ValidationError as exc:
            fields = sorted({".".join(str(x) for x in e["loc"]) or "payload" for e in exc.errors()})
            return error(ErrorCode.BAD_REQUEST, fields=fields)
        if event != "join" and not connection.entered:
            return error(ErrorCode.NOT_ADMITTED)
        try:
            answer = await handler(sid, connection, payload)
        except ConciliaError as exc:
            return error(exc.code, **{k: str(v) for k, v in exc.params.items()})
        except Exception:
            log.exception("event %s failed in meeting %s", event, connection.meeting_id)
            return error(ErrorCode.INTERNAL)
        return {"ok": True, **(answer or {})}

    async def _join(self, sid: str, c: Connection, payload: p.Join) -> dict[str, Any]:
        rooms = self._rooms()
        if not c.entered:
            await rooms.enter(c.account_id, c.meeting_id, sid)
            c.entered = True
            await self.presence.add(c.meeting_id, sid, c.account_id)
            await rooms.presence_changed(c.account_id, c.meeting_id, online=True)
        else:
            await rooms.knock(c.account_id, c.meeting_id)
        await self._enter(sid, c.meeting_id, await rooms.audiences(c.account_id, c.meeting_id))
        return {"snapshot": await rooms.snapshot(c.account_id, c.meeting_id, payload.after)}

    async def _say(self, _sid: str, c: Connection, payload: p.Say) -> dict[str, Any]:
        return await self._rooms().say(c.account_id, c.meeting_id, payload.client_id, payload.text)

    async def _typing(self, _sid: str, c: Connection, payload: p.Typing) -> None:
        await self._rooms().typing(c.account_id, c.meeting_id, payload.on)

    async def _history(self, _sid: str, c: Connection, payload: p.History) -> dict[str, Any]:
        messages = await self._rooms().history(
            c.account_id, c.meeting_id, payload.after, payload.limit
        )
        return {"messages": messages}

    async def _admit(self, _sid: str, c: Connection, payload: p.Target) -> None:
        await self._rooms().admit(c.account_id, c.meeting_id, payload.account)

    async def _turn_away(self, _sid: str, c: Connection, payload: p.TurnAway) -> None:
        await self._rooms().admit(
            c.account_id, c.meeting_id, payload.account, admit=False, note=payload.note
        )

    async def _lobby_note(self, _sid: str, c: Connection, payload: p.LobbyNote) -> None:
        await self._rooms().set_lobby_note(c.account_id, c.meeting_id, payload.note)

    async def _separate(self, _sid: str, c: Connection, payload: p.Separate) -> None:
        await self._rooms().separate(c.account_id, c.meeting_id, payload.side)

    async def _mute(self, _sid: str, c: Connection, payload: p.Mute) -> None:
        await self._rooms().mute(c.account_id, c.meeting_id, payload.account, payload.muted)

    async def _remove(self, _sid: str, c: Connection, payload: p.Target) -> None:
        await self._rooms().remove(c.account_id, c.meeting_id, payload.account)

    async def _share(self, _sid: str, c: Connection, payload: p.Share) -> None:
        await self._rooms().share(c.account_id, c.meeting_id, payload.document)

    async def _ask_proposal(self, _sid: str, c: Connection, _payload: p.Empty) -> None:
        await self._rooms().ask_proposal(c.account_id, c.meeting_id)

    async def _draft(self, _sid: str, c: Connection, payload: p.Draft) -> dict[str, Any]:
        return await self._rooms().draft(c.account_id, c.meeting_id, payload.text, payload.proposal)

    async def _send_code(self, _sid: str, c: Connection, _payload: p.Empty) -> dict[str, Any]:
        return await self._rooms().send_code(c.account_id, c.meeting_id)

    async def _accept(self, _sid: str, c: Connection, payload: p.Accept) -> None:
        await self._rooms().accept(c.account_id, c.meeting_id, payload.code, payload.version)

    async def _close(self, _sid: str, c: Connection, payload: p.Close) -> None:
        await self._rooms().close(c.account_id, c.meeting_id, payload.outcome, payload.note)

    # ---- the room's broadcaster --------------------------------------------------------------

    async def emit_all(self, meeting_id: uuid.UUID, emits: Sequence[Emit]) -> None:
        for one in emits:
            await self.emit(one.event, one.payload, room=room_name(meeting_id, one.audience))

    async def refresh(self, meeting_id: uuid.UUID, account_id: uuid.UUID) -> None:
        audiences = await self._rooms().audiences(account_id, meeting_id)
        for sid, who in (await self.presence.connections(meeting_id)).items():
            if who == account_id:
                await self._enter(sid, meeting_id, audiences)

    async def drop(self, meeting_id: uuid.UUID, account_id: uuid.UUID | None) -> None:
        for sid, who in (await self.presence.connections(meeting_id)).items():
            if account_id is None or who == account_id:
                await self.disconnect(sid)

    async def online(self, meeting_id: uuid.UUID) -> set[uuid.UUID]:
        return set((await self.presence.connections(meeting_id)).values())


class RoomBroadcaster:
    """The ``rooms.Broadcaster`` the room service talks to, backed by the namespace."""

    def __init__(self, namespace: Signaling) -> None:
        self._ns = namespace
        self._later: set[asyncio.Task[None]] = set()

    async def emit(self, meeting_id: uuid.UUID, emits: Sequence[Emit]) -> None:
        await self._ns.emit_all(meeting_id, emits)

    async def refresh(self, meeting_id: uuid.UUID, account_id: uuid.UUID) -> None:
        await self._ns.refresh(meeting_id, account_id)

    async def disconnect(self, meeting_id: uuid.UUID, account_id: uuid.UUID | None) -> None:
        if account_id is not None:
            await self._ns.drop(meeting_id, account_id)
            return
        # The meeting ended: first the answers and the last events reach everyone, then the
        # connections close (clients close theirs on the "ended" room event anyway).
        task = asyncio.create_task(self._drop_later(meeting_id))
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def _drop_later(self, meeting_id: uuid.UUID) -> None:
        await asyncio.sleep(ENDED_GRACE_SECONDS)
        await self._ns.drop(meeting_id, None)

    async def online(self, meeting_id: uuid.UUID) -> set[uuid.UUID]:
        return await self._ns.online(meeting_id)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class OrJson:
    """orjson behind the ``dumps``/``loads`` python-socketio and python-engineio call, for their
    packets and their messages between nodes: the same JSON, a few times faster each way. Like
    their default (``engineio.json``), it turns a huge number into a float, never a long
    computation."""

    @staticmethod
    def dumps(value: Any, **_options: Any) -> str:
        # Always compact, which is what python-socketio asks of ``separators`` anyway.
        encoded: bytes = orjson.dumps(value)
        return encoded.decode()

    @staticmethod
    def loads(data: str | bytes, **_options: Any) -> Any:
        return orjson.loads(data)


def build_server(
    public_url: str, redis_url: str | None, extra_origins: Sequence[str] = ()
) -> socketio.AsyncServer:
    """The Socket.IO server: the service's own origin only, small frames, JSON between nodes."""
    manager = (
        socketio.AsyncRedisManager(redis_url, channel="concilia-meeting")
        if redis_url
        else socketio.AsyncManager()
    )
    return socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins=[origin_of(public_url), *extra_origins],
        max_http_buffer_size=FRAME_MAX,
        json=OrJson,
        logger=False,
        engineio_logger=False,
    )


def presence_for(redis: Any, prefix: str) -> Presence:
    return RedisPresence(redis, prefix) if redis is not None else LocalPresence()
