"""Batch scheduling: a proposal to look at first, then committed whole or discarded.

``do_propose`` reads everything the allocation depends on — the admitted cases waiting for a
slot, the conciliators with their working days, absences and meetings, the companies' seats,
the closures — runs the exact allocator (off the event loop) over the horizon, and stores the
result with a fingerprint of what it read. ``do_commit`` re-reads the same things: if anything
changed meanwhile (a booking, an absence, a new admitted case…) the proposal is stale and is
refused with a clear message; otherwise every meeting is booked in one transaction, through the
same checks and database constraints as a manual booking, so it lands whole or not at all.

On the web the proposal is computed in the background (``do_begin`` then ``start``): its row
says which stage it has reached, so the scheduler's page — on whichever node — shows progress.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from cases.accounts import Account, Role, Status
from cases.casefile import Case, case_for
from cases.lifecycle import Action, Actor, CaseStatus
from core.clock import ROME, Clock
from core.db import Base, Database, UTCDateTime
from core.errors import ErrorCode, UserError
from core.i18n import N_
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
    COMPUTING = "computing"
    PROPOSED = "proposed"
    COMMITTED = "committed"
    DISCARDED = "discarded"
    FAILED = "failed"


# The stages of a proposal's computation, shown as its progress.
STAGES = (
    N_("Reading the cases, conciliators and companies"),
    N_("Solving the allocation"),
    N_("Preparing the preview"),
)
# A proposal still "computing" after this long was lost with its node: it is marked failed.
ABANDONED_AFTER = timedelta(minutes=10)
Progress = Callable[[int, int, str], None]
log = logging.getLogger(__name__)


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
        self._running: set[asyncio.Task[Proposal]] = set()

    def _allowed(self, account: Account) -> None:
        if account.role not in PLANNERS:
            raise UserError(ErrorCode.FORBIDDEN)

    async def _inputs(
        self, session: AsyncSession, calendar: Calendar, only: uuid.UUID | None = None
    ) -> tuple[list[PendingCase], list[Conciliator], dict[str, int], dict[Any, int], str]:
        """What the allocation depends on (for every case waiting, or ``only`` that one), and a
        fingerprint of it."""
        digest = hashlib.sha256()

        def note(*values: object) -> None:
            digest.update(repr(values).encode())

        waiting = select(Case).where(Case.status == CaseStatus.ADMITTED).order_by(Case.id)
        if only is not None:
            waiting = waiting.where(Case.id == only)
        cases = list(await session.scalars(waiting))
        windows = await self.bookings.windows(session, cases, calendar)
        pending = []
        for case in cases:
            window = windows[case.id]
            earliest, deadline = window.earliest, window.deadline
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

    async def do_begin(self, account: Account) -> Proposal:
        """Open a proposal that is still being computed (``run`` fills it in)."""
        self._allowed(account)
        first, last = self.horizon()
        proposal = Proposal(
            id=new_id(),
            created_by_id=account.id,
            created_at=self.clock.now(),
            status=ProposalStatus.COMPUTING,
            fingerprint="",
            body={"first": first.isoformat(), "last": last.isoformat(), "stage": 0},
        )
        async with self.db.session() as session:
            session.add(proposal)
            await session.commit()
        return proposal

    async def _stage(self, proposal_id: uuid.UUID, stage: int, **counts: int) -> None:
        async with self.db.session() as session:
            proposal = await session.get(Proposal, proposal_id, with_for_update=True)
            if proposal is not None and proposal.status == ProposalStatus.COMPUTING:
                proposal.body = {**proposal.body, "stage": stage, **counts}
                await session.commit()

    async def run(self, proposal_id: uuid.UUID, progress: Progress | None = None) -> Proposal:
        """Compute the proposal opened by ``do_begin``, its progress written after each stage
        so that any node can show it; a failure marks it failed rather than leaving it hanging."""
        try:
            return await self._run(proposal_id, progress)
        except UserError:
            raise  # discarded or never begun: nothing to mark
        except Exception:
            log.exception("the automatic allocation %s failed", proposal_id)
            async with self.db.session() as session:
                proposal = await session.get(Proposal, proposal_id, with_for_update=True)
                if proposal is not None and proposal.status == ProposalStatus.COMPUTING:
                    proposal.status = ProposalStatus.FAILED
                    await session.commit()
            raise

    async def _run(self, proposal_id: uuid.UUID, progress: Progress | None) -> Proposal:
        async def stage(number: int, **counts: int) -> None:
            await self._stage(proposal_id, number, **counts)
            if progress is not None:
                progress(number, len(STAGES), STAGES[number - 1])

        await stage(1)
        async with self.db.session() as session:
            proposal = await session.get(Proposal, proposal_id)
            if proposal is None or proposal.status != ProposalStatus.COMPUTING:
                raise UserError(ErrorCode.NOT_FOUND)
            first = date.fromisoformat(proposal.body["first"])
            last = date.fromisoformat(proposal.body["last"])
            calendar = await self.bookings.calendar(session)
            pending, conciliators, capacity, used, fingerprint = await self._inputs(
                session, calendar
            )
        slots = calendar.slots(first, last)
        await stage(2, cases=len(pending), slots=len(slots), conciliators=len(conciliators))
        result: Allocation = await asyncio.to_thread(
            allocate, pending, slots, conciliators, capacity, used
        )
        await stage(3)
        async with self.db.session() as session:
            proposal = await session.get(Proposal, proposal_id, with_for_update=True)
            if proposal is None or proposal.status != ProposalStatus.COMPUTING:
                raise UserError(ErrorCode.NOT_FOUND)  # discarded while it was computed
            proposal.status = ProposalStatus.PROPOSED
            proposal.fingerprint = fingerprint
            proposal.body = {
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
            }
            await session.commit()
        return proposal

    def start(self, proposal: Proposal) -> None:
        """Compute ``proposal`` in the background; the page follows its progress."""
        task = asyncio.create_task(self.run(proposal.id), name=f"proposal-{proposal.id}")
        self._running.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Proposal]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            task.exception()  # already logged by run(); read so asyncio does not warn

    async def close(self) -> None:
        """Stop proposals still being computed (they are marked failed on the next read)."""
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    async def do_propose(self, account: Account, progress: Progress | None = None) -> Proposal:
        """Compute a proposal over the horizon here and now, and keep it for preview."""
        return await self.run((await self.do_begin(account)).id, progress)

    async def do_adjourn(
        self,
        account: Account,
        case_id: uuid.UUID,
        *,
        starts_at: datetime | None = None,
        conciliator_id: uuid.UUID | None = None,
        note: str | None = None,
    ) -> Meeting | None:
        """Adjourn a held meeting (rinvio) and book its continuation in the same transaction:
        in the slot given, else in the best free one (the parties' preferences, then the
        earliest), with the same conciliator when possible. ``None``: no slot is free before
        the procedure's end, and the case waits in the scheduler's queue."""
        async with self.db.session() as session:
            meeting = await self.adjourn_in(
                session,
                account,
                case_id,
                starts_at=starts_at,
                conciliator_id=conciliator_id,
                note=note,
            )
            await session.commit()
        self.bookings.files.wake_mail()
        return meeting

    async def adjourn_in(
        self,
        session: AsyncSession,
        account: Account,
        case_id: uuid.UUID,
        *,
        starts_at: datetime | None = None,
        conciliator_id: uuid.UUID | None = None,
        note: str | None = None,
    ) -> Meeting | None:
        """The adjournment inside the caller's transaction (the room's outcome uses it)."""
        case, actor = await case_for(session, account, case_id, lock=True)
        held = await self.bookings.held_meeting(session, case.id)
        if held is None or case.status != CaseStatus.MEETING_HELD:
            raise UserError(ErrorCode.TRANSITION_REFUSED, "no meeting was held")
        if actor == Actor.CONCILIATOR and held.conciliator_id != account.id:
            raise UserError(ErrorCode.FORBIDDEN)
        await self.bookings.files.step_in(session, case, actor, account, Action.ADJOURN, note)
        await session.flush()
        calendar = await self.bookings.calendar(session)
        # The conciliator books as the service does; a scheduler as themself.
        booker = account if actor == Actor.SCHEDULER else None
        if starts_at is not None:
            return await self.bookings.book_in(
                session,
                calendar,
                booker,
                case.id,
                starts_at,
                conciliator_id or held.conciliator_id,
            )
        return await self._first_free(session, calendar, booker, case, held)

    async def _first_free(
        self,
        session: AsyncSession,
        calendar: Calendar,
        booker: Account | None,
        case: Case,
        held: Meeting,
    ) -> Meeting | None:
        pending, conciliators, capacity, used, _ = await self._inputs(session, calendar, case.id)
        if not pending:
            return None
        first, _last = self.horizon()
        slots = calendar.slots(first, max(first, pending[0].deadline))
        same = [c for c in conciliators if c.id == str(held.conciliator_id)]
        for pool in (same, conciliators):
            if not pool:
                continue
            found = await asyncio.to_thread(allocate, pending, slots, pool, capacity, used)
            for placement in found.placements:
                return await self.bookings.book_in(
                    session,
                    calendar,
                    booker,
                    case.id,
                    placement.slot.starts_at,
                    uuid.UUID(placement.conciliator_id),
                )
        return None

    async def get(self, account: Account, proposal_id: uuid.UUID) -> Proposal:
        self._allowed(account)
        async with self.db.session() as session:
            proposal = await session.get(Proposal, proposal_id)
            if proposal is None:
                raise UserError(ErrorCode.NOT_FOUND)
            if (
                proposal.status == ProposalStatus.COMPUTING
                and self.clock.now() - proposal.created_at > ABANDONED_AFTER
            ):
                proposal.status = ProposalStatus.FAILED
                await session.commit()
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
            if proposal.status in (ProposalStatus.PROPOSED, ProposalStatus.COMPUTING):
                proposal.status = ProposalStatus.DISCARDED
            await session.commit()
