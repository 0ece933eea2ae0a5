"""A meeting held, adjourned (rinvio) and continued; the procedure's extension; the "join"
button and the meeting's welcome page."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from sqlalchemy import select

from cases.casefile import CaseEvent
from cases.lifecycle import CaseStatus
from core.errors import ErrorCode, FieldErrors, UserError
from core.jobs import Job, JobStatus
from scheduling.bookings import ConciliatorProfile, Meeting, MeetingStatus
from tests.support import registered, sign_in, staff_sign_in
from tests.worlds import FIRST, World, account, rome


async def held_case(world: World) -> tuple[uuid.UUID, Meeting]:
    """A case whose first meeting (Monday 30 November, 9:00, conciliatore1) is taking place."""
    svc = world.env.services
    case_id = await world.admitted_case()
    meeting = await svc.bookings.do_book(world.scheduler, case_id, rome(FIRST, 9), world.k1.id)
    world.env.clock.set(rome(FIRST, 8, 50))
    await svc.bookings.do_hold(world.k1, meeting.id)
    return case_id, meeting


async def kinds(world: World, case_id: uuid.UUID) -> list[str]:
    async with world.env.services.db.session() as session:
        return list(
            await session.scalars(
                select(CaseEvent.kind).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)
            )
        )


async def test_only_the_meetings_conciliator_holds_it_and_not_before_its_room_opens(
    world: World,
) -> None:
    svc = world.env.services
    case_id = await world.admitted_case()
    meeting = await svc.bookings.do_book(world.scheduler, case_id, rome(FIRST, 9), world.k1.id)
    async with svc.db.session() as session:
        assert await session.scalar(select(Job.id).where(Job.ref == f"meeting:{meeting.id}"))
    world.env.clock.set(rome(FIRST, 8, 44))
    with pytest.raises(UserError) as error:
        await svc.bookings.do_hold(world.k1, meeting.id)
    assert error.value.code == ErrorCode.MEETING_NOT_STARTED
    assert error.value.params == {"opens": "30/11/2026 08:45"}
    world.env.clock.set(rome(FIRST, 8, 45))
    for someone in (world.k2, world.scheduler, await account(world.env, "cliente")):
        with pytest.raises(UserError) as error:
            await svc.bookings.do_hold(someone, meeting.id)
        assert error.value.code == ErrorCode.FORBIDDEN
    held = await svc.bookings.do_hold(world.k1, meeting.id)
    assert held.status == MeetingStatus.HELD
    case, _ = await svc.files.get_for(world.k1, case_id)
    assert case.status == CaseStatus.MEETING_HELD
    async with svc.db.session() as session:
        # No reminder goes out for a meeting already under way.
        pending = select(Job.id).where(
            Job.ref == f"meeting:{meeting.id}", Job.status == JobStatus.PENDING
        )
        assert await session.scalar(pending) is None
    with pytest.raises(UserError) as error:
        await svc.bookings.do_hold(world.k1, meeting.id)
    assert error.value.code == ErrorCode.TRANSITION_REFUSED


async def test_adjourning_books_the_continuation_with_the_same_conciliator(world: World) -> None:
    svc = world.env.services
    case_id, first = await held_case(world)
    continued = await svc.planner.do_adjourn(world.k1, case_id, note="The company checks a bill")
    assert continued is not None and continued.id != first.id
    assert continued.conciliator_id == world.k1.id
    # From the next working day, the parties' preferred slots first (Monday 9:00 and Wednesday
    # 14:00 in the request): Wednesday 2 December at 14:00.
    assert continued.starts_at == rome(date(2026, 12, 2), 14)
    case, _ = await svc.files.get_for(world.k1, case_id)
    assert case.status == CaseStatus.SCHEDULED
    # The history is kept: both meetings, and every step in the timeline.
    async with svc.db.session() as session:
        meetings = list(await session.scalars(select(Meeting).where(Meeting.case_id == case_id)))
    assert {m.status for m in meetings} == {MeetingStatus.HELD, MeetingStatus.SCHEDULED}
    timeline = await kinds(world, case_id)
    assert timeline[-4:] == ["hold_meeting", "adjourn", "schedule", "invitation_sent"]
    customer = await world.env.last_mail("cliente@example.org", "02/12/2026")
    assert "14:00" in customer.body_text


async def test_another_conciliator_when_the_same_one_is_not_free(world: World) -> None:
    svc = world.env.services
    case_id, _first = await held_case(world)
    async with svc.db.session() as session:
        session.add(ConciliatorProfile(account_id=world.k1.id, working_weekdays="", max_per_day=4))
        await session.commit()
    continued = await svc.planner.do_adjourn(world.scheduler, case_id)
    assert continued is not None and continued.conciliator_id == world.k2.id
    assert continued.starts_at == rome(date(2026, 12, 2), 14)


async def test_with_no_free_slot_the_adjourned_case_waits_in_the_queue(world: World) -> None:
    svc = world.env.services
    case_id, _first = await held_case(world)
    async with svc.db.session() as session:
        for k in (world.k1, world.k2):
            session.add(ConciliatorProfile(account_id=k.id, working_weekdays="", max_per_day=4))
        await session.commit()
    assert await svc.planner.do_adjourn(world.k1, case_id) is None
    case, _ = await svc.files.get_for(world.scheduler, case_id)
    assert case.status == CaseStatus.ADMITTED
    browser = await world.env.new_browser()
    await staff_sign_in(world.env, browser, "pianificatore")
    queue = await browser.get("/schedule?week=2026-11-30")
    assert case.code is not None and case.code in queue.text


async def test_an_adjournment_in_a_chosen_slot_and_its_refusals(world: World) -> None:
    svc = world.env.services
    case_id, _first = await held_case(world)
    # After the procedure's end (90 days from filing): refused, and nothing was written.
    before = await kinds(world, case_id)
    with pytest.raises(UserError) as error:
        await svc.planner.do_adjourn(
            world.scheduler,
            case_id,
            starts_at=rome(date(2027, 3, 1), 9),
            conciliator_id=world.k2.id,
        )
    assert error.value.code == ErrorCode.PAST_DEADLINE
    assert error.value.params == {"deadline": "2027-02-21"}
    assert await kinds(world, case_id) == before
    case, _ = await svc.files.get_for(world.scheduler, case_id)
    assert case.status == CaseStatus.MEETING_HELD
    # Only the meeting's conciliator or a scheduler adjourns it.
    for someone in (world.k2, await account(world.env, "cliente")):
        with pytest.raises(UserError) as error:
            await svc.planner.do_adjourn(someone, case_id)
        assert error.value.code == ErrorCode.FORBIDDEN
    continued = await svc.planner.do_adjourn(
        world.scheduler, case_id, starts_at=rome(date(2026, 12, 3), 14), conciliator_id=world.k2.id
    )
    assert continued is not None
    assert (continued.starts_at, continued.conciliator_id) == (
        rome(date(2026, 12, 3), 14),
        world.k2.id,
    )
    # Not twice: the case is scheduled again, no meeting is being held.
    with pytest.raises(UserError) as error:
        await svc.planner.do_adjourn(world.scheduler, case_id)
    assert error.value.code == ErrorCode.TRANSITION_REFUSED


async def test_the_procedure_is_extended_once_and_both_parties_are_told(world: World) -> None:
    svc = world.env.services
    case_id, _first = await held_case(world)
    with pytest.raises(FieldErrors):
        await svc.bookings.do_extend(world.k1, case_id, "   ")
    with pytest.raises(UserError) as error:
        await svc.bookings.do_extend(await account(world.env, "cliente"), case_id, "please")
    assert error.value.code == ErrorCode.FORBIDDEN
    window = await svc.bookings.do_extend(world.k1, case_id, "The parties need a technical check")
    assert window.extended and window.procedure_end == date(2027, 3, 23)
    with pytest.raises(UserError) as error:
        await svc.bookings.do_extend(world.scheduler, case_id, "again")
    assert error.value.code == ErrorCode.ALREADY_EXTENDED
    mail = await world.env.last_mail("cliente@example.org", "23/03/2027")
    assert "technical check" in mail.body_text
    # The continuation may now go past the original 90 days.
    continued = await svc.planner.do_adjourn(
        world.k1, case_id, starts_at=rome(date(2027, 3, 1), 9), conciliator_id=world.k1.id
    )
    assert continued is not None


async def test_the_join_button_and_the_welcome_page(world: World) -> None:
    env = world.env
    svc = env.services
    case_id = await world.admitted_case()
    meeting = await svc.bookings.do_book(world.scheduler, case_id, rome(FIRST, 9), world.k1.id)
    customer = await env.new_browser()
    await sign_in(customer, "cliente", "Lampada-Verde-42")
    page = await customer.get(f"/cases/{case_id}")
    assert '<button class="btn btn-success" id="join" type="button" disabled' in page.text
    assert "30/11/2026 08:45" in page.text
    welcome = await customer.get(f"/meetings/{meeting.id}")
    assert welcome.status == 200 and 'id="needs"' in welcome.text
    assert "30/11/2026 08:45" in welcome.text and "non servono webcam né microfono" in welcome.text
    env.clock.set(rome(FIRST, 8, 45))
    customer = await env.new_browser()  # a week later: the old session has expired
    await sign_in(customer, "cliente", "Lampada-Verde-42")
    page = await customer.get(f"/cases/{case_id}")
    assert f'<a class="btn btn-success" id="join" href="/meetings/{meeting.id}">' in page.text
    # Nobody else sees it: another customer, another conciliator, not even by its id.
    await registered(env, "curioso")
    other = await env.new_browser()
    await sign_in(other, "curioso", "Lampada-Verde-42")
    assert (await other.get(f"/meetings/{meeting.id}")).status == 404
    assert (await other.get(f"/meetings/{uuid.uuid4()}")).status == 404
    k2 = await env.new_browser()
    await staff_sign_in(env, k2, "conciliatore2")
    assert (await k2.get(f"/meetings/{meeting.id}")).status == 404
    k1 = await env.new_browser()
    await staff_sign_in(env, k1, "conciliatore1")
    assert (await k1.get(f"/meetings/{meeting.id}")).status == 200
    # The conciliator records it is taking place, adjourns and extends from the case file.
    file = await k1.get(f"/cases/{case_id}")
    assert 'id="hold"' in file.text
    held = await k1.post(
        f"/cases/{case_id}/meeting/hold", {"meeting": str(meeting.id)}, csrf=file.csrf
    )
    assert held.status == 303
    file = await k1.get(f"/cases/{case_id}")
    assert 'id="adjourn"' in file.text and 'id="extend"' in file.text
    refused = await k1.post(f"/cases/{case_id}/extend", {"reason": ""}, csrf=file.csrf)
    assert refused.status == 422
    extended = await k1.post(
        f"/cases/{case_id}/extend", {"reason": "Waiting for a meter test"}, csrf=file.csrf
    )
    assert extended.status == 303
    adjourned = await k1.post(
        f"/cases/{case_id}/adjourn", {"day": "", "time": "09:00", "note": ""}, csrf=file.csrf
    )
    assert adjourned.status == 303
    file = await k1.get(f"/cases/{case_id}")
    assert 'id="extend"' not in file.text and "(prorogata)" in file.text
    assert "02/12/2026 14:00" in file.text
    # Without a CSRF token nothing happens.
    assert (await k1.post(f"/cases/{case_id}/extend", {"reason": "x"})).status == 403
