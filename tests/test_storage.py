"""Streaming uploads to storage: the limit holds to the byte and leaves nothing behind."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cases.storage import FileTooLarge, LocalStorage
from cases.uploads import CONCILIATION_MAX_FILE

CHUNK = 64 * 1024


async def stream(size: int, fill: bytes = b"x") -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        piece = min(CHUNK, size - sent)
        yield fill * piece
        sent += piece


async def test_exactly_15_mb_is_stored(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    stored = await storage.put(stream(CONCILIATION_MAX_FILE), max_bytes=CONCILIATION_MAX_FILE)
    assert stored.size == CONCILIATION_MAX_FILE
    path = storage.path(stored.key)
    assert path.stat().st_size == CONCILIATION_MAX_FILE
    assert stored.sha256 == hashlib.sha256(b"x" * CONCILIATION_MAX_FILE).hexdigest()
    assert list(storage.incoming.iterdir()) == []


async def test_one_byte_more_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(FileTooLarge):
        await storage.put(stream(CONCILIATION_MAX_FILE + 1), max_bytes=CONCILIATION_MAX_FILE)
    assert list(storage.incoming.iterdir()) == [] and await storage.keys() == []


async def test_a_broken_stream_leaves_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)

    async def broken() -> AsyncIterator[bytes]:
        yield b"abc"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await storage.put(broken(), max_bytes=1000)
    assert list(storage.incoming.iterdir()) == [] and await storage.keys() == []


async def test_keys_are_ids_never_names(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    stored = await storage.put(stream(10), max_bytes=100)
    assert storage.path(stored.key).parent == storage.objects
    with pytest.raises(ValueError):
        storage.path("../../etc/passwd")
    await storage.delete(stored.key)
    assert await storage.keys() == []


async def test_sweep_removes_only_stale_partial_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    stale = storage.incoming / "dead.part"
    fresh = storage.incoming / "alive.part"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert await storage.sweep_incoming() == 1
    assert not stale.exists() and fresh.exists()
