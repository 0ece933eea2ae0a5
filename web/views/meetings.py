"""The meeting's welcome page: what it is, when its room opens, and what each participant needs
(the room itself is reached from here)."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from cases.accounts import Account
from cases.companies import Company
from scheduling.bookings import MeetingStatus
from signaling.tokens import TOKEN_TTL
from web import labels
from web.context import render, require, services
from web.streams import parse_id
from web.views.cases import local

routes = web.RouteTableDef()


@routes.get("/meetings/{meeting_id}")
async def welcome(request: web.Request) -> web.StreamResponse:
    account = require(request)
    svc = services(request)
    meeting, case, actor = await svc.bookings.participation(
        account, parse_id(request.match_info["meeting_id"])
    )
    async with svc.db.session() as session:
        conciliator = await session.get(Account, meeting.conciliator_id)
        company = await session.scalar(select(Company).where(Company.id == meeting.company_id))
    rules = svc.bookings.rules
    now = svc.clock.now()
    if meeting.status == MeetingStatus.CANCELLED:
        state = "cancelled"
    elif meeting.status == MeetingStatus.SCHEDULED and now < rules.room_opens(meeting):
        state = "not_yet"
    elif rules.room_open(meeting, now):
        state = "open"
    else:
        state = "over"
    return render(
        request,
        "meeting_welcome.html",
        meeting=meeting,
        case=case,
        actor=actor.value,
        conciliator=conciliator,
        company=company,
        state=state,
        labels=labels,
        local=local,
        room_opens=rules.room_opens(meeting),
        room_opens_minutes=rules.room_opens_minutes,
    )


@routes.get("/meetings/{meeting_id}/token")
async def room_token(request: web.Request) -> web.StreamResponse:
    """A short-lived room token for the signed-in participant (the room's page asks for one
    before each connection); JSON, same origin only."""
    account = require(request)
    svc = services(request)
    meeting, _case, _actor = await svc.bookings.participation(
        account, parse_id(request.match_info["meeting_id"])
    )
    token = svc.room_tokens.issue(meeting.id, account.id, svc.clock.now())
    return web.json_response(
        {"token": token, "expires_in": int(TOKEN_TTL.total_seconds())},
        headers={"Cache-Control": "no-store"},
    )
