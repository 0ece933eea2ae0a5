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
from scheduling.bookings import Meeting, MeetingStatus
from scheduling.calendar import SLOT_TIMES
from web import labels
from web.context import render, require, services
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
        queue: list[dict[str, Any]] = []
        for case in waiting:
            earliest, deadline = await svc.bookings.window(session, case, calendar)
            queue.append({"case": case, "earliest": earliest, "deadline": deadline})
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
    proposal = await services(request).planner.do_propose(account)
    raise web.HTTPSeeOther(f"/schedule/proposals/{proposal.id}")


async def _proposal_page(
    request: web.Request, proposal_id: uuid.UUID, *, status: int = 200, error: str = ""
) -> web.Response:
    account = require(request, SCHEDULERS)
    svc = services(request)
    proposal = await svc.planner.get(account, proposal_id)
    body = proposal.body
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
