"""Case records: codes, the timeline, who may act on a case, refused steps leave no trace."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from cases.accounts import Account
from cases.casefile import Case, CaseFiles
from cases.companies import do_create_company
from cases.lifecycle import Action, CaseStatus, Outcome
from cases.supply import Sector
from core.errors import ErrorCode, UserError
from tests.support import VALID_VAT, Env, registered, staff


async def _account(env: Env, username: str) -> Account:
    account = await env.services.accounts.by_username(username)
    assert account is not None
    return account


async def _setup(env: Env) -> tuple[CaseFiles, uuid.UUID]:
    company = await do_create_company(
        env.services.db,
        name="Energia Azzurra",
        vat=VALID_VAT,
        sectors=["electricity"],
        now=env.clock.now(),
    )
    return CaseFiles(env.services.db, env.clock), company.id


async def own_draft(
    files: CaseFiles, customer: Account, company_id: uuid.UUID, sector: Sector
) -> Case:
    """A draft a customer opens for themself."""
    return await files.do_open_draft(
        customer, company_id=company_id, sector=sector, customer_id=customer.id, delegate_id=None
    )


async def test_codes_are_given_at_submission_in_order(env: Env) -> None:
    files, company_id = await _setup(env)
    await registered(env, "cliente1")
    customer = await _account(env, "cliente1")
    first = await own_draft(files, customer, company_id, Sector.ELECTRICITY)
    second = await own_draft(files, customer, company_id, Sector.ELECTRICITY)
    assert first.code is None
    step = await files.do_step(customer, second.id, Action.SUBMIT)
    assert step.case.code == "CONC-2026-000001" and step.case.status == CaseStatus.SUBMITTED
    step = await files.do_step(customer, first.id, Action.SUBMIT)
    assert step.case.code == "CONC-2026-000002"
    timeline = await files.timeline(first.id)
    assert [(e.kind, e.from_status, e.to_status) for e in timeline] == [
        ("opened", None, "draft"),
        ("submit", "draft", "submitted"),
    ]
    assert timeline[1].account_id == customer.id and timeline[1].actor == "applicant"


async def test_concurrent_submissions_get_distinct_codes(env: Env) -> None:
    files, company_id = await _setup(env)
    await registered(env, "cliente2")
    customer = await _account(env, "cliente2")
    drafts = [await own_draft(files, customer, company_id, Sector.GAS) for _ in range(8)]
    steps = await asyncio.gather(*(files.do_step(customer, d.id, Action.SUBMIT) for d in drafts))
    codes = sorted(s.case.code or "" for s in steps)
    assert codes == [f"CONC-2026-{n:06d}" for n in range(1, 9)]


async def test_only_the_delegate_acts_on_a_delegated_case(env: Env) -> None:
    files, company_id = await _setup(env)
    await registered(env, "cliente3")
    await registered(env, "delegato3", kind="delegate", delegate_kind="relative")
    customer, delegate = await _account(env, "cliente3"), await _account(env, "delegato3")
    case = await files.do_open_draft(
        delegate,
        company_id=company_id,
        sector=Sector.WATER,
        customer_id=customer.id,
        delegate_id=delegate.id,
    )
    with pytest.raises(UserError) as refused:
        await files.do_step(customer, case.id, Action.SUBMIT)
    assert refused.value.code == ErrorCode.NOT_FOUND
    assert (await files.do_step(delegate, case.id, Action.SUBMIT)).case.status == "submitted"


async def test_unrelated_people_cannot_even_see_a_case(env: Env) -> None:
    files, company_id = await _setup(env)
    other_company = await do_create_company(
        env.services.db, name="Altra Spa", vat="02345670158", sectors=["gas"], now=env.clock.now()
    )
    await registered(env, "titolare")
    await registered(env, "estraneo")
    await registered(env, "rep.altra", kind="company_rep", company_id=str(other_company.id))
    owner = await _account(env, "titolare")
    case = await own_draft(files, owner, company_id, Sector.ELECTRICITY)
    for name in ("estraneo", "rep.altra"):
        with pytest.raises(UserError) as refused:
            await files.get_for(await _account(env, name), case.id)
        assert refused.value.code == ErrorCode.NOT_FOUND
    with pytest.raises(UserError):
        await files.get_for(owner, uuid.uuid4())


async def test_refused_step_changes_nothing(env: Env) -> None:
    files, company_id = await _setup(env)
    await registered(env, "frettoloso")
    customer = await _account(env, "frettoloso")
    await staff(env, "sportello", role="helpdesk")
    desk = await _account(env, "sportello")
    case = await own_draft(files, customer, company_id, Sector.GAS)
    with pytest.raises(UserError) as refused:
        await files.do_step(desk, case.id, Action.ADMIT)  # a draft is its author's alone
    assert refused.value.code == ErrorCode.NOT_FOUND
    with pytest.raises(UserError) as refused:
        await files.do_step(customer, case.id, Action.WITHDRAW)  # nothing to withdraw yet
    assert refused.value.code == ErrorCode.TRANSITION_REFUSED
    await files.do_step(customer, case.id, Action.SUBMIT)
    with pytest.raises(UserError) as refused:
        await files.do_step(customer, case.id, Action.ADMIT)  # not the applicant's to take
    assert refused.value.code == ErrorCode.FORBIDDEN
    seen, _actor = await files.get_for(desk, case.id)
    assert seen.status == "submitted" and len(await files.timeline(case.id)) == 2


async def test_integration_expires_by_itself(env: Env) -> None:
    files, company_id = await _setup(env)
    await registered(env, "silenzioso")
    customer = await _account(env, "silenzioso")
    await staff(env, "sportello2", role="admin")
    desk = await _account(env, "sportello2")
    case = await own_draft(files, customer, company_id, Sector.GAS)
    await files.do_step(customer, case.id, Action.SUBMIT)
    await files.do_step(
        desk, case.id, Action.REQUEST_INTEGRATION, note="Manca la copia del reclamo."
    )
    step = await files.do_step(None, case.id, Action.EXPIRE_INTEGRATION)
    assert step.case.status == "closed" and step.case.outcome == Outcome.NOT_ACTIVATED
    assert step.case.closed_at == env.clock.now()
    events = await files.timeline(case.id)
    assert events[2].note == "Manca la copia del reclamo." and events[3].actor == "system"
