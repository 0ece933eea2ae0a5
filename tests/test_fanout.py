"""The node's Redis manager under a burst of emits: every one published on one client, its
connections bounded (``bench.load`` found a node's descriptors in the thousands and emits
dropped: the library's client failed with "Too many connections" past 100 concurrent publishes,
and was replaced, connections and all, at each failure)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from signaling.server import PUBLISH_CONNECTIONS, FanOut, OrJson


@dataclass
class Channel:
    manager: FanOut  # publishing, as a node
    pubsub: Any  # listening, as the other nodes

    async def received(self, count: int) -> list[Any]:
        """The next ``count`` messages on the channel, decoded."""
        got: list[Any] = []
        async with asyncio.timeout(10):
            while len(got) < count:
                message = await self.pubsub.get_message(timeout=1)
                if message is not None:
                    got.append(orjson.loads(message["data"]))
        return got


@pytest.fixture
async def channel(redis_url: str) -> AsyncIterator[Channel]:
    name = f"concilia-test-{uuid.uuid4().hex[:10]}-meeting"
    listener = Redis.from_url(redis_url)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(name)
    manager = FanOut(redis_url, name)
    manager.json = OrJson
    manager._redis_connect()
    try:
        yield Channel(manager, pubsub)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()
        await manager.redis.aclose()


async def test_a_burst_of_emits_is_published_whole_on_one_client(channel: Channel) -> None:
    manager = channel.manager
    burst = 4 * PUBLISH_CONNECTIONS + 150  # more than the library's pool of 100 allowed
    client = manager.redis
    answers = await asyncio.gather(*(manager._publish({"n": n}) for n in range(burst)))
    assert answers == [1] * burst  # each reached the one subscriber
    assert manager.redis is client  # never replaced
    pool = client.connection_pool
    assert len(pool._in_use_connections) + len(pool._available_connections) <= (PUBLISH_CONNECTIONS)
    got = [message["n"] for message in await channel.received(burst)]
    assert sorted(got) == list(range(burst))
    # A later subscription (after a Redis outage, say) keeps the same client.
    manager._redis_connect()
    assert manager.redis is client


async def test_a_lost_publish_has_the_other_nodes_resync_once_publishing_works(
    channel: Channel,
) -> None:
    """An emit the other nodes never got (the publish was given up) is made good: the next
    publish that goes through is preceded by a ``resync`` for their connections (they catch
    up from the database), and the namespace's sweep sends it even if nothing else is."""
    manager = channel.manager
    client = manager.redis

    async def down(*_args: object, **_kwargs: object) -> int:
        raise RedisConnectionError("Redis went away")

    client.publish = down  # this client only
    assert await manager._publish({"n": 1}) is None and manager.missed
    del client.publish
    assert await manager._publish({"n": 2}) == 1 and not manager.missed
    resync, second = await channel.received(2)
    assert resync == {
        "method": "emit",
        "event": "resync",
        "data": [{}],
        "binary": False,
        "namespace": "/meeting",
        "room": None,
        "skip_sid": None,
        "callback": None,
        "host_id": manager.host_id,  # so that this node's own listener skips it
    }
    assert second == {"n": 2}
    # With nothing else to publish, the sweep's call sends it alone.
    manager.missed = True
    assert await manager.resync_others() and not manager.missed
    assert [m["event"] for m in await channel.received(1)] == ["resync"]


async def test_emits_queued_behind_a_lost_publish_send_one_resync(channel: Channel) -> None:
    """The flag is taken before the resync's publish waits: the emits that were queued meanwhile
    do not each send one (every page of the other nodes would join again for each)."""
    manager = channel.manager
    manager.missed = True
    answers = await asyncio.gather(*(manager._publish({"n": n}) for n in range(20)))
    assert answers == [1] * 20 and not manager.missed
    got = await channel.received(21)
    assert [m.get("event") for m in got].count("resync") == 1
    assert sorted(m["n"] for m in got if "n" in m) == list(range(20))
