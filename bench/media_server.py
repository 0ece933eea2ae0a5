"""The two media servers ``bench.media`` measures, each in a process of its own.

- ``--mode forward``: concilia's forwarding server (``media.room.MediaRooms``, this
  checkout's code) with its host candidate on loopback.
- ``--mode relay``: the peer, a server built on aiortc's stock ``MediaRelay``: each
  publisher's tracks are received (decoded once) and every subscriber gets
  ``relay.subscribe(track)`` on its own sender (encoded again per subscriber). That is
  aiortc's documented way to send one track to several peers.

Both answer ``POST /offer`` with ``{"meeting", "participant", "members": {name: side},
"sdp"}`` and return ``{"sdp": answer}``; ``POST /end`` closes a meeting's connections;
``GET /stats`` counts the live peer connections. Both run on uvloop, as ``concilia serve``.

    python -m bench.media_server --mode forward|relay --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
from typing import Any

import uvloop
from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.rtcconfiguration import RTCBundlePolicy

from core.errors import ProtocolError, UserError
from media.config import MediaConfig
from media.room import MediaRooms
from rooms.models import Side

logger = logging.getLogger("bench.media_server")


class Forward:
    """concilia's media rooms, one per meeting; every member in the joint session."""

    def __init__(self) -> None:
        self.rooms = MediaRooms(MediaConfig(bind_address="127.0.0.1", connect_seconds=60))

    async def offer(
        self, meeting: str, participant: str, members: dict[str, Side], sdp: str
    ) -> str:
        room = self.rooms.room(meeting)
        if dict(room.routing.members) != members:
            room.set_routing(members)
        return await room.offer(participant, sdp)

    async def end(self, meeting: str) -> None:
        await self.rooms.end(meeting)

    def live(self) -> int:
        return self.rooms.live_peer_connections

    async def close(self) -> None:
        await self.rooms.close()


class Relay:
    """aiortc's ``MediaRelay``: publishers' tracks decoded once, encoded per subscriber."""

    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.peers: dict[str, dict[str, RTCPeerConnection]] = {}
        self.tracks: dict[str, dict[str, dict[str, MediaStreamTrack]]] = {}

    async def offer(
        self, meeting: str, participant: str, members: dict[str, Side], sdp: str
    ) -> str:
        peers = self.peers.setdefault(meeting, {})
        published = self.tracks.setdefault(meeting, {})
        old = peers.pop(participant, None)
        if old is not None:
            await old.close()
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        peers[participant] = pc
        own: dict[str, MediaStreamTrack] = {}
        published[participant] = own

        @pc.on("track")
        def track(received: MediaStreamTrack) -> None:
            own.setdefault(received.kind, received)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        # The n-th receiving m-line of each kind carries the n-th other publisher.
        sources = {
            kind: [t[kind] for p, t in published.items() if p != participant and kind in t]
            for kind in ("audio", "video")
        }
        for transceiver in pc.getTransceivers():
            # aiortc keeps the offer's direction from this side: "sendonly" is a client's
            # receiving m-line.
            if transceiver._offerDirection not in ("sendonly", "sendrecv"):
                continue
            found = sources[transceiver.kind]
            if found:
                transceiver.sender.replaceTrack(self.relay.subscribe(found.pop(0)))
                transceiver.direction = transceiver._offerDirection
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    async def end(self, meeting: str) -> None:
        peers = self.peers.pop(meeting, {})
        self.tracks.pop(meeting, None)
        for pc in peers.values():
            await pc.close()

    def live(self) -> int:
        return sum(len(p) for p in self.peers.values())

    async def close(self) -> None:
        for meeting in list(self.peers):
            await self.end(meeting)


SERVER = web.AppKey("server", object)


def make_app(server: Forward | Relay) -> web.Application:
    async def offer(request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        members = {str(p): Side(s) for p, s in body["members"].items()}
        try:
            answer = await server.offer(
                str(body["meeting"]), str(body["participant"]), members, str(body["sdp"])
            )
        except (UserError, ProtocolError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"sdp": answer})

    async def end(request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        await server.end(str(body["meeting"]))
        return web.json_response({"live": server.live()})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"live": server.live()})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def closing(app: web.Application) -> None:
        await server.close()

    app = web.Application()
    app.router.add_post("/offer", offer)
    app.router.add_post("/end", end)
    app.router.add_get("/stats", stats)
    app.router.add_get("/healthz", healthz)
    app.on_shutdown.append(closing)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.media_server", description=__doc__)
    parser.add_argument("--mode", choices=("forward", "relay"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    # As ``concilia serve``: a full collection now and then, not every few seconds.
    gc.set_threshold(2000, 10, 100)
    server: Forward | Relay = Forward() if args.mode == "forward" else Relay()

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        runner = web.AppRunner(make_app(server))
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
