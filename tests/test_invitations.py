"""Invitations through a real SMTP server: who gets them, and what the ICS says."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from email.message import Message

import pytest
from icalendar import Calendar as ICalendar

from cases.companies import do_create_company
from cases.lifecycle import Action
from core.clock import ROME
from core.jobs import JobRunner
from scheduling.bookings import REMINDER_JOB
from tests.conftest import MailSink
from tests.support import (
    DELEGATED_APPLICANT,
    DELEGATION_DOCUMENTS,
    VALID_VAT,
    Env,
    admitted_case,
    domain_request,
    registered,
    sign_in,
    staff,
)

FIRST = date(2026, 11, 30)


def rome(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=ROME).astimezone(UTC)


def invitation(message: Message) -> ICalendar:
    for part in message.walk():
        if part.get_content_type() == "text/calendar":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return ICalendar.from_ical(payload)
    raise AssertionError("no text/calendar part")


async def delivered(env: Env, sink: MailSink, count: int) -> list[Message]:
    await env.services.mail.deliver_due()
    return await sink.wait_for(count)


@pytest.mark.smtp
async def test_invitations_reach_the_participants_and_follow_the_meeting(
    env: Env, smtp_server: tuple[MailSink, int]
) -> None:
    sink, _port = smtp_server
    svc = env.services
    company = await do_create_company(
        svc.db, name="Energia A", vat=VALID_VAT, sectors=["electricity"], now=env.clock.now()
    )
    await registered(env, "cliente")  # has an account, but the case is delegated
    await registered(env, "delegato", kind="delegate", delegate_kind="professional")
    await registered(env, "rep", kind="company_rep", company_id=str(company.id), language="en")
    rep = await svc.accounts.by_username("rep")
    assert rep is not None
    await svc.accounts.do_activate(rep.id)
    for name, role in (("sportello", "helpdesk"), ("pianificatore", "scheduler")):
        await staff(env, name, role=role)
    await staff(env, "conciliatore", role="conciliator")
    case_id = uuid.UUID(
        await domain_request(
            env,
            "delegato",
            str(company.id),
            documents=DELEGATION_DOCUMENTS,
            applicant=DELEGATED_APPLICANT,
        )
    )
    desk = await svc.accounts.by_username("sportello")
    scheduler = await svc.accounts.by_username("pianificatore")
    conciliator = await svc.accounts.by_username("conciliatore")
    assert desk and scheduler and conciliator
    await svc.files.do_step(desk, case_id, Action.ADMIT)
    before = len(await env.mails())
    meeting = await svc.bookings.do_book(scheduler, case_id, rome(FIRST, 9), conciliator.id)
    invited = [m for m in await env.mails() if m.calendar][-3:]
    assert len(await env.mails()) == before + 3
    assert sorted(m.to_addr for m in invited) == [
        "conciliatore@example.org",
        "delegato@example.org",
        "rep@example.org",
    ]
    messages = [
        m for m in await delivered(env, sink, len(await env.mails())) if invitation_or_none(m)
    ]
    assert sorted(m["To"] for m in messages) == sorted(m.to_addr for m in invited)
    first = invitation(messages[0])
    event = first.walk("VEVENT")[0]
    assert str(first["METHOD"]) == "REQUEST"
    uid = str(event["UID"])
    assert uid == f"{meeting.id}@concilia.test" and event.decoded("SEQUENCE") == 0
    start = event.decoded("DTSTART")
    assert start.tzinfo is not None and start.astimezone(ROME).hour == 9
    assert start.astimezone(UTC) == rome(FIRST, 9)
    assert first.walk("VTIMEZONE"), "the zone's definition travels with the invitation"
    english = next(m for m in messages if m["To"] == "rep@example.org")
    assert "meeting on 30/11/2026 09:00" in english["Subject"]
    # The case file shows the meeting to the delegate.
    delegate = await env.new_browser()
    await sign_in(delegate, "delegato", "Lampada-Verde-42")
    page = await delegate.get(f"/cases/{case_id}")
    assert 'id="meeting"' in page.text and "30/11/2026 09:00" in page.text
    # Moved: same UID, a higher SEQUENCE.
    await svc.bookings.do_move(scheduler, meeting.id, rome(FIRST, 14), conciliator.id)
    sent = len(sink.messages)
    moved = [m for m in await delivered(env, sink, sent + 3) if invitation_or_none(m)]
    assert len(moved) == 6
    event = invitation(moved[-1]).walk("VEVENT")[0]
    assert str(event["UID"]) == uid and event.decoded("SEQUENCE") == 1
    assert event.decoded("DTSTART").astimezone(ROME).hour == 14
    # Cancelled: METHOD CANCEL, same UID, higher SEQUENCE again.
    await svc.bookings.do_cancel(scheduler, meeting.id, "Rinvio")
    cancelled = [m for m in await delivered(env, sink, sent + 6) if invitation_or_none(m)]
    last = invitation(cancelled[-1])
    event = last.walk("VEVENT")[0]
    assert str(last["METHOD"]) == "CANCEL" and str(event["UID"]) == uid
    assert event.decoded("SEQUENCE") == 2 and str(event["STATUS"]) == "CANCELLED"
    assert not [m for m in await env.mails("cliente@example.org") if m.calendar]
    kinds = [e.kind for e in await svc.files.timeline(case_id)]
    assert (
        kinds[-5:]
        == [
            "schedule",
            "invitation_sent",
            "meeting_moved",
            "invitation_sent",
            "cancel_meeting",
        ]
        or "invitation_cancelled" in kinds
    )


def invitation_or_none(message: Message) -> bool:
    return any(part.get_content_type() == "text/calendar" for part in message.walk())


async def test_reminders_come_once_24_hours_and_1_hour_before_and_follow_moves(env: Env) -> None:
    svc = env.services
    company = await do_create_company(
        svc.db, name="Energia A", vat=VALID_VAT, sectors=["electricity"], now=env.clock.now()
    )
    await registered(env, "cliente")
    case_id = uuid.UUID(await admitted_case(env, str(company.id)))
    scheduler = await svc.accounts.by_username("pianificatore")
    conciliator = await svc.accounts.by_username("conciliatore")
    assert scheduler and conciliator
    meeting = await svc.bookings.do_book(scheduler, case_id, rome(FIRST, 9), conciliator.id)
    # Moved before any reminder was due: the old reminders are dropped, new ones planned.
    await svc.bookings.do_move(scheduler, meeting.id, rome(FIRST, 12), conciliator.id)

    async def reminders() -> list[str]:
        return [m.to_addr for m in await env.mails() if "un promemoria:" in m.body_text]

    env.clock.set(rome(FIRST, 12) - timedelta(hours=24, minutes=1))
    assert await svc.jobs.run_due() == 0
    env.advance(minutes=2)
    assert await svc.jobs.run_due() == 1
    assert sorted(await reminders()) == ["cliente@example.org", "conciliatore@example.org"]
    # A runner that starts afresh (a restart) does not send it again.
    invitations = svc.bookings.invitations
    assert invitations is not None
    fresh = JobRunner(svc.db, env.clock, {REMINDER_JOB: invitations.remind})
    assert await fresh.run_due() == 0
    env.clock.set(rome(FIRST, 12) - timedelta(minutes=59))
    assert await fresh.run_due() == 1
    assert len(await reminders()) == 4
    assert await svc.jobs.run_due() == 0
