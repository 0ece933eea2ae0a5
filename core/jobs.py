"""Jobs that must happen at a given time, kept in the database.

A job is a row: its kind, what it is about (``ref``), when it is due, a small payload. Because
it lives in the database it survives restarts, and any node may run it. A job runs exactly
once: the runner marks it done with a conditional UPDATE (``pending`` → ``done``) in the same
transaction as the job's own work, so a job whose work fails stays pending and is tried again,
and two nodes racing for one job cannot both do it. Jobs about something that changed are
dropped by ``drop`` (e.g. the reminders of a meeting that moved).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Integer, String, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import Clock
from core.db import Base, Database, UTCDateTime
from core.outage import log_failure

log = logging.getLogger(__name__)


class JobStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    DROPPED = "dropped"


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(40))
    ref: Mapped[str] = mapped_column(String(80), index=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    status: Mapped[str] = mapped_column(String(12), default=JobStatus.PENDING, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


Handler = Callable[[AsyncSession, Job], Awaitable[None]]


def schedule_job(
    session: AsyncSession,
    *,
    kind: str,
    ref: str,
    due_at: datetime,
    now: datetime,
    payload: dict[str, Any] | None = None,
) -> Job:
    """Add a job in the caller's transaction."""
    job = Job(
        kind=kind,
        ref=ref,
        due_at=due_at,
        status=JobStatus.PENDING,
        payload=payload or {},
        attempts=0,
        created_at=now,
    )
    session.add(job)
    return job


async def drop_jobs(session: AsyncSession, ref: str) -> int:
    """Drop the pending jobs about ``ref`` (in the caller's transaction); returns how many.

    A job a runner is claiming at this very moment is skipped, not waited for: the runner
    holds its row and may next need a row the caller already holds (a reminder files its
    mail against the case the caller has locked), which would deadlock the two. Such a job
    is being done or, if its run fails, finds the change when it is tried again."""
    claimable = (
        select(Job.id)
        .where(Job.ref == ref, Job.status == JobStatus.PENDING)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(
        update(Job)
        .where(Job.id.in_(claimable.scalar_subquery()))
        .values(status=JobStatus.DROPPED)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


class JobRunner:
    """Runs due jobs with their kind's handler; ``run_due`` is one pass."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        handlers: Mapping[str, Handler],
        *,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.handlers = dict(handlers)
        self.on_done = on_done
        self._woken = asyncio.Event()

    def register(self, kind: str, handler: Handler) -> None:
        """Run jobs of ``kind`` with ``handler`` from now on."""
        self.handlers[kind] = handler

    def wake(self) -> None:
        """Make ``run_forever`` pass now rather than at its next interval (a job was added
        that is due at once)."""
        self._woken.set()

    async def run_due(self, limit: int = 200, kinds: Collection[str] | None = None) -> int:
        """Run every due pending job (at most ``limit``; only those of ``kinds`` if given);
        returns how many were done."""
        now = self.clock.now()
        query = select(Job.id).where(Job.status == JobStatus.PENDING, Job.due_at <= now)
        if kinds is not None:
            query = query.where(Job.kind.in_(list(kinds)))
        async with self.db.session() as session:
            due = list(await session.scalars(query.order_by(Job.due_at, Job.id).limit(limit)))
        done = 0
        for job_id in due:
            if await self._run_one(job_id, now):
                done += 1
        if done and self.on_done is not None:
            self.on_done()
        return done

    async def _run_one(self, job_id: int, now: datetime) -> bool:
        try:
            async with self.db.session() as session:
                claimed = await session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.PENDING)
                    .values(status=JobStatus.DONE, done_at=now)
                )
                if not getattr(claimed, "rowcount", 0):
                    return False  # another node did it, or it was dropped
                job = await session.get(Job, job_id)
                assert job is not None
                handler = self.handlers.get(job.kind)
                if handler is None:
                    log.error("no handler for job kind %s", job.kind)
                    await session.rollback()
                    return False
                await handler(session, job)
                await session.commit()
                return True
        except Exception:
            log.exception("job %d failed; it stays pending and is tried again", job_id)
            async with self.db.session() as session:
                await session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.PENDING)
                    .values(attempts=Job.attempts + 1, due_at=now + timedelta(minutes=1))
                )
                await session.commit()
            return False

    async def run_forever(self, stop: asyncio.Event, every: float = 30.0) -> None:
        """Pass after pass until ``stop`` is set (the web server runs it in the background):
        every ``every`` seconds, and at once when woken (``wake``)."""
        while not stop.is_set():
            self._woken.clear()
            try:
                await self.run_due()
            except Exception:
                log_failure(log, "job pass failed")
            waits = {
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self._woken.wait()),
            }
            try:
                await asyncio.wait(waits, timeout=every, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
