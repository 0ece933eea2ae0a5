"""In-process aiortc clients for the media tests: they publish generated media whose content
can be read back after decoding, and record what they receive, slot by slot.

Video frames (160×120, 15 per second) carry a frame counter and the publisher's number as
light and dark blocks: the top row is the counter's low 8 bits, the bottom row its next 4
bits then the publisher's 4 bits, most significant first. Blocks of 20×60 pixels survive
VP8 and H.264 at any bitrate. Audio is a tone whose pitch names the publisher (400 Hz + 300
per number), read back by counting zero crossings.
"""

from __future__ import annotations

import array
import asyncio
import fractions
import itertools
import math
import time
from dataclasses import dataclass, field

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcrtpsender import RTCRtpSender
from av import AudioFrame, VideoFrame

from media.room import MediaRoom

WIDTH, HEIGHT = 160, 120
FPS = 15
VIDEO_CLOCK = 90000
AUDIO_RATE = 48000
AUDIO_SAMPLES = 960  # 20 ms
LIGHT, DARK = 235, 16


def tone_of(ident: int) -> float:
    return 400.0 + 300.0 * ident


def _bits(value: int, count: int) -> list[int]:
    return [(value >> (count - 1 - i)) & 1 for i in range(count)]


class CounterVideo(MediaStreamTrack):
    """Frames numbered from 0, each showing its number and the publisher's."""

    kind = "video"

    def __init__(self, ident: int) -> None:
        super().__init__()
        self.ident = ident
        self.count = 0
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self.count / FPS - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = VideoFrame(WIDTH, HEIGHT, "yuv420p")
        top = _bits(self.count & 0xFF, 8)
        bottom = _bits((self.count >> 8) & 0x0F, 4) + _bits(self.ident, 4)
        rows = [
            b"".join(bytes([LIGHT if bit else DARK]) * (WIDTH // 8) for bit in bits)
            for bits in (top, bottom)
        ]
        luma = frame.planes[0]
        view = memoryview(luma).cast("B")
        for y in range(HEIGHT):
            start = y * luma.line_size
            view[start : start + WIDTH] = rows[0 if y < HEIGHT // 2 else 1]
        for chroma in frame.planes[1:]:
            cview = memoryview(chroma).cast("B")
            cview[:] = b"\x80" * len(cview)
        frame.pts = self.count * VIDEO_CLOCK // FPS
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.count += 1
        return frame


def read_video(frame: VideoFrame) -> tuple[int, int]:
    """(counter, publisher) shown by a decoded frame."""
    if frame.format.name != "yuv420p" or frame.width != WIDTH or frame.height != HEIGHT:
        frame = frame.reformat(width=WIDTH, height=HEIGHT, format="yuv420p")
    luma = frame.planes[0]
    view = memoryview(luma).cast("B")

    def bit(row: int, column: int) -> int:
        y = HEIGHT // 4 + row * HEIGHT // 2
        x = column * (WIDTH // 8) + WIDTH // 16
        return 1 if view[y * luma.line_size + x] > 128 else 0

    top = [bit(0, c) for c in range(8)]
    bottom = [bit(1, c) for c in range(8)]
    low = int("".join(map(str, top)), 2)
    high = int("".join(map(str, bottom[:4])), 2)
    return (high << 8) | low, int("".join(map(str, bottom[4:])), 2)


class ToneAudio(MediaStreamTrack):
    """A steady tone, 20 ms a frame."""

    kind = "audio"

    def __init__(self, ident: int) -> None:
        super().__init__()
        self.frequency = tone_of(ident)
        self.count = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self.count * AUDIO_SAMPLES / AUDIO_RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        first = self.count * AUDIO_SAMPLES
        samples = array.array(
            "h",
            (
                int(8000 * math.sin(2 * math.pi * self.frequency * (first + i) / AUDIO_RATE))
                for i in range(AUDIO_SAMPLES)
            ),
        )
        frame = AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = AUDIO_RATE
        frame.pts = first
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self.count += 1
        return frame


def read_pitch(frame: AudioFrame) -> float:
    """The frequency of a decoded frame's first channel, by its zero crossings."""
    assert frame.format.name in ("s16", "s16p")
    samples = array.array("h", bytes(frame.planes[0]))
    step = len(frame.layout.channels) if frame.format.name == "s16" else 1
    first = samples[: frame.samples * step : step]
    crossings = sum(1 for a, b in itertools.pairwise(first) if (a < 0) != (b < 0))
    return crossings / 2 / (frame.samples / frame.sample_rate)


@dataclass
class Received:
    """What one receiving m-line of a client got: decoded video (counter, publisher) or
    audio pitches, in arrival order."""

    video: list[tuple[int, int]] = field(default_factory=list)
    pitches: list[float] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.video) + len(self.pitches)


class Client:
    """A participant's browser: publishes what it is given, receives ``slots`` audio and
    video streams, decodes them and keeps what they showed."""

    def __init__(
        self,
        name: str,
        ident: int,
        *,
        audio: bool = True,
        video: bool = True,
        slots: int = 2,
        receive_video: bool = True,
        video_codec: str | None = None,
    ) -> None:
        self.name = name
        self.ident = ident
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.received: dict[str, Received] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.video_track = CounterVideo(ident) if video else None
        self.audio_track = ToneAudio(ident) if audio else None
        if self.audio_track is not None:
            self.pc.addTransceiver(self.audio_track, direction="sendonly")
        if self.video_track is not None:
            sending = self.pc.addTransceiver(self.video_track, direction="sendonly")
            if video_codec is not None:
                capabilities = RTCRtpSender.getCapabilities("video").codecs
                sending.setCodecPreferences(
                    [c for c in capabilities if c.name in (video_codec, "rtx")]
                )
        for _ in range(slots):
            self.pc.addTransceiver("audio", direction="recvonly")
            if receive_video:
                self.pc.addTransceiver("video", direction="recvonly")
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack, *_: object) -> None:
        transceiver = next(t for t in self.pc.getTransceivers() if t.receiver.track is track)
        assert transceiver.mid is not None
        got = self.received.setdefault(transceiver.mid, Received())
        self._tasks.append(asyncio.ensure_future(self._consume(track, got)))

    async def _consume(self, track: MediaStreamTrack, got: Received) -> None:
        try:
            while True:
                frame = await track.recv()
                if isinstance(frame, VideoFrame):
                    got.video.append(read_video(frame))
                elif isinstance(frame, AudioFrame):
                    got.pitches.append(read_pitch(frame))
        except MediaStreamError:
            return

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def join(self, room: MediaRoom) -> None:
        """Offer to the server's room and take its answer."""
        await self.accept(await room.offer(self.name, await self.offer()))

    def got(self, mid: str | None) -> Received:
        return self.received.get(mid or "", Received())

    def receivers(self) -> list[RTCRtpReceiver]:
        return self.pc.getReceivers()

    def transceivers(self) -> list[RTCRtpTransceiver]:
        return self.pc.getTransceivers()

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for track in (self.audio_track, self.video_track):
            if track is not None:
                track.stop()
