"""Utilities (the companies customers have disputes with), managed by an admin."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, String, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from cases.identity import check_vat, clean
from core.db import Base, Database, UTCDateTime
from core.errors import ErrorCode, FieldErrors, UserError
from core.ids import new_id

SECTORS = ("electricity", "gas", "water")


class Company(Base):
    __tablename__ = "companies"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    name_key: Mapped[str] = mapped_column(String(200), unique=True)
    vat_number: Mapped[str] = mapped_column(String(11))
    sectors: Mapped[str] = mapped_column(String(64))  # comma-separated subset of SECTORS
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    @property
    def sector_list(self) -> list[str]:
        return [s for s in self.sectors.split(",") if s]


def check_company(name: object, vat: object, sectors: list[str]) -> tuple[str, str, list[str]]:
    """Validate an admin's company form; raise ``FieldErrors`` naming each wrong field."""
    errors: dict[str, list[ErrorCode]] = {}
    name_s = clean(name, 200)
    if not name_s:
        errors["name"] = [ErrorCode.REQUIRED]
    elif len(name_s) > 200:
        errors["name"] = [ErrorCode.TOO_LONG]
    vat_r = check_vat(clean(vat, 20))
    if isinstance(vat_r, ErrorCode):
        errors["vat_number"] = [vat_r]
    chosen = [s for s in sectors if s in SECTORS]
    if not chosen or len(chosen) != len(sectors):
        errors["sectors"] = [ErrorCode.REQUIRED if not sectors else ErrorCode.INVALID_CHOICE]
    if errors:
        raise FieldErrors(errors)
    assert isinstance(vat_r, str)
    return name_s, vat_r, sorted(set(chosen), key=SECTORS.index)


async def do_create_company(
    db: Database, *, name: object, vat: object, sectors: list[str], now: datetime
) -> Company:
    """Create a company; refuse a duplicate name with a field error."""
    name_s, vat_s, chosen = check_company(name, vat, sectors)
    async with db.session() as session:
        exists = await session.scalar(
            select(func.count()).select_from(Company).where(Company.name_key == name_s.casefold())
        )
        if exists:
            raise FieldErrors({"name": [ErrorCode.COMPANY_NAME_TAKEN]})
        company = Company(
            id=new_id(),
            name=name_s,
            name_key=name_s.casefold(),
            vat_number=vat_s,
            sectors=",".join(chosen),
            active=True,
            created_at=now,
        )
        session.add(company)
        try:
            await session.commit()
        except IntegrityError:  # another admin added the same name meanwhile
            await session.rollback()
            raise FieldErrors({"name": [ErrorCode.COMPANY_NAME_TAKEN]}) from None
        return company


async def do_set_company_active(db: Database, company_id: uuid.UUID, active: bool) -> Company:
    async with db.session() as session:
        company = await session.get(Company, company_id)
        if company is None:
            raise UserError(ErrorCode.NOT_FOUND)
        company.active = active
        await session.commit()
        return company


async def list_companies(db: Database, *, only_active: bool = False) -> list[Company]:
    async with db.session() as session:
        query = select(Company).order_by(Company.name_key)
        if only_active:
            query = query.where(Company.active.is_(True))
        return list(await session.scalars(query))


async def get_company(session: AsyncSession, company_id: uuid.UUID) -> Company | None:
    return await session.get(Company, company_id)
