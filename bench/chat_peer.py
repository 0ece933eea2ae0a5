"""The peer that ``bench.chat`` measures concilia's chat against: a bare python-socketio server
on aiohttp, on python-socketio's defaults (asyncio's own event loop, the standard ``json``), that
only broadcasts to rooms. No sign-in, no authorization, no database: a client names its meeting
in the connection's ``auth`` and is put in that meeting's Socket.IO room; each ``say`` is
re-emitted to the room as a ``message`` (the sender included, as concilia does) and answered
with a sequence number counted in memory.

    python -m bench.chat_peer --port 8082 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import itertools
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import socketio
from aiohttp import web

NAMESPACE = "/meeting"


def make_app() -> web.Application:
    sio = socketio.AsyncServer(async_mode="aiohttp")
    meeting_of: dict[str, str] = {}
    counters: defaultdict[str, Iterator[int]] = defaultdict(lambda: itertools.count(1))

    async def connect(sid: str, _environ: dict[str, Any], auth: Any = None) -> bool:
        meeting = auth.get("meeting") if isinstance(auth, dict) else None
        if not isinstance(meeting, str):
            return False
        meeting_of[sid] = meeting
        await sio.enter_room(sid, meeting, namespace=NAMESPACE)
        return True

    async def disconnect(sid: str, _reason: Any = None) -> None:
        meeting_of.pop(sid, None)

    async def say(sid: str, data: Any) -> dict[str, Any]:
        meeting = meeting_of[sid]
        seq = next(counters[meeting])
        message = {
            "seq": seq,
            "author": sid,
            "client_id": data["client_id"],
            "text": data["text"],
        }
        await sio.emit("message", message, room=meeting, namespace=NAMESPACE)
        return {"ok": True, "seq": seq, "duplicate": False}

    sio.on("connect", connect, namespace=NAMESPACE)
    sio.on("disconnect", disconnect, namespace=NAMESPACE)
    sio.on("say", say, namespace=NAMESPACE)

    async def healthz(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    app = web.Application()
    sio.attach(app)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chat_peer", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
