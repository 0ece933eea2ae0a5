"""The case file (fascicolo): the case record, its human-readable code, its timeline.

Every step of a case goes through ``do_step``: it checks who the person is for this case,
asks the life cycle whether the step is allowed, changes the status and appends to the
timeline in one transaction. The timeline is append-only: nothing here updates or deletes it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    ForeignKey,
    Integer,
    String,
    Text,
    and_,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from cases.accounts import Account, Role
from cases.alerts import Alerts, Audience
from cases.companies import Company
from cases.lifecycle import OUTCOME_LABELS, STATUS_LABELS, Action, Actor, CaseStatus, advance
from cases.supply import Sector
from core.clock import ROME, Clock
from core.db import Base, Database, UTCDateTime
from core.errors import ErrorCode, FieldErrors, UserError
from core.ids import new_id
from core.text import strip_controls

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
    # Chosen in the request form: unknown while the draft is young.
    company_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("companies.id"), nullable=True, index=True
    )
    sector: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The request form's answers (cases.request), kept as typed in a draft, clean once submitted.
    answers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Copied out of the answers at submission, for lists, refiling checks and scheduling.
    customer_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    customer_key: Mapped[str | None] = mapped_column(String(20), nullable=True, index=True)
    supply_point: Mapped[str | None] = mapped_column(String(80), nullable=True)
    meeting_mode: Mapped[str | None] = mapped_column(String(8), nullable=True)
    availability: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # Where alerts go when the customer has no account (a request received by post or e-mail).
    contact_email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    contact_language: Mapped[str | None] = mapped_column(String(5), nullable=True)
    integration_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    integration_reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    company_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

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
    # Set for a line only one party may read besides staff (a document filed for the
    # conciliator only): that party's actor. Everyone concerned reads the others.
    restricted_to: Mapped[str | None] = mapped_column(String(16), nullable=True)


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
    if (
        case.status == CaseStatus.DRAFT
        and account is not None
        and account.id not in (case.created_by_id, case.applicant_id)
    ):
        raise UserError(ErrorCode.NOT_FOUND)  # a draft is its author's alone
    return case, actor


@dataclass(frozen=True)
class Step:
    case: Case
    event: CaseEvent


def record(
    session: AsyncSession,
    case: Case,
    *,
    at: datetime,
    account_id: uuid.UUID | None,
    actor: Actor,
    kind: str,
    note: str | None = None,
) -> CaseEvent:
    """Append a line that changes no status to the case's timeline (caller's transaction)."""
    event = CaseEvent(
        case_id=case.id,
        at=at,
        account_id=account_id,
        actor=actor,
        kind=kind,
        from_status=case.status,
        to_status=case.status,
        note=note,
    )
    session.add(event)
    return event


def rome_time(moment: datetime) -> str:
    """A moment as people in Italy read it (mails carry no time zone of their own)."""
    return moment.astimezone(ROME).strftime("%d/%m/%Y %H:%M")


# Who hears of a status change: the applicant always; the company once the case concerns it.
COMPANY_HEARS = frozenset({CaseStatus.ADMITTED, CaseStatus.SCHEDULED, CaseStatus.MEETING_HELD})


class CaseFiles:
    """Opening cases, moving them along their life cycle, and the deadlines that run."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        alerts: Alerts | None = None,
        *,
        integration_days: int = 7,
        reminder_hours: int = 48,
    ) -> None:
        self.db = db
        self.clock = clock
        self.alerts = alerts
        self.integration_time = timedelta(days=integration_days)
        self.reminder_time = timedelta(hours=reminder_hours)

    async def do_open_draft(
        self,
        author: Account,
        *,
        company_id: uuid.UUID | None = None,
        sector: Sector | None = None,
        customer_id: uuid.UUID | None,
        delegate_id: uuid.UUID | None,
        answers: dict[str, Any] | None = None,
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
            answers=answers or {},
        )
        async with self.db.session() as session:
            session.add(case)
            await session.flush()
            actor = Actor.APPLICANT if author.id == case.applicant_id else Actor.DESK
            opened = record(session, case, at=now, account_id=author.id, actor=actor, kind="opened")
            opened.from_status = None  # the case did not exist before
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
        async with self.db.session() as session:
            # Lock the row: two people acting at once take turns, each seeing the other's step.
            case, actor = await case_for(session, account, case_id, lock=True)
            step = await self.step_in(session, case, actor, account, action, note)
            await session.commit()
        self.wake_mail()
        return step

    async def step_in(
        self,
        session: AsyncSession,
        case: Case,
        actor: Actor,
        account: Account | None,
        action: Action,
        note: str | None = None,
    ) -> Step:
        """The step inside the caller's transaction, with its timeline line and alerts."""
        now = self.clock.now()
        if note is not None:
            note = strip_controls(note).strip()[:2000] or None
        before = CaseStatus(case.status)
        after, outcome = advance(before, action, actor)
        if action == Action.REQUEST_INTEGRATION and not (note or "").strip():
            raise FieldErrors({"message": [ErrorCode.MESSAGE_REQUIRED]})
        case.status = after
        if outcome is not None:
            case.outcome = outcome
        if action == Action.SUBMIT and case.code is None:
            case.code = await next_code(session, now.year)
            case.submitted_at = now
        if action == Action.REQUEST_INTEGRATION:
            case.integration_due_at = now + self.integration_time
            case.integration_reminded_at = None
        elif before == CaseStatus.INTEGRATION_REQUESTED:
            case.integration_due_at = None
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
        await self._alert_step(session, case, before, action, note)
        return Step(case, event)

    async def _alert_step(
        self,
        session: AsyncSession,
        case: Case,
        before: CaseStatus,
        action: Action,
        note: str | None,
    ) -> None:
        if self.alerts is None or action in (
            Action.SCHEDULE,
            Action.CANCEL_MEETING,
            Action.HOLD_MEETING,
        ):
            # A meeting set or cancelled is announced by its invitation (scheduling); the
            # parties are in the meeting when it is held.
            return
        if action == Action.SUBMIT:
            company = await session.get(Company, case.company_id) if case.company_id else None
            await self.alerts.send(
                session,
                case,
                (Audience.APPLICANT,),
                "case_submitted",
                company=company.name if company else "",
            )
            return
        if action == Action.REQUEST_INTEGRATION:
            assert case.integration_due_at is not None
            await self.alerts.send(
                session,
                case,
                (Audience.APPLICANT,),
                "case_integration",
                note=note or "",
                due=rome_time(case.integration_due_at),
            )
            return
        audiences: tuple[Audience, ...] = (Audience.APPLICANT,)
        if case.status in COMPANY_HEARS or before in COMPANY_HEARS:
            audiences = (Audience.APPLICANT, Audience.COMPANY)
        await self.alerts.send(
            session,
            case,
            audiences,
            "case_status",
            status=STATUS_LABELS[case.status],
            outcome=OUTCOME_LABELS.get(case.outcome or "", ""),
            note=note or "",
        )

    def wake_mail(self) -> None:
        """Tell the mail worker alerts were committed (it polls anyway)."""
        if self.alerts is not None:
            self.alerts.notifier.wake()

    async def do_confirm_participation(self, account: Account, case_id: uuid.UUID) -> Case:
        """The company's representative confirms the company takes part in the meeting."""
        now = self.clock.now()
        async with self.db.session() as session:
            case, actor = await case_for(session, account, case_id, lock=True)
            if actor != Actor.COMPANY:
                raise UserError(ErrorCode.FORBIDDEN)
            if case.status not in (CaseStatus.ADMITTED, CaseStatus.SCHEDULED):
                raise UserError(ErrorCode.TRANSITION_REFUSED, "not awaiting the company")
            if case.company_confirmed_at is None:
                case.company_confirmed_at = now
                record(
                    session,
                    case,
                    at=now,
                    account_id=account.id,
                    actor=actor,
                    kind="participation_confirmed",
                )
            await session.commit()
        return case

    async def do_run_deadlines(self) -> tuple[int, int]:
        """Remind applicants whose integration time nears its end, and close the expired ones
        as not activated. Safe on several nodes at once: each case is taken under its lock and
        re-read, so a reminder is sent once and a case expires once."""
        now = self.clock.now()
        reminded = expired = 0
        async with self.db.session() as session:
            due = list(
                await session.scalars(
                    select(Case.id).where(
                        Case.status == CaseStatus.INTEGRATION_REQUESTED,
                        Case.integration_due_at.is_not(None),
                        Case.integration_due_at <= now + self.reminder_time,
                    )
                )
            )
        for case_id in due:
            async with self.db.session() as session:
                case, _actor = await case_for(session, None, case_id, lock=True)
                if (
                    case.status != CaseStatus.INTEGRATION_REQUESTED
                    or case.integration_due_at is None
                ):
                    continue
                if case.integration_due_at <= now:
                    await self.step_in(session, case, Actor.SYSTEM, None, Action.EXPIRE_INTEGRATION)
                    expired += 1
                elif case.integration_reminded_at is None:
                    case.integration_reminded_at = now
                    record(
                        session, case, at=now, account_id=None, actor=Actor.SYSTEM, kind="reminded"
                    )
                    if self.alerts is not None:
                        await self.alerts.send(
                            session,
                            case,
                            (Audience.APPLICANT,),
                            "case_integration_reminder",
                            due=rome_time(case.integration_due_at),
                        )
                    reminded += 1
                await session.commit()
        if reminded or expired:
            self.wake_mail()
        return reminded, expired

    async def timeline(self, case_id: uuid.UUID, actor: Actor | None = None) -> list[CaseEvent]:
        """The case's events, oldest first, as ``actor`` may read them (``None``: all)."""
        query = select(CaseEvent).where(CaseEvent.case_id == case_id)
        if actor in (Actor.APPLICANT, Actor.COMPANY):
            query = query.where(
                or_(CaseEvent.restricted_to.is_(None), CaseEvent.restricted_to == actor)
            )
        async with self.db.session() as session:
            return list(await session.scalars(query.order_by(CaseEvent.id)))


@dataclass(frozen=True)
class CaseFilter:
    """What a list of cases can be narrowed by (every field optional)."""

    status: CaseStatus | None = None
    sector: Sector | None = None
    company_id: uuid.UUID | None = None
    text: str = ""  # part of the code or of the customer's name
    submitted_from: datetime | None = None
    submitted_before: datetime | None = None


def visible_to(account: Account) -> ColumnElement[bool]:
    """The cases ``account`` may see, as a query condition (the same rule as ``case_for``)."""
    mine = Case.created_by_id == account.id
    if account.role == Role.CUSTOMER:
        return or_(and_(Case.customer_id == account.id, Case.delegate_id.is_(None)), mine)
    if account.role == Role.DELEGATE:
        return Case.delegate_id == account.id
    if account.role == Role.COMPANY_REP:
        if account.company_id is None:
            return false()
        return and_(Case.company_id == account.company_id, Case.status != CaseStatus.DRAFT)
    if account.role in (Role.HELPDESK, Role.ADMIN, Role.SCHEDULER, Role.CONCILIATOR):
        return or_(Case.status != CaseStatus.DRAFT, mine)
    return false()


async def list_cases(
    session: AsyncSession, account: Account, where: CaseFilter, *, limit: int, offset: int = 0
) -> tuple[list[Case], int]:
    """A page of the cases ``account`` may see, newest first, and how many match in all."""
    conditions = [visible_to(account)]
    if where.status is not None:
        conditions.append(Case.status == where.status)
    if where.sector is not None:
        conditions.append(Case.sector == where.sector)
    if where.company_id is not None:
        conditions.append(Case.company_id == where.company_id)
    if where.text:
        pattern = "%" + where.text.replace("\\", "").replace("%", "").replace("_", "") + "%"
        conditions.append(or_(Case.code.ilike(pattern), Case.customer_name.ilike(pattern)))
    if where.submitted_from is not None:
        conditions.append(Case.submitted_at >= where.submitted_from)
    if where.submitted_before is not None:
        conditions.append(Case.submitted_at < where.submitted_before)
    condition = and_(*conditions)
    total = await session.scalar(select(func.count()).select_from(Case).where(condition)) or 0
    rows = await session.scalars(
        select(Case)
        .where(condition)
        .order_by(Case.created_at.desc(), Case.id)
        .limit(limit)
        .offset(offset)
    )
    return list(rows), total
