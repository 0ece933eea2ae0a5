"""core.quota: hourly quotas reserved in the caller's transaction, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from core.clock import FakeClock
from core.db import Database
from core.errors import ErrorCode, Throttled
from core.quota import QUOTA_WINDOW, Quota, QuotaUse, forget_quotas
from tests.conftest import START


async def _count(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(QuotaUse)) or 0)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    yield database
    await database.close()


async def test_uses_up_to_the_limit_then_refuses_until_the_next_window(db: Database) -> None:
    clock = FakeClock(START + timedelta(minutes=20))
    quota = Quota("test", 3, clock)
    for expected in (True, True, True, False, False):
        async with db.session() as session:
            assert await quota.reserve(session, "k") is expected
            await session.commit()
    async with db.session() as session:
        assert await quota.used(session, "k") == 3
        with pytest.raises(Throttled) as refused:
            await quota.check(session, "k")
        with pytest.raises(Throttled):
            await quota.take(session, "k")
        assert await quota.reserve(session, "other") is True  # keys are apart
    assert refused.value.code == ErrorCode.RATE_LIMITED
    assert refused.value.retry_after == 40 * 60 + 1  # until the clock's hour ends
    clock.advance(timedelta(minutes=40))  # the next hour
    async with db.session() as session:
        await quota.check(session, "k")
        assert await quota.reserve(session, "k") is True
        await session.commit()


async def test_a_use_rolled_back_is_given_back(db: Database) -> None:
    quota = Quota("test", 1, FakeClock(START))
    async with db.session() as session:
        assert await quota.reserve(session, "k")
        await session.rollback()  # the action failed: its use goes with it
    async with db.session() as session:
        assert await quota.used(session, "k") == 0
        assert await quota.reserve(session, "k")
        await session.commit()


async def test_parallel_reservations_never_pass_the_limit(db: Database) -> None:
    """Twenty transactions racing for five uses, each holding its use a moment before it
    commits (as a registration does while it writes its rows): exactly five get one."""
    quota = Quota("race", 5, FakeClock(START))

    async def attempt() -> bool:
        async with db.session() as session:
            got = await quota.reserve(session, "k")
            await asyncio.sleep(0.01)
            await session.commit()
            return got

    results = await asyncio.gather(*(attempt() for _ in range(20)))
    assert sum(results) == 5
    async with db.session() as session:
        assert await quota.used(session, "k") == 5


async def test_forget_deletes_only_ended_windows(db: Database) -> None:
    clock = FakeClock(START)
    quota = Quota("test", 5, clock)
    async with db.session() as session:
        await quota.reserve(session, "old")
        await session.commit()
    clock.advance(timedelta(minutes=90))
    async with db.session() as session:
        await quota.reserve(session, "new")
        assert await forget_quotas(session, clock.now(), QUOTA_WINDOW) == 1
        await session.commit()
    assert await _count(db) == 1


def test_a_quota_needs_a_sane_limit_and_window() -> None:
    clock = FakeClock(START)
    with pytest.raises(ValueError):
        Quota("bad", -1, clock)
    with pytest.raises(ValueError):
        Quota("bad", 1, clock, timedelta(0))
