"""Sign-in throttling per account name and per client address.

After ``allowed`` failures inside ``window`` every further try must wait, doubling from one
second up to ``max_delay``: slow for a guesser, never a permanent lock-out that an attacker
could inflict on someone. Keys are keyed hashes, so neither usernames nor addresses are stored.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta

from sqlalchemy import String, delete, func, select
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import Clock
from core.db import Base, Database, UTCDateTime
from core.errors import Throttled
from core.ids import keyed_hash, new_id


class AuthFailure(Base):
    __tablename__ = "auth_failures"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    key: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Throttle:
    """Counts failures per key in the database, shared by every node."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        secret: bytes,
        *,
        allowed: int = 5,
        window: timedelta = timedelta(minutes=15),
        max_delay: timedelta = timedelta(seconds=60),
    ) -> None:
        self._db = db
        self._clock = clock
        self._secret = secret
        self.allowed = allowed
        self.window = window
        self.max_delay = max_delay

    def key(self, scope: str, value: str) -> str:
        return keyed_hash(self._secret, "throttle", scope, value.casefold())

    async def check(self, keys: list[str]) -> None:
        """Raise ``Throttled`` with the longest wait any of ``keys`` still owes."""
        now = self._clock.now()
        wait = 0.0
        async with self._db.session() as session:
            for key in keys:
                count, last = (
                    await session.execute(
                        select(func.count(), func.max(AuthFailure.at)).where(
                            AuthFailure.key == key, AuthFailure.at > now - self.window
                        )
                    )
                ).one()
                if count < self.allowed or last is None:
                    continue
                delay = min(2.0 ** (count - self.allowed), self.max_delay.total_seconds())
                wait = max(wait, (last - now).total_seconds() + delay)
        if wait > 0:
            raise Throttled(max(1, math.ceil(wait)))

    async def record_failure(self, keys: list[str]) -> None:
        now = self._clock.now()
        async with self._db.session() as session:
            for key in keys:
                session.add(AuthFailure(id=new_id(), key=key, at=now))
            await session.execute(delete(AuthFailure).where(AuthFailure.at < now - self.window))
            await session.commit()

    async def clear(self, key: str) -> None:
        async with self._db.session() as session:
            await session.execute(delete(AuthFailure).where(AuthFailure.key == key))
            await session.commit()
