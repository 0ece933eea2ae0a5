"""Drawing up the minutes of an ended meeting, sealing them and filing them in the case file.

Run as a job (``rooms.room.MINUTES_JOB``) scheduled in the same transaction that ends the
meeting: it survives a restart, runs once across nodes, and is retried if it fails. Everything
comes from the room's records: who was connected when, the joint and separate sessions with
who took part in each, the parties' requests for a proposal, the agreement and its acceptances.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cases.accounts import Account
from cases.casefile import Case
from cases.companies import Company
from cases.documents import Category, Documents
from cases.lifecycle import Actor
from cases.request import MeetingMode
from cases.supply import Sector
from core.clock import ROME, Clock
from core.i18n import I18n
from core.jobs import Job
from rooms.minutes import (
    Acceptance,
    Attendance,
    MinutesData,
    Outcome,
    Party,
    SessionSpan,
    render_minutes,
)
from rooms.minutes import SessionKind as SpanKind
from rooms.models import Room, RoomMember, RoomOutcome, RoomPresence, RoomSession, Side
from rooms.seal import Sealer
from scheduling.bookings import Meeting

OUTCOMES = {
    RoomOutcome.AGREEMENT: Outcome.AGREEMENT,
    RoomOutcome.NO_AGREEMENT: Outcome.NO_AGREEMENT,
    RoomOutcome.ADJOURNMENT: Outcome.ADJOURNED,
    RoomOutcome.APPLICANT_ABSENT: Outcome.APPLICANT_ABSENT,
    RoomOutcome.COMPANY_ABSENT: Outcome.COMPANY_ABSENT,
}


def overlaps(
    start: datetime, end: datetime | None, other_start: datetime, other_end: datetime | None
) -> bool:
    return (other_end is None or start < other_end) and (end is None or other_start < end)


class MinutesClerk:
    def __init__(
        self,
        clock: Clock,
        documents: Documents,
        sealer: Callable[[], Sealer],
        i18n: I18n,
    ) -> None:
        self.clock = clock
        self.documents = documents
        self.sealer = sealer
        self.i18n = i18n

    async def file(self, session: AsyncSession, job: Job) -> None:
        """The job's handler: in the job's transaction, so the minutes are filed once."""
        meeting_id = uuid.UUID(job.payload["meeting"])
        room = await session.get(Room, meeting_id, with_for_update=True)
        meeting = await session.get(Meeting, meeting_id)
        if room is None or meeting is None or room.outcome is None:
            return
        if room.minutes_document_id is not None:
            return  # already filed
        case = await session.get(Case, meeting.case_id)
        assert case is not None
        data = await self.data(session, room, meeting, case)
        pdf = await asyncio.to_thread(render_minutes, data, self.i18n)
        sealed = await self.sealer().seal(pdf)
        conciliator = await session.get(Account, meeting.conciliator_id)
        assert conciliator is not None
        local = meeting.starts_at.astimezone(ROME).strftime("%Y-%m-%d")
        document = await self.documents.file_generated(
            session,
            case,
            conciliator,
            Actor.CONCILIATOR,
            name=f"verbale-{case.code or case.id}-{local}.pdf",
            content=sealed,
            category=Category.MINUTES,
            description="Verbale dell'incontro di conciliazione (firmato dal servizio)",
        )
        room.minutes_document_id = document.id

    async def data(
        self, session: AsyncSession, room: Room, meeting: Meeting, case: Case
    ) -> MinutesData:
        rows = await session.execute(
            select(RoomMember, Account)
            .join(Account, Account.id == RoomMember.account_id)
            .where(RoomMember.meeting_id == meeting.id)
        )
        members = {a.id: (m, a) for m, a in rows.all()}

        def party(member: RoomMember) -> Party:
            if member.side == Side.CONCILIATOR:
                return Party.CONCILIATOR
            if member.side == Side.COMPANY:
                return Party.COMPANY
            return Party.DELEGATE if case.delegate_id == member.account_id else Party.CUSTOMER

        def name(account: Account) -> str:
            return f"{account.first_name} {account.last_name}"

        stretches = list(
            await session.scalars(
                select(RoomPresence)
                .where(RoomPresence.meeting_id == meeting.id)
                .order_by(RoomPresence.joined_at, RoomPresence.id)
            )
        )
        attendance = tuple(
            Attendance(
                name(members[s.account_id][1]),
                party(members[s.account_id][0]),
                s.joined_at,
                s.left_at,
            )
            for s in stretches
            if s.account_id in members
        )
        spans = []
        for held in await session.scalars(
            select(RoomSession)
            .where(RoomSession.meeting_id == meeting.id)
            .order_by(RoomSession.started_at, RoomSession.id)
        ):
            present = []
            for account_id, (member, account) in members.items():
                if held.kind == "separate" and member.side not in (Side.CONCILIATOR, held.side):
                    continue
                if any(
                    s.account_id == account_id
                    and overlaps(s.joined_at, s.left_at, held.started_at, held.ended_at)
                    for s in stretches
                ):
                    present.append(name(account))
            spans.append(
                SessionSpan(
                    SpanKind(held.kind), held.started_at, held.ended_at, tuple(sorted(present))
                )
            )
        asked = [m.proposal_asked_at for m, _a in members.values() if m.side != Side.CONCILIATOR]
        sides_asked = {
            m.side
            for m, _a in members.values()
            if m.side != Side.CONCILIATOR and m.proposal_asked_at
        }
        outcome = RoomOutcome(room.outcome or RoomOutcome.NO_AGREEMENT)
        acceptances = tuple(
            Acceptance(name(a), party(m), m.accepted_at, m.accepted_email or a.email)
            for m, a in members.values()
            if outcome == RoomOutcome.AGREEMENT
            and m.accepted_version == room.agreement_version
            and m.accepted_at is not None
        )
        company = await session.get(Company, case.company_id) if case.company_id else None
        conciliator = await session.get(Account, meeting.conciliator_id)
        customer = await session.get(Account, case.customer_id) if case.customer_id else None
        delegate = await session.get(Account, case.delegate_id) if case.delegate_id else None
        applicant = await session.get(Account, case.applicant_id) if case.applicant_id else None
        return MinutesData(
            case_code=case.code or "",
            language=(applicant.language if applicant else None) or case.contact_language or "it",
            sector=Sector(case.sector or Sector.ELECTRICITY),
            customer=case.customer_name or (name(customer) if customer else ""),
            company=company.name if company else "",
            conciliator=name(conciliator) if conciliator else "",
            slot_start=meeting.starts_at,
            slot_end=meeting.ends_at,
            mode=MeetingMode(meeting.mode),
            outcome=OUTCOMES[outcome],
            generated_at=self.clock.now(),
            delegate=name(delegate) if delegate else None,
            attendance=attendance,
            sessions=tuple(spans),
            proposal_requested_at=(
                max(a for a in asked if a is not None)
                if {Side.APPLICANT.value, Side.COMPANY.value} <= sides_asked
                else None
            ),
            agreement_text=room.agreement_text if outcome == RoomOutcome.AGREEMENT else "",
            acceptances=acceptances,
        )
