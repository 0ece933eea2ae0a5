"""A small world for scheduling tests: a company, a customer, the help desk, a scheduler and
two conciliators (the ``world`` fixture, registered by conftest)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest

from cases.accounts import Account
from cases.casefile import Case, CaseEvent
from cases.companies import do_create_company
from cases.lifecycle import Action, CaseStatus
from core.clock import ROME
from scheduling.bookings import CompanyCapacity
from tests.support import VALID_VAT, Env, domain_request, registered, staff


def rome(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ROME).astimezone(UTC)


class World:
    def __init__(
        self, env: Env, company_id: uuid.UUID, scheduler: Account, k1: Account, k2: Account
    ):
        self.env, self.company_id, self.scheduler, self.k1, self.k2 = (
            env,
            company_id,
            scheduler,
            k1,
            k2,
        )

    async def admitted_case(self, pod: str = "IT001E12345678") -> uuid.UUID:
        svc = self.env.services
        case_id = uuid.UUID(
            await domain_request(self.env, "cliente", str(self.company_id), supply={"pod": pod})
        )
        desk = await svc.accounts.by_username("sportello")
        assert desk is not None
        await svc.files.do_step(desk, case_id, Action.ADMIT)
        return case_id


async def account(env: Env, name: str) -> Account:
    found = await env.services.accounts.by_username(name)
    assert found is not None
    return found


@pytest.fixture
async def world(env: Env) -> World:
    company = await do_create_company(
        env.services.db,
        name="Energia A",
        vat=VALID_VAT,
        sectors=["electricity"],
        now=env.clock.now(),
    )
    await registered(env, "cliente")
    for name, role in (
        ("sportello", "helpdesk"),
        ("pianificatore", "scheduler"),
        ("amministratore", "admin"),
        ("conciliatore1", "conciliator"),
        ("conciliatore2", "conciliator"),
    ):
        await staff(env, name, role=role)
    return World(
        env,
        company.id,
        await account(env, "pianificatore"),
        await account(env, "conciliatore1"),
        await account(env, "conciliatore2"),
    )


# The test clock starts on Monday 23 November 2026: admitted then, the first possible day is
# Monday 30 November (five working days); the deadline is 40 days after the request.
FIRST = date(2026, 11, 30)


async def admitted_rows(world: World, count: int) -> list[uuid.UUID]:
    """Admitted cases written straight to the database (the race is about booking them)."""
    now = world.env.clock.now()
    ids = []
    async with world.env.services.db.session() as session:
        customer = await account(world.env, "cliente")
        for i in range(count):
            case = Case(
                id=uuid.uuid4(),
                code=f"CONC-2026-{900000 + i}",
                status=CaseStatus.ADMITTED,
                created_by_id=customer.id,
                customer_id=customer.id,
                company_id=world.company_id,
                sector="electricity",
                created_at=now,
                submitted_at=now,
                answers={},
                meeting_mode="chat",
            )
            session.add(case)
            await session.flush()
            for kind in ("submit", "admit"):
                session.add(
                    CaseEvent(
                        case_id=case.id,
                        at=now,
                        actor="desk",
                        kind=kind,
                        from_status=None,
                        to_status=CaseStatus.ADMITTED,
                    )
                )
            ids.append(case.id)
        session.add(CompanyCapacity(company_id=world.company_id, per_slot=50))
        await session.commit()
    return ids
