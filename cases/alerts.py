"""E-mail alerts about a case, and the record of them shown as the case's communications.

The applicant's side is the customer's registration address, or only the delegate when the
case is delegated, or the contact address of a request received by post; the company's side is
every active representative of the company. Each mail is in its recipient's language, links to
the case and never carries an attachment. Alerts are queued in the caller's transaction, so an
alert exists exactly when what it announces was committed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from cases.accounts import Account, Role, Status
from cases.notifications import Notifier, Recipient
from core.db import Base, UTCDateTime


class Audience(StrEnum):
    APPLICANT = "applicant"
    COMPANY = "company"


class CaseNotice(Base):
    """One alert sent about a case: to which side, which address, what subject, when."""

    __tablename__ = "case_notices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    audience: Mapped[str] = mapped_column(String(16))
    email: Mapped[str] = mapped_column(String(254))
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(300))


@dataclass
class Contact:
    """A customer without an account, known by the address a postal request gave."""

    email: str
    language: str
    first_name: str
    username: str = ""


async def applicant_side(session: AsyncSession, case: Any) -> list[Recipient]:
    """Only the delegate when delegated; else the customer's account; else the contact."""
    if case.applicant_id is not None:
        account = await session.get(Account, case.applicant_id)
        return [account] if account is not None and account.status == Status.ACTIVE else []
    if case.contact_email:
        return [
            Contact(case.contact_email, case.contact_language or "it", case.customer_name or "")
        ]
    return []


async def company_side(session: AsyncSession, case: Any) -> list[Recipient]:
    if case.company_id is None:
        return []
    rows = await session.scalars(
        select(Account)
        .where(
            Account.role == Role.COMPANY_REP,
            Account.company_id == case.company_id,
            Account.status == Status.ACTIVE,
        )
        .order_by(Account.username)
    )
    return list(rows)


class Alerts:
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    async def send(
        self,
        session: AsyncSession,
        case: Any,
        audiences: tuple[Audience, ...],
        template: str,
        *,
        skip: uuid.UUID | None = None,
        **context: Any,
    ) -> int:
        """Queue ``template`` to each side in ``audiences`` (not to ``skip``); returns how many."""
        sent = 0
        for audience in audiences:
            people = (
                await applicant_side(session, case)
                if audience == Audience.APPLICANT
                else await company_side(session, case)
            )
            for person in people:
                if skip is not None and getattr(person, "id", None) == skip:
                    continue
                mail = self.notifier.queue_for(
                    session,
                    person,
                    template,
                    code=case.code or "",
                    link=f"{self.notifier.public_url}/cases/{case.id}",
                    has_account=isinstance(person, Account),
                    **context,
                )
                session.add(
                    CaseNotice(
                        case_id=case.id,
                        at=mail.created_at,
                        audience=audience,
                        email=person.email,
                        kind=template,
                        subject=mail.subject[:300],
                    )
                )
                sent += 1
        return sent

    async def notices(self, session: AsyncSession, case_id: uuid.UUID) -> list[CaseNotice]:
        rows = await session.scalars(
            select(CaseNotice).where(CaseNotice.case_id == case_id).order_by(CaseNotice.id)
        )
        return list(rows)
