"""The slot calendar: Rome's wall clock across DST, national holidays, closures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from core.clock import ROME
from scheduling.calendar import Calendar, national_holidays
from tests.support import Env, staff, staff_sign_in


@pytest.mark.parametrize(
    ("day", "name"),
    [
        (date(2026, 1, 1), "Capodanno"),
        (date(2026, 1, 6), "Epifania"),
        (date(2026, 4, 6), "Lunedì dell'Angelo"),  # Easter Monday 2026
        (date(2026, 4, 25), "Anniversario della Liberazione"),
        (date(2026, 6, 2), "Festa della Repubblica"),
        (date(2026, 12, 8), "Immacolata Concezione"),
        (date(2027, 3, 29), "Lunedì dell'Angelo"),  # Easter Monday 2027
        (date(2027, 6, 2), "Festa della Repubblica"),
        (date(2027, 12, 24), None),  # Christmas Eve is a working day
    ],
)
def test_national_holidays(day: date, name: str | None) -> None:
    assert national_holidays(day.year).get(day) == name
    calendar = Calendar()
    if name is not None:
        assert calendar.day_off(day) == name and calendar.slots_of(day) == []
    elif day.weekday() < 5:
        assert len(calendar.slots_of(day)) == 6


def test_holidays_are_named_in_english_too() -> None:
    assert Calendar(language="en").day_off(date(2026, 4, 6)) == "Easter Monday"


def test_closures_and_weekends_have_no_slots() -> None:
    calendar = Calendar({date(2026, 12, 7): "Sant'Ambrogio (Milano)"})
    assert calendar.slots_of(date(2026, 12, 7)) == []
    assert calendar.day_off(date(2026, 12, 7)) == "Sant'Ambrogio (Milano)"
    assert calendar.slots_of(date(2026, 12, 5)) == []  # Saturday
    # A week with a closure (7 Dec) and a holiday (8 Dec): three working days.
    week = calendar.slots(date(2026, 12, 7), date(2026, 12, 13))
    assert len(week) == 18 and {s.day for s in week} == {date(2026, 12, d) for d in (9, 10, 11)}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (date(2026, 3, 27), date(2026, 3, 30)),  # the clocks go forward on 29 March 2026
        (date(2026, 10, 23), date(2026, 10, 26)),  # and back on 25 October 2026
    ],
)
def test_slots_keep_rome_wall_clock_across_dst(before: date, after: date) -> None:
    calendar = Calendar()
    for day in (before, after):
        slots = calendar.slots_of(day)
        assert [s.local_start.strftime("%H:%M") for s in slots] == [
            "09:00",
            "10:30",
            "12:00",
            "14:00",
            "15:30",
            "17:00",
        ]
        assert all(s.starts_at.tzinfo == UTC for s in slots)
        assert all(s.ends_at - s.starts_at == timedelta(minutes=90) for s in slots)
    offsets = {calendar.slots_of(d)[0].starts_at.hour for d in (before, after)}
    assert offsets == {7, 8}  # 9:00 in Rome is 8:00 UTC in winter, 7:00 in summer


def test_slot_lookup_keys_and_notice() -> None:
    calendar = Calendar()
    slot = calendar.slots_of(date(2026, 11, 25))[3]
    assert slot.key == "wed-14:00"
    assert calendar.slot_at(slot.starts_at.astimezone(ROME)) == slot
    assert calendar.slot_at(datetime(2026, 11, 25, 13, 5, tzinfo=UTC)) is None
    # Five working days after Friday 4 December 2026, with the 8th a holiday: the 14th.
    assert calendar.add_working_days(date(2026, 12, 4), 5) == date(2026, 12, 14)


async def test_admins_manage_closures_and_see_the_holidays(env: Env) -> None:
    await staff(env, "amministratore", role="admin")
    admin = await env.new_browser()
    await staff_sign_in(env, admin, "amministratore")
    page = await admin.get("/admin/closures")
    assert page.status == 200 and "Lunedì dell&#39;Angelo" in page.text
    added = await admin.post(
        "/admin/closures", {"day": "2026-12-07", "name": "Sant'Ambrogio"}, csrf=page.csrf
    )
    assert added.status == 303
    again = await admin.post("/admin/closures", {"day": "2026-12-07", "name": "X"}, csrf=page.csrf)
    assert again.status == 422
    bad = await admin.post("/admin/closures", {"day": "7/12", "name": "X"}, csrf=page.csrf)
    assert bad.status == 422
    async with env.services.db.session() as session:
        calendar = await env.services.bookings.calendar(session)
    assert calendar.day_off(date(2026, 12, 7)) == "Sant'Ambrogio"
    page = await admin.get("/admin/closures")
    assert "07/12/2026 — Sant&#39;Ambrogio" in page.text
    removed = await admin.post("/admin/closures/2026-12-07/delete", {}, csrf=page.csrf)
    assert removed.status == 303
    async with env.services.db.session() as session:
        calendar = await env.services.bookings.calendar(session)
    assert calendar.is_working_day(date(2026, 12, 7))
    await staff(env, "pianificatore", role="scheduler")
    scheduler = await env.new_browser()
    await staff_sign_in(env, scheduler, "pianificatore")
    assert (await scheduler.get("/admin/closures")).status == 403
