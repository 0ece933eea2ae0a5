"""The resources meetings are booked against: when each conciliator works (weekdays and a daily
limit), the days they are away, and how many meetings a company attends in parallel.

An edit never leaves a booked meeting outside the rules: removing a working weekday that still
has meetings, lowering a daily limit or a company's capacity below what some day or slot holds,
or an absence on a day with meetings is refused, saying how many meetings must be moved first.

Locking: an edit takes the conciliator's account row (or the company's row) ``FOR UPDATE``
before it reads the meetings; a booking takes the same row ``FOR SHARE`` before its checks
(``Bookings._check_conciliator``, ``Bookings._free_seat``). Whichever comes second waits for
the first to commit and then reads what it wrote, so an absence and a booking on the same day
cannot both succeed. Bookings do not wait for each other on these rows. (SQLite ignores row
locks; it is the one-process setup, where one writer at a time is the database's own rule.)
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from cases.accounts import Account, Role, Status
from cases.casefile import Case
from cases.companies import Company
from core.clock import ROME, Clock
from core.db import Database
from core.errors import ErrorCode, FieldErrors, UserError
from scheduling.bookings import (
    Absence,
    CompanyCapacity,
    CompanySeat,
    ConciliatorProfile,
    Meeting,
    MeetingStatus,
)

WEEKDAYS = frozenset(range(5))  # Monday (0) to Friday (4): the days with slots
DEFAULT_MAX_PER_DAY = 4
MAX_PER_DAY = 6  # the six slots of a day
DEFAULT_CAPACITY = 1
MAX_CAPACITY = 10
MAX_ABSENCE_DAYS = 60  # calendar days from the first to the last of one absence
ARRANGERS = frozenset({Role.ADMIN, Role.SCHEDULER})
LISTED_DAYS = 5  # days or slots named in a refusal; the count says how many in all


@dataclass(frozen=True)
class ConciliatorResources:
    """A conciliator with their working days, daily limit, absences from today on and the
    number of scheduled meetings still to come."""

    account: Account
    weekdays: frozenset[int]
    max_per_day: int
    absences: tuple[date, ...]
    upcoming: int


@dataclass(frozen=True)
class CompanyResources:
    """A company and how many of its meetings may share a slot."""

    company: Company
    per_slot: int


@dataclass(frozen=True)
class AgendaEntry:
    """One meeting of a conciliator's agenda, with what they need to know about the case."""

    meeting: Meeting
    case_code: str
    customer_name: str
    delegate_name: str | None
    company_name: str

    @property
    def day(self) -> date:
        return self.meeting.starts_at.astimezone(ROME).date()


def rome_day(moment: datetime) -> date:
    return moment.astimezone(ROME).date()


def day_start(day: date) -> datetime:
    """Midnight of ``day`` in Rome (as an aware datetime)."""
    return datetime.combine(day, time(), ROME)


def named_days(days: Iterable[date]) -> str:
    """Some days for a message (dd/mm/yyyy, the first few, then an ellipsis)."""
    ordered = sorted(set(days))
    shown = ", ".join(d.strftime("%d/%m/%Y") for d in ordered[:LISTED_DAYS])
    return shown + (", …" if len(ordered) > LISTED_DAYS else "")


def named_slots(starts: Iterable[datetime]) -> str:
    ordered = sorted(set(starts))
    shown = ", ".join(s.astimezone(ROME).strftime("%d/%m/%Y %H:%M") for s in ordered[:LISTED_DAYS])
    return shown + (", …" if len(ordered) > LISTED_DAYS else "")


def _whole_number(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 3:
        return int(value.strip())
    return None


def check_profile(weekdays: Iterable[object], max_per_day: object) -> tuple[frozenset[int], int]:
    """Working weekdays (0 = Monday … 4 = Friday, at least one) and a daily limit of 1 to 6."""
    errors: dict[str, list[ErrorCode]] = {}
    chosen = [_whole_number(d) for d in weekdays]
    if not chosen:
        errors["weekdays"] = [ErrorCode.REQUIRED]
    elif any(d is None or d not in WEEKDAYS for d in chosen):
        errors["weekdays"] = [ErrorCode.INVALID_CHOICE]
    limit = _whole_number(max_per_day)
    if limit is None or not 1 <= limit <= MAX_PER_DAY:
        errors["max_per_day"] = [ErrorCode.DAILY_LIMIT_RANGE]
    if errors:
        raise FieldErrors(errors)
    assert limit is not None
    return frozenset(d for d in chosen if d is not None), limit


def check_capacity(per_slot: object) -> int:
    value = _whole_number(per_slot)
    if value is None or not 1 <= value <= MAX_CAPACITY:
        raise FieldErrors({"per_slot": [ErrorCode.CAPACITY_RANGE]})
    return value


def _day(value: date | str | None, name: str, errors: dict[str, list[ErrorCode]]) -> date | None:
    if isinstance(value, date):
        return value
    try:
        day = date.fromisoformat(value) if value else None
    except ValueError:
        day = None
    if day is None or not 2000 <= day.year <= 2999:
        errors[name] = [ErrorCode.REQUIRED if not value else ErrorCode.DATE_INVALID]
        return None
    return day


def check_absence_days(
    first: date | str | None, last: date | str | None, today: date
) -> list[date]:
    """The weekdays from ``first`` to ``last`` (inclusive; ``last`` empty: one day), which must
    not have passed and span at most ``MAX_ABSENCE_DAYS`` days. Weekends are skipped; a span
    with no weekday in it is refused."""
    errors: dict[str, list[ErrorCode]] = {}
    start = _day(first, "first_day", errors)
    end = _day(last, "last_day", errors) if last else start
    if start is not None and start < today:
        errors["first_day"] = [ErrorCode.DAY_PAST]
    if start is not None and end is not None and end < start and "last_day" not in errors:
        errors["last_day"] = [ErrorCode.DAYS_BACKWARDS]
    if errors:
        raise FieldErrors(errors)
    assert start is not None and end is not None
    if (end - start).days + 1 > MAX_ABSENCE_DAYS:
        raise UserError(ErrorCode.ABSENCE_TOO_LONG, limit=MAX_ABSENCE_DAYS)
    days = [
        start + timedelta(days=i)
        for i in range((end - start).days + 1)
        if (start + timedelta(days=i)).weekday() in WEEKDAYS
    ]
    if not days:
        raise FieldErrors({"first_day": [ErrorCode.ABSENCE_ON_WEEKEND]})
    return days


class Resources:
    """Conciliators' working days, daily limits and absences; companies' capacity."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def today(self) -> date:
        return rome_day(self.clock.now())

    # -- who may -----------------------------------------------------------------------

    @staticmethod
    def _arranger(actor: Account) -> None:
        if actor.role not in ARRANGERS:
            raise UserError(ErrorCode.FORBIDDEN)

    @staticmethod
    def _for_absences(actor: Account, conciliator_id: uuid.UUID) -> None:
        """Arrangers for anyone; a conciliator for themself only."""
        if actor.role in ARRANGERS:
            return
        if actor.role == Role.CONCILIATOR and actor.id == conciliator_id:
            return
        raise UserError(ErrorCode.FORBIDDEN)

    # -- reading -----------------------------------------------------------------------

    async def conciliators(self, actor: Account) -> list[ConciliatorResources]:
        """Every active conciliator, by name, with their resources (for arrangers)."""
        self._arranger(actor)
        async with self.db.session() as session:
            people = list(
                await session.scalars(
                    select(Account)
                    .where(Account.role == Role.CONCILIATOR, Account.status == Status.ACTIVE)
                    .order_by(Account.last_name, Account.first_name, Account.id)
                )
            )
            return await self._resources_of(session, people)

    async def conciliator(self, actor: Account, conciliator_id: uuid.UUID) -> ConciliatorResources:
        """One conciliator's resources: for arrangers, or the conciliator themself."""
        self._for_absences(actor, conciliator_id)
        async with self.db.session() as session:
            account = await self._active_conciliator(session, conciliator_id)
            return (await self._resources_of(session, [account]))[0]

    async def _resources_of(
        self, session: AsyncSession, people: list[Account]
    ) -> list[ConciliatorResources]:
        ids = [a.id for a in people]
        if not ids:
            return []
        now = self.clock.now()
        profiles = {
            p.account_id: p
            for p in await session.scalars(
                select(ConciliatorProfile).where(ConciliatorProfile.account_id.in_(ids))
            )
        }
        away: dict[uuid.UUID, list[date]] = defaultdict(list)
        for absence in await session.scalars(
            select(Absence)
            .where(Absence.account_id.in_(ids), Absence.day >= rome_day(now))
            .order_by(Absence.day)
        ):
            away[absence.account_id].append(absence.day)
        counted = await session.execute(
            select(Meeting.conciliator_id, func.count())
            .where(
                Meeting.conciliator_id.in_(ids),
                Meeting.status == MeetingStatus.SCHEDULED,
                Meeting.starts_at >= now,
            )
            .group_by(Meeting.conciliator_id)
        )
        upcoming: dict[uuid.UUID, int] = dict(counted.all())
        found = []
        for account in people:
            profile = profiles.get(account.id)
            found.append(
                ConciliatorResources(
                    account=account,
                    weekdays=profile.weekdays if profile else WEEKDAYS,
                    max_per_day=profile.max_per_day if profile else DEFAULT_MAX_PER_DAY,
                    absences=tuple(away[account.id]),
                    upcoming=upcoming.get(account.id, 0),
                )
            )
        return found

    async def capacities(self, actor: Account) -> list[CompanyResources]:
        """Every company, by name, with its capacity (for arrangers)."""
        self._arranger(actor)
        async with self.db.session() as session:
            rows = await session.execute(
                select(Company, CompanyCapacity.per_slot)
                .outerjoin(CompanyCapacity, CompanyCapacity.company_id == Company.id)
                .order_by(Company.name, Company.id)
            )
            return [
                CompanyResources(company, per_slot or DEFAULT_CAPACITY)
                for company, per_slot in rows.all()
            ]

    async def agenda(self, actor: Account, first: date, last: date) -> list[AgendaEntry]:
        """The conciliator's own scheduled meetings from ``first`` to ``last`` (Rome days)."""
        if actor.role != Role.CONCILIATOR:
            raise UserError(ErrorCode.FORBIDDEN)
        delegate = aliased(Account)
        async with self.db.session() as session:
            rows = await session.execute(
                select(Meeting, Case.code, Case.customer_name, Company.name, delegate)
                .join(Case, Case.id == Meeting.case_id)
                .join(Company, Company.id == Meeting.company_id)
                .outerjoin(delegate, delegate.id == Case.delegate_id)
                .where(
                    Meeting.conciliator_id == actor.id,
                    Meeting.status == MeetingStatus.SCHEDULED,
                    Meeting.starts_at >= day_start(first),
                    Meeting.starts_at < day_start(last + timedelta(days=1)),
                )
                .order_by(Meeting.starts_at, Meeting.id)
            )
            return [
                AgendaEntry(
                    meeting=meeting,
                    case_code=code or "",
                    customer_name=customer or "",
                    delegate_name=agent.full_name if agent is not None else None,
                    company_name=company,
                )
                for meeting, code, customer, company, agent in rows.all()
            ]

    # -- changing ----------------------------------------------------------------------

    async def _active_conciliator(
        self, session: AsyncSession, conciliator_id: uuid.UUID, *, lock: bool = False
    ) -> Account:
        """The active conciliator with this id (locked ``FOR UPDATE`` when asked: see the
        module's note), else ``NOT_FOUND``."""
        account = await session.get(Account, conciliator_id, with_for_update=lock or None)
        if account is None or account.role != Role.CONCILIATOR or account.status != Status.ACTIVE:
            raise UserError(ErrorCode.NOT_FOUND)
        return account

    async def _meeting_starts(
        self,
        session: AsyncSession,
        conciliator_id: uuid.UUID,
        since: datetime,
        before: datetime | None = None,
    ) -> list[datetime]:
        """When the conciliator's scheduled meetings from ``since`` (to ``before``) start."""
        query = select(Meeting.starts_at).where(
            Meeting.conciliator_id == conciliator_id,
            Meeting.status == MeetingStatus.SCHEDULED,
            Meeting.starts_at >= since,
        )
        if before is not None:
            query = query.where(Meeting.starts_at < before)
        return list(await session.scalars(query))

    async def do_set_profile(
        self,
        actor: Account,
        conciliator_id: uuid.UUID,
        weekdays: Iterable[int | str],
        max_per_day: int | str,
    ) -> ConciliatorResources:
        """Set the conciliator's working weekdays and daily limit (admins and schedulers).

        Refused while a scheduled meeting to come falls on a weekday left out, or a day holds
        more meetings than the new limit: the error says how many must be moved first."""
        self._arranger(actor)
        days, limit = check_profile(weekdays, max_per_day)
        async with self.db.session() as session:
            account = await self._active_conciliator(session, conciliator_id, lock=True)
            starts = await self._meeting_starts(session, conciliator_id, self.clock.now())
            off = [s for s in starts if rome_day(s).weekday() not in days]
            if off:
                raise UserError(
                    ErrorCode.WEEKDAY_HAS_MEETINGS,
                    count=len(off),
                    days=named_days(rome_day(s) for s in off),
                )
            per_day = Counter(rome_day(s) for s in starts)
            over = {day: n - limit for day, n in per_day.items() if n > limit}
            if over:
                raise UserError(
                    ErrorCode.DAILY_LIMIT_BELOW_BOOKED,
                    count=sum(over.values()),
                    days=named_days(over),
                )
            profile = await session.get(ConciliatorProfile, conciliator_id)
            if profile is None:
                profile = ConciliatorProfile(account_id=conciliator_id)
                session.add(profile)
            profile.working_weekdays = ",".join(str(d) for d in sorted(days))
            profile.max_per_day = limit
            try:
                await session.commit()
            except IntegrityError:
                # Another edit created the profile at the same moment (SQLite only: on
                # PostgreSQL the account's lock makes them take turns).
                raise UserError(ErrorCode.CONFLICT) from None
            return (await self._resources_of(session, [account]))[0]

    async def do_add_absence(
        self,
        actor: Account,
        conciliator_id: uuid.UUID,
        first: date | str | None,
        last: date | str | None = None,
    ) -> list[date]:
        """Record the conciliator away on ``first`` (through ``last``: each weekday of the span,
        at most ``MAX_ABSENCE_DAYS`` days), all the days or none. Arrangers for anyone, a
        conciliator for themself. Refused for a past day, a day already recorded, or a day with
        the conciliator's meetings (the error says how many must be moved first)."""
        self._for_absences(actor, conciliator_id)
        days = check_absence_days(first, last, self.today())
        async with self.db.session() as session:
            await self._active_conciliator(session, conciliator_id, lock=True)
            known = set(
                await session.scalars(
                    select(Absence.day).where(
                        Absence.account_id == conciliator_id, Absence.day.in_(days)
                    )
                )
            )
            if known:
                raise UserError(ErrorCode.ABSENCE_EXISTS, days=named_days(known))
            wanted = set(days)
            since = max(self.clock.now(), day_start(days[0]))
            starts = await self._meeting_starts(
                session, conciliator_id, since, day_start(days[-1] + timedelta(days=1))
            )
            clashes = [s for s in starts if rome_day(s) in wanted]
            if clashes:
                raise UserError(
                    ErrorCode.ABSENCE_HAS_MEETINGS,
                    count=len(clashes),
                    days=named_days(rome_day(s) for s in clashes),
                )
            session.add_all(Absence(account_id=conciliator_id, day=day) for day in days)
            try:
                await session.commit()
            except IntegrityError:
                # The unique (conciliator, day) constraint: someone recorded one meanwhile.
                raise UserError(ErrorCode.ABSENCE_EXISTS, days=named_days(days)) from None
        return days

    async def do_remove_absence(self, actor: Account, conciliator_id: uuid.UUID, day: date) -> None:
        """Remove the conciliator's absence on ``day`` (today or later)."""
        self._for_absences(actor, conciliator_id)
        if day < self.today():
            raise UserError(ErrorCode.DAY_PAST)
        async with self.db.session() as session:
            await self._active_conciliator(session, conciliator_id, lock=True)
            removed = await session.execute(
                delete(Absence).where(Absence.account_id == conciliator_id, Absence.day == day)
            )
            if not getattr(removed, "rowcount", 0):
                raise UserError(ErrorCode.NOT_FOUND)
            await session.commit()

    async def do_set_capacity(
        self, actor: Account, company_id: uuid.UUID, per_slot: int | str
    ) -> int:
        """Set how many of the company's meetings may share a slot (1 to 10; admins and
        schedulers). Refused below what a slot to come already holds, saying how many of its
        meetings must be moved first."""
        self._arranger(actor)
        limit = check_capacity(per_slot)
        async with self.db.session() as session:
            company = await session.get(Company, company_id, with_for_update=True)
            if company is None:
                raise UserError(ErrorCode.NOT_FOUND)
            held = (
                await session.execute(
                    select(CompanySeat.starts_at, func.count())
                    .where(
                        CompanySeat.company_id == company_id,
                        CompanySeat.starts_at >= self.clock.now(),
                    )
                    .group_by(CompanySeat.starts_at)
                )
            ).all()
            over = {starts: n - limit for starts, n in held if n > limit}
            if over:
                raise UserError(
                    ErrorCode.CAPACITY_BELOW_BOOKED,
                    count=sum(over.values()),
                    slots=named_slots(over),
                )
            capacity = await session.get(CompanyCapacity, company_id)
            if capacity is None:
                session.add(CompanyCapacity(company_id=company_id, per_slot=limit))
            else:
                capacity.per_slot = limit
            try:
                await session.commit()
            except IntegrityError:
                raise UserError(ErrorCode.CONFLICT) from None
        return limit
