"""Hourly (or any fixed-window) quotas kept in the database, shared by every node.

A quota allows ``limit`` uses of a key per window (the clock's hour, say: 10:00–11:00). A use
is *reserved* in the caller's transaction, with one conditional UPDATE of the key's counter
for the current window (``used < limit``): two requests racing for the last use are ordered
by the counter row's lock, so exactly one gets it, and a use whose transaction rolls back
(bad input, a failure) is given back with it. ``check`` reads the counter without reserving,
for refusing early, before any costly work (a password hash) is done for a request that is
over its quota anyway.

Keys are what the caller makes them: callers hash whatever identifies a client (an address,
an e-mail) with the service's secret (``core.ids.keyed_hash``), so nothing readable is
kept; the counters of ended windows are deleted by ``forget``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Integer, String, delete, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import Clock
from core.db import Base, UTCDateTime
from core.errors import ErrorCode, Throttled

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
QUOTA_WINDOW = timedelta(hours=1)  # the service's quotas are hourly


class QuotaUse(Base):
    """How many uses of ``key`` the window starting at ``window_start`` has had."""

    __tablename__ = "quota_uses"

    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0)


class Quota:
    """``limit`` uses per key in each ``window`` (fixed windows from the epoch, in UTC)."""

    def __init__(
        self, scope: str, limit: int, clock: Clock, window: timedelta = QUOTA_WINDOW
    ) -> None:
        if limit < 0 or window <= timedelta(0):
            raise ValueError("a quota needs a limit of 0 or more and a positive window")
        self.scope = scope
        self.limit = limit
        self.window = window
        self._clock = clock

    def _window(self, now: datetime) -> tuple[datetime, datetime]:
        elapsed = (now - EPOCH) // self.window
        start = EPOCH + elapsed * self.window
        return start, start + self.window

    def _key(self, key: str) -> str:
        return f"{self.scope}:{key}"

    def retry_after(self, now: datetime | None = None) -> int:
        """Seconds until the current window ends (when a full quota has room again)."""
        now = self._clock.now() if now is None else now
        _, end = self._window(now)
        return max(1, int((end - now).total_seconds()) + 1)

    async def used(self, session: AsyncSession, key: str) -> int:
        start, _ = self._window(self._clock.now())
        row = await session.get(QuotaUse, (self._key(key), start))
        return 0 if row is None else row.used

    async def check(self, session: AsyncSession, key: str) -> None:
        """Raise ``Throttled`` (``RATE_LIMITED``) if ``key`` has no use left in this window;
        reserves nothing."""
        if await self.used(session, key) >= self.limit:
            raise Throttled(self.retry_after(), ErrorCode.RATE_LIMITED)

    async def reserve(self, session: AsyncSession, key: str) -> bool:
        """Take one use of ``key`` in the caller's transaction; ``False`` if none is left.
        The counter's row stays locked until the caller commits or rolls back."""
        start, _ = self._window(self._clock.now())
        full_key = self._key(key)
        values = {"key": full_key, "window_start": start, "used": 0}
        dialect = session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        await session.execute(insert(QuotaUse).values(**values).on_conflict_do_nothing())
        taken = await session.execute(
            update(QuotaUse)
            .where(
                QuotaUse.key == full_key,
                QuotaUse.window_start == start,
                QuotaUse.used < self.limit,
            )
            .values(used=QuotaUse.used + 1)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(taken, "rowcount", 0))

    async def take(self, session: AsyncSession, key: str) -> None:
        """``reserve``, raising ``Throttled`` (``RATE_LIMITED``) when none is left."""
        if not await self.reserve(session, key):
            raise Throttled(self.retry_after(), ErrorCode.RATE_LIMITED)


async def forget_quotas(session: AsyncSession, now: datetime, longest: timedelta) -> int:
    """Delete the counters of windows that ended (every quota's window is at most
    ``longest``); returns how many. In the caller's transaction."""
    result = await session.execute(
        delete(QuotaUse)
        .where(QuotaUse.window_start <= now - longest)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
