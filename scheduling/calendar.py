"""The service's calendar: six fixed slots on weekdays, in Rome's time, minus holidays.

Slots start Monday to Friday at 9:00, 10:30, 12:00, 14:00, 15:30 and 17:00 Europe/Rome and last
90 minutes (configurable). They are built from the local wall-clock time and converted to UTC,
so a slot stays at 9:00 in Rome across the daylight-saving changes; everything is stored in
UTC. No slot falls on an Italian national public holiday (the ``holidays`` package: Easter
Monday included) nor on a closure an administrator adds (a patron saint's day, an office
closure), and both are named on the calendar.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

import holidays

from core.clock import ROME

SLOT_TIMES = (time(9, 0), time(10, 30), time(12, 0), time(14, 0), time(15, 30), time(17, 0))
WEEKDAY_KEYS = ("mon", "tue", "wed", "thu", "fri")
DEFAULT_LENGTH = timedelta(minutes=90)


@dataclass(frozen=True, order=True)
class Slot:
    """One slot of one day: its start and end in UTC, and how people name it."""

    starts_at: datetime
    ends_at: datetime
    day: date
    index: int  # 0..5: which of the day's six slots

    @property
    def key(self) -> str:
        """The weekly preference it matches, as the request form names them (``mon-09:00``)."""
        return f"{WEEKDAY_KEYS[self.day.weekday()]}-{SLOT_TIMES[self.index]:%H:%M}"

    @property
    def local_start(self) -> datetime:
        return self.starts_at.astimezone(ROME)


@lru_cache(maxsize=64)
def national_holidays(year: int, language: str = "it") -> Mapping[date, str]:
    """Italy's national public holidays of ``year``, named in ``language`` (it or en)."""
    found = holidays.country_holidays(
        "IT", years=year, language="it_IT" if language == "it" else "en_US"
    )
    return dict(found.items())


class Calendar:
    """Which days have slots, and the slots themselves. ``closures`` are the extra days off."""

    def __init__(
        self,
        closures: Mapping[date, str] | None = None,
        *,
        length: timedelta = DEFAULT_LENGTH,
        language: str = "it",
    ) -> None:
        self.closures = dict(closures or {})
        self.length = length
        self.language = language

    def day_off(self, day: date) -> str | None:
        """Why ``day`` has no slots (a holiday's or closure's name, or the weekend), else None."""
        if day in self.closures:
            return self.closures[day]
        name = national_holidays(day.year, self.language).get(day)
        if name:
            return name
        if day.weekday() >= 5:
            return "weekend"
        return None

    def is_working_day(self, day: date) -> bool:
        return self.day_off(day) is None

    def slots_of(self, day: date) -> list[Slot]:
        if not self.is_working_day(day):
            return []
        return [self._slot(day, i) for i in range(len(SLOT_TIMES))]

    def _slot(self, day: date, index: int) -> Slot:
        local = datetime.combine(day, SLOT_TIMES[index], ROME)
        start = local.astimezone(UTC)
        # The end is 90 minutes of real time later (no slot spans a clock change: they are
        # changed at night).
        return Slot(start, start + self.length, day, index)

    def days(self, first: date, last: date) -> Iterator[date]:
        day = first
        while day <= last:
            yield day
            day += timedelta(days=1)

    def slots(self, first: date, last: date) -> list[Slot]:
        """Every slot from ``first`` to ``last`` (both included), in time order."""
        return [s for day in self.days(first, last) for s in self.slots_of(day)]

    def slot_at(self, starts_at: datetime) -> Slot | None:
        """The slot starting at ``starts_at`` (any time zone), or None when there is none."""
        local = starts_at.astimezone(ROME)
        for slot in self.slots_of(local.date()):
            if slot.starts_at == starts_at.astimezone(UTC):
                return slot
        return None

    def add_working_days(self, day: date, count: int) -> date:
        """The working day ``count`` working days after ``day`` (minimum notice)."""
        found = 0
        while found < count:
            day += timedelta(days=1)
            if self.is_working_day(day):
                found += 1
        return day
