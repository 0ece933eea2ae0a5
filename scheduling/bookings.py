"""Meetings booked in slots, and the resources they hold, with the database as the referee.

A meeting holds a conciliator in a slot and one of the company's seats in that slot. Double
bookings are impossible even with several schedulers at once on several nodes, because the
database refuses them, not only this code: a partial unique index allows one scheduled meeting
per conciliator and slot, another one scheduled meeting per case, and a company's seats are
rows keyed by (company, slot, seat number) — there are only as many seat numbers as the
company's capacity, so a slot cannot hold more of its meetings. What this module checks first
(holidays, closures, the deadline, the minimum notice, working days, absences, the daily limit,
capacity) only gives the reason for a refusal; a race that slips past the checks still ends in
the database's refusal, reported as "taken".
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import (
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from cases.accounts import Account, Role, Status
from cases.alerts import Audience
from cases.casefile import Case, CaseEvent, CaseFiles, case_for, record
from cases.companies import Company
from cases.lifecycle import Action, Actor, CaseStatus
from core.clock import ROME, Clock
from core.db import Base, Database, UTCDateTime
from core.errors import ErrorCode, FieldErrors, UserError
from core.ids import new_id
from core.jobs import drop_jobs, schedule_job
from scheduling.calendar import Calendar, Slot

if TYPE_CHECKING:
    from scheduling.invitations import Invitations


class MeetingStatus(StrEnum):
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"
    HELD = "held"
    MOVING = "moving"  # only inside the transaction that moves it


class Closure(Base):
    """A day without slots besides the national holidays (a patron saint, an office closure)."""

    __tablename__ = "closures"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))


class ConciliatorProfile(Base):
    """When a conciliator works: weekdays (0 = Monday) and meetings per day at most."""

    __tablename__ = "conciliator_profiles"

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    working_weekdays: Mapped[str] = mapped_column(String(16), default="0,1,2,3,4")
    max_per_day: Mapped[int] = mapped_column(Integer, default=4)

    @property
    def weekdays(self) -> frozenset[int]:
        return frozenset(int(d) for d in self.working_weekdays.split(",") if d)


class Absence(Base):
    __tablename__ = "conciliator_absences"
    __table_args__ = (UniqueConstraint("account_id", "day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), index=True)
    day: Mapped[date] = mapped_column(Date)


class CompanyCapacity(Base):
    """How many meetings a company's representatives can attend in parallel in one slot."""

    __tablename__ = "company_capacities"

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id"), primary_key=True)
    per_slot: Mapped[int] = mapped_column(Integer)


REMINDER_JOB = "meeting_reminder"
REMINDERS_HOURS = (24, 1)
SCHEDULED_ONLY = text("status = 'scheduled'")
EXTENDED = "procedure_extended"  # the timeline's mark of the procedure's extension
EXTENDABLE = frozenset({CaseStatus.ADMITTED, CaseStatus.SCHEDULED, CaseStatus.MEETING_HELD})
WINDOW_EVENTS = (
    Action.SUBMIT,
    Action.COMPLETE_INTEGRATION,
    Action.ADMIT,
    Action.ADJOURN,
    EXTENDED,
)


class Meeting(Base):
    __tablename__ = "meetings"
    __table_args__ = (
        # One scheduled meeting per conciliator and slot, and per case.
        Index(
            "uq_meetings_conciliator_slot",
            "conciliator_id",
            "starts_at",
            unique=True,
            sqlite_where=SCHEDULED_ONLY,
            postgresql_where=SCHEDULED_ONLY,
        ),
        Index(
            "uq_meetings_case_scheduled",
            "case_id",
            unique=True,
            sqlite_where=SCHEDULED_ONLY,
            postgresql_where=SCHEDULED_ONLY,
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cases.id"), index=True)
    conciliator_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), index=True)
    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id"))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    mode: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(12), default=MeetingStatus.SCHEDULED)
    # iCalendar: the UID is derived from the id (stable); SEQUENCE grows on every change.
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CompanySeat(Base):
    """One of a company's parallel seats in a slot, held by a scheduled meeting."""

    __tablename__ = "company_seats"

    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id"), primary_key=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    seat: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    meeting_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id"), unique=True)


@dataclass(frozen=True)
class Rules:
    """The service's time rules (configurable)."""

    meeting_minutes: int = 90
    min_notice_days: int = 5  # working days between admission and the meeting
    first_meeting_days: int = 40  # from the complete request to the first meeting
    procedure_days: int = 90  # from filing to the end of the whole procedure
    extension_days: int = 30  # the procedure may be extended once by this much
    room_opens_minutes: int = 15  # the room (and the "join" button) opens before the start
    room_grace_minutes: int = 30  # and stays open after the slot's end until then at the latest

    def room_open(self, meeting: Meeting, now: datetime) -> bool:
        return (
            meeting.starts_at - timedelta(minutes=self.room_opens_minutes)
            <= now
            < meeting.ends_at + timedelta(minutes=self.room_grace_minutes)
        )

    def room_opens(self, meeting: Meeting) -> datetime:
        return meeting.starts_at - timedelta(minutes=self.room_opens_minutes)


@dataclass(frozen=True)
class Window:
    """When a case's meeting may take place, and the dates that bound it."""

    earliest: date
    deadline: date  # the last day for the (next) meeting
    procedure_end: date  # the last day of the whole procedure
    extended: bool  # the procedure was extended
    adjourned: bool  # the next meeting continues an adjourned one


class Bookings:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        files: CaseFiles,
        rules: Rules,
        invitations: Invitations | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.files = files
        self.rules = rules
        self.invitations = invitations

    async def calendar(self, session: AsyncSession, language: str = "it") -> Calendar:
        closures = {c.day: c.name for c in await session.scalars(select(Closure))}
        return Calendar(
            closures, length=timedelta(minutes=self.rules.meeting_minutes), language=language
        )

    async def do_add_closure(self, day: date, name: str) -> Closure:
        label = " ".join(name.split())[:120]
        if not label:
            raise UserError(ErrorCode.REQUIRED)
        async with self.db.session() as session:
            if await session.get(Closure, day) is not None:
                raise UserError(ErrorCode.CONFLICT)
            closure = Closure(day=day, name=label)
            session.add(closure)
            await session.commit()
        return closure

    async def do_remove_closure(self, day: date) -> None:
        async with self.db.session() as session:
            closure = await session.get(Closure, day)
            if closure is None:
                raise UserError(ErrorCode.NOT_FOUND)
            await session.delete(closure)
            await session.commit()

    async def window(self, session: AsyncSession, case: Case, calendar: Calendar) -> Window:
        """When the case's meeting may take place."""
        return (await self.windows(session, [case], calendar))[case.id]

    async def windows(
        self, session: AsyncSession, cases: Sequence[Case], calendar: Calendar
    ) -> dict[uuid.UUID, Window]:
        """Each case's window, from its events read in one query: the latest submission or
        completion (the first meeting's deadline), the filing (the procedure's end, later when
        extended), the admission (the minimum notice) or the adjournment (the next meeting)."""
        latest: dict[uuid.UUID, dict[str, datetime]] = defaultdict(dict)
        if cases:
            rows = await session.execute(
                select(CaseEvent.case_id, CaseEvent.kind, func.max(CaseEvent.at))
                .where(
                    CaseEvent.case_id.in_([c.id for c in cases]),
                    CaseEvent.kind.in_(WINDOW_EVENTS),
                )
                .group_by(CaseEvent.case_id, CaseEvent.kind)
            )
            for case_id, kind, at in rows.all():
                latest[case_id][kind] = at
        now = self.clock.now()
        found = {}
        for case in cases:
            events = latest[case.id]
            complete = max(
                (events[k] for k in (Action.SUBMIT, Action.COMPLETE_INTEGRATION) if k in events),
                default=case.submitted_at or now,
            )
            filed = (case.submitted_at or complete).astimezone(ROME).date()
            extended = EXTENDED in events
            end = filed + timedelta(
                days=self.rules.procedure_days + (self.rules.extension_days if extended else 0)
            )
            adjourned = events.get(Action.ADJOURN)
            if adjourned is not None:
                # A continued meeting: the parties agreed on it in the meeting, so the next
                # working day will do; the first meeting's deadline was met.
                earliest = calendar.add_working_days(adjourned.astimezone(ROME).date(), 1)
                deadline = end
            else:
                admitted = events.get(Action.ADMIT, now)
                earliest = calendar.add_working_days(
                    admitted.astimezone(ROME).date(), self.rules.min_notice_days
                )
                first = complete.astimezone(ROME).date()
                deadline = min(first + timedelta(days=self.rules.first_meeting_days), end)
            found[case.id] = Window(earliest, deadline, end, extended, adjourned is not None)
        return found

    async def do_book(
        self,
        scheduler: Account,
        case_id: uuid.UUID,
        starts_at: datetime,
        conciliator_id: uuid.UUID,
    ) -> Meeting:
        """Book the case's meeting in the slot starting at ``starts_at`` with the conciliator."""
        async with self.db.session() as session:
            calendar = await self.calendar(session)
            meeting = await self.book_in(
                session, calendar, scheduler, case_id, starts_at, conciliator_id
            )
            await session.commit()
        self.files.wake_mail()
        return meeting

    async def book_in(
        self,
        session: AsyncSession,
        calendar: Calendar,
        scheduler: Account | None,
        case_id: uuid.UUID,
        starts_at: datetime,
        conciliator_id: uuid.UUID,
    ) -> Meeting:
        """The booking inside the caller's transaction (``scheduler`` None: the system)."""
        case, actor = await case_for(session, scheduler, case_id, lock=True)
        if actor not in (Actor.SCHEDULER, Actor.SYSTEM):
            raise UserError(ErrorCode.FORBIDDEN)
        if case.status != CaseStatus.ADMITTED or case.company_id is None:
            raise UserError(ErrorCode.TRANSITION_REFUSED, "the case is not waiting for a slot")
        slot, seat = await self._checked_slot(session, calendar, case, starts_at, conciliator_id)
        now = self.clock.now()
        meeting = Meeting(
            id=new_id(),
            case_id=case.id,
            conciliator_id=conciliator_id,
            company_id=case.company_id,
            starts_at=slot.starts_at,
            ends_at=slot.ends_at,
            mode=case.meeting_mode or "chat",
            status=MeetingStatus.SCHEDULED,
            sequence=0,
            created_at=now,
            updated_at=now,
        )
        await self._hold(session, meeting, seat, new=True)
        await self.files.step_in(
            session,
            case,
            actor,
            scheduler,
            Action.SCHEDULE,
            note=slot.local_start.strftime("%d/%m/%Y %H:%M"),
        )
        if self.invitations is not None:
            await self.invitations.send(session, meeting, case, author=scheduler)
        self._plan_reminders(session, meeting)
        return meeting

    def _plan_reminders(self, session: AsyncSession, meeting: Meeting) -> None:
        """Reminders 24 hours and 1 hour before, as jobs in the database."""
        now = self.clock.now()
        for hours in REMINDERS_HOURS:
            due = meeting.starts_at - timedelta(hours=hours)
            if due > now:
                schedule_job(
                    session,
                    kind=REMINDER_JOB,
                    ref=f"meeting:{meeting.id}",
                    due_at=due,
                    now=now,
                    payload={
                        "meeting": str(meeting.id),
                        "sequence": meeting.sequence,
                        "hours": hours,
                    },
                )

    async def _hold(self, session: AsyncSession, meeting: Meeting, seat: int, *, new: bool) -> None:
        """Write the meeting (when ``new``) and its company seat; the constraints decide."""
        try:
            # A savepoint: a refused row undoes only itself, the caller decides about the rest.
            async with session.begin_nested():
                if new:
                    session.add(meeting)
                await session.flush()
                session.add(
                    CompanySeat(
                        company_id=meeting.company_id,
                        starts_at=meeting.starts_at,
                        seat=seat,
                        meeting_id=meeting.id,
                    )
                )
                await session.flush()
        except IntegrityError:
            # Another scheduler took the conciliator, the case or the seat meanwhile.
            raise UserError(ErrorCode.SLOT_TAKEN) from None

    async def _checked_slot(
        self,
        session: AsyncSession,
        calendar: Calendar,
        case: Case,
        starts_at: datetime,
        conciliator_id: uuid.UUID,
    ) -> tuple[Slot, int]:
        """The slot, if the case may meet then with the conciliator, and the company's seat."""
        assert case.company_id is not None
        slot = calendar.slot_at(starts_at)
        if slot is None:
            local = starts_at.astimezone(ROME).date()
            raise UserError(ErrorCode.SLOT_NOT_AVAILABLE, reason=calendar.day_off(local) or "")
        window = await self.window(session, case, calendar)
        if slot.day > window.deadline:
            raise UserError(ErrorCode.PAST_DEADLINE, deadline=window.deadline.isoformat())
        if slot.day < window.earliest:
            raise UserError(ErrorCode.TOO_SOON, earliest=window.earliest.isoformat())
        await self._check_conciliator(session, conciliator_id, slot)
        return slot, await self._free_seat(session, case.company_id, slot)

    async def do_move(
        self,
        scheduler: Account,
        meeting_id: uuid.UUID,
        starts_at: datetime,
        conciliator_id: uuid.UUID,
    ) -> Meeting:
        """Move a scheduled meeting (same meeting, same invitation UID, SEQUENCE + 1)."""
        async with self.db.session() as session:
            meeting = await session.get(Meeting, meeting_id, with_for_update=True)
            if meeting is None:
                raise UserError(ErrorCode.NOT_FOUND)
            case, actor = await case_for(session, scheduler, meeting.case_id, lock=True)
            if actor != Actor.SCHEDULER:
                raise UserError(ErrorCode.FORBIDDEN)
            if meeting.status != MeetingStatus.SCHEDULED:
                raise UserError(ErrorCode.TRANSITION_REFUSED, "the meeting is not scheduled")
            calendar = await self.calendar(session)
            # Out of the way while the new slot is checked, so it does not count against itself.
            old = await session.scalar(
                select(CompanySeat).where(CompanySeat.meeting_id == meeting.id)
            )
            if old is not None:
                await session.delete(old)
            meeting.status = MeetingStatus.MOVING
            await session.flush()
            slot, seat = await self._checked_slot(
                session, calendar, case, starts_at, conciliator_id
            )
            meeting.starts_at, meeting.ends_at = slot.starts_at, slot.ends_at
            meeting.conciliator_id = conciliator_id
            meeting.status = MeetingStatus.SCHEDULED
            meeting.sequence += 1
            meeting.updated_at = self.clock.now()
            await self._hold(session, meeting, seat, new=False)
            record(
                session,
                case,
                at=self.clock.now(),
                account_id=scheduler.id,
                actor=actor,
                kind="meeting_moved",
                note=slot.local_start.strftime("%d/%m/%Y %H:%M"),
            )
            if self.invitations is not None:
                await self.invitations.send(session, meeting, case, author=scheduler)
            await drop_jobs(session, f"meeting:{meeting.id}")
            self._plan_reminders(session, meeting)
            await session.commit()
        self.files.wake_mail()
        return meeting

    async def _check_conciliator(
        self, session: AsyncSession, conciliator_id: uuid.UUID, slot: Slot
    ) -> None:
        # FOR SHARE: an edit of the conciliator's days or absences (scheduling.resources, FOR
        # UPDATE) waits for this booking, or this booking for it; bookings share it.
        account = await session.get(Account, conciliator_id, with_for_update={"read": True})
        if account is None or account.role != Role.CONCILIATOR or account.status != Status.ACTIVE:
            raise UserError(ErrorCode.INVALID_CHOICE, "not an active conciliator")
        profile = await session.get(ConciliatorProfile, conciliator_id) or ConciliatorProfile(
            account_id=conciliator_id, working_weekdays="0,1,2,3,4", max_per_day=4
        )
        absent = await session.scalar(
            select(Absence.id).where(Absence.account_id == conciliator_id, Absence.day == slot.day)
        )
        if slot.day.weekday() not in profile.weekdays or absent is not None:
            raise UserError(ErrorCode.CONCILIATOR_UNAVAILABLE)
        day_start = datetime.combine(slot.day, datetime.min.time(), ROME)
        booked = list(
            await session.scalars(
                select(Meeting.starts_at).where(
                    Meeting.conciliator_id == conciliator_id,
                    Meeting.status == MeetingStatus.SCHEDULED,
                    Meeting.starts_at >= day_start,
                    Meeting.starts_at < day_start + timedelta(days=1),
                )
            )
        )
        if slot.starts_at in booked:
            raise UserError(ErrorCode.SLOT_TAKEN)
        if len(booked) >= profile.max_per_day:
            raise UserError(ErrorCode.CONCILIATOR_DAY_FULL)

    async def _free_seat(self, session: AsyncSession, company_id: uuid.UUID, slot: Slot) -> int:
        # FOR SHARE, as for the conciliator: a change of capacity and a booking take turns.
        await session.get(Company, company_id, with_for_update={"read": True})
        capacity = await session.get(CompanyCapacity, company_id)
        limit = capacity.per_slot if capacity is not None else 1
        held = set(
            await session.scalars(
                select(CompanySeat.seat).where(
                    CompanySeat.company_id == company_id, CompanySeat.starts_at == slot.starts_at
                )
            )
        )
        # After a capacity was lowered, a slot may hold a seat number above the new limit:
        # count the seats, not only the free numbers.
        if len(held) < limit:
            for seat in range(limit):
                if seat not in held:
                    return seat
        raise UserError(ErrorCode.COMPANY_FULL)

    async def do_cancel(
        self, scheduler: Account, meeting_id: uuid.UUID, reason: str | None = None
    ) -> Meeting:
        """Cancel a scheduled meeting: the case waits for a slot again, resources are freed."""
        async with self.db.session() as session:
            meeting = await session.get(Meeting, meeting_id, with_for_update=True)
            if meeting is None:
                raise UserError(ErrorCode.NOT_FOUND)
            case, actor = await case_for(session, scheduler, meeting.case_id, lock=True)
            if meeting.status != MeetingStatus.SCHEDULED:
                raise UserError(ErrorCode.TRANSITION_REFUSED, "the meeting is not scheduled")
            await self.files.step_in(session, case, actor, scheduler, Action.CANCEL_MEETING, reason)
            meeting.status = MeetingStatus.CANCELLED
            meeting.sequence += 1
            meeting.updated_at = self.clock.now()
            seat = await session.scalar(
                select(CompanySeat).where(CompanySeat.meeting_id == meeting.id)
            )
            if seat is not None:
                await session.delete(seat)
            if self.invitations is not None:
                await self.invitations.send(session, meeting, case, cancel=True, author=scheduler)
            await drop_jobs(session, f"meeting:{meeting.id}")
            await session.commit()
        self.files.wake_mail()
        return meeting

    async def do_hold(self, conciliator: Account, meeting_id: uuid.UUID) -> Meeting:
        """The meeting's conciliator records that it takes place (from when its room opens)."""
        async with self.db.session() as session:
            meeting = await session.get(Meeting, meeting_id, with_for_update=True)
            if meeting is None:
                raise UserError(ErrorCode.NOT_FOUND)
            await self.hold_in(session, conciliator, meeting)
            await session.commit()
        return meeting

    async def hold_in(self, session: AsyncSession, conciliator: Account, meeting: Meeting) -> None:
        """Holding the meeting inside the caller's transaction (the room opens it so)."""
        case, actor = await case_for(session, conciliator, meeting.case_id, lock=True)
        if actor != Actor.CONCILIATOR or meeting.conciliator_id != conciliator.id:
            raise UserError(ErrorCode.FORBIDDEN)
        if meeting.status != MeetingStatus.SCHEDULED:
            raise UserError(ErrorCode.TRANSITION_REFUSED, "the meeting is not scheduled")
        opens = self.rules.room_opens(meeting)
        if self.clock.now() < opens:
            raise UserError(
                ErrorCode.MEETING_NOT_STARTED,
                opens=opens.astimezone(ROME).strftime("%d/%m/%Y %H:%M"),
            )
        await self.files.step_in(session, case, actor, conciliator, Action.HOLD_MEETING)
        meeting.status = MeetingStatus.HELD
        meeting.updated_at = self.clock.now()
        await drop_jobs(session, f"meeting:{meeting.id}")  # no reminders any more

    async def do_extend(self, account: Account, case_id: uuid.UUID, reason: str) -> Window:
        """Extend the procedure once (by ``Rules.extension_days``), with the reason, telling
        both parties; the scheduler or a conciliator decides it."""
        text_reason = " ".join(reason.split())[:500]
        if not text_reason:
            raise FieldErrors({"reason": [ErrorCode.REQUIRED]})
        async with self.db.session() as session:
            case, actor = await case_for(session, account, case_id, lock=True)
            if actor not in (Actor.SCHEDULER, Actor.CONCILIATOR):
                raise UserError(ErrorCode.FORBIDDEN)
            if case.status not in EXTENDABLE:
                raise UserError(ErrorCode.TRANSITION_REFUSED, "the procedure is not running")
            calendar = await self.calendar(session)
            if (await self.window(session, case, calendar)).extended:
                raise UserError(ErrorCode.ALREADY_EXTENDED)
            now = self.clock.now()
            record(
                session,
                case,
                at=now,
                account_id=account.id,
                actor=actor,
                kind=EXTENDED,
                note=text_reason,
            )
            await session.flush()
            window = await self.window(session, case, calendar)
            if self.files.alerts is not None:
                await self.files.alerts.send(
                    session,
                    case,
                    (Audience.APPLICANT, Audience.COMPANY),
                    "procedure_extended",
                    end=window.procedure_end.strftime("%d/%m/%Y"),
                    reason=text_reason,
                )
            await session.commit()
        self.files.wake_mail()
        return window

    async def participation(
        self, account: Account, meeting_id: uuid.UUID
    ) -> tuple[Meeting, Case, Actor]:
        """The meeting, its case and ``account``'s part in it, if ``account`` takes part: the
        applicant's side (only the delegate on a delegated case), the company's representatives,
        the meeting's own conciliator. ``NOT_FOUND`` for anyone else, as for a guessed id."""
        async with self.db.session() as session:
            meeting = await session.get(Meeting, meeting_id)
            if meeting is None:
                raise UserError(ErrorCode.NOT_FOUND)
            case, actor = await case_for(session, account, meeting.case_id)
        if actor in (Actor.APPLICANT, Actor.COMPANY) or (
            actor == Actor.CONCILIATOR and meeting.conciliator_id == account.id
        ):
            return meeting, case, actor
        raise UserError(ErrorCode.NOT_FOUND)

    async def held_meeting(self, session: AsyncSession, case_id: uuid.UUID) -> Meeting | None:
        """The case's last held meeting, if any."""
        return await session.scalar(
            select(Meeting)
            .where(Meeting.case_id == case_id, Meeting.status == MeetingStatus.HELD)
            .order_by(Meeting.starts_at.desc())
            .limit(1)
        )

    async def meeting_of(self, session: AsyncSession, case_id: uuid.UUID) -> Meeting | None:
        """The case's scheduled meeting, if any."""
        return await session.scalar(
            select(Meeting).where(
                Meeting.case_id == case_id, Meeting.status == MeetingStatus.SCHEDULED
            )
        )
