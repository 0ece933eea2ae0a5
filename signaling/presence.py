"""Who is connected to which meeting, on any node.

One node keeps it in memory. Several nodes keep it in Redis (keys under the prefix): a hash per
meeting (``<prefix>:presence:<meeting>``) maps each connection to its account and node, a set
(``<prefix>:presence-meetings``) lists the meetings that have one, and each node refreshes a
heartbeat key (``<prefix>:node:<node>``) every third of the TTL; the hash and the set expire
three TTLs after the last heartbeat that put a connection in them. Connections of a node whose
heartbeat expired (it died) no longer count, and a surviving node takes them out (``reap``) so
that the room can record their departure. Presence is only a hint for the pages — the database
is the record of who was present when — so a flushed or restarted Redis loses nothing that
matters: each node puts its own connections back at its next heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
NODE_TTL_SECONDS = 30  # a node silent this long is taken for dead (CONCILIA_PRESENCE_TTL_SECONDS)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Presence(Protocol):
    node: str

    async def add(self, meeting_id: uuid.UUID, connection: str, account_id: uuid.UUID) -> None: ...

    async def remove(self, meeting_id: uuid.UUID, connection: str) -> None: ...

    async def connections(self, meeting_id: uuid.UUID) -> dict[str, uuid.UUID]:
        """Connection id → account, for live connections on any node."""

    async def reap(self) -> list[tuple[uuid.UUID, str, uuid.UUID]]:
        """Take out the connections of dead nodes: (meeting, connection, account) of each one
        this node took out (each goes to one node only)."""

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

    def items(self) -> list[tuple[uuid.UUID, str, uuid.UUID]]:
        return [(m, c, a) for m, room in self._rooms.items() for c, a in room.items()]

    async def reap(self) -> list[tuple[uuid.UUID, str, uuid.UUID]]:
        return []  # one node: its connections leave through their own disconnection

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisPresence:
    def __init__(self, redis: Redis, prefix: str, ttl_seconds: float = NODE_TTL_SECONDS) -> None:
        self.node = uuid.uuid4().hex
        self._redis = redis
        self._prefix = prefix
        self._ttl = max(int(ttl_seconds), 3)
        self._local = LocalPresence()  # this node's own, to put back after a flush or outage
        self._beat: asyncio.Task[None] | None = None
        # Called at each heartbeat (the media pins of this node's meetings are refreshed).
        self.on_beat: Callable[[], Awaitable[None]] | None = None

    @property
    def heartbeat_seconds(self) -> float:
        return self._ttl / 3

    def _key(self, meeting_id: uuid.UUID) -> str:
        return f"{self._prefix}:presence:{meeting_id}"

    def _meetings_key(self) -> str:
        return f"{self._prefix}:presence-meetings"

    def _node_key(self, node: str) -> str:
        return f"{self._prefix}:node:{node}"

    @property
    def keys_ttl(self) -> int:
        """Seconds the meeting's hash and the set of meetings outlive the last heartbeat of
        the last node holding a connection: with every node gone for good (a cluster stopped
        by kill -9), nobody would reap them, so they go by themselves."""
        return self._ttl * 3

    async def _put(self, meeting_id: uuid.UUID, connection: str, account_id: uuid.UUID) -> None:
        # Each heartbeat puts every connection of this node back, refreshing the TTLs.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._key(meeting_id), connection, f"{account_id}|{self.node}")
            pipe.expire(self._key(meeting_id), self.keys_ttl)
            pipe.sadd(self._meetings_key(), str(meeting_id))
            pipe.expire(self._meetings_key(), self.keys_ttl)
            await pipe.execute()

    async def add(self, meeting_id: uuid.UUID, connection: str, account_id: uuid.UUID) -> None:
        await self._local.add(meeting_id, connection, account_id)
        try:
            await self._put(meeting_id, connection, account_id)
        except RedisError as exc:
            log.warning("presence not shared (Redis: %s); kept on this node", exc)

    async def remove(self, meeting_id: uuid.UUID, connection: str) -> None:
        await self._local.remove(meeting_id, connection)
        try:
            await self._redis.hdel(self._key(meeting_id), connection)
        except RedisError as exc:
            log.warning("presence not shared (Redis: %s)", exc)

    async def _alive(self, nodes: set[str]) -> set[str]:
        alive = set()
        for node in nodes:
            if node == self.node or await self._redis.exists(self._node_key(node)):
                alive.add(node)
        return alive

    async def _stored(self, meeting_id: uuid.UUID) -> dict[str, tuple[uuid.UUID, str]]:
        """The meeting's hash: connection → (account, node); malformed entries are skipped."""
        found = {}
        for key, value in (await self._redis.hgetall(self._key(meeting_id))).items():
            account, _, node = text(value).partition("|")
            try:
                found[text(key)] = (uuid.UUID(account), node)
            except ValueError:
                continue
        return found

    async def connections(self, meeting_id: uuid.UUID) -> dict[str, uuid.UUID]:
        try:
            stored = await self._stored(meeting_id)
            alive = await self._alive({node for _a, node in stored.values()})
        except RedisError as exc:
            log.warning("presence of other nodes unknown (Redis: %s)", exc)
            return await self._local.connections(meeting_id)
        found = {c: account for c, (account, node) in stored.items() if node in alive}
        found.update(await self._local.connections(meeting_id))
        return found

    async def reap(self) -> list[tuple[uuid.UUID, str, uuid.UUID]]:
        taken: list[tuple[uuid.UUID, str, uuid.UUID]] = []
        try:
            for raw in await self._redis.smembers(self._meetings_key()):
                try:
                    meeting_id = uuid.UUID(text(raw))
                except ValueError:
                    await self._redis.srem(self._meetings_key(), raw)
                    continue
                stored = await self._stored(meeting_id)
                if not stored:
                    # A node adding a connection meanwhile puts the meeting back at its next
                    # heartbeat at the latest.
                    await self._redis.srem(self._meetings_key(), raw)
                    continue
                alive = await self._alive({node for _a, node in stored.values()})
                for connection, (account, node) in stored.items():
                    # HDEL answers 1 to one node only: that node records the departure.
                    if node not in alive and await self._redis.hdel(
                        self._key(meeting_id), connection
                    ):
                        taken.append((meeting_id, connection, account))
        except RedisError as exc:
            log.warning("dead nodes' presence not checked (Redis: %s)", exc)
        return taken

    async def start(self) -> None:
        self._beat = asyncio.create_task(self._heartbeat(), name="presence-heartbeat")

    async def _heartbeat(self) -> None:
        backoff = 1.0
        failing = False
        while True:
            try:
                await self._redis.set(self._node_key(self.node), "1", ex=self._ttl)
                # Put this node's connections back (Redis may have been flushed or restarted).
                for meeting_id, connection, account_id in self._local.items():
                    await self._put(meeting_id, connection, account_id)
                if self.on_beat is not None:
                    await self.on_beat()
                if failing:
                    log.info("Redis is back: presence shared again")
                failing = False
                backoff = 1.0
                await asyncio.sleep(self.heartbeat_seconds)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                failing = True
                log.warning("Redis unreachable for presence (%s); retrying in %.0f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.heartbeat_seconds)

    async def close(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self._node_key(self.node))
            for meeting_id, connection, _account in self._local.items():
                await self._redis.hdel(self._key(meeting_id), connection)
