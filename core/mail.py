"""Outgoing mail: a transactional outbox in the database and a worker that delivers it.

A mail is queued in the same transaction as the change it reports, so it exists exactly when
the change does. The worker claims due mails, sends them over SMTP (aiosmtplib) when SMTP is
configured, and otherwise keeps them in the outbox for the developer to read. A mail is never
sent twice: a claim that outlives its worker (the process died while talking to the SMTP
server) marks the mail ``uncertain`` instead of resending it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from enum import StrEnum

import aiosmtplib
from sqlalchemy import Integer, String, Text, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import Clock
from core.db import Base, Database, UTCDateTime
from core.outage import log_failure
from core.settings import Settings

log = logging.getLogger(__name__)

CLAIM = timedelta(minutes=5)
STOP_GRACE = 10.0  # seconds a stopping worker may take to finish its pass
BATCH = 20


class MailStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    KEPT = "kept"  # no SMTP configured: kept in the outbox (development)
    FAILED = "failed"  # permanent refusal or too many attempts
    UNCERTAIN = "uncertain"  # the worker died mid-send; not resent to avoid a duplicate


class OutboxMail(Base):
    __tablename__ = "mail_outbox"

    # An increasing key keeps the order mails were queued in, even within one clock tick.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    to_addr: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body_text: Mapped[str] = mapped_column(Text)
    # An iCalendar invitation (text/calendar, its METHOD inside) sent along with the text.
    calendar: Mapped[str | None] = mapped_column(Text, nullable=True)
    message_id: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=MailStatus.QUEUED, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)


def enqueue(
    session: AsyncSession,
    *,
    to: str,
    subject: str,
    text: str,
    now: datetime,
    domain: str,
    calendar: str | None = None,
) -> OutboxMail:
    """Add a mail to the outbox in the caller's transaction; the caller commits."""
    mail = OutboxMail(
        created_at=now,
        to_addr=to,
        subject=subject,
        body_text=text,
        calendar=calendar,
        message_id=make_msgid(domain=domain),
        status=MailStatus.QUEUED,
        attempts=0,
        next_attempt_at=now,
    )
    session.add(mail)
    return mail


async def list_outbox(db: Database, limit: int = 200) -> list[OutboxMail]:
    """The newest mails first (for the development outbox page and for tests)."""
    async with db.session() as session:
        rows = await session.scalars(select(OutboxMail).order_by(OutboxMail.id.desc()).limit(limit))
        return list(rows)


class MailWorker:
    """Delivers queued mail in the background; ``wake()`` after a commit sends at once."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        self._db = db
        self._settings = settings
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._on_result = on_result or (lambda _status: None)
        self._stopping = False
        self.idle = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="mail-worker")

    async def close(self) -> None:
        """Stop after the current pass (cancelling only if it takes too long); idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        # Stopping between passes, not in the middle of a database operation, leaves the
        # connection pool clean for the engine's disposal.
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_GRACE)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        backoff = 1.0
        while not self._stopping:
            try:
                self.idle.clear()
                while not self._stopping and await self.deliver_due():
                    pass
                self.idle.set()
                backoff = 1.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._settings.mail_poll_seconds)
                self._wake.clear()
            except asyncio.CancelledError:
                raise
            except Exception:
                log_failure(log, "mail worker pass failed; retrying in %.0f s", backoff)
                self.idle.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)

    async def _claim(self) -> list[OutboxMail]:
        now = self._clock.now()
        async with self._db.session() as session:
            # A claim that expired belongs to a worker that died mid-send: do not resend.
            stale = await session.execute(
                update(OutboxMail)
                .where(OutboxMail.status == MailStatus.SENDING, OutboxMail.claimed_until < now)
                .values(status=MailStatus.UNCERTAIN, claimed_until=None)
            )
            if getattr(stale, "rowcount", 0):
                log.warning("mails left mid-send by a dead worker marked uncertain")
            rows = list(
                await session.scalars(
                    select(OutboxMail)
                    .where(
                        OutboxMail.status == MailStatus.QUEUED, OutboxMail.next_attempt_at <= now
                    )
                    .order_by(OutboxMail.id)
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            for mail in rows:
                mail.status = MailStatus.SENDING
                mail.claimed_until = now + CLAIM
                mail.attempts += 1
            await session.commit()
            return rows

    async def deliver_due(self) -> int:
        """One pass: claim and deliver due mails; returns how many were handled."""
        claimed = await self._claim()
        for mail in claimed:
            status, error = await self._deliver(mail)
            now = self._clock.now()
            values: dict[str, object] = {"status": status, "claimed_until": None}
            if status in (MailStatus.SENT, MailStatus.KEPT):
                values["sent_at"] = now
            if status in (MailStatus.SENT, MailStatus.FAILED):
                # The body may hold a live link or code: once handed over (or given up), the
                # database keeps only the record of the mail, not its secrets.
                values["body_text"] = ""
            if error is not None:
                values["last_error"] = error[:500]
            if status == MailStatus.QUEUED:
                delay = min(30 * 2 ** (mail.attempts - 1), 3600)
                values["next_attempt_at"] = now + timedelta(seconds=delay)
            async with self._db.session() as session:
                await session.execute(
                    update(OutboxMail).where(OutboxMail.id == mail.id).values(**values)
                )
                await session.commit()
            self._on_result(str(status))
        return len(claimed)

    async def _deliver(self, mail: OutboxMail) -> tuple[MailStatus, str | None]:
        settings = self._settings
        if not settings.smtp_host:
            return MailStatus.KEPT, None
        message = EmailMessage()
        message["From"] = settings.mail_from
        message["To"] = mail.to_addr
        message["Subject"] = mail.subject
        message["Message-ID"] = mail.message_id
        message["Date"] = mail.created_at
        message.set_content(mail.body_text)
        if mail.calendar:
            method = "CANCEL" if "METHOD:CANCEL" in mail.calendar else "REQUEST"
            # The invitation as calendar programs expect it: an alternative of the text, and a
            # file to open for those that look for one.
            message.add_alternative(mail.calendar, subtype="calendar", params={"method": method})
            message.add_attachment(
                mail.calendar.encode(),
                maintype="application",
                subtype="ics",
                filename="invito.ics",
            )
        try:
            await aiosmtplib.send(
                message,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_user,
                password=(
                    settings.smtp_password.get_secret_value() if settings.smtp_password else None
                ),
                use_tls=settings.smtp_tls == "tls",
                start_tls=settings.smtp_tls == "starttls",
                timeout=30,
            )
        except aiosmtplib.SMTPResponseException as exc:
            permanent = 500 <= exc.code < 600
            log.warning("SMTP refused mail %s with code %s", mail.id, exc.code)
            if permanent or mail.attempts >= settings.mail_max_attempts:
                return MailStatus.FAILED, f"SMTP {exc.code}"
            return MailStatus.QUEUED, f"SMTP {exc.code}"
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.warning("SMTP delivery of mail %s failed: %s", mail.id, type(exc).__name__)
            if mail.attempts >= settings.mail_max_attempts:
                return MailStatus.FAILED, type(exc).__name__
            return MailStatus.QUEUED, type(exc).__name__
        log.info("mail %s delivered", mail.id)
        return MailStatus.SENT, None
