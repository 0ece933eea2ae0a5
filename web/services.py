"""Opening and closing everything the application needs, in one place."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cases.accounts import Accounts
from cases.alerts import Alerts
from cases.casefile import CaseFiles
from cases.documents import Documents
from cases.filing import Filing
from cases.helpdesk import HelpDesk
from cases.notifications import Notifier
from cases.passwords import PasswordHasher
from cases.recovery import Recovery
from cases.sessions import DbSessionStore, RedisSessionStore, SessionStore
from cases.signin import SignIn
from cases.storage import LocalStorage, Storage, sweep_orphans
from cases.throttle import Throttle
from core.clock import Clock
from core.db import Database
from core.i18n import I18n
from core.jobs import JobRunner
from core.mail import MailWorker
from core.outage import log_failure
from core.quota import QUOTA_WINDOW, forget_quotas
from core.settings import Settings
from rooms.filing import MinutesClerk
from rooms.room import MINUTES_JOB, Rooms
from rooms.seal import Sealer
from scheduling.bookings import REMINDER_JOB, Bookings, Rules
from scheduling.invitations import Invitations
from scheduling.planner import Planner
from scheduling.resources import Resources
from signaling.tokens import RoomTokens
from web.metrics import Metrics

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).parent / "templates"
MAINTENANCE_SECONDS = 600.0
JOBS_SECONDS = 30.0  # how often due jobs (meeting reminders) are looked for
REDIS_TIMEOUT = 5.0  # seconds for one Redis connect or reply
REDIS_CONNECTIONS = 64  # connections to Redis for sessions and presence, at most
REDIS_WAIT_SECONDS = 10.0  # how long a burst waits for one of them


@dataclass
class Services:
    settings: Settings
    clock: Clock
    db: Database
    redis: Redis | None
    i18n: I18n
    templates: Environment
    mail: MailWorker
    notifier: Notifier
    sessions: SessionStore
    throttle: Throttle
    accounts: Accounts
    signin: SignIn
    recovery: Recovery
    storage: Storage
    alerts: Alerts
    files: CaseFiles
    documents: Documents
    filing: Filing
    bookings: Bookings
    jobs: JobRunner
    planner: Planner
    rooms: Rooms
    room_tokens: RoomTokens
    resources: Resources
    helpdesk: HelpDesk
    metrics: Metrics
    secret: bytes
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _closed: bool = False
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def start_background(self) -> None:
        """Start the mail worker and the maintenance loop (the web server does; the CLI not)."""
        self.mail.start()
        self._tasks.append(asyncio.create_task(self._maintenance(), name="maintenance"))
        self._tasks.append(
            asyncio.create_task(self.jobs.run_forever(self._stop, JOBS_SECONDS), name="jobs")
        )

    async def _maintenance(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                disabled = await self.accounts.do_disable_inactive()
                if disabled:
                    log.info("disabled %d accounts unused for too long", disabled)
                if isinstance(self.sessions, DbSessionStore):
                    await self.sessions.purge_expired()
                reminded, expired = await self.files.do_run_deadlines()
                if reminded or expired:
                    log.info("integration deadlines: %d reminded, %d expired", reminded, expired)
                await self.storage.sweep_incoming()
                # Every service keeping objects in the storage must be asked, or the sweep
                # would take another's files for orphans.
                await sweep_orphans(self.storage, (self.documents, self.helpdesk))
                await self.do_forget_quotas()
                backoff = 1.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), MAINTENANCE_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:
                log_failure(log, "maintenance pass failed; retrying in %.0f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAINTENANCE_SECONDS)

    async def do_forget_quotas(self) -> int:
        """Delete the counters of ended quota windows (all of them hourly); how many."""
        async with self.db.session() as session:
            forgotten = await forget_quotas(session, self.clock.now(), QUOTA_WINDOW)
            await session.commit()
        return forgotten

    async def close(self) -> None:
        """Stop background work and release connections; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(asyncio.shield(task), 10.0)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.planner.close()
        await self.rooms.close_background()
        await self.mail.close()
        await self.sessions.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.close()


def template_environment() -> Environment:
    """HTML templates; everything is escaped unless a template says otherwise (none does).
    ``upload_key()`` gives an upload form its idempotency key (``Documents.add_once``)."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals["upload_key"] = new_upload_key
    return environment


def new_upload_key() -> str:
    return secrets.token_urlsafe(16)


def redis_client(url: str) -> Redis:
    """The node's Redis client. A client made from a URL retries nothing by default: after a
    Redis restart each connection left in its pool would fail once, and so the request using
    it (a 503 with Redis already back). A broken connection is opened again at once, a few
    times (about 0.35 s in all), before the failure counts as an outage; a Redis that stops
    answering fails requests within ``REDIS_TIMEOUT`` seconds instead of holding them. Sessions
    and presence share a blocking pool: a burst waits for one of its connections rather than
    failing with "Too many connections" as the default pool does past its 100."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_CONNECTIONS,
        timeout=REDIS_WAIT_SECONDS,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        socket_connect_timeout=REDIS_TIMEOUT,
        socket_timeout=REDIS_TIMEOUT,
    )
    return Redis.from_pool(pool)  # the pool is closed with the client


async def open_services(settings: Settings, clock: Clock) -> Services:
    """Connect to the database (and Redis when configured) and build the domain services."""
    secret = settings.secret()
    db = Database(
        settings.resolved_database_url(),
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout_seconds,
    )
    redis: Redis | None = None
    if settings.redis_url:
        redis = redis_client(settings.redis_url)
    metrics = Metrics()
    mail = MailWorker(db, settings, clock, on_result=lambda s: metrics.mails.labels(s).inc())
    i18n = I18n()
    notifier = Notifier(i18n, clock, settings.public_url, mail.wake)
    sessions: SessionStore
    if redis is not None:
        sessions = RedisSessionStore(
            redis, clock, settings.session_idle, settings.session_absolute, settings.redis_prefix
        )
    else:
        sessions = DbSessionStore(db, clock, settings.session_idle, settings.session_absolute)
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_kib=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
    )
    throttle = Throttle(
        db,
        clock,
        secret,
        allowed=settings.login_failures_allowed,
        window=timedelta(minutes=settings.login_window_minutes),
        max_delay=timedelta(seconds=settings.login_max_delay_seconds),
    )
    accounts = Accounts(db, clock, settings, hasher, notifier, sessions, throttle)
    storage = LocalStorage(settings.resolved_files_dir)
    alerts = Alerts(notifier)
    files = CaseFiles(
        db,
        clock,
        alerts,
        integration_days=settings.integration_days,
        reminder_hours=settings.integration_reminder_hours,
    )
    invitations = Invitations(alerts, settings.mail_from)
    bookings = Bookings(
        db,
        clock,
        files,
        Rules(
            meeting_minutes=settings.meeting_minutes,
            min_notice_days=settings.min_notice_days,
            first_meeting_days=settings.first_meeting_days,
            procedure_days=settings.procedure_days,
            extension_days=settings.extension_days,
            room_opens_minutes=settings.room_opens_minutes,
            room_grace_minutes=settings.room_grace_minutes,
        ),
        invitations,
    )
    documents = Documents(db, clock, storage, alerts)
    planner = Planner(db, clock, bookings, weeks=settings.schedule_weeks)
    clerk = MinutesClerk(
        clock, documents, functools.cache(lambda: Sealer.from_settings(settings)), i18n
    )
    jobs = JobRunner(
        db,
        clock,
        {REMINDER_JOB: invitations.remind, MINUTES_JOB: clerk.file},
        on_done=mail.wake,
    )
    return Services(
        settings=settings,
        clock=clock,
        db=db,
        redis=redis,
        i18n=i18n,
        templates=template_environment(),
        mail=mail,
        notifier=notifier,
        sessions=sessions,
        throttle=throttle,
        accounts=accounts,
        signin=SignIn(accounts, throttle, secret),
        recovery=Recovery(accounts, secret, jobs),
        storage=storage,
        alerts=alerts,
        files=files,
        documents=documents,
        bookings=bookings,
        jobs=jobs,
        planner=planner,
        rooms=Rooms(db, clock, bookings, documents, planner, secret, notifier=notifier, jobs=jobs),
        room_tokens=RoomTokens(secret),
        resources=Resources(db, clock),
        filing=Filing(db, clock, files, complaint_wait_days=settings.complaint_wait_days),
        helpdesk=HelpDesk(
            db,
            clock,
            storage,
            notifier,
            secret,
            anonymous_per_hour=settings.helpdesk_anonymous_per_hour,
        ),
        metrics=metrics,
        secret=secret,
    )
