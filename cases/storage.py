"""Where uploaded files live: an interface, and a local folder behind it by default.

An upload streams into a temporary file under ``incoming/`` and is counted as it arrives; past
the limit it stops at once and the partial file is removed, so nothing is left behind. A
complete file is moved (atomically, same file system) to ``objects/`` under a server-generated
id; the person's file name is never part of a path. Temporary files left by a crash are swept.
An object store can replace the folder by implementing ``Storage``. Several services share one
storage (case documents, help-desk attachments): an object none of them points at is an orphan
only when every one of them was asked (``sweep_orphans``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from core.errors import ErrorCode, UserError

INCOMING_GRACE_SECONDS = 3600.0  # a temporary file older than this belongs to a dead upload


class FileTooLarge(UserError):
    def __init__(self, limit: int) -> None:
        super().__init__(ErrorCode.FILE_TOO_LARGE, limit=limit)
        self.limit = limit


@dataclass(frozen=True)
class Stored:
    key: str
    size: int
    sha256: str


class Storage(Protocol):
    async def put(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> Stored:
        """Store a stream under a new key; ``FileTooLarge`` (nothing kept) past ``max_bytes``."""
        ...

    def path(self, key: str) -> Path:
        """A local path to read the object (for content checks and downloads)."""
        ...

    async def delete(self, key: str) -> None: ...

    async def keys(self) -> list[str]: ...

    async def sweep_incoming(self) -> int:
        """Remove temporary files of uploads that died; returns how many."""
        ...


class LocalStorage:
    """Objects as files in a folder (the default)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / "incoming"
        self.objects = root / "objects"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.objects.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        # Keys are our own UUIDs; anything else is refused rather than joined into a path.
        return self.objects / str(uuid.UUID(key))

    async def put(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> Stored:
        key = str(uuid.uuid4())
        partial = self.incoming / f"{key}.part"
        digest = hashlib.sha256()
        size = 0
        handle = await asyncio.to_thread(partial.open, "xb")
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise FileTooLarge(max_bytes)
                digest.update(chunk)
                await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(handle.flush)
            await asyncio.to_thread(os.fsync, handle.fileno())
        except BaseException:
            handle.close()
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
        handle.close()
        await asyncio.to_thread(os.replace, partial, self.objects / key)
        return Stored(key, size, digest.hexdigest())

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.path(key).unlink)

    async def keys(self) -> list[str]:
        return sorted(p.name for p in self.objects.iterdir() if p.is_file())

    async def sweep_incoming(self) -> int:
        cutoff = time.time() - INCOMING_GRACE_SECONDS
        removed = 0
        for partial in self.incoming.glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                if partial.stat().st_mtime < cutoff:
                    partial.unlink()
                    removed += 1
        return removed


class KeyOwner(Protocol):
    async def storage_keys(self) -> set[str]:
        """The keys of the objects this owner's rows point at."""
        ...


async def sweep_orphans(
    storage: Storage, owners: Iterable[KeyOwner], older_than: timedelta = timedelta(hours=1)
) -> int:
    """Delete stored objects no owner points at (left by a crash mid-upload); ``owners`` must
    be every service that keeps objects in ``storage``. Recent objects may belong to an upload
    in flight and are kept."""
    known: set[str] = set()
    for owner in owners:
        known |= await owner.storage_keys()
    removed = 0
    # File times are the file system's own: compare them with the real clock.
    cutoff = time.time() - older_than.total_seconds()
    for key in await storage.keys():
        if key in known:
            continue
        with contextlib.suppress(FileNotFoundError):
            if storage.path(key).stat().st_mtime < cutoff:
                await storage.delete(key)
                removed += 1
    return removed
