"""Batch scheduling: a proposal to look at first, then committed whole or discarded.

``do_propose`` reads everything the allocation depends on — the admitted cases waiting for a
slot, the conciliators with their working days, absences and meetings, the companies' seats,
the closures — runs the exact allocator (off the event loop) over the horizon, and stores the
result with a fingerprint of what it read. ``do_commit`` re-reads the same things: if anything
changed meanwhile (a booking, an absence, a new admitted case…) the proposal is stale and is
refused with a clear message; otherwise every meeting is booked in one transaction, through the
same checks and database constraints as a manual booking, so it lands whole or not at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import defaultdict
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from cases.accounts import Account, Role, Status
from cases.casefile import Case
from cases.lifecycle import CaseStatus
from core.clock import ROME, Clock
from core.db import Base, Database, UTCDateTime
from core.errors import ErrorCode, UserError
from core.ids import new_id
from scheduling.allocation import Allocation, Conciliator, PendingCase, allocate
from scheduling.bookings import (
    Absence,
    Bookings,
    CompanyCapacity,
    ConciliatorProfile,
    Meeting,
    MeetingStatus,
)
from scheduling.calendar import Calendar

PLANNERS = frozenset({Role.SCHEDULER})


class ProposalStatus(StrEnum):
    PROPOSED = "proposed"
    COMMITTED = "committed"
    DISCARDED = "discarded"


class Proposal(Base):
    __tablename__ = "schedule_proposals"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    created_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(12))
    fingerprint: Mapped[str] = mapped_column(String(64))
    # {"first": day, "last": day, "placements": [[case, start, conciliator]...],
    #  "unplaced": {case: reason}, "score": {...}}
    body: Mapped[dict[str, Any]] = mapped_column(JSON)


class Planner:
    def __init__(self, db: Database, clock: Clock, bookings: Bookings, *, weeks: int = 4) -> None:
        self.db = db
        self.clock = clock
        self.bookings = bookings
        self.weeks = weeks

    def _allowed(self, account: Account) -> None:
        if account.role not in PLANNERS:
            raise UserError(ErrorCode.FORBIDDEN)

    async def _inputs(
        self, session: AsyncSession, calendar: Calendar
    ) -> tuple[list[PendingCase], list[Conciliator], dict[str, int], dict[Any, int], str]:
        """What the allocation depends on, and a fingerprint of it."""
        digest = hashlib.sha256()

        def note(*values: object) -> None:
            digest.update(repr(values).encode())

        cases = list(
            await session.scalars(
                select(Case).where(Case.status == CaseStatus.ADMITTED).order_by(Case.id)
            )
        )
        windows = await self.bookings.windows(session, cases, calendar)
        pending = []
        for case in cases:
            earliest, deadline = windows[case.id]
            pending.append(
                PendingCase(
                    str(case.id),
                    str(case.company_id),
                    earliest,
                    deadline,
                    frozenset(case.availability or []),
                )
            )
            note("case", case.id, case.status, case.company_id, earliest, deadline)
        meetings = list(
            await session.scalars(
                select(Meeting)
                .where(Meeting.status == MeetingStatus.SCHEDULED)
                .order_by(Meeting.id)
            )
        )
        for m in meetings:
            note("meeting", m.id, m.conciliator_id, m.company_id, m.starts_at)
        profiles = {p.account_id: p for p in await session.scalars(select(ConciliatorProfile))}
        absences: dict[uuid.UUID, set[date]] = defaultdict(set)
        for a in await session.scalars(select(Absence).order_by(Absence.id)):
            absences[a.account_id].add(a.day)
            note("absence", a.account_id, a.day)
        conciliators = []
        for account in await session.scalars(
            select(Account)
            .where(Account.role == Role.CONCILIATOR, Account.status == Status.ACTIVE)
            .order_by(Account.id)
        ):
            profile = profiles.get(account.id)
            mine = [m for m in meetings if m.conciliator_id == account.id]
            per_day: dict[date, int] = defaultdict(int)
            for m in mine:
                per_day[m.starts_at.astimezone(ROME).date()] += 1
            conciliators.append(
                Conciliator(
                    str(account.id),
                    max_per_day=profile.max_per_day if profile else 4,
                    working_weekdays=profile.weekdays if profile else frozenset(range(5)),
                    absences=frozenset(absences[account.id]),
                    busy=frozenset(m.starts_at for m in mine),
                    booked_per_day=dict(per_day),
                    booked_total=len(mine),
                )
            )
            note(
                "conciliator",
                account.id,
                profile.working_weekdays if profile else "",
                profile.max_per_day if profile else 4,
            )
        capacity = {
            str(c.company_id): c.per_slot for c in await session.scalars(select(CompanyCapacity))
        }
        note("capacity", sorted(capacity.items()))
        note("closures", sorted(calendar.closures.items()))
        used: dict[Any, int] = defaultdict(int)
        for m in meetings:
            used[(str(m.company_id), m.starts_at)] += 1
        return pending, conciliators, capacity, dict(used), digest.hexdigest()

    def horizon(self) -> tuple[date, date]:
        today = self.clock.now().astimezone(ROME).date()
        first = today + timedelta(days=1)
        return first, first + timedelta(weeks=self.weeks) - timedelta(days=1)

    async def do_propose(self, account: Account) -> Proposal:
        """Compute a proposal over the horizon and keep it for preview."""
        self._allowed(account)
        first, last = self.horizon()
        async with self.db.session() as session:
            calendar = await self.bookings.calendar(session)
            pending, conciliators, capacity, used, fingerprint = await self._inputs(
                session, calendar
            )
        slots = calendar.slots(first, last)
        result: Allocation = await asyncio.to_thread(
            allocate, pending, slots, conciliators, capacity, used
        )
        proposal = Proposal(
            id=new_id(),
            created_by_id=account.id,
            created_at=self.clock.now(),
            status=ProposalStatus.PROPOSED,
            fingerprint=fingerprint,
            body={
                "first": first.isoformat(),
                "last": last.isoformat(),
                "placements": [
                    [p.case_id, p.slot.starts_at.isoformat(), p.conciliator_id]
                    for p in result.placements
                ],
                "unplaced": {k: v.value for k, v in result.unplaced.items()},
                "score": {
                    "placed": result.score.placed,
                    "preferences_met": result.score.preferences_met,
                    "earliness": result.score.earliness,
                    "load": result.score.load,
                },
            },
        )
        async with self.db.session() as session:
            session.add(proposal)
            await session.commit()
        return proposal

    async def get(self, account: Account, proposal_id: uuid.UUID) -> Proposal:
        self._allowed(account)
        async with self.db.session() as session:
            proposal = await session.get(Proposal, proposal_id)
        if proposal is None:
            raise UserError(ErrorCode.NOT_FOUND)
        return proposal

    async def do_commit(self, account: Account, proposal_id: uuid.UUID) -> list[Meeting]:
        """Book every meeting of the proposal in one transaction, unless it went stale."""
        self._allowed(account)
        async with self.db.session() as session:
            proposal = await session.get(Proposal, proposal_id, with_for_update=True)
            if proposal is None:
                raise UserError(ErrorCode.NOT_FOUND)
            if proposal.status != ProposalStatus.PROPOSED:
                raise UserError(ErrorCode.PROPOSAL_STALE)
            calendar = await self.bookings.calendar(session)
            *_, fingerprint = await self._inputs(session, calendar)
            if fingerprint != proposal.fingerprint:
                raise UserError(ErrorCode.PROPOSAL_STALE)
            meetings = []
            for case_id, starts_at, conciliator_id in proposal.body["placements"]:
                try:
                    meetings.append(
                        await self.bookings.book_in(
                            session,
                            calendar,
                            account,
                            uuid.UUID(case_id),
                            datetime.fromisoformat(starts_at),
                            uuid.UUID(conciliator_id),
                        )
                    )
                except UserError:
                    # Something changed between the check and here (another node): none of it.
                    await session.rollback()
                    raise UserError(ErrorCode.PROPOSAL_STALE) from None
            proposal.status = ProposalStatus.COMMITTED
            await session.commit()
        self.bookings.files.wake_mail()
        return meetings

    async def do_discard(self, account: Account, proposal_id: uuid.UUID) -> None:
        self._allowed(account)
        async with self.db.session() as session:
            proposal = await session.get(Proposal, proposal_id, with_for_update=True)
            if proposal is None:
                raise UserError(ErrorCode.NOT_FOUND)
            if proposal.status == ProposalStatus.PROPOSED:
                proposal.status = ProposalStatus.DISCARDED
            await session.commit()
