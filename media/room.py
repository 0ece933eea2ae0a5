"""A meeting's media: its participants' peer connections and who receives whom.

``MediaRooms`` belongs to the application (built once, closed on shutdown) and holds a
``MediaRoom`` per meeting with video. The signaling layer drives a room with four calls:

- ``offer(participant, sdp)`` answers a participant's offer; a second offer replaces the
  participant's connection (the old one is closed first) — that is how a client recovers
  from a failed connection or asks for more slots;
- ``close(participant)`` when the participant leaves the room or the video;
- ``set_routing(members, separate, muted)`` whenever the room's state changes (admission,
  removal, a separate session beginning or ending, a mute); a participant no longer among
  the members loses their connection at once;
- ``set_sending(participant, audio=…, video=…)`` when a participant turns their own camera
  or microphone off or on.

It learns back, through ``MediaEvents``, each participant's ``Layout`` (which participant
each of their slots carries, and whether audio and video flow) and the state of each
connection. Media failing never touches the meeting itself: the participant stays in the
room and in its chat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Protocol

from core.errors import ErrorCode, UserError
from media.config import MediaConfig
from media.forwarding import InboundStream
from media.peer import MediaPeer, PeerCount, check_offer
from media.routing import KINDS, Kind, Routing
from rooms.models import Side

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlotView:
    """One slot of a subscriber: its m-lines (by MID), whom it carries, what flows."""

    audio_mid: str | None
    video_mid: str | None
    participant: str | None
    audio: bool
    video: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "audio_mid": self.audio_mid,
            "video_mid": self.video_mid,
            "participant": self.participant,
            "audio": self.audio,
            "video": self.video,
        }


@dataclass(frozen=True)
class Layout:
    """What a participant receives: their slots in offer order, and the participants they
    may see who did not fit in the slots they offered."""

    slots: tuple[SlotView, ...]
    unplaced: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"slots": [s.as_json() for s in self.slots], "unplaced": list(self.unplaced)}

    def slot_of(self, participant: str) -> SlotView | None:
        return next((s for s in self.slots if s.participant == participant), None)


class MediaEvents(Protocol):
    """What a room tells the signaling layer (called on the event loop, must not block)."""

    def layout_changed(self, meeting: str, participant: str, layout: Layout) -> None: ...

    def connection_changed(self, meeting: str, participant: str, state: str) -> None: ...


class _NoEvents:
    def layout_changed(self, meeting: str, participant: str, layout: Layout) -> None:
        pass

    def connection_changed(self, meeting: str, participant: str, state: str) -> None:
        pass


class MediaRoom:
    """One meeting's peer connections and forwarding. Calls come from the event loop;
    negotiations and closings take turns under the room's lock, routing changes apply at
    once (between two packets)."""

    def __init__(
        self,
        meeting: str,
        config: MediaConfig,
        count: PeerCount,
        events: MediaEvents | None = None,
    ) -> None:
        self.meeting = meeting
        self._config = config
        self._count = count
        self._events: MediaEvents = events or _NoEvents()
        self._routing = Routing()
        self._peers: dict[str, MediaPeer] = {}
        self._assigned: dict[str, list[str | None]] = {}
        self._layouts: dict[str, Layout] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Future[None]] = set()
        self._closed = False

    @property
    def routing(self) -> Routing:
        return self._routing

    @property
    def participants(self) -> list[str]:
        """Participants with a peer connection (connecting or connected)."""
        return list(self._peers)

    def peer(self, participant: str) -> MediaPeer | None:
        return self._peers.get(participant)

    def layout(self, participant: str) -> Layout | None:
        return self._layouts.get(participant)

    def connection_state(self, participant: str) -> str | None:
        peer = self._peers.get(participant)
        return None if peer is None else peer.state

    async def offer(self, participant: str, sdp: str) -> str:
        """Answer ``participant``'s offer with a new connection, closing any previous one."""
        if self._closed:
            raise UserError(ErrorCode.ROOM_CLOSED)
        if participant not in self._routing.members:
            raise UserError(ErrorCode.NOT_ADMITTED)
        check_offer(sdp, self._config)
        async with self._lock:
            old = self._peers.pop(participant, None)
            if old is not None:
                self._apply()
                await old.close()
            peer = MediaPeer(participant, self._config, self._count, self._peer_state)
            try:
                answer = await peer.negotiate(sdp)
            except BaseException:
                await asyncio.shield(peer.close())
                raise
            # The room may have ended, or the member left, while the offer was answered.
            if self._closed or participant not in self._routing.members:
                await peer.close()
                raise UserError(ErrorCode.ROOM_CLOSED if self._closed else ErrorCode.NOT_ADMITTED)
            self._peers[participant] = peer
            self._apply()
            return answer

    async def add_candidate(self, participant: str, candidate: str | None) -> None:
        """A trickled ICE candidate (``candidate:…`` as the browser gives it, whatever its
        m-line: all are bundled) of ``participant``'s current connection; ``None`` or an
        empty string ends them."""
        peer = self._peers.get(participant)
        if peer is not None:
            await peer.add_candidate(candidate)

    async def close(self, participant: str) -> None:
        """End ``participant``'s connection (they left, or turned video off entirely)."""
        async with self._lock:
            peer = self._peers.pop(participant, None)
            if peer is not None:
                self._apply()
                await peer.close()

    def set_routing(
        self,
        members: Mapping[str, Side],
        separate: Side | None = None,
        muted: AbstractSet[str] = frozenset(),
    ) -> None:
        """The room's state changed: ``members`` are the admitted participants and their
        sides, ``separate`` the party of a running separate session (``None``: joint),
        ``muted`` whose audio the conciliator cut. Takes effect before the next packet; a
        participant no longer a member loses their connection."""
        members = dict(members)
        off = {p: kinds for p, kinds in self._routing.off.items() if p in members}
        self._routing = Routing(members, separate, frozenset(muted), off)
        gone = [p for p in self._peers if p not in members]
        for participant in gone:
            self._spawn(self._peers.pop(participant).close())
        self._apply()

    def set_sending(
        self, participant: str, *, audio: bool | None = None, video: bool | None = None
    ) -> None:
        """``participant`` turned their own microphone or camera on or off."""
        routing = self._routing
        if audio is not None:
            routing = routing.with_sending(participant, "audio", audio)
        if video is not None:
            routing = routing.with_sending(participant, "video", video)
        self._routing = routing
        self._apply()

    async def aclose(self) -> None:
        """Close every connection of the room; safe to call twice."""
        self._closed = True
        async with self._lock:
            peers = list(self._peers.values())
            self._peers.clear()
            self._apply()
            for peer in peers:
                await peer.close()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- internals

    def _peer_state(self, peer: MediaPeer) -> None:
        if self._peers.get(peer.participant) is not peer:
            return
        self._events.connection_changed(self.meeting, peer.participant, peer.state)
        if peer.state in ("failed", "closed"):
            del self._peers[peer.participant]
            self._apply()
            self._spawn(peer.close())

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("media_close_failed", exc_info=task.exception())

    def _apply(self) -> None:
        """Bind every slot of every subscriber to what the routing allows now."""
        routing = self._routing
        peers = self._peers
        for target, peer in peers.items():
            count = peer.slot_count
            kept = [s if s in peers else None for s in self._assigned.get(target, [])[:count]]
            wanted = routing.sources_for(target, (p for p in peers if p != target))
            assigned = [s if s in wanted else None for s in kept]
            assigned += [None] * (count - len(assigned))
            unplaced: list[str] = []
            for source in wanted:
                if source in assigned:
                    continue
                if None in assigned:
                    assigned[assigned.index(None)] = source
                else:
                    unplaced.append(source)
            self._assigned[target] = assigned
            views = []
            for index, carried in enumerate(assigned):
                flowing: dict[Kind, bool] = {}
                for kind in KINDS:
                    slot = peer.slot(kind, index)
                    stream: InboundStream | None = None
                    if carried is not None and routing.forwards(carried, target, kind):
                        found = peers[carried].inbound.get(kind)
                        if found is not None and slot is not None and slot.accepts(found):
                            stream = found
                    if slot is not None:
                        slot.bind(stream)
                    flowing[kind] = stream is not None
                audio_slot = peer.slot("audio", index)
                video_slot = peer.slot("video", index)
                views.append(
                    SlotView(
                        audio_mid=audio_slot.mid if audio_slot is not None else None,
                        video_mid=video_slot.mid if video_slot is not None else None,
                        participant=carried,
                        audio=flowing["audio"],
                        video=flowing["video"],
                    )
                )
            layout = Layout(tuple(views), tuple(unplaced))
            if self._layouts.get(target) != layout:
                self._layouts[target] = layout
                self._events.layout_changed(self.meeting, target, layout)
        for participant in [p for p in self._assigned if p not in peers]:
            del self._assigned[participant]
            self._layouts.pop(participant, None)


class MediaRooms:
    """Every meeting's media on this node (meetings' media are pinned to one node)."""

    def __init__(self, config: MediaConfig, events: MediaEvents | None = None) -> None:
        self.config = config
        self._events = events
        self._count = PeerCount()
        self._rooms: dict[str, MediaRoom] = {}
        self._closed = False

    @property
    def live_peer_connections(self) -> int:
        """Peer connections created and not yet fully closed, in every room."""
        return self._count.value

    def room(self, meeting: str) -> MediaRoom:
        """The meeting's media room, opened on first use."""
        if self._closed:
            raise UserError(ErrorCode.ROOM_CLOSED)
        found = self._rooms.get(meeting)
        if found is None:
            found = self._rooms[meeting] = MediaRoom(
                meeting, self.config, self._count, self._events
            )
        return found

    @property
    def meetings(self) -> list[str]:
        """The meetings whose media is on this node."""
        return list(self._rooms)

    def get(self, meeting: str) -> MediaRoom | None:
        return self._rooms.get(meeting)

    async def end(self, meeting: str) -> None:
        """The meeting ended: close its connections and forget it."""
        room = self._rooms.pop(meeting, None)
        if room is not None:
            await room.aclose()

    def ice_servers(self, participant: str, now: float) -> list[dict[str, Any]]:
        """The STUN/TURN servers ``participant``'s browser should use (``now``: Unix time)."""
        return self.config.ice_servers(participant, now)

    async def close(self) -> None:
        """Close every room (application shutdown); safe to call twice."""
        self._closed = True
        rooms = list(self._rooms.values())
        self._rooms.clear()
        for room in rooms:
            await room.aclose()
