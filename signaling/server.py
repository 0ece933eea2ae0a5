"""The ``/meeting`` Socket.IO namespace: authentication, limits, and the room's events.

A connection is accepted only from the service's own origin, with a live portal session and a
room token for the same account (``signaling.tokens``); the token names the meeting. Every event
is then checked in this order: the connection is known, its rate is within limits, the payload
matches its model exactly (``signaling.protocol``), and ``rooms.Rooms`` checks again, against
the database, that the account still takes part and may do this. Answers are acks:
``{"ok": true, …}`` or ``{"ok": false, "error": {"code", "params"}}``.

This module implements the room's ``Broadcaster``: audiences are Socket.IO rooms named
``<meeting>:<audience>``, entered by each connection as its member's state allows. With
``CONCILIA_REDIS_URL`` set, python-socketio's Redis manager (JSON messages on the channel
``<prefix>-meeting``) carries emits, room changes and disconnections to whichever node holds the
connection; ``FanOut`` adds what a node does when Redis goes away and comes back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import socketio
from aiohttp import web
from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from core.errors import ConciliaError, ErrorCode, ProtocolError, UserError
from core.outage import RETRY_AFTER_SECONDS, dependency_down, log_failure
from media.room import Layout, MediaRoom, MediaRooms
from rooms.room import CONCILIATOR, IN, Emit, Rooms, account_audience, side_audience
from signaling import protocol as p
from signaling.presence import LocalPresence, Presence, RedisPresence, text
from signaling.tokens import RoomTokens

log = logging.getLogger(__name__)
NAMESPACE = "/meeting"
FRAME_MAX = 64 * 1024  # bytes of one Socket.IO frame; larger ones close the connection
RATE_PER_SECOND = 10.0  # events a connection may send, sustained
RATE_BURST = 20.0
FLOOD_LIMIT = 50  # events refused for rate in a row before the connection is closed
ENDED_GRACE_SECONDS = 1.0
DEPARTURES_KEPT = 10_000  # past this, the oldest are dropped (the room's end closes them)
SWEEP_SECONDS = 5.0  # how soon a disabled account or a revoked delegation loses its connections
RETRY_MAX_SECONDS = 8.0  # the longest wait between two tries to subscribe to Redis again
# Connections a node publishes its room events on (and subscribes with): a burst of emits waits
# this long at most for a free one rather than failing.
PUBLISH_CONNECTIONS = 32
PUBLISH_WAIT_SECONDS = 10.0
MEMBER_AUDIENCES = (IN, CONCILIATOR, side_audience("applicant"), side_audience("company"))
MEDIA_ELSEWHERE = "media_elsewhere"  # the meeting's media is on another node: params.url
# Room events after which a meeting's media routing is read again from the database.
MEDIA_TRIGGERS = frozenset({"room", "participant", "me", "media_muted"})


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


@dataclass(frozen=True)
class Departure:
    connection: str
    meeting_id: uuid.UUID
    account_id: uuid.UUID
    at: datetime


def error(code: ErrorCode | str, **params: Any) -> dict[str, Any]:
    return {"ok": False, "error": {"code": str(code), "params": params}}


def unavailable(dependency: str) -> dict[str, Any]:
    """The ack of an event that failed because ``dependency`` (database, Redis) is down."""
    return error(ErrorCode.UNAVAILABLE, dependency=dependency, retry_after=RETRY_AFTER_SECONDS)


def refused(code: ErrorCode) -> socketio.exceptions.ConnectionRefusedError:
    """A refused handshake: the client's ``connect_error`` gets ``message`` = the code and
    ``data`` = ``{"code": …}`` (with a single argument python-socketio would send only the
    argument's ``str()`` as the message, and no data)."""
    return socketio.exceptions.ConnectionRefusedError(code.value, {"code": code.value})


Handler = Callable[[str, Connection, Any], Awaitable[dict[str, Any] | None]]


class MediaElsewhere(Exception):
    """The meeting's media is hosted by another node, reachable at ``url``."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


def meeting_of(room: object) -> uuid.UUID | None:
    """The meeting of a Socket.IO room name ``<meeting>:<audience>``."""
    if not isinstance(room, str):
        return None
    try:
        return uuid.UUID(room.partition(":")[0])
    except ValueError:
        return None


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
        # Departures the database could not take when they happened (it was down): recorded
        # with their own time by the sweep once it is back (``record_departures``).
        self._departures: collections.OrderedDict[str, Departure] = collections.OrderedDict()
        # Video: this node's media rooms (set by the application), and Redis to pin each
        # meeting's media to one node (``None``: one node, everything local).
        self.media: MediaRooms | None = None
        self.redis: Any = None
        self.redis_prefix = "concilia"
        self.node_url = ""
        self.pin_seconds = 30
        self._media_locks: dict[uuid.UUID, asyncio.Lock] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        handlers: dict[str, Handler] = {
            "join": self._join,
            "say": self._say,
            "typing": self._typing,
            "history": self._history,
            "admit": self._admit,
            "turn_away": self._turn_away,
            "lobby_note": self._lobby_note,
            "separate": self._separate,
            "mute": self._mute,
            "remove": self._remove,
            "share": self._share,
            "ask_proposal": self._ask_proposal,
            "draft": self._draft,
            "send_code": self._send_code,
            "accept": self._accept,
            "close": self._close,
            "media_offer": self._media_offer,
            "media_candidate": self._media_candidate,
            "media_state": self._media_state,
            "media_mute": self._media_mute,
            "media_leave": self._media_leave,
        }
        assert handlers.keys() == p.EVENTS.keys()
        self._events: dict[str, tuple[type[p.Payload], Handler]] = {
            name: (p.EVENTS[name], handler) for name, handler in handlers.items()
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

    async def reap(self) -> int:
        """Record the departure of connections whose node died (its heartbeat expired): their
        stretch of presence ends and, unless the account is still connected elsewhere, the room
        hears that it went away. Returns how many."""
        taken = await self.presence.reap()
        for meeting_id, sid, account_id in taken:
            await self._rooms().leave(sid)
            still = await self.presence.connections(meeting_id)
            if account_id not in still.values():
                await self._rooms().presence_changed(account_id, meeting_id, online=False)
        return len(taken)

    async def close_all(self) -> None:
        """The node is stopping: close its connections now, so that their clients move to
        another node at once (instead of hanging until the server gives up waiting for them)
        and their departures are recorded while the database is still open."""
        for sid in list(self._connections):
            try:
                await self.disconnect(sid)
            except Exception:
                log.exception("could not close a connection on the way out")

    async def resync(self) -> None:
        """Redis is back after an outage: events from other nodes may have been lost meanwhile,
        so this node's own connections are asked to catch up from the database."""
        log.info("asking %d connections to resync after the Redis outage", self.connections)
        await self.emit("resync", {}, ignore_queue=True)

    async def sweep_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                closed = await self.sweep()
                if closed:
                    log.info("closed %d connections that lost their access", closed)
            except Exception:
                log_failure(log, "the connections' access sweep failed")
            try:
                reaped = await self.reap()
                if reaped:
                    log.info("recorded the departure of %d connections of a dead node", reaped)
            except Exception:
                log_failure(log, "the dead nodes' connections could not be recorded as gone")
            manager = self.server.manager if self.server is not None else None
            if isinstance(manager, FanOut) and manager.missed:
                await manager.resync_others()  # even when nothing else is published
            recorded = await self.record_departures()
            if recorded:
                log.info("recorded %d departures the database could not take before", recorded)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SWEEP_SECONDS)

    # ---- connecting ------------------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        try:
            await self._connect(sid, environ, auth)
        except socketio.exceptions.ConnectionRefusedError:
            raise
        except Exception as exc:
            dependency = dependency_down(exc)
            if dependency is None:
                raise
            self._connections.pop(sid, None)
            log.warning("connection refused: %s unavailable (%s)", dependency, type(exc).__name__)
            raise socketio.exceptions.ConnectionRefusedError(
                ErrorCode.UNAVAILABLE.value,
                {"code": ErrorCode.UNAVAILABLE.value, "dependency": dependency},
            ) from None

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        request: web.Request = environ["aiohttp.request"]
        account_id = await self._account_of(request)
        if account_id is None:
            raise refused(ErrorCode.UNAUTHENTICATED)
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            room_pass = self._tokens().check(token, self._now())
        except UserError:
            raise refused(ErrorCode.TOKEN_INVALID) from None
        if room_pass.account_id != account_id:
            raise refused(ErrorCode.TOKEN_INVALID)
        try:
            audiences = await self._rooms().audiences(account_id, room_pass.meeting_id)
        except ConciliaError as exc:
            raise refused(exc.code) from None
        self._connections[sid] = Connection(account_id, room_pass.meeting_id)
        await self._enter(sid, room_pass.meeting_id, audiences)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        connection = self._connections.pop(sid, None)
        if connection is None:
            return
        # A client whose network went away shows here as "ping timeout" (CONCILIA_SOCKET_PING_*).
        log.info("connection %s left meeting %s (%s)", sid, connection.meeting_id, reason)
        await self.presence.remove(connection.meeting_id, sid)
        if connection.entered:
            departure = Departure(sid, connection.meeting_id, connection.account_id, self._now())
            if not await self._depart(departure):
                self._departures[sid] = departure
                while len(self._departures) > DEPARTURES_KEPT:
                    dropped = self._departures.popitem(last=False)[1]
                    log.warning("departure from meeting %s not kept", dropped.meeting_id)

    async def _depart(self, departure: Departure) -> bool:
        """Record a departure (its stretch of presence ends at its time) and tell the room,
        unless the account is still connected elsewhere; ``False`` if it must be tried again
        (the database or Redis is down)."""
        try:
            await self._rooms().leave(departure.connection, departure.at)
            still = await self.presence.connections(departure.meeting_id)
            if departure.account_id not in still.values():
                await self._rooms().presence_changed(
                    departure.account_id, departure.meeting_id, online=False
                )
        except Exception as exc:
            log_failure(log, "could not record a departure from meeting %s", departure.meeting_id)
            # Kept for later only when the database or Redis is down; anything else would
            # fail again and hold up the departures behind it (the room's end closes it).
            return dependency_down(exc) is None
        return True

    async def record_departures(self) -> int:
        """Record the departures kept while the database was down, oldest first, until one
        fails again; returns how many were recorded."""
        recorded = 0
        while self._departures:
            sid, departure = next(iter(self._departures.items()))
            if not await self._depart(departure):
                break
            self._departures.pop(sid, None)
            recorded += 1
        return recorded

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
        found = self._events.get(event) if isinstance(event, str) else None
        if found is None:
            return error(ErrorCode.BAD_REQUEST, event=str(event)[:40])
        model, handler = found
        try:
            payload = p.check_payload(model, data)
        except ProtocolError as exc:
            return error(exc.code, **exc.params)
        if event != "join" and not connection.entered:
            return error(ErrorCode.NOT_ADMITTED)
        try:
            answer = await handler(sid, connection, payload)
        except ConciliaError as exc:
            return error(exc.code, **{k: str(v) for k, v in exc.params.items()})
        except MediaElsewhere as exc:
            return error(MEDIA_ELSEWHERE, url=exc.url)
        except Exception as exc:
            dependency = dependency_down(exc)
            if dependency is not None:
                # Not a bug: the client may try again (a ``say`` with the same client_id is
                # stored once).
                log.warning(
                    "event %s in meeting %s: %s unavailable (%s)",
                    event,
                    connection.meeting_id,
                    dependency,
                    type(exc).__name__,
                )
                return unavailable(dependency)
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
        snapshot = await rooms.snapshot(c.account_id, c.meeting_id, payload.after)
        return {"snapshot": snapshot}

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

    async def _share(self, _sid: str, c: Connection, payload: p.Share) -> dict[str, Any]:
        return await self._rooms().share(
            c.account_id, c.meeting_id, payload.document, payload.client_id
        )

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

    # ---- video -----------------------------------------------------------------------------

    def _pin_key(self, meeting_id: uuid.UUID) -> str:
        return f"{self.redis_prefix}:media:{meeting_id}"

    def _pin_value(self) -> str:
        return f"{self.presence.node}|{self.node_url}"

    def _media_rooms(self) -> MediaRooms:
        if self.media is None:
            raise UserError(ErrorCode.MEDIA_UNAVAILABLE)
        return self.media

    async def _host(self, meeting_id: uuid.UUID, *, claim: bool = True) -> None:
        """Make sure the meeting's media is on this node: claim it if no node holds it (with
        ``claim``), or raise ``MediaElsewhere`` with the URL of the node that does. Without
        Redis (or while it is unreachable) every node keeps its own."""
        if self.redis is None:
            return
        key, mine = self._pin_key(meeting_id), self._pin_value()
        try:
            for _ in range(3):  # the holder may let go between the two calls
                if claim and await self.redis.set(key, mine, nx=True, ex=self.pin_seconds):
                    return
                found = await self.redis.get(key)
                if found is None and not claim:
                    return
                if found is not None:
                    node, _, url = text(found).partition("|")
                    if node == self.presence.node:
                        return
                    raise MediaElsewhere(url)
        except RedisError as exc:
            log.warning("media pinning unavailable (Redis: %s); kept on this node", exc)

    async def refresh_pins(self) -> None:
        """The presence heartbeat: this node still holds its meetings' media."""
        if self.redis is None or self.media is None:
            return
        for meeting in self.media.meetings:
            key = f"{self.redis_prefix}:media:{meeting}"
            if not await self.redis.set(key, self._pin_value(), nx=True, ex=self.pin_seconds):
                found = await self.redis.get(key)
                if found is not None and text(found) == self._pin_value():
                    await self.redis.expire(key, self.pin_seconds)

    async def _unpin(self, meeting_id: uuid.UUID) -> None:
        if self.redis is None:
            return
        key = self._pin_key(meeting_id)
        try:
            found = await self.redis.get(key)
            if found is not None and text(found) == self._pin_value():
                await self.redis.delete(key)
        except RedisError as exc:
            log.warning("media pin of meeting %s left to expire (Redis: %s)", meeting_id, exc)

    def _lock(self, meeting_id: uuid.UUID) -> asyncio.Lock:
        return self._media_locks.setdefault(meeting_id, asyncio.Lock())

    async def _route(self, meeting_id: uuid.UUID, room: MediaRoom) -> bool:
        """Apply the meeting's routing read now from the database (under the meeting's lock):
        the admitted members who are connected, the separate session, the conciliator's audio
        mutes. Ends the media when the meeting has no video running; says whether it still
        does (ending it otherwise)."""
        routing = await self._rooms().media_routing(meeting_id)
        if routing is None:
            # Closing connections takes a while: the room's answers need not wait for it.
            room.set_routing({})
            self._spawn(self._end_media(meeting_id))
            return False
        online = {str(a) for a in (await self.presence.connections(meeting_id)).values()}
        members = {a: s for a, s in routing.members.items() if a in online}
        room.set_routing(members, routing.separate, routing.muted)
        return True

    async def media_sync(self, meeting_id: uuid.UUID) -> None:
        """The room changed: if this node hosts the meeting's media, follow it."""
        if self.media is None or self.media.get(str(meeting_id)) is None:
            return
        async with self._lock(meeting_id):
            room = self.media.get(str(meeting_id))
            if room is not None:
                await self._route(meeting_id, room)

    def media_sync_later(self, meeting_id: uuid.UUID) -> None:
        self._spawn(self.media_sync(meeting_id))

    async def _end_media(self, meeting_id: uuid.UUID) -> None:
        if self.media is not None:
            await self.media.end(str(meeting_id))
        self._media_locks.pop(meeting_id, None)
        await self._unpin(meeting_id)

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("media signaling failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for the media events and syncs under way (before the media closes)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ``media.room.MediaEvents``: what the media rooms of this node tell their participants.

    def layout_changed(self, meeting: str, participant: str, layout: Layout) -> None:
        self._spawn(self._to_participant(meeting, participant, "media_layout", layout.as_json()))

    def connection_changed(self, meeting: str, participant: str, state: str) -> None:
        self._spawn(
            self._to_participant(meeting, participant, "media_connection", {"state": state})
        )

    async def _to_participant(
        self, meeting: str, participant: str, event: str, payload: dict[str, Any]
    ) -> None:
        audience = account_audience(uuid.UUID(participant))
        await self.emit(event, payload, room=room_name(uuid.UUID(meeting), audience))

    async def _media_offer(self, _sid: str, c: Connection, payload: p.MediaOffer) -> dict[str, Any]:
        media = self._media_rooms()
        await self._rooms().media_seat(c.account_id, c.meeting_id)
        await self._host(c.meeting_id)
        async with self._lock(c.meeting_id):
            room = media.room(str(c.meeting_id))
            if not await self._route(c.meeting_id, room):
                raise UserError(ErrorCode.ROOM_CLOSED)
        answer = await room.offer(str(c.account_id), payload.sdp)
        return {
            "sdp": answer,
            "ice_servers": media.ice_servers(str(c.account_id), time.time()),
        }

    async def _hosted(self, c: Connection) -> MediaRoom | None:
        """The meeting's media room if this node hosts it (``MediaElsewhere`` if another
        node does, ``None`` if none does yet), once the account may take part."""
        media = self._media_rooms()
        await self._rooms().media_seat(c.account_id, c.meeting_id)
        room = media.get(str(c.meeting_id))
        if room is None:
            await self._host(c.meeting_id, claim=False)  # raises when another node holds it
        return room

    async def _media_candidate(self, _sid: str, c: Connection, payload: p.MediaCandidate) -> None:
        room = await self._hosted(c)
        if room is not None:
            await room.add_candidate(str(c.account_id), payload.candidate)

    async def _media_state(self, _sid: str, c: Connection, payload: p.MediaState) -> None:
        room = await self._hosted(c)
        if room is not None:
            room.set_sending(str(c.account_id), audio=payload.audio, video=payload.video)

    async def _media_leave(self, _sid: str, c: Connection, _payload: p.Empty) -> None:
        room = await self._hosted(c)
        if room is not None:
            await room.close(str(c.account_id))

    async def _media_mute(self, _sid: str, c: Connection, payload: p.MediaMute) -> None:
        """The conciliator's audio cut, stored by the room (which checks who may, and whom)
        and announced to the admitted and the conciliator (``participant``, ``media_muted``).
        The media follows from the database: here if this node hosts it (the announcement's
        ``media_sync``), else on the hosting node, which hears the announcement through Redis;
        a media room started later reads it too."""
        await self._rooms().media_mute(c.account_id, c.meeting_id, payload.account, payload.muted)

    # ---- the room's broadcaster --------------------------------------------------------------

    async def emit_all(self, meeting_id: uuid.UUID, emits: Sequence[Emit]) -> None:
        for one in emits:
            await self.emit(one.event, one.payload, room=room_name(meeting_id, one.audience))
        if any(one.event in MEDIA_TRIGGERS for one in emits):
            try:
                await self.media_sync(meeting_id)
            except Exception:
                log.exception("the media of meeting %s did not follow the room", meeting_id)

    def room_event(self, event: object, namespace: object, room: object) -> None:
        """An event reached this node from Redis: other nodes' room changes move the media
        this node hosts."""
        if namespace == NAMESPACE and event in MEDIA_TRIGGERS:
            meeting_id = meeting_of(room)
            if meeting_id is not None:
                self.media_sync_later(meeting_id)

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


class FanOut(socketio.AsyncRedisManager):  # type: ignore[misc]
    """python-socketio's Redis manager — messages between nodes are JSON (the manager encodes
    with the server's ``json`` module, never pickle) — with this node's own handling of a lost
    Redis. The library's Redis client would quietly reconnect and subscribe again, and whatever
    was published meanwhile would be lost without anyone knowing; here the client does not
    retry on its own, so the listener sees the loss: it logs it, tries again with backoff (1 s,
    doubling up to ``RETRY_MAX_SECONDS``), logs the recovery and, once subscribed again, calls
    ``on_back`` (the namespace asks its connections to resync from the database)."""

    redis: Any  # the library's attributes, untyped there
    pubsub: Any

    def __init__(
        self,
        url: str,
        channel: str,
        on_back: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(url, channel=channel, redis_options={"retry": Retry(NoBackoff(), 0)})
        self.on_back = on_back
        self.on_emit: Callable[[object, object, object], None] | None = None
        # A publish given up (Redis down, or no pooled connection within its wait): the other
        # nodes missed an event, and their connections are asked to resync once a publish
        # goes through again (``resync_others``).
        self.missed = False

    async def _publish(self, data: Any) -> Any:
        """The library's publish (two tries, then it gives up and returns nothing), noting a
        loss, and telling the other nodes first when an earlier one was lost."""
        if self.missed:
            await self.resync_others()
        result = await super()._publish(data)
        if result is None:
            self.missed = True
        return result

    async def resync_others(self) -> bool:
        """Ask every connection of the other nodes to catch up from the database (an event
        of this node did not reach them); ``True`` once sent. One at a time: the flag is
        taken before the publish waits, so the emits queued meanwhile do not each send one
        (each would make every page of the other nodes join again)."""
        was_missed, self.missed = self.missed, False
        sent = await super()._publish(
            {
                "method": "emit",
                "event": "resync",
                "data": [{}],
                "binary": False,
                "namespace": NAMESPACE,
                "room": None,
                "skip_sid": None,
                "callback": None,
                "host_id": self.host_id,  # the other nodes only
            }
        )
        if sent is None:
            self.missed = True
            return False
        if was_missed:
            log.info("asked the other nodes' connections to resync after a lost publish")
        return True

    def _redis_connect(self) -> None:
        """One client, and one pool, for the node's whole life; a new subscription each time.

        The library's own builds a new client at each call — after every failed publish too,
        and a burst of more concurrent emits than its pool's 100 connections fails with "Too
        many connections" — leaving the old client's connections open: under load a node
        gathered thousands of descriptors and dropped emits. A blocking pool makes a burst wait
        for a free connection instead; a connection Redis dropped is opened again on its next
        use, so the client never needs replacing."""
        client = self.redis
        if client is None:
            pool = BlockingConnectionPool.from_url(
                self.redis_url,
                max_connections=PUBLISH_CONNECTIONS,
                timeout=PUBLISH_WAIT_SECONDS,
                **self.redis_options,
            )
            client = self.redis = Redis.from_pool(pool)
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.connected = True

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        await super()._handle_emit(message)
        if self.on_emit is not None:
            try:
                self.on_emit(message.get("event"), message.get("namespace"), message.get("room"))
            except Exception:
                log.exception("a room event from another node was not followed")

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        delay = 1.0
        lost = False
        while True:
            pubsub = None
            try:
                self._redis_connect()
                pubsub = self.pubsub  # publishing may replace self.pubsub meanwhile
                await pubsub.subscribe(self.channel)
                if lost:
                    log.info("Redis is back: events from other nodes arrive again")
                    lost, delay = False, 1.0
                    if self.on_back is not None:
                        try:
                            await self.on_back()
                        except Exception:
                            log.exception("could not ask the connections to resync")
                async for message in pubsub.listen():
                    yield message
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not lost:
                    log.warning(
                        "Redis lost (%s): events from other nodes do not arrive; retrying", exc
                    )
                lost = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()


MALFORMED = "\x00malformed"  # the event name given to a frame that is not a valid event
PACKET_TYPES = range(len(socketio.packet.packet_names))


class MeetingPacket(socketio.packet.Packet):  # type: ignore[misc]
    """A Socket.IO packet of ``/meeting``. A frame that does not decode (JSON that does not
    parse: ``1e400``, a lone surrogate, a cut array; an unknown packet type; an overlong ack
    id) or an event that is not ``[name, ...]`` with a string name becomes the event
    ``MALFORMED``, which no handler has: the client gets ``bad_request`` and the rate limit
    counts it like any event. (As they came, python-socketio would raise on them and log an
    error with its traceback for every such frame, outside the rate limit.)"""

    def decode(self, encoded_packet: str | bytes) -> int:
        try:
            count = int(super().decode(encoded_packet) or 0)
        except ValueError:  # orjson's JSONDecodeError is one, and so is an overlong ack id
            self.packet_type, self.data = socketio.packet.EVENT, [MALFORMED]
            return 0
        if self.packet_type not in PACKET_TYPES or (
            self.packet_type == socketio.packet.EVENT
            and not (isinstance(self.data, list) and self.data and isinstance(self.data[0], str))
        ):
            self.packet_type, self.data = socketio.packet.EVENT, [MALFORMED]
        return count


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
    public_url: str,
    redis_url: str | None,
    *,
    channel: str = "concilia-meeting",
    on_back: Callable[[], Awaitable[None]] | None = None,
    extra_origins: Sequence[str] = (),
    ping_interval: float = 25.0,
    ping_timeout: float = 20.0,
) -> socketio.AsyncServer:
    """The Socket.IO server: the service's own origin only, small frames, JSON between nodes,
    a heartbeat every ``ping_interval`` seconds answered within ``ping_timeout``."""
    manager = FanOut(redis_url, channel, on_back) if redis_url else socketio.AsyncManager()
    return socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins=[origin_of(public_url), *extra_origins],
        max_http_buffer_size=FRAME_MAX,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        json=OrJson,
        serializer=MeetingPacket,
        logger=False,
        engineio_logger=False,
    )


def presence_for(redis: Any, prefix: str, ttl_seconds: float) -> Presence:
    return RedisPresence(redis, prefix, ttl_seconds) if redis is not None else LocalPresence()
