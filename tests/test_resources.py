"""Scheduling resources: conciliators' working days, daily limits and absences, companies'
capacity; every refusal, what bookings and the allocator make of a change, the pages, and a
conciliator's own agenda."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, datetime, timedelta

import pytest

from cases.accounts import Account
from cases.companies import do_create_company
from cases.lifecycle import Action
from core.clock import ROME
from core.errors import ErrorCode, FieldErrors, UserError
from scheduling.bookings import Meeting
from scheduling.resources import MAX_ABSENCE_DAYS, ConciliatorResources
from tests.support import (
    DELEGATED_APPLICANT,
    DELEGATION_DOCUMENTS,
    GOOD_PASSWORD,
    Browser,
    Env,
    domain_request,
    registered,
    sign_in,
    staff_sign_in,
)
from tests.worlds import FIRST, World, account, admitted_rows, rome

TUESDAY = FIRST + timedelta(days=1)
WEDNESDAY = FIRST + timedelta(days=2)
FRIDAY = FIRST + timedelta(days=4)


PODS = iter(f"IT001E{n:08d}" for n in range(20_000_000, 30_000_000))


async def booked(world: World, day: date, hour: int, who: Account, minute: int = 0) -> Meeting:
    """A new admitted case booked with ``who`` at ``hour`` on ``day`` (Rome)."""
    case_id = await world.admitted_case(next(PODS))
    return await world.env.services.bookings.do_book(
        world.scheduler, case_id, rome(day, hour, minute), who.id
    )


async def refusal(call: object) -> UserError:
    assert asyncio.iscoroutine(call)
    with pytest.raises(UserError) as error:
        await call
    return error.value


async def mine(world: World, who: Account) -> ConciliatorResources:
    return await world.env.services.resources.conciliator(world.scheduler, who.id)


# -- the domain ----------------------------------------------------------------------------


async def test_working_days_and_daily_limit(world: World) -> None:
    svc = world.env.services
    resources = svc.resources
    admin = await account(world.env, "amministratore")
    listed = await resources.conciliators(admin)
    assert {r.account.id for r in listed} == {world.k1.id, world.k2.id}
    assert all(
        r.weekdays == frozenset(range(5))
        and r.max_per_day == 4
        and r.absences == ()
        and r.upcoming == 0
        for r in listed
    )
    # Who may: admins and schedulers; not the conciliator, not anyone else.
    for name in ("conciliatore1", "sportello", "cliente"):
        who = await account(world.env, name)
        error = await refusal(resources.do_set_profile(who, world.k1.id, {0}, 2))
        assert error.code == ErrorCode.FORBIDDEN, name
        assert (await refusal(resources.conciliators(who))).code == ErrorCode.FORBIDDEN
    for unknown in (uuid.uuid4(), world.scheduler.id):
        error = await refusal(resources.do_set_profile(admin, unknown, {0}, 2))
        assert error.code == ErrorCode.NOT_FOUND
    # Wrong values, each with its field.
    for weekdays, limit, fields in (
        (set(), 2, {"weekdays": [ErrorCode.REQUIRED]}),
        ({0, 5}, 2, {"weekdays": [ErrorCode.INVALID_CHOICE]}),
        ({0}, 0, {"max_per_day": [ErrorCode.DAILY_LIMIT_RANGE]}),
        ({0}, 7, {"max_per_day": [ErrorCode.DAILY_LIMIT_RANGE]}),
        ({0}, "due", {"max_per_day": [ErrorCode.DAILY_LIMIT_RANGE]}),
        (
            {"x"},
            -1,
            {"weekdays": [ErrorCode.INVALID_CHOICE], "max_per_day": [ErrorCode.DAILY_LIMIT_RANGE]},
        ),
    ):
        with pytest.raises(FieldErrors) as wrong:
            await resources.do_set_profile(admin, world.k1.id, weekdays, limit)
        assert wrong.value.fields == fields, (weekdays, limit)
    # Two meetings on Monday, one on Tuesday.
    await booked(world, FIRST, 9, world.k1)
    await booked(world, FIRST, 12, world.k1)
    await booked(world, TUESDAY, 9, world.k1)
    error = await refusal(resources.do_set_profile(admin, world.k1.id, {1, 2, 3, 4}, 4))
    assert error.code == ErrorCode.WEEKDAY_HAS_MEETINGS
    assert error.params == {"count": 2, "days": "30/11/2026"}
    error = await refusal(resources.do_set_profile(admin, world.k1.id, set(range(5)), 1))
    assert error.code == ErrorCode.DAILY_LIMIT_BELOW_BOOKED
    assert error.params == {"count": 1, "days": "30/11/2026"}
    assert (await mine(world, world.k1)).weekdays == frozenset(range(5))  # nothing changed
    # Keeping Monday and Tuesday with two a day is fine; the scheduler may too.
    changed = await resources.do_set_profile(world.scheduler, world.k1.id, ["0", "1"], "2")
    assert (changed.weekdays, changed.max_per_day, changed.upcoming) == (frozenset({0, 1}), 2, 3)
    again = await resources.do_set_profile(admin, world.k1.id, {0, 1}, 2)  # the row exists now
    assert again.weekdays == frozenset({0, 1})
    # Bookings keep within it.
    case_id = await world.admitted_case(next(PODS))
    bookings = svc.bookings
    error = await refusal(
        bookings.do_book(world.scheduler, case_id, rome(FIRST, 15, 30), world.k1.id)
    )
    assert error.code == ErrorCode.CONCILIATOR_DAY_FULL
    error = await refusal(
        bookings.do_book(world.scheduler, case_id, rome(WEDNESDAY, 9), world.k1.id)
    )
    assert error.code == ErrorCode.CONCILIATOR_UNAVAILABLE
    # Meetings that have started no longer hold a weekday: on Tuesday morning, Monday may go.
    world.env.clock.set(rome(TUESDAY, 7))
    error = await refusal(resources.do_set_profile(admin, world.k1.id, {0}, 2))
    assert error.code == ErrorCode.WEEKDAY_HAS_MEETINGS and error.params["count"] == 1
    done = await resources.do_set_profile(admin, world.k1.id, {1, 3}, 1)
    assert done.weekdays == frozenset({1, 3}) and done.upcoming == 1


async def test_absences(world: World) -> None:
    env = world.env
    resources = env.services.resources
    k1, k2 = world.k1, world.k2
    today = date(2026, 11, 23)
    # The conciliator records their own absence; an arranger anyone's.
    assert await resources.do_add_absence(k1, k1.id, date(2026, 12, 9)) == [date(2026, 12, 9)]
    assert await resources.do_add_absence(world.scheduler, k2.id, "2026-12-09", "") == [
        date(2026, 12, 9)
    ]
    for who, target in ((k1, k2.id), (await account(env, "cliente"), k1.id)):
        error = await refusal(resources.do_add_absence(who, target, date(2026, 12, 10)))
        assert error.code == ErrorCode.FORBIDDEN
        error = await refusal(resources.do_remove_absence(who, target, date(2026, 12, 9)))
        assert error.code == ErrorCode.FORBIDDEN
    desk = await account(env, "sportello")
    assert (await refusal(resources.do_add_absence(desk, k1.id, "2026-12-10"))).code == (
        ErrorCode.FORBIDDEN
    )
    error = await refusal(resources.do_add_absence(world.scheduler, uuid.uuid4(), "2026-12-10"))
    assert error.code == ErrorCode.NOT_FOUND
    # Wrong days.
    for first, last, fields in (
        ("", "", {"first_day": [ErrorCode.REQUIRED]}),
        ("9/12/2026", "", {"first_day": [ErrorCode.DATE_INVALID]}),
        ("2026-12-10", "domani", {"last_day": [ErrorCode.DATE_INVALID]}),
        ("2026-11-20", "", {"first_day": [ErrorCode.DAY_PAST]}),
        ("2026-12-10", "2026-12-09", {"last_day": [ErrorCode.DAYS_BACKWARDS]}),
        ("2026-11-28", "2026-11-29", {"first_day": [ErrorCode.ABSENCE_ON_WEEKEND]}),
    ):
        with pytest.raises(FieldErrors) as wrong:
            await resources.do_add_absence(k1, k1.id, first, last)
        assert wrong.value.fields == fields, (first, last)
    start = date(2027, 1, 4)
    error = await refusal(
        resources.do_add_absence(k1, k1.id, start, start + timedelta(days=MAX_ABSENCE_DAYS))
    )
    assert error.code == ErrorCode.ABSENCE_TOO_LONG and error.params == {"limit": 60}
    # A day already recorded: nothing of the span is added.
    error = await refusal(resources.do_add_absence(k1, k1.id, "2026-12-07", "2026-12-11"))
    assert error.code == ErrorCode.ABSENCE_EXISTS and error.params == {"days": "09/12/2026"}
    assert (await mine(world, k1)).absences == (date(2026, 12, 9),)
    # A day with the conciliator's meetings: they must be moved first; nothing is added.
    await booked(world, FRIDAY, 9, k1)
    await booked(world, FRIDAY, 14, k1)
    await booked(world, FRIDAY, 12, k2)  # another conciliator's meeting does not count
    error = await refusal(resources.do_add_absence(world.scheduler, k1.id, TUESDAY, FRIDAY))
    assert error.code == ErrorCode.ABSENCE_HAS_MEETINGS
    assert error.params == {"count": 2, "days": "04/12/2026"}
    assert (await mine(world, k1)).absences == (date(2026, 12, 9),)
    # A span skips the weekend; 60 days is the most.
    added = await resources.do_add_absence(k1, k1.id, "2026-12-14", "2026-12-20")
    assert added == [date(2026, 12, d) for d in range(14, 19)]
    long = await resources.do_add_absence(
        world.scheduler, k2.id, start, start + timedelta(days=MAX_ABSENCE_DAYS - 1)
    )
    assert len(long) == 44 and all(d.weekday() < 5 for d in long)
    # Today is not past.
    assert await resources.do_add_absence(k1, k1.id, today) == [today]
    listed = await mine(world, k1)
    assert listed.absences == (today, date(2026, 12, 9), *added)
    # Booking on an absence is refused; once removed, it works.
    case_id = await world.admitted_case(next(PODS))
    bookings = env.services.bookings
    when = rome(date(2026, 12, 9), 9)
    error = await refusal(bookings.do_book(world.scheduler, case_id, when, k1.id))
    assert error.code == ErrorCode.CONCILIATOR_UNAVAILABLE
    await resources.do_remove_absence(k1, k1.id, date(2026, 12, 9))
    assert (await bookings.do_book(world.scheduler, case_id, when, k1.id)).conciliator_id == k1.id
    error = await refusal(resources.do_remove_absence(k1, k1.id, date(2026, 12, 9)))
    assert error.code == ErrorCode.NOT_FOUND
    # Tomorrow, today's absence is in the past: it stays, and leaves the list.
    env.advance(days=1)
    error = await refusal(resources.do_remove_absence(world.scheduler, k1.id, today))
    assert error.code == ErrorCode.DAY_PAST
    assert today not in (await mine(world, k1)).absences


async def test_company_capacity(world: World) -> None:
    env = world.env
    resources = env.services.resources
    admin = await account(env, "amministratore")
    [row] = await resources.capacities(admin)
    assert row.company.id == world.company_id and row.per_slot == 1
    for name in ("conciliatore1", "cliente", "sportello"):
        who = await account(env, name)
        error = await refusal(resources.do_set_capacity(who, world.company_id, 2))
        assert error.code == ErrorCode.FORBIDDEN
        assert (await refusal(resources.capacities(who))).code == ErrorCode.FORBIDDEN
    assert (await refusal(resources.do_set_capacity(admin, uuid.uuid4(), 2))).code == (
        ErrorCode.NOT_FOUND
    )
    for wrong in (0, 11, "tre", ""):
        with pytest.raises(FieldErrors) as raised:
            await resources.do_set_capacity(admin, world.company_id, wrong)
        assert raised.value.fields == {"per_slot": [ErrorCode.CAPACITY_RANGE]}
    # One seat: a second meeting of the company in the slot is refused; two seats allow it.
    first = await booked(world, FIRST, 9, world.k1)
    case_id = await world.admitted_case(next(PODS))
    bookings = env.services.bookings
    when = rome(FIRST, 9)
    error = await refusal(bookings.do_book(world.scheduler, case_id, when, world.k2.id))
    assert error.code == ErrorCode.COMPANY_FULL
    assert await resources.do_set_capacity(world.scheduler, world.company_id, "2") == 2
    second = await bookings.do_book(world.scheduler, case_id, when, world.k2.id)
    assert second.starts_at == first.starts_at
    [row] = await resources.capacities(world.scheduler)
    assert row.per_slot == 2
    # Not below what a slot to come holds.
    error = await refusal(resources.do_set_capacity(admin, world.company_id, 1))
    assert error.code == ErrorCode.CAPACITY_BELOW_BOOKED
    assert error.params == {"count": 1, "slots": "30/11/2026 09:00"}
    # With the first seat freed, one is enough again; the seat left is the second one, and the
    # slot is still full for a third meeting.
    await bookings.do_cancel(world.scheduler, first.id)
    assert await resources.do_set_capacity(admin, world.company_id, 1) == 1
    third = await world.admitted_case(next(PODS))
    error = await refusal(bookings.do_book(world.scheduler, third, when, world.k1.id))
    assert error.code == ErrorCode.COMPANY_FULL


async def test_the_allocator_keeps_within_the_resources(world: World) -> None:
    svc = world.env.services
    cases = await admitted_rows(world, 4)  # the company gets 50 seats
    await svc.resources.do_set_profile(world.scheduler, world.k1.id, {0}, 1)
    await svc.resources.do_add_absence(world.scheduler, world.k2.id, FIRST, FRIDAY)
    proposal = await svc.planner.do_propose(world.scheduler)
    placements = proposal.body["placements"]
    assert len(placements) == 4
    k1_days = []
    for _case, starts_at, who in placements:
        day = datetime.fromisoformat(starts_at).astimezone(ROME).date()
        if who == str(world.k1.id):
            k1_days.append(day)
        else:
            assert not FIRST <= day <= FRIDAY, day
    assert k1_days and all(d.weekday() == 0 for d in k1_days)
    assert len(set(k1_days)) == len(k1_days)  # one a day
    # A change after the proposal makes it stale.
    await svc.resources.do_set_capacity(world.scheduler, world.company_id, 3)
    error = await refusal(svc.planner.do_commit(world.scheduler, proposal.id))
    assert error.code == ErrorCode.PROPOSAL_STALE
    fresh = await svc.planner.do_propose(world.scheduler)
    meetings = await svc.planner.do_commit(world.scheduler, fresh.id)
    assert sorted(m.case_id for m in meetings) == sorted(cases)


async def test_edits_and_bookings_at_once_never_break_the_rules(world: World) -> None:
    if world.env.db_url.startswith("sqlite"):
        pytest.skip("row locks are PostgreSQL's; SQLite is the one-process, one-writer setup")
    svc = world.env.services
    cases = await admitted_rows(world, 12)  # the company gets 50 seats
    # An absence and a booking on the same day: one of the two, never both.
    days = [FIRST + timedelta(days=d) for d in (0, 1, 2, 3, 4, 7, 9, 10)]  # 8 Dec: a holiday
    for case_id, day in zip(cases, days, strict=False):
        booking, absence = await asyncio.gather(
            svc.bookings.do_book(world.scheduler, case_id, rome(day, 9), world.k1.id),
            svc.resources.do_add_absence(world.scheduler, world.k1.id, day),
            return_exceptions=True,
        )
        if isinstance(booking, Meeting):
            assert isinstance(absence, UserError), day
            assert absence.code == ErrorCode.ABSENCE_HAS_MEETINGS
        else:
            assert isinstance(booking, UserError) and absence == [day], (booking, absence)
            assert booking.code == ErrorCode.CONCILIATOR_UNAVAILABLE
    # A lower daily limit and a second meeting on a day: one of the two.
    day = FIRST + timedelta(days=11)
    await svc.bookings.do_book(world.scheduler, cases[8], rome(day, 9), world.k1.id)
    booking, profile = await asyncio.gather(
        svc.bookings.do_book(world.scheduler, cases[9], rome(day, 12), world.k1.id),
        svc.resources.do_set_profile(world.scheduler, world.k1.id, set(range(5)), 1),
        return_exceptions=True,
    )
    if isinstance(booking, Meeting):
        assert isinstance(profile, UserError)
        assert profile.code == ErrorCode.DAILY_LIMIT_BELOW_BOOKED
    else:
        assert isinstance(booking, UserError) and isinstance(profile, ConciliatorResources)
        assert booking.code == ErrorCode.CONCILIATOR_DAY_FULL
    # A lower capacity and another of the company's meetings in a slot: one of the two.
    day = FIRST + timedelta(days=14)
    await svc.resources.do_set_capacity(world.scheduler, world.company_id, 2)
    await svc.bookings.do_book(world.scheduler, cases[10], rome(day, 9), world.k2.id)
    booking, capacity = await asyncio.gather(
        svc.bookings.do_book(world.scheduler, cases[11], rome(day, 9), world.k1.id),
        svc.resources.do_set_capacity(world.scheduler, world.company_id, 1),
        return_exceptions=True,
    )
    if isinstance(booking, Meeting):
        assert isinstance(capacity, UserError)
        assert capacity.code == ErrorCode.CAPACITY_BELOW_BOOKED
    else:
        assert isinstance(booking, UserError) and capacity == 1, (booking, capacity)
        assert booking.code == ErrorCode.COMPANY_FULL


# -- the pages -----------------------------------------------------------------------------


async def signed_in_staff(env: Env, username: str) -> Browser:
    browser = await env.new_browser()
    assert (await staff_sign_in(env, browser, username)).status == 303
    return browser


async def test_the_conciliators_page(world: World) -> None:
    env = world.env
    k1, k2 = world.k1, world.k2
    admin = await signed_in_staff(env, "amministratore")
    page = await admin.get("/admin/conciliators")
    assert page.status == 200 and 'id="conciliators"' in page.text
    assert f'id="k-{k1.id}"' in page.text and f'id="k-{k2.id}"' in page.text
    base = f"/admin/conciliators/{k1.id}"
    done = await admin.post(
        f"{base}/profile",
        [("weekdays", "0"), ("weekdays", "2"), ("max_per_day", "3")],
        csrf=page.csrf,
    )
    assert done.status == 303
    assert done.headers["Location"] == f"/admin/conciliators?saved=1#k-{k1.id}"
    profile = await mine(world, k1)
    assert (profile.weekdays, profile.max_per_day) == (frozenset({0, 2}), 3)
    page = await admin.get("/admin/conciliators?saved=1")
    assert "Modifiche salvate." in page.text and "Lunedì, Mercoledì" in page.text
    # Wrong fields: 422, each message next to its field in this conciliator's form only.
    wrong = await admin.post(f"{base}/profile", {"max_per_day": "9"}, csrf=page.csrf)
    assert wrong.status == 422
    assert f'id="e-weekdays-{k1.id}"' in wrong.text and f'id="e-max_per_day-{k1.id}"' in wrong.text
    assert f'id="e-weekdays-{k2.id}"' not in wrong.text
    assert "Questo campo è obbligatorio." in wrong.text and "da 1 a 6" in wrong.text
    assert f'id="max-{k1.id}"' in wrong.text and 'value="9"' in wrong.text
    assert (await mine(world, k1)).max_per_day == 3
    # A refusal says how many meetings must be moved first.
    await booked(world, FIRST, 9, k1)
    refused = await admin.post(
        f"{base}/profile", [("weekdays", "2"), ("max_per_day", "3")], csrf=page.csrf
    )
    assert refused.status == 422 and f'id="e-weekdays-{k1.id}"' in refused.text
    assert "1 da spostare prima (30/11/2026)" in refused.text
    # Absences: a span, listed; the same day again is a conflict; a meeting day is refused.
    added = await admin.post(
        f"{base}/absences", {"first_day": "2026-12-14", "last_day": "2026-12-18"}, csrf=page.csrf
    )
    assert added.status == 303
    page = await admin.get("/admin/conciliators")
    assert "14/12/2026" in page.text and "18/12/2026" in page.text
    assert f'action="{base}/absences/2026-12-16/delete"' in page.text
    again = await admin.post(
        f"{base}/absences", {"first_day": "2026-12-16", "last_day": ""}, csrf=page.csrf
    )
    assert again.status == 409 and f'id="e-first_day-{k1.id}"' in again.text
    assert "già registrata un&#39;assenza il 16/12/2026" in again.text
    assert 'value="2026-12-16"' in again.text  # what was typed stays
    clash = await admin.post(f"{base}/absences", {"first_day": "2026-11-30"}, csrf=page.csrf)
    assert clash.status == 422 and "1 da spostare prima (30/11/2026)" in clash.text
    bad = await admin.post(f"{base}/absences", {"first_day": "30/11"}, csrf=page.csrf)
    assert bad.status == 422 and "Inserisci una data valida" in bad.text
    long = await admin.post(
        f"{base}/absences", {"first_day": "2027-01-04", "last_day": "2027-04-30"}, csrf=page.csrf
    )
    assert long.status == 422 and f'id="e-last_day-{k1.id}"' in long.text
    assert "al massimo 60 giorni" in long.text
    removed = await admin.post(f"{base}/absences/2026-12-16/delete", {}, csrf=page.csrf)
    assert removed.status == 303
    assert date(2026, 12, 16) not in (await mine(world, k1)).absences
    assert len((await mine(world, k1)).absences) == 4
    # Nothing there, nobody there, no token.
    gone = await admin.post(f"{base}/absences/2026-12-16/delete", {}, csrf=page.csrf)
    assert gone.status == 404
    assert (await admin.post(f"{base}/absences/domani/delete", {}, csrf=page.csrf)).status == 404
    stranger = f"/admin/conciliators/{uuid.uuid4()}/profile"
    assert (
        await admin.post(stranger, {"weekdays": "0", "max_per_day": "2"}, csrf=page.csrf)
    ).status == 404
    forged = await admin.post(f"{base}/profile", {"weekdays": "1", "max_per_day": "2"})
    assert forged.status == 403 and (await mine(world, k1)).max_per_day == 3
    # Schedulers too; conciliators and everyone else not.
    scheduler = await signed_in_staff(env, "pianificatore")
    page = await scheduler.get("/admin/conciliators")
    assert page.status == 200
    assert (
        await scheduler.post(
            f"/admin/conciliators/{k2.id}/profile",
            [("weekdays", "4"), ("max_per_day", "1")],
            csrf=page.csrf,
        )
    ).status == 303
    assert (await mine(world, k2)).weekdays == frozenset({4})
    conciliator = await signed_in_staff(env, "conciliatore1")
    assert (await conciliator.get("/admin/conciliators")).status == 403
    own = await conciliator.get("/agenda")
    for path in (f"{base}/profile", f"{base}/absences"):
        sent = await conciliator.post(
            path, {"weekdays": "0", "max_per_day": "6", "first_day": "2026-12-21"}, csrf=own.csrf
        )
        assert sent.status == 403
    customer = await env.new_browser()
    await sign_in(customer, "cliente", GOOD_PASSWORD)
    assert (await customer.get("/admin/conciliators")).status == 403


async def test_the_capacities_page(world: World) -> None:
    env = world.env
    other = await do_create_company(
        env.services.db,
        name="Acqua <Blu> & Co",
        vat="02345670158",
        sectors=["water"],
        now=env.clock.now(),
    )
    scheduler = await signed_in_staff(env, "pianificatore")
    page = await scheduler.get("/admin/capacities")
    assert page.status == 200 and 'id="capacities"' in page.text
    assert "Acqua &lt;Blu&gt; &amp; Co" in page.text and "<Blu>" not in page.text
    assert page.text.count('name="per_slot" type="number"') == 2
    path = f"/admin/capacities/{world.company_id}"
    done = await scheduler.post(path, {"per_slot": "2"}, csrf=page.csrf)
    assert done.status == 303 and done.headers["Location"].startswith("/admin/capacities?saved=1")
    page = await scheduler.get("/admin/capacities?saved=1")
    assert "Modifiche salvate." in page.text
    [energia] = [
        r
        for r in await env.services.resources.capacities(world.scheduler)
        if r.company.id == world.company_id
    ]
    assert energia.per_slot == 2
    wrong = await scheduler.post(path, {"per_slot": "11"}, csrf=page.csrf)
    assert wrong.status == 422 and f'id="e-per_slot-{world.company_id}"' in wrong.text
    assert f'id="e-per_slot-{other.id}"' not in wrong.text
    assert "da 1 a 10" in wrong.text and 'value="11"' in wrong.text
    # Two of the company's meetings share a slot now: one seat is not enough.
    await booked(world, FIRST, 9, world.k1)
    await booked(world, FIRST, 9, world.k2)
    below = await scheduler.post(path, {"per_slot": "1"}, csrf=page.csrf)
    assert below.status == 422 and "1 da spostare prima (30/11/2026 09:00)" in below.text
    unknown = await scheduler.post(
        f"/admin/capacities/{uuid.uuid4()}", {"per_slot": "2"}, csrf=page.csrf
    )
    assert unknown.status == 404
    # Admins reach it from the companies page; conciliators not at all.
    admin = await signed_in_staff(env, "amministratore")
    companies = await admin.get("/admin/companies")
    assert 'href="/admin/capacities"' in companies.text
    assert (await admin.get("/admin/capacities")).status == 200
    conciliator = await signed_in_staff(env, "conciliatore1")
    assert (await conciliator.get("/admin/capacities")).status == 403
    own = await conciliator.get("/agenda")
    assert (await conciliator.post(path, {"per_slot": "5"}, csrf=own.csrf)).status == 403


async def test_the_agenda_shows_the_conciliators_own_meetings(world: World) -> None:
    env = world.env
    svc = env.services
    k1 = world.k1
    await registered(env, "delegato", kind="delegate", delegate_kind="professional")
    delegated = uuid.UUID(
        await domain_request(
            env,
            "delegato",
            str(world.company_id),
            documents=DELEGATION_DOCUMENTS,
            applicant=DELEGATED_APPLICANT,
            supply={"pod": next(PODS)},
        )
    )
    desk = await account(env, "sportello")
    await svc.files.do_step(desk, delegated, Action.ADMIT)
    monday = await booked(world, FIRST, 9, k1)
    tuesday = await svc.bookings.do_book(world.scheduler, delegated, rome(TUESDAY, 14), k1.id)
    later = await booked(world, date(2026, 12, 10), 10, k1, minute=30)
    others = await booked(world, FIRST, 12, world.k2)
    codes: dict[uuid.UUID, str] = {}
    for meeting in (monday, tuesday, later, others):
        case, _ = await svc.files.get_for(world.scheduler, meeting.case_id)
        assert case.code is not None
        codes[meeting.id] = case.code
    conciliator = await signed_in_staff(env, "conciliatore1")
    page = await conciliator.get("/agenda")
    assert page.status == 200 and 'id="agenda"' in page.text
    for meeting in (monday, tuesday, later):
        assert codes[meeting.id] in page.text
        assert f'href="/cases/{meeting.case_id}"' in page.text
        assert f'href="/meetings/{meeting.id}"' in page.text
    assert codes[others.id] not in page.text and str(others.id) not in page.text
    assert page.text.count('class="mb-3 meeting"') == 3
    assert "Lunedì 30/11/2026" in page.text and "Martedì 01/12/2026" in page.text
    assert "09:00–10:30" in page.text and "14:00–15:30" in page.text
    assert "Apri la pagina dell&#39;incontro" in page.text
    # The parties: the customer, the delegate who acts for them, the company.
    assert "Lucia Bianchi" in page.text and "Energia A" in page.text
    assert "Delegato: Mario Rossi" in page.text
    assert page.text.index("Lunedì 30/11/2026") < page.text.index("Martedì 01/12/2026")
    # Fewer weeks, fewer meetings; the number of weeks is bounded.
    two = await conciliator.get("/agenda?weeks=2")
    assert codes[monday.id] in two.text and codes[later.id] not in two.text
    one = await conciliator.get("/agenda?weeks=1")
    assert one.status == 200 and "Nessun incontro" in one.text
    for wrong in ("0", "13", "due"):
        assert (await conciliator.get(f"/agenda?weeks={wrong}")).status == 400
    # Their working days, and their own absences.
    assert "Lunedì, Martedì, Mercoledì, Giovedì, Venerdì" in page.text
    added = await conciliator.post(
        "/agenda/absences", {"first_day": "2026-12-21", "last_day": "2026-12-23"}, csrf=page.csrf
    )
    assert added.status == 303 and added.headers["Location"] == "/agenda?saved=1#absences"
    page = await conciliator.get("/agenda?saved=1")
    assert "21/12/2026" in page.text and 'action="/agenda/absences/2026-12-22/delete"' in page.text
    refused = await conciliator.post(
        "/agenda/absences", {"first_day": "2026-11-30"}, csrf=page.csrf
    )
    assert refused.status == 422 and 'id="e-first_day-me"' in refused.text
    assert "1 da spostare prima (30/11/2026)" in refused.text
    removed = await conciliator.post("/agenda/absences/2026-12-22/delete", {}, csrf=page.csrf)
    assert removed.status == 303
    assert (await mine(world, k1)).absences == (date(2026, 12, 21), date(2026, 12, 23))
    # Only conciliators have an agenda.
    scheduler = await signed_in_staff(env, "pianificatore")
    assert (await scheduler.get("/agenda")).status == 403
    other_page = await scheduler.get("/schedule")
    sent = await scheduler.post(
        "/agenda/absences", {"first_day": "2026-12-28"}, csrf=other_page.csrf
    )
    assert sent.status == 403
    anonymous = await env.new_browser()
    redirected = await anonymous.get("/agenda")
    assert redirected.status == 303 and redirected.headers["Location"].startswith("/login")
