"""RTP details the forwarder needs, as plain functions and small classes (no I/O).

What a forwarder must understand of a packet is little: which codec it carries (to map the
payload type to the subscriber's), whether it starts a keyframe (VP8, H.264: a subscriber
that starts on a stream or switches to it must begin there), and how to write the header
with the subscriber's SSRC, sequence number, timestamp and header extension identifiers.
The payload is never touched.
"""

from __future__ import annotations

import struct
import time

from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.sdp import parse_h264_profile_level_id

HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence number, timestamp, SSRC
ONE_BYTE_PROFILE = b"\xbe\xde"
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
NTP_OFFSET = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)


def is_rtx(codec: RTCRtpCodecParameters) -> bool:
    return codec.mimeType.lower().endswith("/rtx")


def codec_key(codec: RTCRtpCodecParameters) -> str:
    """What must match for a publisher's packets to be playable by a subscriber's decoder:
    the codec, its clock rate and channels, and for H.264 the profile and packetization mode
    (the same test aiortc applies when it negotiates)."""
    key = f"{codec.mimeType.lower()}/{codec.clockRate}/{codec.channels or 1}"
    if codec.mimeType.lower() == "video/h264":
        mode = str(codec.parameters.get("packetization-mode", "0"))
        try:
            profile = parse_h264_profile_level_id(
                str(codec.parameters.get("profile-level-id", "42e01f"))
            )[0].name
        except ValueError:
            profile = "unknown"
        key += f"/{profile}/{mode}"
    return key


def seq_newer(a: int, b: int) -> bool:
    """Whether 16-bit sequence number ``a`` comes after ``b`` (RFC 3550 wrap-around)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000


def abs_send_time(now: float | None = None) -> int:
    """The abs-send-time header extension's value: NTP seconds in 6.18 fixed point."""
    seconds = time.time() if now is None else now
    return int((seconds + NTP_OFFSET) * 262144) & 0xFFFFFF


def ntp_now(now: float | None = None) -> int:
    """The 64-bit NTP timestamp of ``now`` (Unix seconds, default the current time)."""
    seconds = time.time() if now is None else now
    return int((seconds + NTP_OFFSET) * 4294967296.0)


def vp8_keyframe_start(payload: bytes) -> bool:
    """Whether a VP8 RTP payload (RFC 7741) is the first packet of a keyframe."""
    if len(payload) < 2:
        return False
    first = payload[0]
    # S (start of a partition) with partition index 0: the packet begins a frame.
    if not first & 0x10 or first & 0x07:
        return False
    pos = 1
    if first & 0x80:  # X: an extension byte follows
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture ID, one or two bytes (M bit)
            if len(payload) <= pos:
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX
            pos += 1
    # The VP8 payload header's P bit is 0 for a keyframe (RFC 6386 section 9.1).
    return len(payload) > pos and not payload[pos] & 0x01


def h264_keyframe_start(payload: bytes) -> bool:
    """Whether an H.264 RTP payload (RFC 6184) starts an instantaneous decoder refresh: a
    sequence parameter set (sent with every IDR by WebRTC senders) or the start of an IDR
    slice, alone, aggregated (STAP-A) or fragmented (FU-A)."""
    if not payload:
        return False
    nal = payload[0] & 0x1F
    if nal in (5, 7):
        return True
    if nal == 24:  # STAP-A: 16-bit size, then the unit
        pos = 1
        while pos + 2 < len(payload):
            size = (payload[pos] << 8) | payload[pos + 1]
            if size == 0 or pos + 2 + size > len(payload):
                return False
            if payload[pos + 2] & 0x1F in (5, 7):
                return True
            pos += 2 + size
        return False
    if nal == 28 and len(payload) > 1:  # FU-A: the start fragment of an IDR slice
        return bool(payload[1] & 0x80) and payload[1] & 0x1F == 5
    return False


def keyframe_start(mime_type: str, payload: bytes) -> bool:
    """Whether ``payload`` starts a keyframe of ``mime_type``; audio never needs one."""
    kind = mime_type.lower()
    if kind == "video/vp8":
        return vp8_keyframe_start(payload)
    if kind == "video/h264":
        return h264_keyframe_start(payload)
    return True


class Rtp:
    """The fields of an RTP packet the forwarder reads (RFC 3550), and its payload.

    ``parse_rtp`` reads them straight from the datagram: aiortc's ``RtpPacket.parse`` also
    decodes every header extension into objects, which the forwarder, writing its own
    header, does not need; the audio level is the one extension it passes on."""

    __slots__ = (
        "audio_level",
        "marker",
        "padding_size",
        "payload",
        "payload_type",
        "sequence_number",
        "ssrc",
        "timestamp",
    )

    def __init__(
        self,
        payload_type: int,
        marker: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        payload: bytes,
        padding_size: int = 0,
        audio_level: tuple[bool, int] | None = None,
    ) -> None:
        self.payload_type = payload_type
        self.marker = marker
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload = payload
        self.padding_size = padding_size
        self.audio_level = audio_level


def parse_rtp(data: bytes, audio_level_id: int = 0) -> Rtp:
    """Read an RTP packet; ``audio_level_id``: the one-byte header extension element that
    carries the audio level (0: not read). Raises ``ValueError`` if it is no RTP."""
    end = len(data)
    if end < 12:
        raise ValueError("RTP packet length is less than 12 bytes")
    first, second, sequence_number, timestamp, ssrc = HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise ValueError("RTP packet has invalid version")
    pos = 12 + 4 * (first & 0x0F)
    level = None
    if first & 0x10:
        if pos + 4 > end:
            raise ValueError("RTP packet has truncated extension profile / length")
        start = pos + 4
        pos = start + 4 * ((data[pos + 2] << 8) | data[pos + 3])
        if pos > end:
            raise ValueError("RTP packet has truncated extension value")
        if audio_level_id and data[start - 4 : start - 2] == ONE_BYTE_PROFILE:
            level = _one_byte_element(data, start, pos, audio_level_id)
    padding = 0
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or pos + padding > end:
            raise ValueError("RTP packet padding length is invalid")
        end -= padding
    elif pos > end:
        raise ValueError("RTP packet is truncated")
    return Rtp(
        second & 0x7F,
        second >> 7,
        sequence_number,
        timestamp,
        ssrc,
        data[pos:end],
        padding,
        level,
    )


def _one_byte_element(data: bytes, pos: int, end: int, wanted: int) -> tuple[bool, int] | None:
    """The audio level in element ``wanted`` of a one-byte header extension block (RFC
    8285), or ``None``."""
    while pos < end:
        byte = data[pos]
        if byte == 0:  # padding between elements
            pos += 1
            continue
        ident = byte >> 4
        if ident == 15:
            break
        length = (byte & 0x0F) + 1
        if ident == wanted and pos + 1 < end:
            value = data[pos + 1]
            return bool(value & 0x80), value & 0x7F
        pos += 1 + length
    return None


class HeaderWriter:
    """Writes the RTP header of one outgoing stream with the header extensions its receiver
    negotiated: the media identification (so a bundled receiver can demultiplex before the
    SSRC is known), abs-send-time for video (the receiver's bandwidth estimate), the audio
    level for audio. Identifiers above 14 would need the two-byte form and are left out."""

    __slots__ = (
        "_abs_id",
        "_head",
        "_level_id",
        "_mid_element",
        "_plain",
        "_tail",
        "_width",
        "ssrc",
    )

    def __init__(self, ssrc: int, mid: str | None, ids: dict[str, int], *, kind: str) -> None:
        self.ssrc = ssrc
        mid_id = ids.get(MID_URI, 0)
        mid_bytes = (mid or "").encode()
        self._mid_element = (
            bytes([(mid_id << 4) | (len(mid_bytes) - 1)]) + mid_bytes
            if 0 < mid_id <= 14 and 0 < len(mid_bytes) <= 16
            else b""
        )
        abs_id = ids.get(ABS_SEND_TIME_URI, 0)
        level_id = ids.get(AUDIO_LEVEL_URI, 0)
        self._abs_id = abs_id if kind == "video" and 0 < abs_id <= 14 else 0
        self._level_id = level_id if kind == "audio" and 0 < level_id <= 14 else 0
        # The extension block is the same for every packet but for the 3 bytes of the send
        # time (video) or the 1 byte of the level (audio): cut once around them.
        self._plain = self.extensions(0, None)  # the block without a level (or send time)
        if self._abs_id:
            template, width = self._plain, 3
        elif self._level_id:
            template, width = self.extensions(0, (False, 0)), 1
        else:
            template, width = self._plain, 0
        at = 4 + len(self._mid_element) + 1
        self._width = width
        self._head = template[:at]
        self._tail = template[at + width :]

    def extensions(self, send_time: int, audio_level: tuple[bool, int] | None) -> bytes:
        """The header extension block (profile, length, elements, padding) or nothing."""
        elements = self._mid_element
        if self._abs_id:
            elements += bytes(
                (
                    (self._abs_id << 4) | 2,
                    (send_time >> 16) & 0xFF,
                    (send_time >> 8) & 0xFF,
                    send_time & 0xFF,
                )
            )
        if self._level_id and audio_level is not None:
            voice, level = audio_level
            elements += bytes((self._level_id << 4, (0x80 if voice else 0) | (level & 0x7F)))
        if not elements:
            return b""
        elements += b"\x00" * (-len(elements) % 4)
        return ONE_BYTE_PROFILE + (len(elements) // 4).to_bytes(2, "big") + elements

    def header(
        self,
        *,
        marker: int,
        payload_type: int,
        sequence_number: int,
        timestamp: int,
        padding: bool,
        extensions: bytes,
    ) -> bytes:
        first = 0x80 | (0x20 if padding else 0) | (0x10 if extensions else 0)
        return (
            HEADER.pack(first, (marker << 7) | payload_type, sequence_number, timestamp, self.ssrc)
            + extensions
        )

    def write(
        self,
        marker_payload_type: int,
        sequence_number: int,
        timestamp: int,
        varying: bytes,
        padding: bool = False,
        *,
        ssrc: int | None = None,
    ) -> bytes:
        """The header, the fast way: ``marker_payload_type`` is the second byte, ``varying``
        the send time's 3 bytes (video), the level's byte (audio) or ``b""`` (no level);
        it is left out when the receiver did not negotiate its extension. ``ssrc``: another
        stream's (a retransmission's), with this one's extensions."""
        extensions = self._head + varying + self._tail if varying and self._width else self._plain
        first = (0x90 if extensions else 0x80) | (0x20 if padding else 0)
        return (
            HEADER.pack(
                first,
                marker_payload_type,
                sequence_number,
                timestamp,
                self.ssrc if ssrc is None else ssrc,
            )
            + extensions
        )

    def template(self) -> tuple[bytes, bytes, bytes, int]:
        """What ``write`` puts together, for the C part (media/fanout.c): the extension
        block before and after the varying bytes, the block without them, their width."""
        return self._head, self._tail, self._plain, self._width


class ReceptionStats:
    """What a receiver report says about one incoming stream (RFC 3550 appendix A.3, A.8)."""

    __slots__ = (
        "_expected_prior",
        "_received_prior",
        "_transit",
        "base_seq",
        "clock_rate",
        "cycles",
        "jitter",
        "lsr",
        "lsr_time",
        "max_seq",
        "received",
    )

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.base_seq: int | None = None
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        self.jitter = 0.0
        self._transit: int | None = None
        self._expected_prior = 0
        self._received_prior = 0
        self.lsr = 0  # middle 32 bits of the last sender report's NTP time
        self.lsr_time = 0.0

    def add(self, sequence_number: int, timestamp: int, arrival_ms: int) -> None:
        self.received += 1
        if self.base_seq is None:
            self.base_seq = self.max_seq = sequence_number
        elif seq_newer(sequence_number, self.max_seq):
            if sequence_number < self.max_seq:
                self.cycles += 1 << 16
            self.max_seq = sequence_number
        transit = arrival_ms * self.clock_rate // 1000 - timestamp
        if self._transit is not None:
            self.jitter += (abs(transit - self._transit) - self.jitter) / 16
        self._transit = transit

    @property
    def expected(self) -> int:
        return 0 if self.base_seq is None else self.cycles + self.max_seq - self.base_seq + 1

    def report(self) -> tuple[int, int, int, int]:
        """(fraction lost since the last report in 1/256, cumulative lost, extended highest
        sequence number, interarrival jitter), and starts the next interval."""
        expected = self.expected
        interval_expected = expected - self._expected_prior
        interval_received = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        lost_interval = interval_expected - interval_received
        fraction = (
            0
            if interval_expected <= 0 or lost_interval <= 0
            else (lost_interval << 8) // interval_expected
        )
        lost = max(-(1 << 23), min(expected - self.received, (1 << 23) - 1))
        return fraction, lost, self.cycles | self.max_seq, int(self.jitter)


class LossDetector:
    """Sequence numbers missing from an incoming video stream, to ask again (generic NACK)."""

    __slots__ = ("_highest", "missing")

    LIMIT = 256  # how far back a missing packet is still worth asking for

    def __init__(self) -> None:
        self._highest: int | None = None
        self.missing: set[int] = set()

    def add(self, sequence_number: int) -> list[int]:
        """Record an arrival; return the sequence numbers newly found missing."""
        highest = self._highest
        if highest is not None and sequence_number == (highest + 1) & 0xFFFF:
            self._highest = sequence_number  # the usual case: the next one, in order
            return []
        if highest is None:
            self._highest = sequence_number
            return []
        if not seq_newer(sequence_number, highest):
            self.missing.discard(sequence_number)
            return []
        gap = (sequence_number - highest - 1) & 0xFFFF
        first = max(0, gap - self.LIMIT)  # a long gap: only its recent end is worth asking
        new = [(highest + 1 + i) & 0xFFFF for i in range(first, gap)]
        self._highest = sequence_number
        self.missing.update(new)
        if len(self.missing) > self.LIMIT:
            oldest = (sequence_number - self.LIMIT) & 0xFFFF
            self.missing = {s for s in self.missing if seq_newer(s, oldest)}
        return new

    def recovered(self, sequence_number: int) -> None:
        self.missing.discard(sequence_number)
