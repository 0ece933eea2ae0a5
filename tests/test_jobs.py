"""Jobs: dropping a meeting's jobs never waits for a runner that is claiming one of them."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from core.jobs import Job, JobStatus, drop_jobs, schedule_job
from tests.support import Env


async def test_dropping_skips_a_job_a_runner_holds_and_drops_the_rest(env: Env) -> None:
    db = env.services.db
    if db.engine.dialect.name != "postgresql":
        pytest.skip("row locks: SQLite has one writer at a time, it cannot deadlock")
    now = env.clock.now()
    ref = "meeting:00000000-0000-0000-0000-000000000001"
    async with db.session() as session:
        claimed = schedule_job(session, kind="meeting_reminder", ref=ref, due_at=now, now=now)
        later = schedule_job(
            session, kind="meeting_reminder", ref=ref, due_at=now + timedelta(hours=1), now=now
        )
        await session.flush()
        claimed_id, later_id = claimed.id, later.id
        await session.commit()

    # A runner claims the due job and, before it commits, would want what the dropper holds
    # (the reminder files its mail against the locked case): the dropper must not wait for it.
    async with db.session() as runner:
        await runner.execute(
            update(Job).where(Job.id == claimed_id).values(status=JobStatus.DONE, done_at=now)
        )
        async with db.session() as dropper:
            dropped = await asyncio.wait_for(drop_jobs(dropper, ref), timeout=5)
            await dropper.commit()
        assert dropped == 1
        await runner.commit()

    async with db.session() as session:
        rows = (await session.execute(select(Job.id, Job.status).where(Job.ref == ref))).all()
    states = {row.id: row.status for row in rows}
    assert states == {claimed_id: JobStatus.DONE, later_id: JobStatus.DROPPED}


async def test_dropping_drops_every_pending_job_of_the_ref_only(env: Env) -> None:
    db = env.services.db
    now = env.clock.now()
    async with db.session() as session:
        for ref in ("meeting:a", "meeting:a", "meeting:b"):
            schedule_job(session, kind="meeting_reminder", ref=ref, due_at=now, now=now)
        await session.commit()
    async with db.session() as session:
        assert await drop_jobs(session, "meeting:a") == 2
        await session.commit()
    async with db.session() as session:
        rows = (await session.execute(select(Job.ref, Job.status).order_by(Job.ref))).all()
    assert [(r, s) for r, s in rows] == [
        ("meeting:a", JobStatus.DROPPED),
        ("meeting:a", JobStatus.DROPPED),
        ("meeting:b", JobStatus.PENDING),
    ]
