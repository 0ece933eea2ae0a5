"""The scheduler's pages: the week's calendar, the queue of cases waiting for a slot, the
automatic allocation's preview and its commit."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import select

from cases.accounts import Account, Role, Status
from cases.casefile import Case
from cases.companies import Company
from cases.lifecycle import CaseStatus
from core.clock import ROME
from core.errors import ErrorCode, UserError
from scheduling.bookings import Closure, Meeting, MeetingStatus
from scheduling.calendar import SLOT_TIMES, national_holidays
from scheduling.planner import STAGES, ProposalStatus
from web import labels
from web.context import render, require, services
from web.forms import form_data
from web.streams import parse_id

routes = web.RouteTableDef()
SCHEDULERS = (Role.SCHEDULER,)


def week_of(value: str | None, today: date) -> date:
    """The Monday of the asked week (``?week=YYYY-MM-DD``), else of this week."""
    try:
        day = date.fromisoformat(value) if value else today
    except ValueError:
        raise UserError(ErrorCode.BAD_REQUEST) from None
    if not 2000 <= day.year <= 2999:
        raise UserError(ErrorCode.BAD_REQUEST)
    return day - timedelta(days=day.weekday())


@routes.get("/schedule")
async def schedule_page(request: web.Request) -> web.StreamResponse:
    require(request, SCHEDULERS)
    svc = services(request)
    today = svc.clock.now().astimezone(ROME).date()
    monday = week_of(request.query.get("week"), today)
    friday = monday + timedelta(days=4)
    async with svc.db.session() as session:
        calendar = await svc.bookings.calendar(session)
        start = datetime.combine(monday, datetime.min.time(), ROME)
        meetings = list(
            await session.scalars(
                select(Meeting).where(
                    Meeting.status == MeetingStatus.SCHEDULED,
                    Meeting.starts_at >= start,
                    Meeting.starts_at < start + timedelta(days=5),
                )
            )
        )
        conciliators = {
            a.id: a
            for a in await session.scalars(
                select(Account).where(
                    Account.role == Role.CONCILIATOR, Account.status == Status.ACTIVE
                )
            )
        }
        waiting = list(
            await session.scalars(
                select(Case).where(Case.status == CaseStatus.ADMITTED).order_by(Case.submitted_at)
            )
        )
        codes = {
            c.id: c.code
            for c in await session.scalars(
                select(Case).where(Case.id.in_([m.case_id for m in meetings]))
            )
        }
        companies = {c.id: c.name for c in await session.scalars(select(Company))}
        windows = await svc.bookings.windows(session, waiting, calendar)
        queue: list[dict[str, Any]] = [
            {
                "case": case,
                "earliest": windows[case.id].earliest,
                "deadline": windows[case.id].deadline,
            }
            for case in waiting
        ]
    queue.sort(key=lambda row: (row["deadline"], row["case"].code or ""))
    days = [monday + timedelta(days=i) for i in range(5)]
    grid: dict[tuple[date, int], list[Meeting]] = {}
    for meeting in meetings:
        slot = calendar.slot_at(meeting.starts_at)
        if slot is not None:
            grid.setdefault((slot.day, slot.index), []).append(meeting)
    return render(
        request,
        "schedule.html",
        monday=monday,
        friday=friday,
        previous=(monday - timedelta(days=7)).isoformat(),
        following=(monday + timedelta(days=7)).isoformat(),
        days=[(d, calendar.day_off(d)) for d in days],
        times=[t.strftime("%H:%M") for t in SLOT_TIMES],
        grid=grid,
        conciliators=conciliators,
        codes=codes,
        companies=companies,
        queue=queue,
        weekday_names=list(labels.WEEKDAY.values()),
        committed=request.query.get("committed") == "1",
    )


@routes.post("/schedule/proposals")
async def propose(request: web.Request) -> web.StreamResponse:
    account = require(request, SCHEDULERS)
    planner = services(request).planner
    proposal = await planner.do_begin(account)
    planner.start(proposal)
    raise web.HTTPSeeOther(f"/schedule/proposals/{proposal.id}")


async def _proposal_page(
    request: web.Request, proposal_id: uuid.UUID, *, status: int = 200, error: str = ""
) -> web.Response:
    account = require(request, SCHEDULERS)
    svc = services(request)
    proposal = await svc.planner.get(account, proposal_id)
    body = proposal.body
    if proposal.status in (ProposalStatus.COMPUTING, ProposalStatus.FAILED):
        return render(
            request,
            "schedule_progress.html",
            proposal=proposal,
            stages=STAGES,
            stage=int(body.get("stage", 0)),
        )
    ids = [uuid.UUID(c) for c, _s, _k in body["placements"]] + [
        uuid.UUID(c) for c in body["unplaced"]
    ]
    async with svc.db.session() as session:
        cases = (
            {c.id: c for c in await session.scalars(select(Case).where(Case.id.in_(ids)))}
            if ids
            else {}
        )
        people = {
            a.id: a
            for a in await session.scalars(select(Account).where(Account.role == Role.CONCILIATOR))
        }
    rows = [
        {
            "case": cases.get(uuid.UUID(case_id)),
            "when": datetime.fromisoformat(starts_at)
            .astimezone(ROME)
            .strftime("%a %d/%m/%Y %H:%M"),
            "conciliator": people.get(uuid.UUID(who)),
        }
        for case_id, starts_at, who in body["placements"]
    ]
    unplaced = [
        {"case": cases.get(uuid.UUID(case_id)), "reason": reason}
        for case_id, reason in body["unplaced"].items()
    ]
    return render(
        request,
        "schedule_proposal.html",
        status=status,
        proposal=proposal,
        rows=rows,
        unplaced=unplaced,
        score=body["score"],
        error=error,
    )


@routes.get("/schedule/proposals/{proposal_id}")
async def proposal_page(request: web.Request) -> web.StreamResponse:
    return await _proposal_page(request, parse_id(request.match_info["proposal_id"]))


@routes.post("/schedule/proposals/{proposal_id}/commit")
async def proposal_commit(request: web.Request) -> web.StreamResponse:
    account = require(request, SCHEDULERS)
    proposal_id = parse_id(request.match_info["proposal_id"])
    try:
        await services(request).planner.do_commit(account, proposal_id)
    except UserError as exc:
        if exc.code != ErrorCode.PROPOSAL_STALE:
            raise
        return await _proposal_page(request, proposal_id, status=409, error=exc.code.value)
    raise web.HTTPSeeOther("/schedule?committed=1")


@routes.post("/schedule/proposals/{proposal_id}/discard")
async def proposal_discard(request: web.Request) -> web.StreamResponse:
    account = require(request, SCHEDULERS)
    await services(request).planner.do_discard(account, parse_id(request.match_info["proposal_id"]))
    raise web.HTTPSeeOther("/schedule")


def _slot_start(form: dict[str, str]) -> datetime:
    """The start chosen in a booking form (a date and one of the six times, Rome's time)."""
    try:
        day = date.fromisoformat(form.get("day", ""))
        hour, minute = (int(part) for part in form.get("time", "").split(":"))
        return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ROME)
    except ValueError:
        raise UserError(ErrorCode.SLOT_NOT_AVAILABLE, reason="") from None


@routes.post("/cases/{case_id}/meeting")
async def book_meeting(request: web.Request) -> web.StreamResponse:
    """Assign (or, with ``meeting``, move) the case's meeting by hand."""
    account = require(request, SCHEDULERS)
    case_id = parse_id(request.match_info["case_id"])
    form = await form_data(request)
    starts_at = _slot_start(form)
    conciliator = parse_id(form.get("conciliator", ""))
    bookings = services(request).bookings
    if form.get("meeting"):
        await bookings.do_move(account, parse_id(form["meeting"]), starts_at, conciliator)
    else:
        await bookings.do_book(account, case_id, starts_at, conciliator)
    raise web.HTTPSeeOther(f"/cases/{case_id}")


@routes.post("/cases/{case_id}/meeting/hold")
async def hold_meeting(request: web.Request) -> web.StreamResponse:
    """The meeting's conciliator records that it is taking place."""
    account = require(request, (Role.CONCILIATOR,))
    case_id = parse_id(request.match_info["case_id"])
    form = await form_data(request)
    await services(request).bookings.do_hold(account, parse_id(form.get("meeting", "")))
    raise web.HTTPSeeOther(f"/cases/{case_id}")


@routes.post("/cases/{case_id}/adjourn")
async def adjourn(request: web.Request) -> web.StreamResponse:
    """Adjourn the held meeting and book its continuation (in the slot given, else the best
    free one with the same conciliator)."""
    account = require(request, (Role.CONCILIATOR, Role.SCHEDULER))
    case_id = parse_id(request.match_info["case_id"])
    form = await form_data(request)
    starts_at = _slot_start(form) if form.get("day") else None
    conciliator = parse_id(form["conciliator"]) if starts_at and form.get("conciliator") else None
    await services(request).planner.do_adjourn(
        account,
        case_id,
        starts_at=starts_at,
        conciliator_id=conciliator,
        note=form.get("note", "").strip()[:2000] or None,
    )
    raise web.HTTPSeeOther(f"/cases/{case_id}")


@routes.post("/cases/{case_id}/extend")
async def extend(request: web.Request) -> web.StreamResponse:
    """Extend the procedure once, with the reason (both parties are told)."""
    account = require(request, (Role.CONCILIATOR, Role.SCHEDULER))
    case_id = parse_id(request.match_info["case_id"])
    form = await form_data(request)
    await services(request).bookings.do_extend(account, case_id, form.get("reason", ""))
    raise web.HTTPSeeOther(f"/cases/{case_id}")


@routes.post("/cases/{case_id}/meeting/cancel")
async def cancel_meeting(request: web.Request) -> web.StreamResponse:
    account = require(request, SCHEDULERS)
    case_id = parse_id(request.match_info["case_id"])
    form = await form_data(request)
    await services(request).bookings.do_cancel(
        account, parse_id(form.get("meeting", "")), form.get("note", "").strip()[:2000] or None
    )
    raise web.HTTPSeeOther(f"/cases/{case_id}")


@routes.get("/admin/closures")
async def closures_page(request: web.Request) -> web.StreamResponse:
    """Closures (days without meetings besides the national holidays), and those holidays."""
    require(request, (Role.ADMIN,))
    return await _closures(request)


async def _closures(request: web.Request, *, status: int = 200, error: str = "") -> web.Response:
    svc = services(request)
    year = svc.clock.now().astimezone(ROME).year
    async with svc.db.session() as session:
        closures = list(await session.scalars(select(Closure).order_by(Closure.day)))
    holidays = sorted((*national_holidays(year).items(), *national_holidays(year + 1).items()))
    return render(
        request, "closures.html", status=status, closures=closures, holidays=holidays, error=error
    )


@routes.post("/admin/closures")
async def closures_add(request: web.Request) -> web.StreamResponse:
    require(request, (Role.ADMIN,))
    form = await form_data(request)
    try:
        day = date.fromisoformat(form.get("day", ""))
    except ValueError:
        return await _closures(request, status=422, error=ErrorCode.DATE_INVALID.value)
    try:
        await services(request).bookings.do_add_closure(day, form.get("name", ""))
    except UserError as exc:
        return await _closures(request, status=422, error=exc.code.value)
    raise web.HTTPSeeOther("/admin/closures")


@routes.post("/admin/closures/{day}/delete")
async def closures_delete(request: web.Request) -> web.StreamResponse:
    require(request, (Role.ADMIN,))
    try:
        day = date.fromisoformat(request.match_info["day"])
    except ValueError:
        raise UserError(ErrorCode.NOT_FOUND) from None
    await services(request).bookings.do_remove_closure(day)
    raise web.HTTPSeeOther("/admin/closures")
