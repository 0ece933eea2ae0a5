"""The load of ``bench.media``: aiortc peers in a process of their own that publish
pre-encoded media and count what they receive, without decoding.

The media is encoded once (``encode_media``): 4 seconds of 640×480 VP8 at 30 fps and about
1 Mbit/s (aiortc's own VP8 encoder and packetizer, a keyframe every 2 seconds), each frame
a scrolling noise texture with the frame counter drawn over it in big blocks, and 20 ms Opus
frames of a tone (aiortc's Opus encoder). A publisher then replays those RTP payloads in a
loop, at their pace, under its own headers (its SSRC, sequence numbers, timestamps and the
negotiated header extensions), encrypted with its peer connection's SRTP session: no
encoder runs while the load is on. Its peer connection's senders carry an idle track, so
aiortc negotiates, runs ICE, DTLS and RTCP as usual but never sends media itself.

A subscriber takes its incoming SRTP packets at the socket (``media.wire.take_rtp``) and
counts them per SSRC: a video frame counts when all its packets arrived (from the packet
that starts the frame to the one with the marker bit), with its timestamp after the last
frame's. No frame is decoded (``--check-frames`` decodes the first subscriber's frames at
the end and reads their counters back).

The process prints ``READY`` once every peer connection is up and media flows, ``START``
when the measurement begins and ``END`` when it ends (the caller reads the server's CPU
time at those lines), then ``STATS {json}``.

    python -m bench.media_load --server URL --scenario fanout --subscribers 4 \\
        [--warmup 4] [--seconds 10] --media FILE
    python -m bench.media_load --server URL --scenario rooms --rooms 8 ...
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import fractions
import gc
import itertools
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import uvloop
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcdtlstransport import RTCDtlsTransport
from av import AudioFrame, CodecContext, VideoFrame

from media.rtp import HeaderWriter, abs_send_time
from media.wire import Wire, release_media, take_rtp

WIDTH, HEIGHT, FPS = 640, 480, 30
SECONDS = 4
KEYFRAME_EVERY = 60
VIDEO_BITRATE = 1_000_000
VIDEO_TICKS = 90000 // FPS
AUDIO_TICKS = 960  # 20 ms at 48 kHz
BLOCK_W, BLOCK_H = WIDTH // 8, 60  # the counter's blocks: 16 bits in two rows of 8
TICK = 0.005  # the replay's scheduling period


# -- the media, encoded once --------------------------------------------------------------


@dataclass
class Media:
    """Pre-encoded RTP payloads: video frames (each a list of packets) and audio frames."""

    video: list[list[bytes]]
    audio: list[bytes]

    def save(self, path: Path) -> None:
        data = {
            "video": [[base64.b64encode(p).decode() for p in f] for f in self.video],
            "audio": [base64.b64encode(p).decode() for p in self.audio],
        }
        path.write_text(json.dumps(data))

    @classmethod
    def load(cls, path: Path) -> Media:
        data = json.loads(path.read_text())
        return cls(
            video=[[base64.b64decode(p) for p in f] for f in data["video"]],
            audio=[base64.b64decode(p) for p in data["audio"]],
        )

    @property
    def video_bitrate(self) -> float:
        return sum(len(p) for f in self.video for p in f) * 8 * FPS / len(self.video)

    @property
    def packets_per_frame(self) -> float:
        return sum(len(f) for f in self.video) / len(self.video)


def counter_frame(index: int, texture: np.ndarray[Any, Any]) -> VideoFrame:
    """Frame ``index``: the texture scrolled by 4 pixels a frame, the counter's 16 bits
    over it as white and black blocks (top row: low byte)."""
    luma = np.roll(texture, 4 * index, axis=1).copy()
    for bit in range(16):
        row, column = divmod(bit, 8)
        on = (index >> (7 - column + 8 * row)) & 1
        y, x = row * (HEIGHT - BLOCK_H), column * BLOCK_W
        luma[y : y + BLOCK_H, x : x + BLOCK_W] = 235 if on else 16
    chroma = np.full((HEIGHT // 2, WIDTH), 128, dtype=np.uint8)
    frame = VideoFrame.from_ndarray(np.vstack([luma, chroma]), format="yuv420p")
    frame.pts = index * VIDEO_TICKS
    frame.time_base = fractions.Fraction(1, 90000)
    return frame


def read_counter(frame: VideoFrame) -> int:
    luma = frame.to_ndarray(format="gray")
    value = 0
    for bit in range(16):
        row, column = divmod(bit, 8)
        y = row * (HEIGHT - BLOCK_H) + BLOCK_H // 2
        x = column * BLOCK_W + BLOCK_W // 2
        if luma[y, x] > 128:
            value |= 1 << (7 - column + 8 * row)
    return value


def encode_media() -> Media:
    rng = np.random.default_rng(6)
    texture = rng.integers(40, 215, size=(HEIGHT, WIDTH), dtype=np.uint8)
    # Smooth it a little: a camera's picture, not white noise.
    texture = ((texture.astype(np.uint16) + np.roll(texture, 1, axis=1)) // 2).astype(np.uint8)
    encoder = Vp8Encoder()
    encoder.target_bitrate = VIDEO_BITRATE
    video = []
    for index in range(FPS * SECONDS):
        payloads, _ = encoder.encode(
            counter_frame(index, texture), force_keyframe=index % KEYFRAME_EVERY == 0
        )
        video.append(payloads)
    opus = OpusEncoder()
    audio = []
    for index in range(50 * SECONDS):
        samples = np.sin(2 * np.pi * 440 * (np.arange(960) + 960 * index) / 48000)
        frame = AudioFrame.from_ndarray(
            (samples * 8000).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = 48000
        frame.pts = index * 960
        frame.time_base = fractions.Fraction(1, 48000)
        payloads, _ = opus.encode(frame)
        audio.extend(payloads)
    return Media(video, audio)


def media_at(path: Path) -> Media:
    if path.exists():
        return Media.load(path)
    media = encode_media()
    media.save(path)
    return media


# -- what a subscriber counts ----------------------------------------------------------------


@dataclass
class Stream:
    """One incoming stream (by SSRC): its packets, and for video its complete frames."""

    video: bool
    packets: int = 0
    frames: int = 0
    out_of_order: int = 0
    _ts: int | None = None
    _start: int | None = None
    _count: int = 0
    _last_ts: int | None = None
    keep: list[bytes] | None = None  # complete frames' payload packets, when checking
    _parts: list[bytes] = field(default_factory=list)

    def add(self, seq: int, ts: int, marker: int, payload: bytes) -> None:
        self.packets += 1
        if not self.video:
            return
        if ts != self._ts:
            self._ts, self._start, self._count = ts, None, 0
            self._parts = []
        self._count += 1
        if payload and payload[0] & 0x10 and not payload[0] & 0x07:
            self._start = seq
        if self.keep is not None:
            self._parts.append(payload)
        if marker and self._start is not None and ((seq - self._start) & 0xFFFF) + 1 == self._count:
            self.frames += 1
            if self._last_ts is not None and not 0 < ((ts - self._last_ts) & 0xFFFFFFFF) < 1 << 31:
                self.out_of_order += 1
            self._last_ts = ts
            if self.keep is not None and len(self.keep) < 4 * FPS:
                self.keep.append(b"".join(_vp8_data(p) for p in self._parts))


def _vp8_data(payload: bytes) -> bytes:
    """A VP8 RTP payload without its descriptor (RFC 7741)."""
    pos = 1
    if payload[0] & 0x80:
        ext = payload[1]
        pos = 2
        if ext & 0x80:
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:
            pos += 1
        if ext & 0x30:
            pos += 1
    return payload[pos:]


# -- a participant ---------------------------------------------------------------------------


class Idle(MediaStreamTrack):
    """A track that never yields a frame: aiortc's sender waits on it, the replay sends."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Any:
        await asyncio.Event().wait()


class Outgoing:
    """One published stream's replay state."""

    def __init__(self, transceiver: RTCRtpTransceiver, mime: str) -> None:
        codec = next(c for c in transceiver._codecs if c.mimeType.lower() == mime)
        assert codec.payloadType is not None
        self.pt = codec.payloadType
        ids = {e.uri: e.id for e in transceiver._headerExtensions}
        self.writer = HeaderWriter(
            transceiver.sender._ssrc, transceiver.mid, ids, kind=transceiver.kind
        )
        self.seq = random.randrange(1 << 16)  # noqa: S311 (not a secret)
        self.ts = random.randrange(1 << 32)  # noqa: S311
        self.index = 0


class Participant:
    def __init__(self, meeting: str, name: str, *, publish: bool, slots: int) -> None:
        self.meeting = meeting
        self.name = name
        self.publish = publish
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.sending: list[RTCRtpTransceiver] = []
        if publish:
            for kind in ("audio", "video"):
                self.sending.append(self.pc.addTransceiver(Idle(kind), direction="sendonly"))
        for _ in range(slots):
            self.pc.addTransceiver("audio", direction="recvonly")
            self.pc.addTransceiver("video", direction="recvonly")
        self.streams: dict[int, Stream] = {}
        self.video_pts: set[int] = set()
        self.audio: Outgoing | None = None
        self.video: Outgoing | None = None
        self.wire: Wire | None = None
        self.ready = asyncio.Event()
        self.keep = False
        self._dtls: RTCDtlsTransport | None = None

    async def join(self, http: aiohttp.ClientSession, base: str, members: dict[str, str]) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {
            "meeting": self.meeting,
            "participant": self.name,
            "members": members,
            "sdp": self.pc.localDescription.sdp,
        }
        async with http.post(f"{base}/offer", json=body) as response:
            answer = await response.json()
            if response.status != 200:
                raise RuntimeError(f"{self.name}: {answer}")
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video" and transceiver.direction == "recvonly":
                self.video_pts.update(c.payloadType or 0 for c in transceiver._codecs)
        if self.publish:
            self.audio = Outgoing(self.sending[0], "audio/opus")
            self.video = Outgoing(self.sending[1], "video/vp8")
        dtls = self.pc.getTransceivers()[0].sender.transport
        self._dtls = dtls

        @dtls.on("statechange")
        def changed() -> None:
            if dtls.state == "connected" and not self.ready.is_set():
                take_rtp(dtls, self.received)
                self.wire = Wire(dtls)
                self.ready.set()

    def received(self, data: bytes, arrival_ms: int) -> None:
        first = data[0]
        pos = 12 + 4 * (first & 0x0F)
        if first & 0x10:
            pos += 4 + 4 * int.from_bytes(data[pos + 2 : pos + 4], "big")
        ssrc = int.from_bytes(data[8:12], "big")
        stream = self.streams.get(ssrc)
        if stream is None:
            stream = self.streams[ssrc] = Stream(video=(data[1] & 0x7F) in self.video_pts)
            if self.keep and stream.video:
                stream.keep = []
        stream.add(
            (data[2] << 8) | data[3],
            int.from_bytes(data[4:8], "big"),
            data[1] >> 7,
            data[pos:],
        )

    def send_video(self, media: Media) -> None:
        out, wire = self.video, self.wire
        assert out is not None and wire is not None
        frame = media.video[out.index % len(media.video)]
        out.index += 1
        writer = out.writer
        extensions = writer.extensions(abs_send_time(), None)
        last = len(frame) - 1
        for i, payload in enumerate(frame):
            header = writer.header(
                marker=int(i == last),
                payload_type=out.pt,
                sequence_number=out.seq,
                timestamp=out.ts,
                padding=False,
                extensions=extensions,
            )
            out.seq = (out.seq + 1) & 0xFFFF
            wire.send(header + payload)
        out.ts = (out.ts + VIDEO_TICKS) & 0xFFFFFFFF

    def send_audio(self, media: Media) -> None:
        out, wire = self.audio, self.wire
        assert out is not None and wire is not None
        payload = media.audio[out.index % len(media.audio)]
        out.index += 1
        writer = out.writer
        header = writer.header(
            marker=0,
            payload_type=out.pt,
            sequence_number=out.seq,
            timestamp=out.ts,
            padding=False,
            extensions=writer.extensions(0, (True, 40)),
        )
        out.seq = (out.seq + 1) & 0xFFFF
        out.ts = (out.ts + AUDIO_TICKS) & 0xFFFFFFFF
        wire.send(header + payload)

    async def close(self) -> None:
        if self._dtls is not None and self.ready.is_set():
            release_media(self._dtls)
        await self.pc.close()


@dataclass
class Due:
    publisher: Participant
    video_at: float
    audio_at: float


class Replay:
    """Every publisher's media at its pace, from one timer (each publisher at its own
    phase); records how late the timer ran."""

    def __init__(self, media: Media, publishers: list[Participant]) -> None:
        self.media = media
        now = time.monotonic()
        self.due = [
            Due(p, now + random.random() / FPS, now + random.random() * 0.02)  # noqa: S311
            for p in publishers
        ]
        self.max_late = 0.0

    async def run(self) -> None:
        media = self.media
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            for due in self.due:
                self.max_late = max(self.max_late, now - min(due.video_at, due.audio_at))
                while due.video_at <= now:
                    due.publisher.send_video(media)
                    due.video_at += 1 / FPS
                while due.audio_at <= now:
                    due.publisher.send_audio(media)
                    due.audio_at += AUDIO_TICKS / 48000


# -- the scenarios ---------------------------------------------------------------------------


def fanout(subscribers: int) -> list[list[Participant]]:
    """One meeting: a publisher (audio and video, receiving nothing), ``subscribers``
    receivers of one slot each."""
    people = [Participant("fanout", "publisher", publish=True, slots=0)]
    people += [
        Participant("fanout", f"subscriber-{i}", publish=False, slots=1) for i in range(subscribers)
    ]
    return [people]


def rooms(count: int) -> list[list[Participant]]:
    """``count`` three-party meetings: each participant publishes audio and video and
    receives the other two."""
    return [
        [Participant(f"room-{m}", name, publish=True, slots=2) for name in PARTIES]
        for m in range(count)
    ]


PARTIES = ("conciliator", "applicant", "company")
SIDES = {"publisher": "conciliator", "conciliator": "conciliator", "company": "company"}


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    media = media_at(Path(args.media))
    meetings = fanout(args.subscribers) if args.scenario == "fanout" else rooms(args.rooms)
    everyone = [p for m in meetings for p in m]
    receivers = [p for p in everyone if p.pc.getTransceivers()[-1].direction == "recvonly"]
    if args.check_frames and receivers:
        receivers[0].keep = True
    limit = asyncio.Semaphore(8)
    async with aiohttp.ClientSession() as http:

        async def enter(meeting: list[Participant]) -> None:
            members = {p.name: SIDES.get(p.name, "applicant") for p in meeting}
            # The publisher first: the relay peer gives a subscriber the tracks it has.
            for person in meeting:
                async with limit:
                    await person.join(http, args.server, members)

        await asyncio.gather(*(enter(m) for m in meetings))
        await asyncio.wait_for(
            asyncio.gather(*(p.ready.wait() for p in everyone)), timeout=args.connect_timeout
        )
        replay = Replay(media, [p for p in everyone if p.publish])
        task = asyncio.ensure_future(replay.run())
        try:
            wanted = {id(p): 2 if args.scenario == "rooms" else 1 for p in receivers}
            deadline = time.monotonic() + args.connect_timeout
            while time.monotonic() < deadline:
                flowing = all(
                    sum(1 for s in p.streams.values() if s.video and s.frames) >= wanted[id(p)]
                    for p in receivers
                )
                if flowing:
                    break
                await asyncio.sleep(0.2)
            say("READY")
            await asyncio.sleep(args.warmup)
            gc.collect()
            gc.disable()  # the load's own collections would stall the replay
            before = {
                (id(p), k): (s.frames, s.packets) for p in receivers for k, s in p.streams.items()
            }
            replay.max_late = 0.0
            started = time.monotonic()
            say("START")
            await asyncio.sleep(args.seconds)
            span = time.monotonic() - started
            after = {
                (id(p), k): (s.frames, s.packets) for p in receivers for k, s in p.streams.items()
            }
            say("END")
            late = replay.max_late
            gc.enable()
        finally:
            task.cancel()
        fps: list[float] = []
        audio_pps: list[float] = []
        out_of_order = 0
        for person in receivers:
            videos = [(k, s) for k, s in person.streams.items() if s.video]
            audios = [(k, s) for k, s in person.streams.items() if not s.video]
            got = []
            for key, stream in videos:
                frames = after[(id(person), key)][0] - before.get((id(person), key), (0, 0))[0]
                got.append(frames / span)
                out_of_order += stream.out_of_order
            got += [0.0] * (wanted[id(person)] - len(got))  # a stream that never came
            fps.extend(got)
            for key, _ in audios:
                packets = after[(id(person), key)][1] - before.get((id(person), key), (0, 0))[1]
                audio_pps.append(packets / span)
        delivered = sum((after[key][1] - before.get(key, (0, 0))[1]) / span for key in after)
        streams = sum(wanted.values())
        expected = streams * (FPS * media.packets_per_frame + 1 / (AUDIO_TICKS / 48000))
        checked = check_frames(receivers[0]) if args.check_frames and receivers else None
        for person in everyone:
            await person.close()
        async with http.post(f"{args.server}/end", json={"meeting": meetings[0][0].meeting}) as r:
            await r.read()
        for meeting in meetings[1:]:
            async with http.post(f"{args.server}/end", json={"meeting": meeting[0].meeting}) as r:
                await r.read()
    return {
        "seconds": round(span, 2),
        "video_streams": len(fps),
        "fps_min": round(min(fps), 2) if fps else 0.0,
        "fps_median": round(statistics.median(fps), 2) if fps else 0.0,
        "audio_pps_min": round(min(audio_pps), 1) if audio_pps else 0.0,
        "out_of_order": out_of_order,
        "replay_late_ms": round(1000 * late, 1),
        "video_kbps": round(media.video_bitrate / 1000),
        "packets_per_frame": round(media.packets_per_frame, 2),
        "frames_checked": checked,
        # Every packet the subscribers got in the window, against what the publishers' pace
        # sends them: below 1 when the machine starved the load (or the server dropped).
        "delivered_pps": round(delivered, 1),
        "expected_pps": round(expected, 1),
    }


def check_frames(person: Participant) -> dict[str, int]:
    """Decode the frames the first subscriber kept and read their counters back."""
    kept = next((s.keep for s in person.streams.values() if s.keep), [])
    decoder = CodecContext.create("vp8", "r")
    counters: list[int] = []
    errors = 0
    for data in kept:
        try:
            frames = decoder.decode(_packet(data))
        except Exception:  # a frame whose reference was lost: counted, not fatal
            errors += 1
            continue
        counters.extend(read_counter(f) for f in frames)
    loop = FPS * SECONDS
    steps = sum(1 for a, b in itertools.pairwise(counters) if (a + 1) % loop == b)
    return {"decoded": len(counters), "consecutive": steps, "errors": errors}


def _packet(data: bytes) -> Any:
    from av.packet import Packet

    return Packet(data)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.media_load", description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--scenario", choices=("fanout", "rooms"), required=True)
    parser.add_argument("--subscribers", type=int, default=1)
    parser.add_argument("--rooms", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument("--media", required=True, help="the pre-encoded media (made if absent)")
    parser.add_argument("--check-frames", action="store_true")
    parser.add_argument("--encode-only", action="store_true")
    args = parser.parse_args()
    if args.encode_only:
        media_at(Path(args.media))
        return
    result = uvloop.run(run(args))
    say("STATS " + json.dumps(result))
    os._exit(0)  # aiortc's leftover tasks and threads need not be waited for


if __name__ == "__main__":
    main()
