"""The forwarding path packet by packet, and the pure parts of media/ (routing, RTP details,
configuration). The DTLS transport is replaced by a recorder: what the slot would encrypt
and send is what the test reads. The real peer connections are in tests/test_media.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
from typing import Any, cast

import pylibsrtp
import pytest
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
    is_rtcp,
    pack_remb_fci,
    unpack_remb_fci,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.settings import Settings
from media.config import TURN_CREDENTIAL_SECONDS, MediaConfig
from media.forwarding import InboundStream, OutboundSlot
from media.routing import Routing, may_meet
from media.rtp import (
    ABS_SEND_TIME_URI,
    AUDIO_LEVEL_URI,
    MID_URI,
    HeaderWriter,
    LossDetector,
    Rtp,
    h264_keyframe_start,
    keyframe_start,
    parse_rtp,
    seq_newer,
    vp8_keyframe_start,
)
from media.wire import Protect
from rooms.models import Side

C, A, B, B2 = "conciliator", "applicant", "company", "company-2"
MEMBERS = {C: Side.CONCILIATOR, A: Side.APPLICANT, B: Side.COMPANY, B2: Side.COMPANY}


# -- routing


def test_joint_session_everyone_meets_everyone() -> None:
    routing = Routing(MEMBERS)
    for source in MEMBERS:
        for target in MEMBERS:
            for kind in ("audio", "video"):
                assert routing.forwards(source, target, kind) == (source != target)


def test_separate_session_keeps_the_other_party_out() -> None:
    routing = Routing(MEMBERS, separate=Side.APPLICANT)
    assert routing.forwards(C, A, "audio") and routing.forwards(A, C, "video")
    for outside in (B, B2):
        for inside in (C, A):
            assert not routing.forwards(outside, inside, "audio")
            assert not routing.forwards(inside, outside, "audio")
            assert not routing.forwards(inside, outside, "video")
    # The party outside is one side: its own representatives still hear each other.
    assert routing.forwards(B, B2, "audio")
    assert may_meet(Side.CONCILIATOR, Side.COMPANY, Side.COMPANY)
    assert not may_meet(Side.APPLICANT, Side.COMPANY, Side.COMPANY)


def test_mute_and_own_devices() -> None:
    routing = Routing(MEMBERS, muted=frozenset({A})).with_sending(B, "video", False)
    assert not routing.forwards(A, C, "audio") and routing.forwards(A, C, "video")
    assert routing.forwards(B, C, "audio") and not routing.forwards(B, C, "video")
    assert routing.with_sending(B, "video", True).forwards(B, C, "video")


def test_non_members_reach_no_one_and_order_puts_the_conciliator_first() -> None:
    routing = Routing(MEMBERS)
    assert not routing.forwards("stranger", C, "audio")
    assert not routing.forwards(C, "stranger", "audio")
    assert routing.sources_for(B, [B2, A, C, "stranger"]) == [C, A, B2]


# -- RTP details


def vp8(keyframe: bool, *, start: bool = True, picture_id: int | None = 300) -> bytes:
    descriptor = bytearray([(0x80 if picture_id is not None else 0) | (0x10 if start else 0)])
    if picture_id is not None:
        descriptor += bytes([0x80, 0x80 | (picture_id >> 8), picture_id & 0xFF])
    return bytes(descriptor) + bytes([0x00 if keyframe else 0x01]) + b"frame"


def test_vp8_keyframe_start() -> None:
    assert vp8_keyframe_start(vp8(True))
    assert vp8_keyframe_start(vp8(True, picture_id=None))
    assert not vp8_keyframe_start(vp8(False))
    assert not vp8_keyframe_start(vp8(True, start=False))
    assert not vp8_keyframe_start(b"\x90")
    assert keyframe_start("video/VP8", vp8(True)) and keyframe_start("audio/opus", b"")


def test_h264_keyframe_start() -> None:
    sps, pps, idr, slice_ = b"\x67\x42", b"\x68\xce", b"\x65\x88", b"\x41\x9a"
    stap = b"\x18" + len(sps).to_bytes(2, "big") + sps + len(pps).to_bytes(2, "big") + pps
    assert h264_keyframe_start(stap)
    assert h264_keyframe_start(idr) and h264_keyframe_start(sps)
    assert h264_keyframe_start(b"\x7c\x85rest")  # FU-A, start bit, IDR
    assert not h264_keyframe_start(b"\x7c\x05rest")  # FU-A, not the start
    assert not h264_keyframe_start(slice_)
    assert not h264_keyframe_start(b"\x18\x00\x09\x68")  # a truncated STAP-A


def test_header_writer_is_read_back_by_aiortc() -> None:
    ids = {MID_URI: 4, ABS_SEND_TIME_URI: 3, AUDIO_LEVEL_URI: 1}
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpSendParameters(
            headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in ids.items()]
        )
    )
    for kind in ("audio", "video"):
        writer = HeaderWriter(0xCAFE, "7", ids, kind=kind)
        ext = writer.extensions(0x123456, (True, 42))
        data = (
            writer.header(
                marker=1,
                payload_type=111,
                sequence_number=65535,
                timestamp=0xFFFFFFFF,
                padding=False,
                extensions=ext,
            )
            + b"payload"
        )
        packet = RtpPacket.parse(data, extensions)
        assert (packet.ssrc, packet.payload_type, packet.marker) == (0xCAFE, 111, 1)
        assert (packet.sequence_number, packet.timestamp) == (65535, 0xFFFFFFFF)
        assert packet.payload == b"payload" and packet.extensions.mid == "7"
        if kind == "video":
            assert packet.extensions.abs_send_time == 0x123456
            assert packet.extensions.audio_level is None
        else:
            assert packet.extensions.audio_level == (True, 42)
            assert packet.extensions.abs_send_time is None


def test_loss_detector() -> None:
    losses = LossDetector()
    assert losses.add(65534) == []
    assert losses.add(2) == [65535, 0, 1]  # across the wrap
    assert losses.add(1) == [] and losses.missing == {65535, 0}
    assert seq_newer(1, 65535) and not seq_newer(65535, 1)
    assert len(losses.add(3000)) == LossDetector.LIMIT


# -- the forwarding path, packet by packet


class Recorder:
    """Stands for a peer's DTLS transport and its wire: keeps what would be encrypted and
    sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self._stats_id = "recorder"

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def _register_rtp_receiver(self, *_: Any) -> None:
        pass

    def _register_rtp_sender(self, *_: Any) -> None:
        pass

    def _unregister_rtp_receiver(self, *_: Any) -> None:
        pass

    def _unregister_rtp_sender(self, *_: Any) -> None:
        pass

    def rtp(self) -> list[RtpPacket]:
        return [RtpPacket.parse(d) for d in self.sent if not is_rtcp(d)]

    def rtcp(self) -> list[Any]:
        return [p for d in self.sent if is_rtcp(d) for p in RtcpPacket.parse(d)]


def video_codecs(vp8_pt: int, rtx_pt: int | None = None) -> list[RTCRtpCodecParameters]:
    codecs = [RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=vp8_pt)]
    if rtx_pt is not None:
        codecs.append(
            RTCRtpCodecParameters(
                mimeType="video/rtx",
                clockRate=90000,
                payloadType=rtx_pt,
                parameters={"apt": vp8_pt},
            )
        )
    return codecs


def publisher(
    codecs: list[RTCRtpCodecParameters], kind: str = "video"
) -> tuple[InboundStream, Recorder]:
    recorder = Recorder()
    stream = InboundStream(kind, cast(RTCDtlsTransport, recorder), recorder, codecs)
    stream._set_rtcp_ssrc(0x5E)
    return stream, recorder


async def subscriber(
    codecs: list[RTCRtpCodecParameters],
    kind: str = "video",
    ssrc: int = 0xAB,
    ids: dict[str, int] | None = None,
) -> tuple[OutboundSlot, Recorder]:
    recorder = Recorder()
    slot = OutboundSlot(
        kind,
        cast(RTCDtlsTransport, recorder),
        recorder,
        ssrc=ssrc,
        rtx_ssrc=ssrc + 1,
        stream_id="slot-0",
        track_id="t",
        mid="3",
        codecs=codecs,
        header_extensions=[
            RTCRtpHeaderExtensionParameters(id=i, uri=u)
            for u, i in (ids if ids is not None else {MID_URI: 1}).items()
        ],
    )
    await slot.send(RTCRtpSendParameters(codecs=codecs))
    return slot, recorder


def media(seq: int, ts: int, payload: bytes, *, ssrc: int = 0x1111, pt: int = 96) -> RtpPacket:
    return RtpPacket(payload_type=pt, sequence_number=seq, timestamp=ts, ssrc=ssrc, payload=payload)


async def test_a_slot_rewrites_the_header_and_keeps_the_payload() -> None:
    source, upstream = publisher(video_codecs(96))
    slot, downstream = await subscriber(video_codecs(120))
    slot.bind(source)
    # The slot waits for a keyframe and asked for one with the publisher's next packet.
    source.handle(media(100, 9000, vp8(False)), 1000)
    assert downstream.sent == []
    assert [p.fmt for p in upstream.rtcp() if isinstance(p, RtcpPsfbPacket)] == [RTCP_PSFB_PLI]
    frames = [vp8(True), b"\x00rest-of-keyframe", vp8(False)]
    for i, payload in enumerate(frames):
        source.handle(media(101 + i, 12000 + 3000 * (i // 2), payload), 1100)
    out = downstream.rtp()
    assert [p.payload for p in out] == frames  # the very bytes the publisher sent
    assert {p.ssrc for p in out} == {0xAB} and {p.payload_type for p in out} == {120}
    assert [(p.sequence_number - out[0].sequence_number) & 0xFFFF for p in out] == [0, 1, 2]
    assert [(p.timestamp - out[0].timestamp) & 0xFFFFFFFF for p in out] == [0, 0, 3000]
    assert slot.packets == 3


async def test_numbering_stays_continuous_across_a_switch_and_a_pause() -> None:
    first, _ = publisher(video_codecs(96))
    second, _ = publisher(video_codecs(100))
    slot, downstream = await subscriber(video_codecs(96))
    slot.bind(first)
    first.handle(media(5000, 1000, vp8(True)), 10_000)
    first.handle(media(5001, 4000, vp8(False)), 10_033)
    slot.bind(second)  # another participant takes the slot, with its own numbering
    second.handle(media(60000, 777, vp8(True), ssrc=0x2222, pt=100), 10_533)
    second.handle(media(60001, 3777, vp8(False), ssrc=0x2222, pt=100), 10_566)
    slot.bind(None)  # a pause (muted, or a separate session)
    second.handle(media(60002, 6777, vp8(False), ssrc=0x2222, pt=100), 10_600)
    slot.bind(second)
    second.handle(media(60010, 30777, vp8(True), ssrc=0x2222, pt=100), 11_600)
    out = downstream.rtp()
    seqs = [(p.sequence_number - out[0].sequence_number) & 0xFFFF for p in out]
    assert seqs == [0, 1, 2, 3, 4]  # nothing looks lost to the subscriber
    stamps = [(p.timestamp - out[0].timestamp) & 0xFFFFFFFF for p in out]
    # The switch advanced by the wall-clock time (500 ms = 45000 ticks), then followed the
    # new source's own spacing; the resumption by the 1034 ms since the slot last sent.
    assert stamps[1] == 3000 and stamps[2] == 3000 + 45000 and stamps[3] == stamps[2] + 3000
    assert stamps[4] == stamps[3] + 1034 * 90
    assert {p.payload_type for p in out} == {96}


async def test_packets_from_before_the_join_are_not_sent() -> None:
    source, _ = publisher(video_codecs(96))
    slot, downstream = await subscriber(video_codecs(96))
    slot.bind(source)
    source.handle(media(10, 0, vp8(True)), 0)
    source.handle(media(9, 0, vp8(False)), 0)  # late, before the keyframe
    source.handle(media(11, 0, vp8(False)), 0)
    assert len(downstream.rtp()) == 2


async def test_a_long_stream_keeps_flowing_across_sequence_number_wrap() -> None:
    # Half the sequence number space after the join (32768 packets, minutes of video),
    # packets must not start to look older than the join point.
    source, _ = publisher(video_codecs(96))
    slot, downstream = await subscriber(video_codecs(96))
    slot.bind(source)
    count = 70_000
    for i in range(count):
        source.handle(media((65_000 + i) & 0xFFFF, 3000 * (i // 4), vp8(i == 0)), i // 4)
    sent = downstream.rtp()
    assert len(sent) == count
    assert all(
        (b.sequence_number - a.sequence_number) & 0xFFFF == 1 for a, b in itertools.pairwise(sent)
    )


async def test_nack_is_answered_from_the_slot_history_as_rtx() -> None:
    source, _ = publisher(video_codecs(96, 97))
    slot, downstream = await subscriber(video_codecs(100, 101))
    slot.bind(source)
    for i in range(3):
        source.handle(media(200 + i, 0, vp8(i == 0)), 0)
    lost = downstream.rtp()[1]
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=0xAB)
    nack.lost = [lost.sequence_number, (lost.sequence_number + 500) & 0xFFFF]
    await slot._handle_rtcp_packet(nack)
    resent = downstream.rtp()[3:]
    assert len(resent) == 1  # the second is no longer (never was) in the history
    rtx = resent[0]
    assert (rtx.ssrc, rtx.payload_type) == (0xAB + 1, 101)
    assert rtx.payload == lost.sequence_number.to_bytes(2, "big") + lost.payload


async def test_without_rtx_the_packet_is_sent_again_as_it_was() -> None:
    source, _ = publisher(video_codecs(96))
    slot, downstream = await subscriber(video_codecs(96))
    slot.bind(source)
    source.handle(media(7, 0, vp8(True)), 0)
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=0xAB)
    nack.lost = [downstream.rtp()[0].sequence_number]
    await slot._handle_rtcp_packet(nack)
    assert downstream.sent[0] == downstream.sent[1]


async def test_nacks_are_answered_for_what_the_slot_sent_from_its_source_now() -> None:
    first, _ = publisher(video_codecs(96))
    second, _ = publisher(video_codecs(96))
    slot, downstream = await subscriber(video_codecs(96))
    slot.bind(first)
    first.handle(media(10, 0, vp8(True)), 0)
    first.handle(media(11, 0, vp8(False) + b"first"), 0)
    slot.bind(second)  # the numbering goes on; what came before is not the source's
    second.handle(media(500, 0, vp8(True), ssrc=0x2222), 40)
    second.handle(media(501, 0, vp8(False) + b"second", ssrc=0x2222), 40)
    out = downstream.rtp()
    assert len(out) == 4
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=0xAB)
    nack.lost = [out[1].sequence_number, out[3].sequence_number, out[3].sequence_number + 1]
    await slot._handle_rtcp_packet(nack)
    resent = downstream.rtp()[4:]
    assert [(p.sequence_number, p.payload) for p in resent] == [
        (out[3].sequence_number, out[3].payload)
    ]


async def test_the_c_part_writes_the_header_the_writer_writes() -> None:
    """``media/fanout.c`` puts each copy together as ``HeaderWriter.write`` does: the
    extensions the subscriber negotiated (the send time for video, the publisher's audio
    level), the payload, the padding."""
    every = {MID_URI: 4, ABS_SEND_TIME_URI: 3, AUDIO_LEVEL_URI: 1}
    opus = [
        RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
    ]
    cases = [
        ("video", video_codecs(96), every),
        ("video", video_codecs(96), {MID_URI: 4}),
        ("audio", opus, every),
        ("audio", opus, {}),
    ]
    for kind, codecs, ids in cases:
        source, _ = publisher(codecs, kind=kind)
        slot, downstream = await subscriber(codecs, kind=kind, ids=ids)
        slot.bind(source)
        pt = codecs[0].payloadType or 0
        payload = vp8(True) if kind == "video" else b"opus"
        level = (True, 42) if kind == "audio" else None
        packets = [
            Rtp(pt, 1, 7, 1234, 0x1111, payload, 5, level),
            Rtp(pt, 0, 8, 4321, 0x1111, payload + b"more", 0, None),
        ]
        for packet in packets:
            source.handle(packet, 0)
        assert len(downstream.sent) == 2, (kind, ids)
        extensions = HeaderExtensionsMap()
        extensions.configure(
            RTCRtpSendParameters(
                headerExtensions=[
                    RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in ids.items()
                ]
            )
        )
        writer = HeaderWriter(0xAB, "3", ids, kind=kind)
        for data, packet in zip(downstream.sent, packets, strict=True):
            out = RtpPacket.parse(data, extensions)
            send_time = out.extensions.abs_send_time
            assert (send_time is not None) == (kind == "video" and ABS_SEND_TIME_URI in ids)
            varying = b""
            if send_time is not None:
                varying = send_time.to_bytes(3, "big")
            elif packet.audio_level is not None:
                varying = bytes((0x80 | packet.audio_level[1],))
            header = writer.write(
                (packet.marker << 7) | pt,
                out.sequence_number,
                out.timestamp,
                varying,
                packet.padding_size > 0,
            )
            size = packet.padding_size
            padding = bytes(size - 1) + bytes((size,)) if size else b""
            assert data == header + packet.payload + padding
            assert out.extensions.audio_level == (
                packet.audio_level if AUDIO_LEVEL_URI in ids else None
            )


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(
    kind=st.sampled_from(["audio", "video"]),
    size=st.integers(0, 1600),
    padding=st.integers(0, 255),
    marker=st.integers(0, 1),
    seq=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    level=st.none() | st.tuples(st.booleans(), st.integers(0, 127)),
)
def test_any_packet_is_copied_whole_or_not_at_all(
    kind: str,
    size: int,
    padding: int,
    marker: int,
    seq: int,
    timestamp: int,
    level: tuple[bool, int] | None,
) -> None:
    """The C part's bounds: any payload and padding size is copied exactly as
    ``HeaderWriter`` writes it, or, past what one SRTP packet may hold, not at all."""
    ids = {MID_URI: 4, AUDIO_LEVEL_URI: 1} if kind == "audio" else {MID_URI: 4}
    codecs = (
        [RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, payloadType=111)]
        if kind == "audio"
        else video_codecs(96)
    )
    source, _ = publisher(codecs, kind=kind)
    slot, downstream = asyncio.run(subscriber(codecs, kind=kind, ids=ids))
    source.ssrc = 0x1111  # known already: no restart, which would wait for a keyframe
    slot.bind(source)
    slot.waiting = False  # (a video slot's wait for a keyframe is another test's)
    out_seq, out_ts = (slot.c.last_seq + 1) & 0xFFFF, (slot.c.last_ts + 1) & 0xFFFFFFFF
    pt = codecs[0].payloadType or 0
    payload = bytes(range(256)) * 7
    packet = Rtp(pt, marker, seq, timestamp, 0x1111, payload[:size], padding, level)
    source.handle(packet, 0)
    varying = b"" if level is None or kind == "video" else bytes(((level[0] << 7) | level[1],))
    header = HeaderWriter(0xAB, "3", ids, kind=kind).write(
        (marker << 7) | pt, out_seq, out_ts, varying, padding > 0
    )
    tail = bytes(padding - 1) + bytes((padding,)) if padding else b""
    expected = header + payload[:size] + tail
    if len(expected) > 1500 - pylibsrtp.SRTP_MAX_TRAILER_LEN:  # libsrtp's room for its tag
        assert downstream.sent == []
        assert not slot.c.synced  # nor joined on it: nothing it sent could be asked again
    else:
        assert downstream.sent == [expected]


async def test_losses_upstream_are_asked_again_and_retransmissions_forwarded() -> None:
    source, upstream = publisher(video_codecs(96, 97))
    slot, downstream = await subscriber(video_codecs(96))
    slot.bind(source)
    source.handle(media(300, 0, vp8(True)), 0)
    source.handle(media(303, 0, vp8(False)), 0)
    nacks = [p for p in upstream.rtcp() if isinstance(p, RtcpRtpfbPacket)]
    assert [n.lost for n in nacks] == [[301, 302]] and nacks[0].media_ssrc == 0x1111
    # The publisher retransmits 301 on its RTX stream (payload: original number, payload).
    rtx = media(1, 0, (301).to_bytes(2, "big") + b"recovered", ssrc=0x9999, pt=97)
    source.handle(rtx, 0)
    out = downstream.rtp()
    assert [p.payload for p in out][-1] == b"recovered"
    assert (out[-1].sequence_number - out[0].sequence_number) & 0xFFFF == 1
    # A padding-only RTX probe carries nothing to forward.
    source.handle(media(2, 0, b"", ssrc=0x9999, pt=97), 0)
    assert len(downstream.rtp()) == 3


async def test_keyframe_requests_and_bandwidth_go_upstream() -> None:
    source, upstream = publisher(video_codecs(96))
    fast, _ = await subscriber(video_codecs(96), ssrc=0xA0)
    slow, _ = await subscriber(video_codecs(96), ssrc=0xB0)
    fast.bind(source)
    slow.bind(source)
    source.handle(media(1, 0, vp8(True)), 0)
    before = len(upstream.rtcp())
    source._last_pli = -1.0  # past the spacing of keyframe requests
    await fast._handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=7, media_ssrc=0xA0))
    source.handle(media(2, 0, vp8(False)), 0)
    plis = [p for p in upstream.rtcp()[before:] if isinstance(p, RtcpPsfbPacket)]
    assert [(p.fmt, p.media_ssrc) for p in plis] == [(RTCP_PSFB_PLI, 0x1111)]
    for slot, bitrate in ((fast, 2_000_000), (slow, 300_000)):
        remb = RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=7, media_ssrc=0, fci=pack_remb_fci(bitrate, [slot._ssrc])
        )
        await slot._handle_rtcp_packet(remb)
    rembs = [p for p in upstream.rtcp() if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_APP]
    assert unpack_remb_fci(rembs[-1].fci) == (300_000, [0x1111])  # the slowest subscriber


async def test_sender_reports_are_translated_per_slot() -> None:
    source, _ = publisher(video_codecs(96))
    slot, downstream = await subscriber(video_codecs(96))
    slot.bind(source)
    source.handle(media(1, 50_000, vp8(True)), 0)
    first = downstream.rtp()[0]
    report = RtcpSrPacket(
        ssrc=0x1111,
        sender_info=RtcpSenderInfo(
            ntp_timestamp=123 << 32, rtp_timestamp=50_000 + 900, packet_count=1, octet_count=1
        ),
    )
    await source._handle_rtcp_packet(report)
    translated = [p for p in downstream.rtcp() if isinstance(p, RtcpSrPacket)]
    assert len(translated) == 1 and translated[0].ssrc == 0xAB
    assert translated[0].sender_info.ntp_timestamp == 123 << 32
    assert translated[0].sender_info.rtp_timestamp == (first.timestamp + 900) & 0xFFFFFFFF


async def test_audio_slots_start_at_once_and_a_codec_mismatch_is_refused() -> None:
    opus = [
        RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
    ]
    source, _ = publisher(opus, kind="audio")
    slot, downstream = await subscriber(
        [
            RTCRtpCodecParameters(
                mimeType="audio/opus", clockRate=48000, channels=2, payloadType=109
            )
        ],
        kind="audio",
    )
    assert slot.accepts(source)
    slot.bind(source)
    source.handle(media(1, 960, b"opus", pt=111), 0)
    assert [(p.payload_type, p.payload) for p in downstream.rtp()] == [(109, b"opus")]
    h264_only, _ = await subscriber(
        [
            RTCRtpCodecParameters(
                mimeType="video/H264",
                clockRate=90000,
                payloadType=102,
                parameters={"packetization-mode": "1", "profile-level-id": "42e01f"},
            )
        ]
    )
    vp8_source, _ = publisher(video_codecs(96))
    assert not h264_only.accepts(vp8_source) and not h264_only.accepts(source)


# -- configuration


def test_turn_credentials_from_the_shared_secret() -> None:
    config = MediaConfig(
        ice_server_urls=("stun:stun.example.org:3478", "turn:turn.example.org:3478?transport=udp"),
        turn_secret="s3cret",
    )
    stun, turn = config.ice_servers("participant-1", now=1_000_000)
    assert stun == {"urls": ["stun:stun.example.org:3478"]}
    username = f"{1_000_000 + TURN_CREDENTIAL_SECONDS}:participant-1"
    assert turn["username"] == username
    expected = hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(turn["credential"]) == expected
    assert MediaConfig().ice_servers("p", 0) == []
    with pytest.raises(ValueError):
        MediaConfig(ice_server_urls=("turn:",))


def test_media_settings_are_checked() -> None:
    settings = Settings(
        media_public_address="203.0.113.7",
        media_port_min=40000,
        media_port_max=40099,
        media_ice_servers="stun:stun.example.org, turn:turn.example.org",
        media_video_codecs="h264,vp8",
    )
    config = MediaConfig.from_settings(settings)
    assert config.own_candidates and config.video_codecs == ("H264", "VP8")
    assert config.ice_server_urls == ("stun:stun.example.org", "turn:turn.example.org")
    assert not MediaConfig.from_settings(Settings()).own_candidates
    for wrong in (
        {"media_public_address": "media.example.org"},
        {"media_port_min": 40000},
        {"media_port_min": 50000, "media_port_max": 40000},
        {"media_ice_servers": "http://example.org"},
        {"media_video_codecs": "VP9"},
        {"media_turn_username": "user"},
    ):
        with pytest.raises(ValidationError):
            Settings(**wrong)


def test_parse_rtp_reads_what_aiortc_reads() -> None:
    ids = {MID_URI: 4, ABS_SEND_TIME_URI: 3, AUDIO_LEVEL_URI: 1}
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpSendParameters(
            headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in ids.items()]
        )
    )
    writer = HeaderWriter(0xCAFE, "7", ids, kind="audio")
    with_level = writer.write(0x80 | 111, 65535, 0xFFFFFFFF, bytes((0x80 | 42,))) + b"opus"
    padded = (
        writer.write(111, 1, 2, b"", padding=True) + b"opus" + bytes(3) + bytes((4,))
    )  # 4 bytes of padding
    csrc = bytearray(HeaderWriter(7, None, {}, kind="video").write(96, 3, 4, b"") + b"vp8")
    csrc[0] |= 2  # two contributing sources, 8 bytes taken from the payload
    csrc[12:12] = bytes(range(8))
    for data in (with_level, padded, bytes(csrc)):
        ours = parse_rtp(data, 1)
        theirs = RtpPacket.parse(data, extensions)
        assert (ours.payload_type, ours.marker, ours.ssrc) == (
            theirs.payload_type,
            theirs.marker,
            theirs.ssrc,
        )
        assert (ours.sequence_number, ours.timestamp) == (
            theirs.sequence_number,
            theirs.timestamp,
        )
        assert (ours.payload, ours.padding_size) == (theirs.payload, theirs.padding_size)
        assert ours.audio_level == theirs.extensions.audio_level
    assert parse_rtp(with_level, 1).audio_level == (True, 42)
    assert parse_rtp(with_level).audio_level is None  # not asked for
    for bad in (b"\x80" * 11, b"\x40" + bytes(15), with_level[:14], padded[:-1] + b"\x00"):
        with pytest.raises(ValueError):
            parse_rtp(bad, 1)


def test_header_writer_fast_way_equals_the_plain_one() -> None:
    for ids in ({MID_URI: 4, ABS_SEND_TIME_URI: 3, AUDIO_LEVEL_URI: 1}, {MID_URI: 2}, {}):
        for kind in ("audio", "video"):
            writer = HeaderWriter(0xBEEF, "12", ids, kind=kind)
            level = (False, 99)
            varying = (0x123456).to_bytes(3, "big") if kind == "video" else bytes((99,))
            plain = writer.header(
                marker=0,
                payload_type=100,
                sequence_number=9,
                timestamp=10,
                padding=True,
                extensions=writer.extensions(0x123456, level),
            )
            assert writer.write(100, 9, 10, varying, padding=True) == plain


def test_wire_protect_is_libsrtps_protect() -> None:
    """``media.wire.Protect`` makes the very SRTP packets ``pylibsrtp.Session.protect``
    makes (same key, same packets: byte for byte), which a receiving session opens; a packet
    too long for the buffer is refused, as pylibsrtp refuses it."""
    key = bytes(range(28))

    def session(direction: int) -> pylibsrtp.Session:
        policy = pylibsrtp.Policy(
            key=key,
            ssrc_type=direction,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
        )
        return pylibsrtp.Session(policy=policy)

    ours = Protect(session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    theirs = session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    receiver = session(pylibsrtp.Policy.SSRC_ANY_INBOUND)
    for seq in range(50):
        plain = bytes([0x80, 96]) + seq.to_bytes(2, "big") + bytes(8) + bytes([seq]) * 900
        protected = ours(plain)
        assert protected == theirs.protect(plain)
        assert receiver.unprotect(protected) == plain
    with pytest.raises(ValueError):
        ours(bytes([0x80, 96]) + bytes(1500))
