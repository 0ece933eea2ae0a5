"""Server-side sign-in sessions: in the database by default, in Redis when configured.

The browser holds a random token; the store keeps only its SHA-256. A session expires after
an idle time and after an absolute time, both judged by the injected clock. Ending sessions
(sign-out, password reset, disabled account) acts on the store, so it takes effect on the
next request of every node.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from redis.asyncio import Redis
from sqlalchemy import Boolean, ForeignKey, String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import Clock
from core.db import Base, Database, UTCDateTime
from core.ids import new_token, token_hash

TOUCH_EVERY = timedelta(seconds=60)  # bounds writes: one per minute per active session


class WebSession(Base):
    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    mfa_pending: Mapped[bool] = mapped_column(Boolean, default=False)


@dataclass(frozen=True)
class SessionData:
    id_hash: str
    account_id: uuid.UUID
    created_at: datetime
    last_seen_at: datetime
    mfa_pending: bool


class SessionStore(Protocol):
    async def create(self, account_id: uuid.UUID, *, mfa_pending: bool) -> tuple[str, SessionData]:
        """A new session; returns the token for the cookie and the stored data."""
        ...

    async def get(self, token: str) -> SessionData | None:
        """The live session for ``token`` (touching it), or ``None`` when absent or expired."""
        ...

    async def delete(self, token: str) -> None: ...

    async def delete_for_account(self, account_id: uuid.UUID, *, keep: str | None = None) -> int:
        """End every session of an account, except the one of token ``keep``."""
        ...

    async def count_for_account(self, account_id: uuid.UUID) -> int:
        """How many live sessions the account has."""
        ...

    async def close(self) -> None: ...


class _Expiry:
    def __init__(self, clock: Clock, idle: timedelta, absolute: timedelta) -> None:
        self.clock = clock
        self.idle = idle
        self.absolute = absolute

    def expired(self, created_at: datetime, last_seen_at: datetime, now: datetime) -> bool:
        return now - last_seen_at > self.idle or now - created_at > self.absolute


class DbSessionStore(_Expiry):
    """Sessions in the ``web_sessions`` table."""

    def __init__(self, db: Database, clock: Clock, idle: timedelta, absolute: timedelta) -> None:
        super().__init__(clock, idle, absolute)
        self._db = db

    async def create(self, account_id: uuid.UUID, *, mfa_pending: bool) -> tuple[str, SessionData]:
        token = new_token()
        now = self.clock.now()
        row = WebSession(
            id_hash=token_hash(token),
            account_id=account_id,
            created_at=now,
            last_seen_at=now,
            mfa_pending=mfa_pending,
        )
        async with self._db.session() as session:
            session.add(row)
            await session.commit()
        return token, _data(row)

    async def get(self, token: str) -> SessionData | None:
        now = self.clock.now()
        async with self._db.session() as session:
            row = await session.get(WebSession, token_hash(token))
            if row is None:
                return None
            if self.expired(row.created_at, row.last_seen_at, now):
                await session.delete(row)
                await session.commit()
                return None
            if now - row.last_seen_at >= TOUCH_EVERY:
                row.last_seen_at = now
                await session.commit()
            return _data(row)

    async def delete(self, token: str) -> None:
        async with self._db.session() as session:
            await session.execute(delete(WebSession).where(WebSession.id_hash == token_hash(token)))
            await session.commit()

    async def delete_for_account(self, account_id: uuid.UUID, *, keep: str | None = None) -> int:
        query = delete(WebSession).where(WebSession.account_id == account_id)
        if keep is not None:
            query = query.where(WebSession.id_hash != token_hash(keep))
        async with self._db.session() as session:
            result = await session.execute(query)
            await session.commit()
            return int(getattr(result, "rowcount", 0) or 0)

    async def count_for_account(self, account_id: uuid.UUID) -> int:
        async with self._db.session() as session:
            rows = await session.scalars(
                select(WebSession.id_hash).where(WebSession.account_id == account_id)
            )
            return len(list(rows))

    async def purge_expired(self) -> None:
        now = self.clock.now()
        async with self._db.session() as session:
            await session.execute(
                delete(WebSession).where(
                    (WebSession.last_seen_at < now - self.idle)
                    | (WebSession.created_at < now - self.absolute)
                )
            )
            await session.commit()

    async def close(self) -> None:
        return None


def _data(row: WebSession) -> SessionData:
    return SessionData(
        row.id_hash, row.account_id, row.created_at, row.last_seen_at, row.mfa_pending
    )


class RedisSessionStore(_Expiry):
    """Sessions in Redis: one JSON value per session plus a set per account for mass sign-out."""

    def __init__(
        self,
        redis: Redis,
        clock: Clock,
        idle: timedelta,
        absolute: timedelta,
        prefix: str = "concilia",
    ) -> None:
        super().__init__(clock, idle, absolute)
        self._redis = redis
        self._prefix = prefix

    def _key(self, id_hash: str) -> str:
        return f"{self._prefix}:sess:{id_hash}"

    def _index(self, account_id: uuid.UUID) -> str:
        return f"{self._prefix}:acct-sess:{account_id}"

    def _ttl(self, created_at: datetime, now: datetime) -> int:
        # Redis' own expiry is a backstop; the clock decides. Keep the key a little longer.
        remaining = min(self.idle, self.absolute - (now - created_at))
        return max(int(remaining.total_seconds()) + 120, 1)

    async def _write(self, data: SessionData, now: datetime) -> None:
        value = json.dumps(
            {
                "a": str(data.account_id),
                "c": data.created_at.isoformat(),
                "s": data.last_seen_at.isoformat(),
                "m": data.mfa_pending,
            }
        )
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(data.id_hash), value, ex=self._ttl(data.created_at, now))
            pipe.sadd(self._index(data.account_id), data.id_hash)
            pipe.expire(self._index(data.account_id), int(self.absolute.total_seconds()) + 120)
            await pipe.execute()

    async def create(self, account_id: uuid.UUID, *, mfa_pending: bool) -> tuple[str, SessionData]:
        token = new_token()
        now = self.clock.now()
        data = SessionData(token_hash(token), account_id, now, now, mfa_pending)
        await self._write(data, now)
        return token, data

    async def get(self, token: str) -> SessionData | None:
        id_hash = token_hash(token)
        raw = await self._redis.get(self._key(id_hash))
        if raw is None:
            return None
        value = json.loads(raw)
        data = SessionData(
            id_hash,
            uuid.UUID(value["a"]),
            datetime.fromisoformat(value["c"]),
            datetime.fromisoformat(value["s"]),
            bool(value["m"]),
        )
        now = self.clock.now()
        if self.expired(data.created_at, data.last_seen_at, now):
            await self._drop(id_hash, data.account_id)
            return None
        if now - data.last_seen_at >= TOUCH_EVERY:
            data = SessionData(id_hash, data.account_id, data.created_at, now, data.mfa_pending)
            await self._write(data, now)
        return data

    async def _drop(self, id_hash: str, account_id: uuid.UUID) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(id_hash))
            pipe.srem(self._index(account_id), id_hash)
            await pipe.execute()

    async def delete(self, token: str) -> None:
        id_hash = token_hash(token)
        raw = await self._redis.get(self._key(id_hash))
        if raw is not None:
            await self._drop(id_hash, uuid.UUID(json.loads(raw)["a"]))

    async def delete_for_account(self, account_id: uuid.UUID, *, keep: str | None = None) -> int:
        keep_hash = token_hash(keep) if keep is not None else None
        members = await self._redis.smembers(self._index(account_id))
        ended = 0
        for member in members:
            id_hash = member.decode() if isinstance(member, bytes) else str(member)
            if id_hash == keep_hash:
                continue
            await self._drop(id_hash, account_id)
            ended += 1
        return ended

    async def count_for_account(self, account_id: uuid.UUID) -> int:
        members = await self._redis.smembers(self._index(account_id))
        alive = 0
        for member in members:
            id_hash = member.decode() if isinstance(member, bytes) else str(member)
            alive += int(await self._redis.exists(self._key(id_hash)))
        return alive

    async def purge_expired(self) -> None:
        return None  # Redis expires keys itself

    async def close(self) -> None:
        return None  # the Redis client belongs to the application, which closes it
