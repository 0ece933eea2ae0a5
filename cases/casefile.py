"""The case file (fascicolo): the case record, its human-readable code, its timeline.

Every step of a case goes through ``do_step``: it checks who the person is for this case,
asks the life cycle whether the step is allowed, changes the status and appends to the
timeline in one transaction. The timeline is append-only: nothing here updates or deletes it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from cases.accounts import Account, Role
from cases.lifecycle import Action, Actor, CaseStatus, advance
from cases.supply import Sector
from core.clock import Clock
from core.db import Base, Database, UTCDateTime
from core.errors import ErrorCode, UserError
from core.ids import new_id

CODE_PREFIX = "CONC"


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    code: Mapped[str | None] = mapped_column(String(20), unique=True, nullable=True)
    status: Mapped[str] = mapped_column(String(24), index=True)
    outcome: Mapped[str | None] = mapped_column(String(24), nullable=True)
    created_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), index=True)
    # The customer's own account, when the customer has one (staff may file for a customer
    # who wrote by post); the delegate, when the case is delegated.
    customer_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id"), nullable=True, index=True
    )
    delegate_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id"), nullable=True, index=True
    )
    company_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("companies.id"), index=True)
    sector: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @property
    def applicant_id(self) -> uuid.UUID | None:
        """Who acts for the applicant: only the delegate when the case is delegated."""
        return self.delegate_id or self.customer_id


class CaseEvent(Base):
    """One line of the timeline: who did what, when, from which status to which."""

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    actor: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(24), nullable=True)
    to_status: Mapped[str] = mapped_column(String(24))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)


class CaseCounter(Base):
    """The last number given to a case in each year (codes are CONC-YYYY-NNNNNN)."""

    __tablename__ = "case_counters"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last: Mapped[int] = mapped_column(Integer)


async def next_code(session: AsyncSession, year: int) -> str:
    """The next code of ``year``, unique across nodes: the counter row is updated atomically."""
    for _attempt in range(3):
        number = await session.scalar(
            update(CaseCounter)
            .where(CaseCounter.year == year)
            .values(last=CaseCounter.last + 1)
            .returning(CaseCounter.last)
        )
        if number is not None:
            return f"{CODE_PREFIX}-{year}-{number:06d}"
        try:
            async with session.begin_nested():
                await session.execute(insert(CaseCounter).values(year=year, last=1))
            return f"{CODE_PREFIX}-{year}-{1:06d}"
        except IntegrityError:
            continue  # another node opened the year first: take the next number from its row
    raise RuntimeError("could not allocate a case code")


def actor_for(account: Account, case: Case) -> Actor | None:
    """What ``account`` is for ``case``, or ``None`` when it has nothing to do with it."""
    if account.id == case.applicant_id:
        return Actor.APPLICANT
    if account.role == Role.COMPANY_REP and account.company_id == case.company_id:
        return Actor.COMPANY
    if account.role in (Role.HELPDESK, Role.ADMIN):
        return Actor.DESK
    if account.role == Role.SCHEDULER:
        return Actor.SCHEDULER
    if account.role == Role.CONCILIATOR:
        return Actor.CONCILIATOR
    return None


async def case_for(
    session: AsyncSession, account: Account | None, case_id: uuid.UUID, *, lock: bool = False
) -> tuple[Case, Actor]:
    """The case and what ``account`` is for it (``None``: the system); ``NOT_FOUND`` for anyone
    unrelated, so a guessed id tells nothing. ``lock`` takes the row for a change."""
    query = select(Case).where(Case.id == case_id)
    case = await session.scalar(query.with_for_update() if lock else query)
    if case is None:
        raise UserError(ErrorCode.NOT_FOUND)
    actor = Actor.SYSTEM if account is None else actor_for(account, case)
    if actor is None:
        raise UserError(ErrorCode.NOT_FOUND)
    return case, actor


@dataclass(frozen=True)
class Step:
    case: Case
    event: CaseEvent


class CaseFiles:
    """Opening cases and moving them along their life cycle."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def do_open_draft(
        self,
        author: Account,
        *,
        company_id: uuid.UUID,
        sector: Sector,
        customer_id: uuid.UUID | None,
        delegate_id: uuid.UUID | None,
    ) -> Case:
        """A new draft, with its first timeline line."""
        now = self.clock.now()
        case = Case(
            id=new_id(),
            status=CaseStatus.DRAFT,
            created_by_id=author.id,
            customer_id=customer_id,
            delegate_id=delegate_id,
            company_id=company_id,
            sector=sector,
            created_at=now,
        )
        async with self.db.session() as session:
            session.add(case)
            await session.flush()
            session.add(
                CaseEvent(
                    case_id=case.id,
                    at=now,
                    account_id=author.id,
                    actor=Actor.APPLICANT if author.id == case.applicant_id else Actor.DESK,
                    kind="opened",
                    from_status=None,
                    to_status=CaseStatus.DRAFT,
                )
            )
            await session.commit()
        return case

    async def get_for(self, account: Account, case_id: uuid.UUID) -> tuple[Case, Actor]:
        """The case as ``account`` may see it; ``NOT_FOUND`` for anyone unrelated to it."""
        async with self.db.session() as session:
            return await case_for(session, account, case_id)

    async def do_step(
        self, account: Account | None, case_id: uuid.UUID, action: Action, note: str | None = None
    ) -> Step:
        """Take ``action`` on the case as ``account`` (``None``: the system's own deadlines)."""
        now = self.clock.now()
        async with self.db.session() as session:
            # Lock the row: two people acting at once take turns, each seeing the other's step.
            case, actor = await case_for(session, account, case_id, lock=True)
            before = CaseStatus(case.status)
            after, outcome = advance(before, action, actor)
            case.status = after
            if outcome is not None:
                case.outcome = outcome
            if action == Action.SUBMIT and case.code is None:
                case.code = await next_code(session, now.year)
                case.submitted_at = now
            if after == CaseStatus.CLOSED:
                case.closed_at = now
            event = CaseEvent(
                case_id=case.id,
                at=now,
                account_id=account.id if account is not None else None,
                actor=actor,
                kind=action,
                from_status=before,
                to_status=after,
                note=note,
            )
            session.add(event)
            await session.commit()
            return Step(case, event)

    async def timeline(self, case_id: uuid.UUID) -> list[CaseEvent]:
        """The case's events, oldest first."""
        async with self.db.session() as session:
            rows = await session.scalars(
                select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)
            )
            return list(rows)
