"""Uploads and downloads at the HTTP edge: multipart bodies read part by part, files sent back
as attachments. Shared by the case documents and the help desk.

A multipart body is read one part at a time, text fields up to a limit and files as a stream of
chunks going straight to storage, where the size is counted and an oversize file is cut off as
it arrives. (``request.post()`` would first read the whole body — spilling files over 1 MiB to
temporary files — before any check could run, and then the file would be written twice.)
Whatever a client sends that aiohttp cannot parse is the client's error (400), never a server
error.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from core.errors import ErrorCode, UserError

CHUNK = 64 * 1024
# What aiohttp raises for a body it cannot parse (a bad boundary or header, a bad charset part).
MALFORMED = (ValueError, RuntimeError, HttpProcessingError)


def malformed() -> UserError:
    return UserError(ErrorCode.BAD_REQUEST, "malformed multipart body")


def parse_id(value: str) -> uuid.UUID:
    """An id from a URL; anything that is not one names nothing (404)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise UserError(ErrorCode.NOT_FOUND) from None


async def open_reader(request: web.Request) -> MultipartReader:
    if request.content_type != "multipart/form-data":
        raise UserError(ErrorCode.BAD_REQUEST, "a multipart/form-data body is expected")
    try:
        return await request.multipart()
    except MALFORMED:
        raise malformed() from None


async def next_part(reader: MultipartReader) -> BodyPartReader | None:
    """The next part, or ``None`` at the end; nested multipart is refused."""
    try:
        part = await reader.next()
    except MALFORMED:
        raise malformed() from None
    if part is not None and not isinstance(part, BodyPartReader):
        raise UserError(ErrorCode.BAD_REQUEST, "nested multipart is not accepted")
    return part


async def part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    """A part's bytes as they arrive."""
    try:
        while chunk := await part.read_chunk(CHUNK):
            yield chunk
    except MALFORMED:
        raise malformed() from None


async def read_field(part: BodyPartReader, limit: int) -> str:
    """A text field of at most ``limit`` bytes (413 beyond: the rest is not read)."""
    data = bytearray()
    async for chunk in part_chunks(part):
        data += chunk
        if len(data) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
    return data.decode("utf-8", "replace")


def content_disposition(name: str) -> str:
    """``attachment`` with the name: plain ASCII, plus RFC 6266 ``filename*`` when needed."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in name)
    value = f'attachment; filename="{fallback}"'
    if fallback != name:
        value += "; filename*=UTF-8''" + quote(name, safe="")
    return value


def attachment(path: Path, name: str) -> web.FileResponse:
    """A stored file as a download the browser never renders."""
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": content_disposition(name),
            "X-Content-Type-Options": "nosniff",
        },
    )
