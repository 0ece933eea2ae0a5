"""Booking meetings: every reason for a refusal, and no double booking even in a race."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from cases.accounts import Account
from cases.lifecycle import CaseStatus
from core.clock import ROME
from core.errors import ErrorCode, UserError
from scheduling.bookings import (
    Absence,
    CompanyCapacity,
    CompanySeat,
    ConciliatorProfile,
    Meeting,
)
from tests.support import registered, sign_in, staff_sign_in
from tests.worlds import FIRST, World, account, admitted_rows, rome


async def refused(world: World, case_id: uuid.UUID, when: datetime, who: Account) -> ErrorCode:
    with pytest.raises(UserError) as error:
        await world.env.services.bookings.do_book(world.scheduler, case_id, when, who.id)
    return error.value.code


async def test_each_refusal_has_its_reason(world: World) -> None:
    svc = world.env.services
    case_id = await world.admitted_case()
    assert (
        await refused(world, case_id, rome(FIRST, 9, 15), world.k1) == ErrorCode.SLOT_NOT_AVAILABLE
    )
    assert await refused(world, case_id, rome(date(2026, 12, 8), 9), world.k1) == (
        ErrorCode.SLOT_NOT_AVAILABLE  # Immacolata
    )
    await svc.bookings.do_add_closure(date(2026, 12, 7), "Sant'Ambrogio")
    assert await refused(world, case_id, rome(date(2026, 12, 7), 9), world.k1) == (
        ErrorCode.SLOT_NOT_AVAILABLE
    )
    assert (
        await refused(world, case_id, rome(date(2026, 11, 27), 9), world.k1) == ErrorCode.TOO_SOON
    )
    assert await refused(world, case_id, rome(date(2027, 1, 4), 9), world.k1) == (
        ErrorCode.PAST_DEADLINE
    )
    async with svc.db.session() as session:
        session.add(Absence(account_id=world.k2.id, day=FIRST))
        await session.commit()
    assert (
        await refused(world, case_id, rome(FIRST, 9), world.k2) == ErrorCode.CONCILIATOR_UNAVAILABLE
    )
    customer = await account(world.env, "cliente")
    with pytest.raises(UserError) as error:
        await svc.bookings.do_book(customer, case_id, rome(FIRST, 9), world.k1.id)
    assert error.value.code == ErrorCode.FORBIDDEN
    meeting = await svc.bookings.do_book(world.scheduler, case_id, rome(FIRST, 9), world.k1.id)
    assert meeting.starts_at == rome(FIRST, 9) and meeting.ends_at == rome(FIRST, 10, 30)
    case, _ = await svc.files.get_for(world.scheduler, case_id)
    assert case.status == CaseStatus.SCHEDULED
    # The same case cannot be booked twice; the conciliator not twice in a slot.
    code = await refused(world, case_id, rome(FIRST, 12), world.k1)
    assert code == ErrorCode.TRANSITION_REFUSED
    other = await world.admitted_case("IT001E87654321")
    code = await refused(world, other, rome(FIRST, 9), world.k1)
    assert code == ErrorCode.SLOT_TAKEN
    # The company has one seat per slot unless told otherwise.
    assert await refused(world, other, rome(FIRST, 9), world.k2) != ErrorCode.SLOT_TAKEN
    async with svc.db.session() as session:
        session.add(CompanyCapacity(company_id=world.company_id, per_slot=2))
        await session.commit()
    await svc.bookings.do_book(
        world.scheduler, other, rome(FIRST + timedelta(days=1), 9), world.k1.id
    )
    # Cancelling frees the slot and the seat, and the case waits again.
    await svc.bookings.do_cancel(world.scheduler, meeting.id, "Conciliatore indisponibile")
    case, _ = await svc.files.get_for(world.scheduler, case_id)
    assert case.status == CaseStatus.ADMITTED
    again = await svc.bookings.do_book(world.scheduler, case_id, rome(FIRST, 9), world.k1.id)
    assert again.id != meeting.id
    events = [e.kind for e in await svc.files.timeline(case_id)]
    assert events[-6:] == [
        "schedule",
        "invitation_sent",
        "cancel_meeting",
        "invitation_cancelled",
        "schedule",
        "invitation_sent",
    ]


async def test_the_daily_limit(world: World) -> None:
    svc = world.env.services

    async with svc.db.session() as session:
        session.add(
            ConciliatorProfile(account_id=world.k1.id, working_weekdays="0,1", max_per_day=1)
        )
        session.add(CompanyCapacity(company_id=world.company_id, per_slot=4))
        await session.commit()
    first = await world.admitted_case()
    second = await world.admitted_case("IT001E87654321")
    await svc.bookings.do_book(world.scheduler, first, rome(FIRST, 9), world.k1.id)
    code = await refused(world, second, rome(FIRST, 12), world.k1)
    assert code == ErrorCode.CONCILIATOR_DAY_FULL
    wednesday = FIRST + timedelta(days=2)
    assert await refused(world, second, rome(wednesday, 12), world.k1) == (
        ErrorCode.CONCILIATOR_UNAVAILABLE
    )


async def test_fifty_schedulers_racing_for_one_conciliator_slot_book_it_once(world: World) -> None:
    svc = world.env.services
    cases = await admitted_rows(world, 50)
    when = rome(FIRST, 14)
    results = await asyncio.gather(
        *(svc.bookings.do_book(world.scheduler, c, when, world.k1.id) for c in cases),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, Meeting)]
    lost = [r for r in results if isinstance(r, UserError)]
    assert len(won) == 1 and len(lost) == 49, [
        r for r in results if not isinstance(r, (Meeting, UserError))
    ]
    assert {e.code for e in lost} == {ErrorCode.SLOT_TAKEN}
    async with svc.db.session() as session:
        count = await session.scalar(
            select(func.count()).select_from(Meeting).where(Meeting.conciliator_id == world.k1.id)
        )
        seats = await session.scalar(select(func.count()).select_from(CompanySeat))
    assert count == 1 and seats == 1


async def test_one_case_racing_for_many_slots_gets_one(world: World) -> None:
    svc = world.env.services
    [case_id] = await admitted_rows(world, 1)
    starts = [rome(FIRST + timedelta(days=d), h) for d in range(5) for h in (9, 12)][:10]
    results = await asyncio.gather(
        *(
            svc.bookings.do_book(world.scheduler, case_id, when, k.id)
            for when in starts
            for k in (world.k1, world.k2)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Meeting) for r in results) == 1
    assert all(
        isinstance(r, Meeting) or r.code in (ErrorCode.TRANSITION_REFUSED, ErrorCode.SLOT_TAKEN)
        for r in results
        if isinstance(r, UserError)
    )
    assert all(isinstance(r, (Meeting, UserError)) for r in results)


async def test_a_proposal_is_previewed_then_committed_whole(world: World) -> None:
    svc = world.env.services
    cases = await admitted_rows(world, 6)
    proposal = await svc.planner.do_propose(world.scheduler)
    body = proposal.body
    assert body["score"]["placed"] == 6 and not body["unplaced"]
    async with svc.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Meeting)) == 0  # a preview
    meetings = await svc.planner.do_commit(world.scheduler, proposal.id)
    assert sorted(m.case_id for m in meetings) == sorted(cases)
    for case_id in cases:
        case, _ = await svc.files.get_for(world.scheduler, case_id)
        assert case.status == CaseStatus.SCHEDULED
    # Earliest first: all on the first possible day, spread over both conciliators.
    assert {m.starts_at.astimezone(ROME).date() for m in meetings} == {FIRST}
    assert {m.conciliator_id for m in meetings} == {world.k1.id, world.k2.id}
    with pytest.raises(UserError) as error:
        await svc.planner.do_commit(world.scheduler, proposal.id)  # not twice
    assert error.value.code == ErrorCode.PROPOSAL_STALE


async def test_a_stale_proposal_is_refused_and_books_nothing(world: World) -> None:
    svc = world.env.services
    cases = await admitted_rows(world, 3)
    proposal = await svc.planner.do_propose(world.scheduler)
    # Meanwhile another scheduler books one of the cases by hand.
    await svc.bookings.do_book(world.scheduler, cases[0], rome(FIRST, 17), world.k2.id)
    with pytest.raises(UserError) as error:
        await svc.planner.do_commit(world.scheduler, proposal.id)
    assert error.value.code == ErrorCode.PROPOSAL_STALE
    async with svc.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Meeting)) == 1
    fresh = await svc.planner.do_propose(world.scheduler)
    assert fresh.body["score"]["placed"] == 2
    await svc.planner.do_discard(world.scheduler, fresh.id)
    with pytest.raises(UserError):
        await svc.planner.do_commit(world.scheduler, fresh.id)
    customer = await account(world.env, "cliente")
    with pytest.raises(UserError) as error:
        await svc.planner.do_propose(customer)
    assert error.value.code == ErrorCode.FORBIDDEN


async def test_a_proposal_reports_its_stages_and_can_be_stopped(world: World) -> None:
    svc = world.env.services
    await admitted_rows(world, 3)
    seen: list[tuple[int, int]] = []
    proposal = await svc.planner.do_propose(
        world.scheduler, lambda stage, of, _label: seen.append((stage, of))
    )
    assert seen == [(1, 3), (2, 3), (3, 3)] and proposal.status == "proposed"
    # Stopped while computing: the computation finds it discarded and saves nothing.
    begun = await svc.planner.do_begin(world.scheduler)
    assert begun.status == "computing"
    await svc.planner.do_discard(world.scheduler, begun.id)
    with pytest.raises(UserError):
        await svc.planner.run(begun.id)
    assert (await svc.planner.get(world.scheduler, begun.id)).status == "discarded"
    # A computation lost with its node is reported as failed, not left spinning.
    lost = await svc.planner.do_begin(world.scheduler)
    world.env.advance(minutes=11)
    assert (await svc.planner.get(world.scheduler, lost.id)).status == "failed"
    with pytest.raises(UserError) as error:
        await svc.planner.do_commit(world.scheduler, lost.id)
    assert error.value.code == ErrorCode.PROPOSAL_STALE


async def test_the_scheduler_pages_propose_preview_and_book(world: World) -> None:
    env = world.env
    cases = await admitted_rows(world, 2)
    browser = await env.new_browser()
    await staff_sign_in(env, browser, "pianificatore")
    page = await browser.get("/schedule?week=2026-11-30")
    assert page.status == 200 and 'id="queue"' in page.text
    assert page.text.count("CONC-2026-9000") == 2
    proposed = await browser.post("/schedule/proposals", {}, csrf=page.csrf)
    assert proposed.status == 303
    # Computed in the background: the page shows the stages and refreshes until it is ready.
    for _ in range(200):
        preview = await browser.get(proposed.headers["Location"])
        assert preview.status == 200
        if 'id="stages"' not in preview.text:
            break
        assert 'http-equiv="refresh"' in preview.text and 'role="progressbar"' in preview.text
        await asyncio.sleep(0.02)
    assert '<strong id="placed">2</strong>' in preview.text
    async with env.services.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Meeting)) == 0
    booked = await browser.post(proposed.headers["Location"] + "/commit", {}, csrf=preview.csrf)
    assert booked.status == 303
    week = await browser.get("/schedule?week=2026-11-30")
    assert 'id="queue"' not in week.text and week.text.count("CONC-2026-9000") == 2
    for case_id in cases:
        case, _ = await env.services.files.get_for(world.scheduler, case_id)
        assert case.status == CaseStatus.SCHEDULED
    # Only schedulers.
    await registered(env, "curioso")
    other = await env.new_browser()
    await sign_in(other, "curioso", "Lampada-Verde-42")
    assert (await other.get("/schedule")).status == 403
    assert (await browser.get("/schedule?week=nonsense")).status == 400


async def test_the_scheduler_assigns_moves_and_cancels_from_the_case_file(world: World) -> None:
    env = world.env
    case_id = await world.admitted_case()
    browser = await env.new_browser()
    await staff_sign_in(env, browser, "pianificatore")
    page = await browser.get(f"/cases/{case_id}")
    assert page.status == 200 and 'id="assign"' in page.text
    form = {"day": "2026-12-08", "time": "09:00", "conciliator": str(world.k1.id)}
    refused_page = await browser.post(f"/cases/{case_id}/meeting", form, csrf=page.csrf)
    assert refused_page.status == 400 and "Immacolata Concezione" in refused_page.text
    form["day"] = "2026-12-01"
    assert (await browser.post(f"/cases/{case_id}/meeting", form, csrf=page.csrf)).status == 303
    page = await browser.get(f"/cases/{case_id}")
    assert 'id="meeting"' in page.text and "01/12/2026 09:00" in page.text
    async with env.services.db.session() as session:
        meeting = await env.services.bookings.meeting_of(session, case_id)
    assert meeting is not None
    moved = {**form, "time": "15:30", "meeting": str(meeting.id)}
    assert (await browser.post(f"/cases/{case_id}/meeting", moved, csrf=page.csrf)).status == 303
    page = await browser.get(f"/cases/{case_id}")
    assert "01/12/2026 15:30" in page.text
    cancel = {"meeting": str(meeting.id), "note": "Indisponibilità"}
    done = await browser.post(f"/cases/{case_id}/meeting/cancel", cancel, csrf=page.csrf)
    assert done.status == 303
    page = await browser.get(f"/cases/{case_id}")
    assert 'id="meeting"' not in page.text and "Ammessa" in page.text
    # A party cannot do it.
    customer = await env.new_browser()
    await sign_in(customer, "cliente", "Lampada-Verde-42")
    own = await customer.get(f"/cases/{case_id}")
    assert 'id="assign"' not in own.text
    assert (await customer.post(f"/cases/{case_id}/meeting", form, csrf=own.csrf)).status == 403
