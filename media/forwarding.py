"""The forwarding path: the server's receivers and senders, which never decode or encode.

aiortc's ``RTCRtpReceiver`` reassembles frames in a jitter buffer and decodes them in a
thread; its ``RTCRtpSender`` encodes frames from a track and packetizes them again. A
forwarding server needs neither. ``InboundStream`` takes the receiver's place in a
transceiver: the DTLS transport hands it each decrypted, parsed RTP packet and it hands the
packet on, in the same call, to every ``OutboundSlot`` that carries it. ``OutboundSlot``
takes the sender's place in a subscriber's transceiver: it writes a new header — the
subscriber's SSRC and payload type, its own continuous sequence numbers and timestamps, the
header extensions the subscriber negotiated — before the unchanged payload, and sends it
through the subscriber's DTLS transport (SRTP, ``media.wire``). That per-copy work is C
(``media/fanout.c``): one call per packet for all of a stream's slots, each slot's numbering
in its ``struct fanout_slot``. No frame is reassembled, no
thread is used, nothing is packetized again, and the whole path is synchronous: one packet
in, its copies out, within one callback.

Around that path, the RTCP a forwarder owes both ends: keyframe requests (PLI/FIR) from a
subscriber go on to the publisher, and a subscriber starting on a video stream asks for one
itself; NACKs from a subscriber are answered from the source's recent packets (as RTX when
negotiated); packets lost on the way in are asked again from the publisher; the
publisher's sender reports are translated to each slot's timestamps (so audio and video stay
in sync); subscribers' bandwidth estimates (REMB) go back to the publisher as their minimum;
and the server reports reception to the publisher once a second, when packets arrive.

Everything here runs on the event loop and never awaits: a slot's binding
(``OutboundSlot.bind``) changes between two packets, never during one.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Protocol

from aiortc.clock import current_datetime
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
    unpack_remb_fci,
)
from aiortc.stats import (
    RTCInboundRtpStreamStats,
    RTCOutboundRtpStreamStats,
    RTCStatsReport,
)

from media._fanout import ffi, lib
from media.rtp import (
    AUDIO_LEVEL_URI,
    HeaderWriter,
    LossDetector,
    ReceptionStats,
    Rtp,
    abs_send_time,
    codec_key,
    is_rtx,
    keyframe_start,
    parse_rtp,
)
from media.wire import Wire, now_ms

logger = logging.getLogger(__name__)

PLI_INTERVAL = 0.3  # seconds between two keyframe requests to one publisher
KEYFRAME_RETRY = 1.0  # a slot still waiting for a keyframe asks again after this long
RR_INTERVAL_MS = 1000  # receiver reports to a publisher, while its packets arrive
REMB_FRESH = 5.0  # a subscriber's bandwidth estimate counts this long
REMB_INTERVAL = 0.5  # at most this often upstream, unless the estimate drops
HISTORY = 512  # packets a video source keeps to answer its slots' NACKs (a power of two)
ERROR_LOG_INTERVAL = 10.0


_fanout = lib.fanout  # one packet to a stream's slots (media/fanout.c)


def _now() -> float:
    return time.monotonic()


class Sends(Protocol):
    """Where a stream's packets leave: ``media.wire.Wire`` (SRTP on the peer's transport)."""

    def send(self, data: bytes) -> None: ...


class _Codecs:
    """A transceiver's negotiated codecs, by payload type and by ``codec_key``."""

    def __init__(self, codecs: list[RTCRtpCodecParameters]) -> None:
        self.key: dict[int, str] = {}
        self.mime: dict[int, str] = {}
        self.clock: dict[int, int] = {}
        self.by_key: dict[str, int] = {}
        self.rtx_of: dict[int, int] = {}  # RTX payload type -> its media payload type
        self.rtx_for: dict[int, int] = {}  # media payload type -> its RTX payload type
        for codec in codecs:
            pt = codec.payloadType
            if pt is None:
                continue
            if is_rtx(codec):
                apt = codec.parameters.get("apt")
                if isinstance(apt, int):
                    self.rtx_of[pt] = apt
                    self.rtx_for[apt] = pt
                continue
            key = codec_key(codec)
            self.key[pt] = key
            self.mime[pt] = codec.mimeType
            self.clock[pt] = codec.clockRate
            self.by_key.setdefault(key, pt)


class InboundStream:
    """The server's receiver of one participant's audio or video (aiortc's receiver
    interface, without the jitter buffer, the decoder thread or the track)."""

    def __init__(
        self,
        kind: str,
        transport: RTCDtlsTransport,
        wire: Sends,
        codecs: list[RTCRtpCodecParameters],
        header_extensions: list[RTCRtpHeaderExtensionParameters] | None = None,
    ) -> None:
        self.kind = kind
        self.video = kind == "video"
        self.codecs = _Codecs(codecs)
        # The one header extension read from the publisher's packets: the audio level,
        # passed on to the subscribers (one-byte form).
        level_id = next((e.id for e in header_extensions or () if e.uri == AUDIO_LEVEL_URI), 0)
        self._level_id = level_id if kind == "audio" and 0 < level_id <= 14 else 0
        self.wire = wire
        self.ssrc: int | None = None  # the publisher's media SSRC, from the first packet
        self._targets: tuple[OutboundSlot, ...] = ()
        self._slots: Any = ffi.new("struct fanout_slot *[]", 0)  # the same, for the C part
        # The latest packets by sequence number (video), for the slots to answer NACKs.
        self._recent: list[Rtp | None] = [None] * HISTORY if self.video else []
        self.packets = 0
        self.octets = 0
        self._transport = transport
        self._enabled = True
        self._track: Any = None
        self._started = False
        self._rtcp_ssrc: int | None = None
        self._rtx_ssrc: dict[int, int] = {}
        self._stats = ReceptionStats(90000 if self.video else 48000)
        self._loss = LossDetector()
        self._keyframe_wanted = False
        self._last_pli = -PLI_INTERVAL
        self._last_rr_ms = 0
        self._remb_sent = (-REMB_INTERVAL, 0)
        self._last_error = -ERROR_LOG_INTERVAL

    @property
    def targets(self) -> tuple[OutboundSlot, ...]:
        """The slots carrying this stream now (``OutboundSlot.bind`` sets them)."""
        return self._targets

    @targets.setter
    def targets(self, slots: tuple[OutboundSlot, ...]) -> None:
        self._targets = slots
        self._slots = ffi.new("struct fanout_slot *[]", [slot.c for slot in slots])

    def recent(self, seq: int) -> Rtp | None:
        """The packet numbered ``seq`` if it is among the latest ``HISTORY`` (video)."""
        if not self._recent:
            return None
        packet = self._recent[seq & (HISTORY - 1)]
        return packet if packet is not None and packet.sequence_number == seq else None

    # -- aiortc's receiver interface (RTCPeerConnection and RTCDtlsTransport call these)

    @property
    def track(self) -> Any:
        return self._track

    @property
    def transport(self) -> RTCDtlsTransport:
        return self._transport

    def setTransport(self, transport: RTCDtlsTransport) -> None:
        self._transport = transport

    def _set_rtcp_ssrc(self, ssrc: int) -> None:
        self._rtcp_ssrc = ssrc

    async def receive(self, parameters: RTCRtpReceiveParameters) -> None:
        """Start receiving: register with the transport's packet router (no decoder)."""
        if self._started:
            return
        for encoding in parameters.encodings:
            if encoding.rtx is not None:
                self._rtx_ssrc[encoding.rtx.ssrc] = encoding.ssrc
        self._transport._register_rtp_receiver(self, parameters)
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._transport._unregister_rtp_receiver(self)
            self._started = False
        for slot in self.targets:
            slot.bind(None)

    def _handle_disconnect(self) -> None:
        pass

    async def getStats(self) -> RTCStatsReport:
        report = RTCStatsReport()
        if self.ssrc is not None:
            report.add(
                RTCInboundRtpStreamStats(
                    timestamp=current_datetime(),
                    type="inbound-rtp",
                    id=f"inbound-rtp_{id(self)}",
                    ssrc=self.ssrc,
                    kind=self.kind,
                    transportId=self._transport._stats_id,
                    packetsReceived=self._stats.received,
                    packetsLost=self._stats.expected - self._stats.received,
                    jitter=int(self._stats.jitter),
                )
            )
        report.update(self._transport._get_stats())
        return report

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpSrPacket) and packet.ssrc == self.ssrc:
            info = packet.sender_info
            self._stats.lsr = (info.ntp_timestamp >> 16) & 0xFFFFFFFF
            self._stats.lsr_time = time.time()
            for slot in self.targets:
                slot.sender_report(info.ntp_timestamp, info.rtp_timestamp)

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        # aiortc's way in (before ``media.wire.take_rtp`` takes over): the same path, on
        # the forwarder's clock rather than aiortc's.
        self.handle(packet, now_ms())

    def handle(self, packet: RtpPacket | Rtp, arrival_ms: int) -> None:
        """One RTP packet from the publisher: account for it, hand it on."""
        if not self._enabled:
            return
        if isinstance(packet, RtpPacket):
            packet = Rtp(
                packet.payload_type,
                packet.marker,
                packet.sequence_number,
                packet.timestamp,
                packet.ssrc,
                packet.payload,
                packet.padding_size,
                packet.extensions.audio_level,
            )
        self._forward_guarded(packet, arrival_ms)

    def handle_data(self, data: bytes, arrival_ms: int) -> None:
        """One decrypted RTP packet from the publisher, as it came (``media.wire``)."""
        try:
            packet = parse_rtp(data, self._level_id)
        except ValueError:
            return  # malformed: dropped, as aiortc would
        if not self._enabled:
            return
        self._forward_guarded(packet, arrival_ms)

    def _forward_guarded(self, packet: Rtp, arrival_ms: int) -> None:
        try:
            self._forward(packet, arrival_ms)
        except Exception:
            # A bug, not the network: keep the connection, say so now and then.
            now = _now()
            if now - self._last_error >= ERROR_LOG_INTERVAL:
                self._last_error = now
                logger.exception("media_forwarding_failed")

    # -- the forwarding path

    def _forward(self, packet: Rtp, arrival_ms: int) -> None:
        codecs = self.codecs
        pt = packet.payload_type
        retransmitted = False
        if pt not in codecs.key:
            apt = codecs.rtx_of.get(pt)
            # Unknown, or an RTX packet with padding only (a bandwidth probe): nothing to pass.
            if apt is None or len(packet.payload) < 2:
                return
            original = self._rtx_ssrc.get(packet.ssrc, self.ssrc)
            if original is None or original != self.ssrc:
                return
            # RFC 4588: the original sequence number, then the original payload.
            payload = packet.payload
            packet = Rtp(
                apt,
                packet.marker,
                (payload[0] << 8) | payload[1],
                packet.timestamp,
                original,
                payload[2:],
                packet.padding_size,
                packet.audio_level,
            )
            pt = apt
            retransmitted = True
            self._loss.recovered(packet.sequence_number)
        elif packet.ssrc != self.ssrc:
            self._restart(packet.ssrc)
        if not retransmitted:
            self._stats.add(packet.sequence_number, packet.timestamp, arrival_ms)
            if self.video:
                lost = self._loss.add(packet.sequence_number)
                if lost:
                    self._send_nack(lost)
        self.packets += 1
        self.octets += len(packet.payload)
        if arrival_ms - self._last_rr_ms >= RR_INTERVAL_MS:
            self._send_receiver_report(arrival_ms)
        if self._keyframe_wanted:
            self._send_pli()

        targets = self._targets
        if not targets:
            return
        if self._recent:
            self._recent[packet.sequence_number & (HISTORY - 1)] = packet
        # What changes in the header extensions from packet to packet, the same for all.
        if self.video:
            varying = _send_time()
        else:
            level = packet.audio_level
            varying = b"" if level is None else bytes(((0x80 if level[0] else 0) | level[1],))
        payload = packet.payload
        copy = (
            payload,
            len(payload),
            packet.marker,
            pt,
            packet.sequence_number,
            packet.timestamp,
            packet.padding_size,
            varying,
            len(varying),
            arrival_ms,
        )
        left = _fanout(self._slots, len(targets), *copy)
        if left:
            self._finish(left, packet, pt, copy)

    def _finish(self, left: int, packet: Rtp, pt: int, copy: tuple[Any, ...]) -> None:
        """What the C part left: slots waiting for a keyframe (``left`` // 65536), which
        start with one, and copies for Python to send (a slot without a C wire)."""
        if left >= 65536:
            keyframe = keyframe_start(self.codecs.mime[pt], packet.payload)
            for slot in self._targets:
                # As the C part counts them: started, and carrying this payload type.
                if slot.waiting and slot.c.started and slot.c.out_pt[pt] >= 0:
                    if keyframe:
                        slot.waiting = False
                        left += _fanout(slot.alone, 1, *copy)
                    elif slot.keyframe_overdue():
                        self.request_keyframe()
        if left & 0xFFFF:
            for slot in self._targets:
                slot.flush()

    def _restart(self, ssrc: int) -> None:
        """A new upstream SSRC (first packet, or the publisher restarted its stream): every
        slot joins it afresh, and video waits for a keyframe."""
        self.ssrc = ssrc
        self._stats = ReceptionStats(self._stats.clock_rate)
        self._loss = LossDetector()
        if self._recent:
            self._recent = [None] * HISTORY
        for slot in self.targets:
            slot.resync()

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe; the request leaves with its next packet, at most
        every ``PLI_INTERVAL`` (a publisher that sends nothing needs no keyframe)."""
        if self.video:
            self._keyframe_wanted = True

    def _send_pli(self) -> None:
        now = _now()
        if now - self._last_pli < PLI_INTERVAL or self.ssrc is None:
            return
        self._keyframe_wanted = False
        self._last_pli = now
        self.wire.send(
            bytes(
                RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self._rtcp_ssrc or 0, media_ssrc=self.ssrc)
            )
        )

    def _send_nack(self, lost: list[int]) -> None:
        assert self.ssrc is not None
        nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=self._rtcp_ssrc or 0, media_ssrc=self.ssrc)
        nack.lost = lost
        self.wire.send(bytes(nack))

    def _send_receiver_report(self, arrival_ms: int) -> None:
        self._last_rr_ms = arrival_ms
        if self.ssrc is None or self._rtcp_ssrc is None:
            return
        stats = self._stats
        fraction, lost, highest, jitter = stats.report()
        dlsr = 0
        if stats.lsr:
            delay = time.time() - stats.lsr_time
            dlsr = int(delay * 65536) if 0 < delay < 65536 else 0
        report = RtcpReceiverInfo(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            packets_lost=lost,
            highest_sequence=highest,
            jitter=jitter,
            lsr=stats.lsr,
            dlsr=dlsr,
        )
        self.wire.send(bytes(RtcpRrPacket(ssrc=self._rtcp_ssrc, reports=[report])))

    def relay_bandwidth(self) -> None:
        """Tell the publisher the lowest bandwidth its subscribers estimated (REMB)."""
        if self.ssrc is None:
            return
        now = _now()
        fresh = [
            slot.remb
            for slot in self.targets
            if slot.remb is not None and now - slot.remb_time < REMB_FRESH
        ]
        if not fresh:
            return
        bitrate = min(fresh)
        last_time, last_bitrate = self._remb_sent
        if now - last_time < REMB_INTERVAL and bitrate >= last_bitrate:
            return
        self._remb_sent = (now, bitrate)
        remb = RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP,
            ssrc=self._rtcp_ssrc or 0,
            media_ssrc=0,
            fci=pack_remb_fci(bitrate, [self.ssrc]),
        )
        self.wire.send(bytes(remb))


class OutboundSlot:
    """The server's sender in one m-line of a subscriber (aiortc's sender interface, without
    the track, the encoder or the packetizer). It carries one publisher's stream at a time
    and may switch to another; its sequence numbers and timestamps stay continuous."""

    def __init__(
        self,
        kind: str,
        transport: RTCDtlsTransport,
        wire: Sends,
        *,
        ssrc: int,
        rtx_ssrc: int,
        stream_id: str,
        track_id: str,
        mid: str | None,
        codecs: list[RTCRtpCodecParameters],
        header_extensions: list[RTCRtpHeaderExtensionParameters],
    ) -> None:
        self.kind = kind
        self.video = kind == "video"
        self.mid = mid
        self.codecs = _Codecs(codecs)
        self.wire = wire
        self.source: InboundStream | None = None
        self.remb: int | None = None  # the subscriber's latest bandwidth estimate
        self.remb_time = 0.0
        self._ssrc = ssrc
        self._rtx_ssrc = rtx_ssrc
        self._stream_id = stream_id
        self._track_id = track_id
        self._enabled = True
        self._transport = transport
        self._started = False
        ids = {ext.uri: ext.id for ext in header_extensions}
        self._writer = HeaderWriter(ssrc, mid, ids, kind=kind)
        self._asked = 0.0
        self._rtx_seq = random.randrange(0x8000)  # noqa: S311 (not a secret)
        # Where this slot's numbering stands, in the C part's structure (media/fanout.c):
        # a new source continues from there.
        c = self.c = ffi.new("struct fanout_slot *")
        c.wire = wire.c if isinstance(wire, Wire) else ffi.NULL
        c.out_pt = [-1] * 128
        c.ssrc = ssrc
        c.clock = 90000 if self.video else 48000
        c.last_seq = random.randrange(0x8000)  # noqa: S311
        c.last_ts = random.randrange(1 << 32)  # noqa: S311
        head, tail, plain, width = self._writer.template()
        for field, value in (("head", head), ("tail", tail), ("plain", plain)):
            if len(value) > ffi.sizeof(getattr(c, field)):
                raise ValueError(f"a header extension block of {len(value)} bytes")
            ffi.memmove(getattr(c, field), value, len(value))
            setattr(c, f"{field}_length", len(value))
        c.width = width
        self.alone = ffi.new("struct fanout_slot *[1]", [c])  # for a call on this slot only

    @property
    def waiting(self) -> bool:
        """Whether this video slot waits for a keyframe to begin (again)."""
        return bool(self.c.waiting)

    @waiting.setter
    def waiting(self, value: bool) -> None:
        self.c.waiting = int(value)

    @property
    def packets(self) -> int:
        return int(self.c.packets)

    @property
    def octets(self) -> int:
        return int(self.c.octets)

    # -- aiortc's sender interface

    @property
    def track(self) -> None:
        return None

    @property
    def transport(self) -> RTCDtlsTransport:
        return self._transport

    def setTransport(self, transport: RTCDtlsTransport) -> None:
        self._transport = transport

    def replaceTrack(self, track: object) -> None:
        raise RuntimeError("a forwarding slot carries no track")

    async def send(self, parameters: RTCRtpSendParameters) -> None:
        """Start: register with the transport's router, which brings this slot the
        subscriber's RTCP about it (NACK, PLI/FIR, REMB, receiver reports)."""
        if not self._started:
            self._transport._register_rtp_sender(self, parameters)
            self._started = True
            self.c.started = 1

    async def stop(self) -> None:
        self.bind(None)
        if self._started:
            self._transport._unregister_rtp_sender(self)
            self._started = False
            self.c.started = 0

    async def getStats(self) -> RTCStatsReport:
        report = RTCStatsReport()
        report.add(
            RTCOutboundRtpStreamStats(
                timestamp=current_datetime(),
                type="outbound-rtp",
                id=f"outbound-rtp_{id(self)}",
                ssrc=self._ssrc,
                kind=self.kind,
                transportId=self._transport._stats_id,
                packetsSent=self.packets,
                bytesSent=self.octets,
                trackId=self._track_id,
            )
        )
        report.update(self._transport._get_stats())
        return report

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            for seq in packet.lost:
                self._retransmit(seq)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            if self.source is not None:
                self.source.request_keyframe()
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if self._ssrc in ssrcs:
                self.remb = bitrate
                self.remb_time = _now()
                if self.source is not None:
                    self.source.relay_bandwidth()

    # -- what the room and the forwarding path call

    def accepts(self, source: InboundStream) -> bool:
        """Whether the subscriber negotiated a codec this source sends."""
        return source.kind == self.kind and any(
            key in self.codecs.by_key for key in source.codecs.key.values()
        )

    def bind(self, source: InboundStream | None) -> None:
        """Carry ``source`` from its next packet on (``None``: carry nothing). A video
        slot waits for a keyframe and asks the publisher for one."""
        if source is self.source:
            return
        old = self.source
        if old is not None:
            old.targets = tuple(s for s in old.targets if s is not self)
        self.source = source
        table = [-1] * 128
        if source is not None:
            for pt, key in source.codecs.key.items():
                out = self.codecs.by_key.get(key)
                if out is not None and 0 <= pt < 128:
                    table[pt] = out
        self.c.out_pt = table
        if source is not None:
            source.targets = (*source.targets, self)
            self.resync()

    def resync(self) -> None:
        self.c.synced = 0
        if self.video and self.source is not None:
            self.waiting = True
            self._asked = _now()
            self.source.request_keyframe()

    def keyframe_overdue(self) -> bool:
        """Whether this waiting slot has waited long enough to ask again."""
        now = _now()
        if now - self._asked < KEYFRAME_RETRY:
            return False
        self._asked = now
        return True

    def flush(self) -> None:
        """Send the copy the C part left in this slot (a wire it cannot send on)."""
        c = self.c
        if c.pending:
            data = bytes(ffi.buffer(c.buffer, c.pending))
            c.pending = 0
            self.wire.send(data)

    def sender_report(self, ntp: int, rtp_timestamp: int) -> None:
        """Pass on the publisher's sender report in this slot's terms: the same wall-clock
        instant, the slot's timestamp for it (receivers align audio and video with it)."""
        c = self.c
        if not c.synced or not self._started:
            return
        report = RtcpSenderInfo(
            ntp_timestamp=ntp,
            rtp_timestamp=(rtp_timestamp + c.ts_offset) & 0xFFFFFFFF,
            packet_count=c.packets & 0xFFFFFFFF,
            octet_count=c.octets & 0xFFFFFFFF,
        )
        self.wire.send(bytes(RtcpSrPacket(ssrc=self._ssrc, sender_info=report)))

    def _retransmit(self, seq: int) -> None:
        """Send packet ``seq`` again (as RTX when negotiated), if it was sent since this slot
        last joined its source and the source still has it."""
        c = self.c
        source = self.source
        if not self.video or source is None or not c.synced:
            return
        if (seq - c.epoch_start) & 0xFFFF > (c.last_seq - c.epoch_start) & 0xFFFF:
            return  # not sent under the current numbering
        packet = source.recent((seq - c.seq_offset) & 0xFFFF)
        if packet is None:
            return
        pt = self.codecs.by_key.get(source.codecs.key.get(packet.payload_type, ""))
        if pt is None:
            return
        timestamp = (packet.timestamp + c.ts_offset) & 0xFFFFFFFF
        padding = packet.padding_size
        rtx_pt = self.codecs.rtx_for.get(pt)
        if rtx_pt is None:
            header = self._writer.write(
                (packet.marker << 7) | pt, seq, timestamp, _send_time(), padding > 0
            )
            payload = packet.payload
        else:
            # RFC 4588: the RTX stream's own numbering, then the original sequence number.
            header = self._writer.write(
                (packet.marker << 7) | rtx_pt,
                self._rtx_seq,
                timestamp,
                _send_time(),
                padding > 0,
                ssrc=self._rtx_ssrc,
            )
            self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            payload = seq.to_bytes(2, "big") + packet.payload
        data = header + payload
        if padding:
            data += bytes(padding - 1) + bytes((padding,))
        self.wire.send(data)


def _send_time() -> bytes:
    return abs_send_time().to_bytes(3, "big")
