"""Invitations to a meeting: an e-mail to each participant with an iCalendar invitation.

Participants: the applicant's side (only the delegate when the case is delegated), the company's
representatives and the conciliator. The invitation has a stable UID per meeting and a SEQUENCE
that grows on every change, so calendar programs update or remove the same event; times are in
Europe/Rome with the zone's definition included. Mails go through the outbox in the
transaction of the booking, in each recipient's language, and the timeline records them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from email.utils import parseaddr
from typing import Any

from icalendar import Calendar as ICalendar
from icalendar import Event, vCalAddress, vText
from sqlalchemy.ext.asyncio import AsyncSession

from cases.accounts import Account
from cases.alerts import Alerts, Audience, applicant_side, company_side
from cases.casefile import Case, record
from cases.lifecycle import Actor
from core.clock import ROME
from core.jobs import Job
from scheduling.bookings import Meeting, MeetingStatus

PRODID = "-//Concilia//Servizio Conciliazione online//IT"


def ics(
    meeting: Meeting,
    *,
    method: str,
    domain: str,
    summary: str,
    description: str,
    url: str,
    organizer: str,
    attendees: list[str],
    now: datetime,
) -> str:
    """The invitation (METHOD ``REQUEST``) or its withdrawal (``CANCEL``) as iCalendar text."""
    calendar = ICalendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", method)
    event = Event()
    event.add("uid", f"{meeting.id}@{domain}")
    event.add("sequence", meeting.sequence)
    event.add("dtstamp", now)
    event.add("dtstart", meeting.starts_at.astimezone(ROME))
    event.add("dtend", meeting.ends_at.astimezone(ROME))
    event.add("summary", summary)
    event.add("description", description)
    event.add("url", url)
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    event.add("organizer", vCalAddress(f"mailto:{organizer}"))
    for address in attendees:
        attendee = vCalAddress(f"mailto:{address}")
        attendee.params["role"] = vText("REQ-PARTICIPANT")
        event.add("attendee", attendee, encode=False)
    calendar.add_component(event)
    calendar.add_missing_timezones()
    text: str = calendar.to_ical().decode()
    return text


class Invitations:
    def __init__(self, alerts: Alerts, mail_from: str) -> None:
        self.alerts = alerts
        self.organizer = parseaddr(mail_from)[1] or "no-reply@concilia.invalid"

    async def send(
        self,
        session: AsyncSession,
        meeting: Meeting,
        case: Case,
        *,
        cancel: bool = False,
        author: Account | None = None,
    ) -> int:
        """Queue the invitation (or cancellation) to every participant; returns how many."""
        notifier = self.alerts.notifier
        conciliator = await session.get(Account, meeting.conciliator_id)
        people: list[Any] = [
            *(await applicant_side(session, case)),
            *(await company_side(session, case)),
        ]
        if conciliator is not None:
            people.append(conciliator)
        url = f"{notifier.public_url}/cases/{case.id}"
        local = meeting.starts_at.astimezone(ROME)
        calendar = ics(
            meeting,
            method="CANCEL" if cancel else "REQUEST",
            domain=notifier.domain,
            summary=f"Concilia {case.code or ''}".strip(),
            description=url,
            url=url,
            organizer=self.organizer,
            attendees=[p.email for p in people],
            now=notifier.now(),
        )
        template = "meeting_cancelled" if cancel else "meeting_set"
        context: dict[str, Any] = {
            "when": local.strftime("%d/%m/%Y %H:%M"),
            "mode": meeting.mode,
            "updated": meeting.sequence > 0,
            "calendar": calendar,
        }
        sent = await self.alerts.send(
            session, case, (Audience.APPLICANT, Audience.COMPANY), template, **context
        )
        if conciliator is not None:
            notifier.queue_for(
                session,
                conciliator,
                template,
                code=case.code or "",
                link=url,
                has_account=True,
                **context,
            )
            sent += 1
        record(
            session,
            case,
            at=notifier.now(),
            account_id=author.id if author else None,
            actor=Actor.SCHEDULER if author else Actor.SYSTEM,
            kind="invitation_cancelled" if cancel else "invitation_sent",
            note=local.strftime("%d/%m/%Y %H:%M"),
        )
        return sent

    async def remind(self, session: AsyncSession, job: Job) -> None:
        """The job of a reminder: sent only if the meeting is still the one it was planned for.

        The meeting's row is taken first: a move, a cancellation or the room's opening that
        holds it (and skipped this job, ``core.jobs.drop_jobs``) commits before the check, so
        the reminder sees the meeting as they left it."""
        meeting = await session.get(
            Meeting, uuid.UUID(str(job.payload["meeting"])), with_for_update=True
        )
        if (
            meeting is None
            or meeting.status != MeetingStatus.SCHEDULED
            or meeting.sequence != job.payload.get("sequence")
        ):
            return
        case = await session.get(Case, meeting.case_id)
        assert case is not None
        notifier = self.alerts.notifier
        url = f"{notifier.public_url}/cases/{case.id}"
        context: dict[str, Any] = {
            "when": meeting.starts_at.astimezone(ROME).strftime("%d/%m/%Y %H:%M"),
            "mode": meeting.mode,
            "hours": int(job.payload.get("hours", 24)),
        }
        await self.alerts.send(
            session, case, (Audience.APPLICANT, Audience.COMPANY), "meeting_reminder", **context
        )
        conciliator = await session.get(Account, meeting.conciliator_id)
        if conciliator is not None:
            notifier.queue_for(
                session,
                conciliator,
                "meeting_reminder",
                code=case.code or "",
                link=url,
                has_account=True,
                **context,
            )
