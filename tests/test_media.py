"""Video meetings end to end in one process: aiortc clients on the host's own address
publish generated audio and video (tests/media_clients.py) to the server's ``MediaRoom``,
which forwards it; the clients decode what they receive and the tests read the content back
(who sent it, in which order), slot by slot, as the room's layout names them."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiortc.codecs
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import pytest
from aioice.ice import get_host_addresses
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.codecs.base import Decoder, Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from core.errors import ErrorCode, ProtocolError, UserError
from media._fanout import lib as fanout_lib
from media.config import MediaConfig
from media.forwarding import InboundStream, OutboundSlot
from media.room import Layout, MediaRoom, MediaRooms
from rooms.models import Side
from tests.media_clients import Client, tone_of

C, A, B = "conciliator", "applicant", "company"


@dataclass
class Events:
    """What the room told the signaling layer."""

    layouts: list[tuple[str, Layout]] = field(default_factory=list)
    states: list[tuple[str, str]] = field(default_factory=list)

    def layout_changed(self, meeting: str, participant: str, layout: Layout) -> None:
        self.layouts.append((participant, layout))

    def connection_changed(self, meeting: str, participant: str, state: str) -> None:
        self.states.append((participant, state))


@dataclass
class CodecCalls:
    """Every decoder and encoder aiortc made, with whose object asked for it."""

    clients: list[Client] = field(default_factory=list)
    decoders: list[tuple[str, str]] = field(default_factory=list)  # (owner, codec)
    encoders: list[tuple[str, str]] = field(default_factory=list)

    def decoder_owner(self, output_queue: object) -> str:
        # aiortc's decoder thread gets the queue of the receiver's track: whose is it?
        for client in self.clients:
            for receiver in client.receivers():
                track = receiver._track
                if track is not None and track._queue is output_queue:
                    return "client"
        return "server"

    def encoder_owner(self, sender: object) -> str:
        for client in self.clients:
            if any(sender is s for s in client.pc.getSenders()):
                return "client"
        return "server"


@pytest.fixture
def codec_calls(monkeypatch: pytest.MonkeyPatch) -> CodecCalls:
    """Count the codecs aiortc creates, by whose receiver or sender asked: the clients must
    decode and encode (they play and publish), the server never."""
    calls = CodecCalls()
    real_decoder = aiortc.codecs.get_decoder
    real_encoder = aiortc.codecs.get_encoder

    def get_decoder(codec: RTCRtpCodecParameters) -> Decoder:
        caller = sys._getframe(1).f_locals
        calls.decoders.append((calls.decoder_owner(caller.get("output_q")), codec.mimeType))
        return real_decoder(codec)

    def get_encoder(codec: RTCRtpCodecParameters) -> Encoder:
        caller = sys._getframe(1).f_locals
        calls.encoders.append((calls.encoder_owner(caller.get("self")), codec.mimeType))
        return real_encoder(codec)

    for module in (aiortc.codecs, aiortc.rtcrtpreceiver, aiortc.rtcrtpsender):
        if hasattr(module, "get_decoder"):
            monkeypatch.setattr(module, "get_decoder", get_decoder)
        if hasattr(module, "get_encoder"):
            monkeypatch.setattr(module, "get_encoder", get_encoder)
    return calls


class Meeting:
    """A room with its members; clients join as participants of a side."""

    def __init__(self, room: MediaRoom, calls: CodecCalls) -> None:
        self.room = room
        self.calls = calls
        self.members: dict[str, Side] = {}
        self.clients: dict[str, Client] = {}
        self.separate: Side | None = None
        self.muted: set[str] = set()

    def route(self) -> None:
        self.room.set_routing(self.members, self.separate, self.muted)

    async def join(self, name: str, side: Side, ident: int, **options: Any) -> Client:
        self.members[name] = side
        self.route()
        client = Client(name, ident, **options)
        self.clients[name] = client
        self.calls.clients.append(client)
        await client.join(self.room)
        return client

    def video(self, viewer: str, source: str) -> list[tuple[int, int]]:
        slot = self._slot(viewer, source)
        return [] if slot is None else self.clients[viewer].got(slot.video_mid).video

    def audio(self, viewer: str, source: str) -> list[float]:
        slot = self._slot(viewer, source)
        return [] if slot is None else self.clients[viewer].got(slot.audio_mid).pitches

    def _slot(self, viewer: str, source: str) -> Any:
        layout = self.room.layout(viewer)
        return None if layout is None else layout.slot_of(source)

    def total(self, viewer: str) -> int:
        """Every frame ``viewer`` decoded so far, from anyone."""
        return sum(r.frames for r in self.clients[viewer].received.values())

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


async def eventually(check: Callable[[], bool], within: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


async def flowing(meeting: Meeting, viewer: str, source: str, kind: str, frames: int = 8) -> None:
    """Wait until ``viewer`` decodes ``frames`` more frames of ``source``'s ``kind``."""
    read = meeting.video if kind == "video" else meeting.audio
    await eventually(lambda: meeting._slot(viewer, source) is not None, what=f"{viewer} slot")
    base = len(read(viewer, source))
    await eventually(
        lambda: len(read(viewer, source)) >= base + frames,
        what=f"{viewer} receiving {source}'s {kind}",
    )


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def still(count: Callable[[], int], settle: float = 1.0, window: float = 1.0) -> None:
    """Assert that ``count`` stops growing: what was in flight arrives within ``settle``."""
    await asyncio.sleep(settle)
    before = count()
    await asyncio.sleep(window)
    assert count() == before, "still receiving"


def check_video(frames: list[tuple[int, int]], ident: int) -> None:
    """Every frame came from ``ident``'s camera, each later than the one before."""
    assert frames, "no video"
    assert {who for _, who in frames} == {ident}
    counters = [n for n, _ in frames]
    assert all(b > a for a, b in itertools.pairwise(counters)), counters


def check_audio(pitches: list[float], ident: int) -> None:
    assert pitches, "no audio"
    recent = sorted(pitches[-20:])
    assert abs(recent[len(recent) // 2] - tone_of(ident)) < 0.1 * tone_of(ident), recent


@pytest.fixture
async def media_rooms() -> AsyncIterator[MediaRooms]:
    rooms = MediaRooms(MediaConfig(connect_seconds=10))
    yield rooms
    await rooms.close()
    assert rooms.live_peer_connections == 0


def aiortc_tasks() -> set[asyncio.Task[Any]]:
    """Running tasks started by aiortc or aioice (their coroutines live in those modules)."""
    found = set()
    for task in asyncio.all_tasks():
        module = getattr(task.get_coro(), "cr_frame", None)
        name = module.f_globals.get("__name__", "") if module is not None else ""
        if not task.done() and name.startswith(("aiortc", "aioice")):
            found.add(task)
    return found


def _absent() -> Any:
    raise AssertionError("no peer connection")


def decoder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith("-decoder")]


async def test_forwards_audio_and_video_to_each_subscriber_without_decoding(
    media_rooms: MediaRooms, codec_calls: CodecCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Packets that take aiortc's way in (queue, receive task) rather than the short one.
    queued: list[InboundStream] = []
    aiortc_way = InboundStream._handle_rtp_packet

    async def counted(self: InboundStream, packet: RtpPacket, arrival_time_ms: int) -> None:
        queued.append(self)
        await aiortc_way(self, packet, arrival_time_ms)

    monkeypatch.setattr(InboundStream, "_handle_rtp_packet", counted)
    events = Events()
    media_rooms._events = events
    meeting = Meeting(media_rooms.room("meeting-1"), codec_calls)
    try:
        await meeting.join(C, Side.CONCILIATOR, 1)
        await meeting.join(A, Side.APPLICANT, 2, video_codec="H264")
        # The company takes part by audio only: it sends and receives no video.
        await meeting.join(B, Side.COMPANY, 3, video=False, receive_video=False)
        for viewer, source, kind in [
            (C, A, "video"),
            (A, C, "video"),
            (C, A, "audio"),
            (C, B, "audio"),
            (A, C, "audio"),
            (A, B, "audio"),
            (B, C, "audio"),
            (B, A, "audio"),
        ]:
            await flowing(meeting, viewer, source, kind)
        check_video(meeting.video(C, A), 2)  # H.264, through a slot that also takes VP8
        check_video(meeting.video(A, C), 1)
        for viewer, source in [(C, A), (C, B), (A, C), (A, B), (B, C), (B, A)]:
            check_audio(meeting.audio(viewer, source), {C: 1, A: 2, B: 3}[source])

        # What each participant was told it receives: the conciliator first, and no video
        # from (or to) the audio-only company.
        layout_a = meeting.room.layout(A)
        assert layout_a is not None
        assert [(s.participant, s.audio, s.video) for s in layout_a.slots] == [
            (C, True, True),
            (B, True, False),
        ]
        layout_b = meeting.room.layout(B)
        assert layout_b is not None and all(s.video_mid is None for s in layout_b.slots)
        assert (A, layout_a) in events.layouts
        assert {(p, s) for p, s in events.states} >= {(C, "connected"), (A, "connected")}

        # The server decoded and encoded nothing; the clients did both (the count works).
        assert [o for o, _ in codec_calls.decoders if o == "server"] == []
        assert [o for o, _ in codec_calls.encoders if o == "server"] == []
        assert {m for o, m in codec_calls.decoders} >= {"video/VP8", "video/H264", "audio/opus"}
        assert {m for o, m in codec_calls.encoders} >= {"video/VP8", "video/H264", "audio/opus"}
        for participant in (C, A, B):
            peer = meeting.room.peer(participant)
            assert peer is not None
            for transceiver in peer.pc.getTransceivers():
                assert isinstance(transceiver.receiver, InboundStream)
                assert isinstance(transceiver.sender, OutboundSlot)
                assert not isinstance(transceiver.receiver, RTCRtpReceiver)
                assert not isinstance(transceiver.sender, RTCRtpSender)
        # Media took the short way, from the socket callback (only what arrived with the
        # end of the DTLS handshake was queued).
        forwarded = sum(
            stream.packets
            for participant in (C, A, B)
            for stream in (meeting.room.peer(participant) or _absent()).inbound.values()
        )
        assert forwarded > 100 and len(queued) < forwarded / 20
        # And the copies went out from the C part (media/fanout.c), on its own duplicate of
        # each connection's socket, none refused.
        for participant in (C, A, B):
            wire = (meeting.room.peer(participant) or _absent()).wire
            assert wire is not None and wire.c.mode == fanout_lib.WIRE_DIRECT
            assert wire.c.sent > 50 and wire.dropped == 0
    finally:
        await meeting.close()


async def test_without_the_c_wire_python_sends_the_copies(
    media_rooms: MediaRooms, codec_calls: CodecCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the C part cannot have its socket (no descriptor left, say), the copies it makes
    are sent by Python (``OutboundSlot.flush``): the meeting goes on the same."""

    def no_descriptor(fd: int) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr("media.wire.os.dup", no_descriptor)
    meeting = Meeting(media_rooms.room("meeting-py"), codec_calls)
    try:
        await meeting.join(C, Side.CONCILIATOR, 1)
        await meeting.join(A, Side.APPLICANT, 2)
        await flowing(meeting, C, A, "video")
        await flowing(meeting, A, C, "video")
        await flowing(meeting, A, C, "audio")
        check_video(meeting.video(C, A)[-8:], 2)
        for participant in (C, A):
            wire = (meeting.room.peer(participant) or _absent()).wire
            assert wire is not None and wire.c.mode == fanout_lib.WIRE_PYTHON
            assert wire.c.sent == 0 and wire.sent > 50
    finally:
        await meeting.close()


async def test_separate_session_cuts_media_to_the_party_outside_and_restores_it(
    media_rooms: MediaRooms, codec_calls: CodecCalls
) -> None:
    meeting = Meeting(media_rooms.room("meeting-2"), codec_calls)
    try:
        for name, side, ident in [
            (C, Side.CONCILIATOR, 1),
            (A, Side.APPLICANT, 2),
            (B, Side.COMPANY, 3),
        ]:
            await meeting.join(name, side, ident)
        await flowing(meeting, B, C, "video")
        await flowing(meeting, B, A, "video")
        await flowing(meeting, C, B, "audio")

        meeting.separate = Side.APPLICANT
        meeting.route()
        layout = meeting.room.layout(B)
        assert layout is not None and all(s.participant is None for s in layout.slots)
        for viewer, source in [(C, A), (A, C)]:  # the separate session goes on
            await flowing(meeting, viewer, source, "video")
            await flowing(meeting, viewer, source, "audio")
        # Nothing reaches the company, and nothing of the company reaches the session.
        await still(lambda: meeting.total(B))
        assert meeting._slot(C, B) is None and meeting._slot(A, B) is None
        company = meeting.room.peer(B)
        assert company is not None
        for kind in ("audio", "video"):
            assert company.inbound[kind].targets == ()  # forwarded to no one…
        published = company.inbound["audio"].packets
        await eventually(
            lambda: company.inbound["audio"].packets > published + 10
        )  # …while it speaks

        meeting.separate = None
        meeting.route()
        for viewer, source in [(B, C), (B, A), (C, B), (A, B)]:
            await flowing(meeting, viewer, source, "video")
            await flowing(meeting, viewer, source, "audio")
        check_video(meeting.video(B, C)[-10:], 1)
        check_video(meeting.video(B, A)[-10:], 2)
        # The pause did not look like loss to the company's receivers: each slot numbered
        # its packets on from where it stopped.
        for transceiver in meeting.clients[B].transceivers():
            if transceiver.direction == "recvonly":
                stats = await transceiver.receiver.getStats()
                inbound = [s for s in stats.values() if s.type == "inbound-rtp"]
                assert all(s.packetsLost == 0 for s in inbound), inbound
    finally:
        await meeting.close()


async def test_mute_and_own_camera_and_microphone(
    media_rooms: MediaRooms, codec_calls: CodecCalls
) -> None:
    meeting = Meeting(media_rooms.room("meeting-3"), codec_calls)
    try:
        await meeting.join(C, Side.CONCILIATOR, 1)
        await meeting.join(A, Side.APPLICANT, 2)
        await flowing(meeting, C, A, "audio")
        await flowing(meeting, C, A, "video")

        meeting.muted = {A}  # the conciliator mutes the applicant, on the server
        meeting.route()
        await still(lambda: len(meeting.audio(C, A)))
        await flowing(meeting, C, A, "video")
        await flowing(meeting, A, C, "audio")  # the applicant still hears
        layout = meeting.room.layout(C)
        assert layout is not None and layout.slots[0].audio is False
        meeting.muted = set()
        meeting.route()
        await flowing(meeting, C, A, "audio")
        check_audio(meeting.audio(C, A), 2)

        meeting.room.set_sending(A, video=False)  # the applicant turns the camera off
        await still(lambda: len(meeting.video(C, A)))
        await flowing(meeting, C, A, "audio")
        meeting.room.set_sending(A, video=True)
        await flowing(meeting, C, A, "video")  # again from a keyframe, asked for
        check_video(meeting.video(C, A)[-8:], 2)
        meeting.room.set_sending(C, audio=False)
        await still(lambda: len(meeting.audio(A, C)))
    finally:
        await meeting.close()


async def test_removal_reconnection_failure_and_no_leaks(
    media_rooms: MediaRooms, codec_calls: CodecCalls
) -> None:
    baseline_tasks = aiortc_tasks()
    baseline_fds = open_fds()
    events = Events()
    media_rooms._events = events
    meeting = Meeting(media_rooms.room("meeting-4"), codec_calls)
    try:
        for name, side, ident in [
            (C, Side.CONCILIATOR, 1),
            (A, Side.APPLICANT, 2),
            (B, Side.COMPANY, 3),
        ]:
            await meeting.join(name, side, ident)
        await flowing(meeting, A, C, "video")
        await flowing(meeting, B, C, "video")
        assert media_rooms.live_peer_connections == 3
        assert aiortc_tasks() - baseline_tasks  # the check below sees aiortc's tasks

        # The applicant's connection is replaced by a new offer: the old one is closed.
        old = meeting.clients[A]
        await meeting.join(A, Side.APPLICANT, 4)
        assert media_rooms.live_peer_connections == 3
        await flowing(meeting, A, C, "video")
        await flowing(meeting, C, A, "video")
        check_video(meeting.video(C, A)[-8:], 4)
        await eventually(lambda: old.pc.connectionState == "closed", what="old connection closed")
        await old.close()

        # The company is removed from the meeting: its connection goes, it receives nothing.
        del meeting.members[B]
        meeting.route()
        assert meeting.room.peer(B) is None
        await eventually(lambda: media_rooms.live_peer_connections == 2, what="removed closed")
        await still(lambda: meeting.total(B))
        layout = meeting.room.layout(C)
        assert layout is not None and B not in [s.participant for s in layout.slots]
        assert meeting.clients[B].pc.connectionState == "closed"  # the server closed it
        retry = Client(B, 3)
        try:
            with pytest.raises(UserError) as refused:
                await retry.join(meeting.room)
            assert refused.value.code == ErrorCode.NOT_ADMITTED
        finally:
            await retry.close()

        # The conciliator's browser goes away: the server notices and closes its side.
        await meeting.clients[C].pc.close()
        await eventually(lambda: meeting.room.peer(C) is None, what="failed connection dropped")
        await eventually(lambda: media_rooms.live_peer_connections == 1, what="count 1")
        assert (C, "closed") in events.states or (C, "failed") in events.states

        await meeting.room.close(A)
        assert media_rooms.live_peer_connections == 0
    finally:
        await meeting.close()
    await media_rooms.end("meeting-4")
    await eventually(lambda: aiortc_tasks() <= baseline_tasks, what="aiortc tasks ended")
    await eventually(lambda: not decoder_threads(), what="decoder threads ended")
    # Sockets too, the wires' duplicates included (media.wire.Wire.close).
    await eventually(lambda: open_fds() <= baseline_fds, what="descriptors closed")


async def test_a_connection_never_made_is_closed_after_the_timeout(
    codec_calls: CodecCalls,
) -> None:
    rooms = MediaRooms(MediaConfig(connect_seconds=0.5))
    events = Events()
    rooms._events = events
    meeting = Meeting(rooms.room("meeting-5"), codec_calls)
    meeting.members[C] = Side.CONCILIATOR
    meeting.route()
    client = Client(C, 1)
    try:
        await meeting.room.offer(C, await client.offer())  # the answer never reaches it
        assert rooms.live_peer_connections == 1
        await eventually(lambda: rooms.live_peer_connections == 0, within=5, what="timeout")
        assert (C, "failed") in events.states
    finally:
        await client.close()
        await rooms.close()


async def offer_without_candidates(meeting: Meeting) -> tuple[Client, str, list[str]]:
    """The conciliator publishing in ``meeting``, and the applicant's client admitted with
    an offer stripped of its candidates (returned apart, in order)."""
    await meeting.join(C, Side.CONCILIATOR, 1)
    meeting.members[A] = Side.APPLICANT
    meeting.route()
    client = Client(A, 2)
    meeting.clients[A] = client
    lines = (await client.offer()).split("\r\n")
    found = [line for line in lines if line.startswith("a=candidate:")]
    bare = [line for line in lines if not line.startswith(("a=candidate:", "a=end-of-c"))]
    return client, "\r\n".join(bare), found


async def test_candidates_trickled_after_the_offer(
    media_rooms: MediaRooms, codec_calls: CodecCalls
) -> None:
    meeting = Meeting(media_rooms.room("meeting-8"), codec_calls)
    try:
        # A browser sends its offer at once and its candidates as it finds them.
        late, bare, found = await offer_without_candidates(meeting)
        assert found
        await late.accept(await meeting.room.offer(A, bare))
        for line in dict.fromkeys(found):
            await meeting.room.add_candidate(A, line.removeprefix("a="))
        await meeting.room.add_candidate(A, None)
        await flowing(meeting, C, A, "video")
        with pytest.raises(ProtocolError):
            await meeting.room.add_candidate(A, "candidate:nonsense")
    finally:
        await meeting.close()


async def test_hidden_addresses_and_an_early_end_of_candidates_do_not_fail_it(
    media_rooms: MediaRooms, codec_calls: CodecCalls
) -> None:
    """Browsers name their host candidates with mDNS (``….local``) and may say "no more"
    before their first check reaches the server: the server learns their address from the
    checks themselves, and never asks the network about a ``.local`` name."""
    meeting = Meeting(media_rooms.room("meeting-9"), codec_calls)
    try:
        hidden, bare, _ = await offer_without_candidates(meeting)
        answer = await meeting.room.offer(A, bare)
        name = (
            "candidate:1 1 udp 2122260223 0b2f6ad4-7a51-4c39-9d3e-6f3e1f0c2a11.local 50000 typ host"
        )
        await meeting.room.add_candidate(A, name)
        await meeting.room.add_candidate(A, None)
        await hidden.accept(answer)  # its checks start only now
        await flowing(meeting, C, A, "video")
    finally:
        await meeting.close()


async def test_offers_the_server_does_not_answer(
    media_rooms: MediaRooms, codec_calls: CodecCalls
) -> None:
    room = media_rooms.room("meeting-6")
    room.set_routing({C: Side.CONCILIATOR})
    client = Client(C, 1)
    offer = await client.offer()
    try:
        with pytest.raises(UserError) as outsider:
            await room.offer("stranger", offer)
        assert outsider.value.code == ErrorCode.NOT_ADMITTED
        unbundled = "\r\n".join(line for line in offer.split("\r\n") if "group:BUNDLE" not in line)
        with_data = offer.replace("m=audio", "m=application", 1)
        for wrong in ["", "not sdp at all", "v=0\r\n", unbundled, with_data, offer * 200]:
            with pytest.raises(ProtocolError):
                await room.offer(C, wrong)
        assert media_rooms.live_peer_connections == 0 and room.peer(C) is None
        answer = await room.offer(C, offer)  # and the right one is answered
        assert "a=group:BUNDLE" in answer
    finally:
        await client.close()


async def test_host_candidate_on_the_public_address_and_port_range(
    codec_calls: CodecCalls,
) -> None:
    address = get_host_addresses(use_ipv4=True, use_ipv6=False)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("0.0.0.0", 0))  # noqa: S104
        low = probe.getsockname()[1]
    config = MediaConfig(public_address=address, port_min=low, port_max=low + 3)
    rooms = MediaRooms(config)
    meeting = Meeting(rooms.room("meeting-7"), codec_calls)
    try:
        await meeting.join(C, Side.CONCILIATOR, 1)
        await meeting.join(A, Side.APPLICANT, 2, slots=1)
        await flowing(meeting, A, C, "video")
        for participant in (C, A):
            peer = meeting.room.peer(participant)
            assert peer is not None
            candidates = {
                line
                for line in peer.pc.localDescription.sdp.split("\r\n")
                if line.startswith("a=candidate:")
            }
            assert len(candidates) == 1  # repeated in each m-line, all bundled
            fields = candidates.pop().split()
            assert fields[4] == address and low <= int(fields[5]) <= low + 3
            assert fields[7] == "host"
        # The range exhausted: no video for a third participant, and nothing left open.
        busy = []
        for port in range(low, low + 4):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind(("0.0.0.0", port))  # noqa: S104
            except OSError:
                sock.close()
                continue
            busy.append(sock)
        meeting.members[B] = Side.COMPANY
        meeting.route()
        late = Client(B, 3)
        try:
            with pytest.raises(UserError) as full:
                await meeting.room.offer(B, await late.offer())
            assert full.value.code == ErrorCode.MEDIA_UNAVAILABLE
            assert rooms.live_peer_connections == 2
        finally:
            await late.close()
            for sock in busy:
                sock.close()
    finally:
        await meeting.close()
        await rooms.close()
    assert rooms.live_peer_connections == 0
