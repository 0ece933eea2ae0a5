"""Filing a conciliation request: the draft, section by section, the review, the submission.

A customer, a delegate or staff (for a private customer who wrote by post or e-mail) start a
draft; its answers are kept as typed. The review checks every section again and lists the
mandatory attachments the answers call for. Submission is refused while a section is wrong,
an attachment is missing, or the same dispute was already conciliated, withdrawn or archived
for absence (or is still open); otherwise the case gets its code and the applicant an
acknowledgement, in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cases.accounts import Account, Role
from cases.casefile import Case, CaseFiles, case_for, record
from cases.companies import Company
from cases.documents import Category, Document
from cases.lifecycle import FINAL_FOR_REFILING, Action, Actor, CaseStatus
from cases.request import (
    SECTIONS,
    Answers,
    Checked,
    CompanyChoice,
    Context,
    Filer,
    Section,
    check_request,
    check_section,
    customer_key,
    customer_name,
    required_documents,
    supply_point,
    take,
)
from core.clock import ROME, Clock
from core.db import Database
from core.errors import ErrorCode, UserError

FILERS = frozenset({Role.CUSTOMER, Role.DELEGATE, Role.HELPDESK, Role.ADMIN})


@dataclass(frozen=True)
class Review:
    """Where a draft stands: each section's check and each mandatory attachment's presence."""

    case: Case
    sections: dict[Section, Checked]
    required: list[tuple[Category, bool]]

    @property
    def incomplete(self) -> list[Section]:
        return [s for s, checked in self.sections.items() if not checked.ok]

    @property
    def missing(self) -> list[Category]:
        return [c for c, present in self.required if not present]

    @property
    def ready(self) -> bool:
        return not self.incomplete and not self.missing


def filer_of(account: Account) -> Filer:
    return Filer(
        role=Role(account.role),
        first_name=account.first_name,
        last_name=account.last_name,
        tax_code=account.tax_code,
        email=account.email,
        language=account.language,
    )


class Filing:
    def __init__(
        self, db: Database, clock: Clock, files: CaseFiles, *, complaint_wait_days: int = 40
    ) -> None:
        self.db = db
        self.clock = clock
        self.files = files
        self.complaint_wait_days = complaint_wait_days

    async def context(self, session: AsyncSession, account: Account) -> Context:
        companies = await session.scalars(select(Company).where(Company.active.is_(True)))
        return Context(
            filer=filer_of(account),
            companies={
                str(c.id): CompanyChoice(str(c.id), tuple(c.sector_list)) for c in companies
            },
            today=self.today(),
            complaint_wait_days=self.complaint_wait_days,
        )

    def today(self) -> date:
        return self.clock.now().astimezone(ROME).date()

    async def do_start(self, account: Account, sent: Mapping[str, object]) -> tuple[Case, Checked]:
        """A new draft holding the first section (who applies) as sent."""
        if account.role not in FILERS:
            raise UserError(ErrorCode.FORBIDDEN)
        answers: Answers = take(Section.APPLICANT, sent)
        case = await self.files.do_open_draft(
            account,
            customer_id=account.id if account.role == Role.CUSTOMER else None,
            delegate_id=account.id if account.role == Role.DELEGATE else None,
            answers=dict(answers),
        )
        async with self.db.session() as session:
            checked = check_section(
                Section.APPLICANT, answers, await self.context(session, account)
            )
        return case, checked

    async def _draft(
        self, session: AsyncSession, account: Account, case_id: uuid.UUID
    ) -> tuple[Case, Actor]:
        case, actor = await case_for(session, account, case_id, lock=True)
        if case.status != CaseStatus.DRAFT:
            raise UserError(ErrorCode.TRANSITION_REFUSED, "the request was already submitted")
        if actor not in (Actor.APPLICANT, Actor.DESK) or account.id not in (
            case.created_by_id,
            case.applicant_id,
        ):
            raise UserError(ErrorCode.NOT_FOUND)
        return case, actor

    async def do_save(
        self, account: Account, case_id: uuid.UUID, section: Section, sent: Mapping[str, object]
    ) -> tuple[Case, Checked]:
        """Keep the section's answers as sent (even when wrong) and say what is wrong."""
        async with self.db.session() as session:
            case, _actor = await self._draft(session, account, case_id)
            answers = dict(case.answers or {})
            answers.update(take(section, sent))
            case.answers = answers
            checked = check_section(section, answers, await self.context(session, account))
            await session.commit()
        return case, checked

    async def review(self, account: Account, case_id: uuid.UUID) -> Review:
        async with self.db.session() as session:
            case, _actor = await case_for(session, account, case_id)
            return await self._review(session, account, case)

    async def _review(self, session: AsyncSession, account: Account, case: Case) -> Review:
        answers = case.answers or {}
        sections = check_request(answers, await self.context(session, account))
        present = set(
            await session.scalars(select(Document.category).where(Document.case_id == case.id))
        )
        required = [(c, c.value in present) for c in required_documents(answers)]
        return Review(case, sections, required)

    async def do_submit(self, account: Account, case_id: uuid.UUID) -> Case:
        async with self.db.session() as session:
            case, actor = await self._draft(session, account, case_id)
            review = await self._review(session, account, case)
            if review.incomplete:
                raise UserError(ErrorCode.REQUEST_INCOMPLETE, sections=len(review.incomplete))
            if review.missing:
                raise UserError(ErrorCode.ATTACHMENTS_MISSING)
            clean: dict[str, object] = dict(case.answers or {})
            for section in SECTIONS:
                clean.update(review.sections[section].values)
            await self._refuse_refiling(session, case, clean)
            case.answers = clean
            case.company_id = uuid.UUID(str(clean["company_id"]))
            case.sector = str(clean["sector"])
            case.customer_name = customer_name(clean)[:200]
            case.customer_key = customer_key(clean)[:20]
            case.supply_point = supply_point(clean)[:80]
            case.meeting_mode = str(clean["meeting_mode"])
            slots = clean.get("availability")
            case.availability = list(slots) if isinstance(slots, list) else []
            if account.role in (Role.HELPDESK, Role.ADMIN):
                case.contact_email = str(clean.get("customer_email") or "") or None
                case.contact_language = str(clean.get("customer_language") or "it")
                record(
                    session,
                    case,
                    at=self.clock.now(),
                    account_id=account.id,
                    actor=actor,
                    kind="entered_for_customer",
                )
            await self.files.step_in(session, case, actor, account, Action.SUBMIT)
            await session.commit()
        self.files.wake_mail()
        return case

    async def _refuse_refiling(
        self, session: AsyncSession, case: Case, answers: Mapping[str, object]
    ) -> None:
        """The same customer, company and supply point filed before and not to be refiled."""
        earlier = await session.scalars(
            select(Case)
            .where(
                Case.id != case.id,
                Case.status != CaseStatus.DRAFT,
                Case.customer_key == customer_key(answers)[:20],
                Case.company_id == uuid.UUID(str(answers["company_id"])),
                Case.supply_point == supply_point(answers)[:80],
            )
            .order_by(Case.submitted_at)
        )
        for other in earlier:
            if other.status == CaseStatus.CLOSED and other.outcome in FINAL_FOR_REFILING:
                raise UserError(ErrorCode.DISPUTE_ALREADY_CLOSED, case_code=other.code or "")
            if other.status != CaseStatus.CLOSED:
                raise UserError(ErrorCode.DISPUTE_ALREADY_OPEN, case_code=other.code or "")
