"""The peer that ``bench.upload`` measures concilia against: a minimal aiohttp app receiving
the same multipart upload the common naive way, the whole form through ``request.post()``
with ``client_max_size`` raised to 16 MiB, then the file field written to disk.

Two ways of writing the field, one per process (``--mode``):

``read``
    ``field.file.read()`` then one write: the pattern of aiohttp's own documentation.
``copy``
    ``shutil.copyfileobj`` in 64 KiB pieces: what a careful user of ``request.post()`` does.

Either way ``request.post()`` reads the whole body before the handler sees a byte of it.

    python -m bench.buffered_peer --port 8081 --dest /tmp/peer [--mode read|copy]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import uuid
from pathlib import Path

from aiohttp import web

MAX_BODY = 16 * 1024 * 1024
CHUNK = 64 * 1024
MODES = ("read", "copy")


def make_app(dest: Path, mode: str) -> web.Application:
    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def upload(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        field = form.get("file")
        if not isinstance(field, web.FileField):
            raise web.HTTPBadRequest(text="a file field is expected")
        target = dest / uuid.uuid4().hex
        if mode == "read":
            content = field.file.read()
            target.write_bytes(content)
            size = len(content)
        else:

            def copy() -> int:
                with target.open("wb") as out:
                    shutil.copyfileobj(field.file, out, CHUNK)
                    return out.tell()

            size = await asyncio.to_thread(copy)
        field.file.close()
        return web.json_response({"size": size}, status=201)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/upload", upload)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.buffered_peer", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dest", type=Path, required=True, help="folder for the received files")
    parser.add_argument("--mode", choices=MODES, default="read")
    args = parser.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    web.run_app(
        make_app(args.dest, args.mode),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
