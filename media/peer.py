"""One participant's peer connection to the server, negotiated from the participant's offer.

The client offers; the server answers. An m-line the client sends on publishes its camera or
microphone (the first of each kind; more are not forwarded); an m-line the client receives
on is a *slot* through which the server forwards one other participant's audio or video.
Slots pair by order — the n-th audio and the n-th video receiving m-line carry the same
participant and share one stream id, so a browser plays them in sync.

aiortc builds a decoding ``RTCRtpReceiver`` and an encoding ``RTCRtpSender`` into every
transceiver it creates while reading the offer. Before the answer is made — before any of
them could start — ``MediaPeer`` puts an ``InboundStream`` and an ``OutboundSlot`` in their
place (``_take_over``), so no decoder thread, jitter buffer, encoder or sending loop of the
server ever runs. This touches one private attribute pair of ``RTCRtpTransceiver``; the
version of aiortc is pinned for it and ``_replace`` fails loudly if it moves.

Lifecycle: the connection counts as live from creation until ``close`` has finished; a
connection that fails, is closed by the client or is not connected within
``MediaConfig.connect_seconds`` is reported to the room, which closes it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.sdp import SessionDescription, candidate_from_sdp

from core.errors import ErrorCode, ProtocolError, UserError
from media.config import MediaConfig
from media.forwarding import InboundStream, OutboundSlot
from media.ice import NoMediaPort, bind_host_candidate
from media.routing import KINDS, Kind
from media.rtp import is_rtx
from media.wire import Wire, release_media, take_rtp

logger = logging.getLogger(__name__)

MAX_SDP = 64 * 1024
_DIRECTION = {
    (True, True): "sendrecv",
    (True, False): "sendonly",
    (False, True): "recvonly",
    (False, False): "inactive",
}


class PeerCount:
    """How many of the server's peer connections exist (created, not yet fully closed)."""

    def __init__(self) -> None:
        self.value = 0


def check_offer(sdp: str, config: MediaConfig) -> SessionDescription:
    """Refuse an offer the server will not answer: unreadable, too long, with anything but
    audio and video, too many m-lines, or not bundled (one transport for everything)."""
    if not isinstance(sdp, str) or not sdp.strip():
        raise ProtocolError(ErrorCode.BAD_REQUEST, "sdp: empty")
    if len(sdp) > MAX_SDP:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "sdp: too long")
    try:
        description = SessionDescription.parse(sdp)
    except Exception:  # untrusted text: any parsing failure is the client's
        raise ProtocolError(ErrorCode.BAD_REQUEST, "sdp: unreadable") from None
    if not description.media:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "sdp: no media")
    for kind in {m.kind for m in description.media}:
        if kind not in KINDS:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"sdp: {kind} is not audio or video")
    for kind in KINDS:
        if sum(1 for m in description.media if m.kind == kind) > config.max_slots + 1:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"sdp: too many {kind} m-lines")
    mids = [m.rtp.muxId for m in description.media]
    bundles = [g for g in description.group if g.semantic == "BUNDLE"]
    if len(bundles) != 1 or sorted(map(str, bundles[0].items)) != sorted(map(str, mids)):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "sdp: every m-line must be in one BUNDLE")
    return description


def _replace(transceiver: RTCRtpTransceiver, role: str, value: object) -> None:
    attribute = f"_RTCRtpTransceiver__{role}"
    if attribute not in vars(transceiver):
        raise RuntimeError(f"aiortc's RTCRtpTransceiver has no {role} to replace: unsupported")
    vars(transceiver)[attribute] = value


class MediaPeer:
    """The server's ``RTCPeerConnection`` with one participant, and its streams."""

    def __init__(
        self,
        participant: str,
        config: MediaConfig,
        count: PeerCount,
        on_state: Callable[[MediaPeer], None],
    ) -> None:
        self.participant = participant
        self.state = "new"
        self.inbound: dict[Kind, InboundStream] = {}  # what the participant publishes
        self.slots: dict[Kind, list[OutboundSlot]] = {"audio": [], "video": []}
        self.wire: Wire | None = None  # the connection's one transport's (BUNDLE)
        self._config = config
        self._count = count
        self._on_state = on_state
        self._closing = False
        self._closed = asyncio.Event()
        self._watchdog: asyncio.TimerHandle | None = None
        self._by_payload_type: dict[int, InboundStream] = {}
        # The server needs no STUN or TURN server of its own (aiortc would otherwise ask
        # Google's); one transport carries every m-line.
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        count.value += 1
        self.pc.on("connectionstatechange", self._state_changed)

    @property
    def slot_count(self) -> int:
        return max(len(self.slots["audio"]), len(self.slots["video"]))

    def slot(self, kind: Kind, index: int) -> OutboundSlot | None:
        found = self.slots[kind]
        return found[index] if index < len(found) else None

    async def negotiate(self, sdp: str) -> str:
        """Answer the participant's offer; the connection then starts by itself."""
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except (ValueError, LookupError) as exc:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"sdp: {exc}") from None
        except Exception as exc:  # aiortc's OperationError and kin: nothing in common
            if type(exc).__module__.startswith("aiortc"):
                raise ProtocolError(ErrorCode.BAD_REQUEST, f"sdp: {exc}") from None
            raise
        self._take_over()
        answer = await self.pc.createAnswer()
        if self._config.own_candidates:
            try:
                await bind_host_candidate(self._transport().transport._connection, self._config)
            except NoMediaPort as exc:
                logger.warning("media_no_port", extra={"detail": str(exc)})
                raise UserError(ErrorCode.MEDIA_UNAVAILABLE) from None
        await self.pc.setLocalDescription(answer)
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self._config.connect_seconds, self._timed_out)
        return str(self.pc.localDescription.sdp)

    async def add_candidate(self, candidate: str | None) -> None:
        """A candidate the browser found after its offer (trickle ICE).

        The server never gives up on a connection for lack of candidates: browsers hide their
        local addresses behind mDNS names (``….local``) that a server cannot resolve (and
        should not ask its network about), so the browser's address is often learnt only
        from its own connectivity checks (a peer-reflexive candidate). Such names and the
        end of candidates (``None`` or ``""``) are therefore ignored; a connection that never
        comes up is closed by the watchdog (``MediaConfig.connect_seconds``)."""
        if candidate is None or not candidate.strip():
            return
        try:
            found = candidate_from_sdp(candidate.strip().removeprefix("candidate:"))
        except Exception:  # untrusted text; aiortc asserts, indexes and converts as it reads
            raise ProtocolError(ErrorCode.BAD_REQUEST, "candidate: unreadable") from None
        if found.ip.lower().endswith(".local"):
            return
        # Everything is bundled on the first m-line's transport, whichever m-line the browser
        # names (aiortc would drop a candidate given for a bundled one).
        transceivers = self.pc.getTransceivers()
        if not transceivers:
            return
        found.sdpMid = transceivers[0].mid
        await self.pc.addIceCandidate(found)

    def _transport(self) -> RTCDtlsTransport:
        transports = {
            id(t.receiver.transport): t.receiver.transport for t in self.pc.getTransceivers()
        }
        assert len(transports) == 1, "one bundled transport"
        return next(iter(transports.values()))

    def _take_over(self) -> None:
        """Choose each m-line's direction and codecs, and put the forwarding receiver and
        sender in place of aiortc's before anything starts."""
        published: set[str] = set()
        index = {"audio": 0, "video": 0}
        transport = self._transport()
        wire = self.wire = Wire(transport)
        transport.on("statechange", self._transport_state)
        for transceiver in self.pc.getTransceivers():
            kind: Kind = "audio" if transceiver.kind == "audio" else "video"
            offered = transceiver._offerDirection or "inactive"
            receive = offered in ("recvonly", "sendrecv") and kind not in published
            send = offered in ("sendonly", "sendrecv")
            codecs = self._codecs(kind, transceiver._codecs, publishing=receive)
            if not codecs:
                receive = send = False
                codecs = transceiver._codecs
            transceiver.direction = _DIRECTION[(send, receive)]
            transceiver._codecs = codecs
            original = transceiver.sender
            inbound = InboundStream(
                kind, transport, wire, codecs, header_extensions=transceiver._headerExtensions
            )
            inbound._set_rtcp_ssrc(original._ssrc)
            slot = OutboundSlot(
                kind,
                transport,
                wire,
                ssrc=original._ssrc,
                rtx_ssrc=original._rtx_ssrc,
                # The n-th audio and n-th video slot form one stream: played in sync.
                stream_id=f"slot-{index[kind]}",
                track_id=str(uuid.uuid4()),
                mid=transceiver.mid,
                codecs=codecs,
                header_extensions=transceiver._headerExtensions,
            )
            _replace(transceiver, "receiver", inbound)
            _replace(transceiver, "sender", slot)
            if receive:
                published.add(kind)
                self.inbound[kind] = inbound
                for payload_type in (*inbound.codecs.key, *inbound.codecs.rtx_of):
                    self._by_payload_type[payload_type] = inbound
            if send:
                self.slots[kind].append(slot)
                index[kind] += 1

    def _codecs(
        self, kind: Kind, offered: list[RTCRtpCodecParameters], *, publishing: bool
    ) -> list[RTCRtpCodecParameters]:
        """Opus for audio. For video, a publisher is given one codec to send (the first of
        the configured ones it offers, with its retransmission codec); a slot accepts all of
        them, so any publisher's packets can go through it unchanged."""
        if kind == "audio":
            return [c for c in offered if c.mimeType.lower() == "audio/opus"][:1]
        wanted = [n.upper() for n in self._config.video_codecs]
        chosen = [c for c in offered if not is_rtx(c) and c.name.upper() in wanted]
        chosen.sort(key=lambda c: wanted.index(c.name.upper()))
        if publishing:
            chosen = chosen[:1]
        kept = {c.payloadType for c in chosen}
        rtx = [c for c in offered if is_rtx(c) and c.parameters.get("apt") in kept]
        return chosen + rtx

    def _transport_state(self) -> None:
        transport = self._transport()
        if transport.state == "connected":
            take_rtp(transport, self._deliver)

    def _deliver(self, data: bytes, arrival_ms: int) -> None:
        # The one publishing m-line of each kind owns its payload types (BUNDLE keeps them
        # apart); a packet of any other type is no media of this participant.
        stream = self._by_payload_type.get(data[1] & 0x7F)
        if stream is not None:
            stream.handle_data(data, arrival_ms)

    def _state_changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if state != self.state and not self._closing:
            self.state = state
            self._on_state(self)

    def _timed_out(self) -> None:
        self._watchdog = None
        if self.state != "connected" and not self._closing:
            logger.info("media_connect_timeout")
            self.state = "failed"
            self._on_state(self)

    async def stats(self) -> dict[str, Any]:
        """aiortc's statistics of this connection, by id (a plain dict for logs or tests)."""
        return dict(await self.pc.getStats())

    async def close(self) -> None:
        """Close the connection and everything under it; safe to call twice."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for kind in KINDS:
            for slot in self.slots[kind]:
                slot.bind(None)
        for inbound in self.inbound.values():
            for slot in inbound.targets:
                slot.bind(None)
        if self.pc.getTransceivers():
            release_media(self._transport())
        if self.wire is not None:
            self.wire.close()
        try:
            await self.pc.close()
        finally:
            self.state = "closed"
            self._count.value -= 1
            self._closed.set()
