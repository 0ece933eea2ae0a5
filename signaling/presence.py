"""Who is connected to which meeting, on any node.

One node keeps it in memory. Several nodes keep it in Redis: a hash per meeting maps each
connection to its account and node, and each node refreshes a heartbeat key; connections of a
node whose heartbeat expired (it died) no longer count. Presence is only a hint for the pages —
the database is the record of who was present when — so a flushed Redis loses nothing that
matters: connections add themselves again when they reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 10
NODE_TTL_SECONDS = 30


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Presence(Protocol):
    node: str

    async def add(self, meeting_id: uuid.UUID, connection: str, account_id: uuid.UUID) -> None: ...

    async def remove(self, meeting_id: uuid.UUID, connection: str) -> None: ...

    async def connections(self, meeting_id: uuid.UUID) -> dict[str, uuid.UUID]:
        """Connection id → account, for live connections on any node."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class LocalPresence:
    def __init__(self) -> None:
        self.node = uuid.uuid4().hex
        self._rooms: dict[uuid.UUID, dict[str, uuid.UUID]] = defaultdict(dict)

    async def add(self, meeting_id: uuid.UUID, connection: str, account_id: uuid.UUID) -> None:
        self._rooms[meeting_id][connection] = account_id

    async def remove(self, meeting_id: uuid.UUID, connection: str) -> None:
        room = self._rooms.get(meeting_id)
        if room is not None:
            room.pop(connection, None)
            if not room:
                del self._rooms[meeting_id]

    async def connections(self, meeting_id: uuid.UUID) -> dict[str, uuid.UUID]:
        return dict(self._rooms.get(meeting_id, {}))

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisPresence:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.node = uuid.uuid4().hex
        self._redis = redis
        self._prefix = prefix
        self._local = LocalPresence()  # this node's own, to put back after a flush or outage
        self._beat: asyncio.Task[None] | None = None

    def _key(self, meeting_id: uuid.UUID) -> str:
        return f"{self._prefix}presence:{meeting_id}"

    def _node_key(self, node: str) -> str:
        return f"{self._prefix}node:{node}"

    async def add(self, meeting_id: uuid.UUID, connection: str, account_id: uuid.UUID) -> None:
        await self._local.add(meeting_id, connection, account_id)
        try:
            await self._redis.hset(self._key(meeting_id), connection, f"{account_id}|{self.node}")
        except RedisError as exc:
            log.warning("presence not shared (Redis: %s); kept on this node", exc)

    async def remove(self, meeting_id: uuid.UUID, connection: str) -> None:
        await self._local.remove(meeting_id, connection)
        try:
            await self._redis.hdel(self._key(meeting_id), connection)
        except RedisError as exc:
            log.warning("presence not shared (Redis: %s)", exc)

    async def connections(self, meeting_id: uuid.UUID) -> dict[str, uuid.UUID]:
        try:
            stored = await self._redis.hgetall(self._key(meeting_id))
            raw = {text(k): text(v) for k, v in stored.items()}
            alive = set()
            for node in {v.split("|", 1)[1] for v in raw.values()}:
                if node == self.node or await self._redis.exists(self._node_key(node)):
                    alive.add(node)
        except RedisError as exc:
            log.warning("presence of other nodes unknown (Redis: %s)", exc)
            return await self._local.connections(meeting_id)
        found: dict[str, uuid.UUID] = {}
        for connection, value in raw.items():
            account, node = value.split("|", 1)
            if node in alive:
                found[connection] = uuid.UUID(account)
        found.update(await self._local.connections(meeting_id))
        return found

    async def start(self) -> None:
        self._beat = asyncio.create_task(self._heartbeat(), name="presence-heartbeat")

    async def _heartbeat(self) -> None:
        backoff = 1.0
        while True:
            try:
                await self._redis.set(self._node_key(self.node), "1", ex=NODE_TTL_SECONDS)
                # Put this node's connections back (Redis may have been flushed or restarted).
                for meeting_id, room in list(self._local._rooms.items()):
                    for connection, account_id in list(room.items()):
                        await self._redis.hset(
                            self._key(meeting_id), connection, f"{account_id}|{self.node}"
                        )
                if backoff > 1.0:
                    log.info("Redis is back: presence shared again")
                backoff = 1.0
                await asyncio.sleep(HEARTBEAT_SECONDS)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("Redis unreachable for presence (%s); retrying in %.0f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, HEARTBEAT_SECONDS)

    async def close(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self._node_key(self.node))
            for meeting_id, room in list(self._local._rooms.items()):
                if room:
                    await self._redis.hdel(self._key(meeting_id), *room.keys())
