"""The meeting's welcome page: what it is, when its room opens, and what each participant needs
(the room itself is reached from here)."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from cases.accounts import Account
from cases.companies import Company
from cases.lifecycle import Actor
from core.i18n import N_
from rooms.models import Room
from scheduling.bookings import MeetingStatus
from signaling.tokens import TOKEN_TTL
from web import labels
from web.context import ctx, render, require, services
from web.streams import parse_id
from web.views.cases import local

routes = web.RouteTableDef()

# What web/static/welcome.js writes about the browser check (translated on the page).
CHECK_TEXT: dict[str, str] = {
    "websocket_ok": N_("Your browser can connect to the meeting room."),
    "websocket_missing": N_(
        "Your browser cannot open the room's live connection (WebSocket): update it or use"
        " another one (Chrome, Edge, Firefox or Safari)."
    ),
    "secure_ok": N_("The page is served over a secure connection."),
    "secure_missing": N_(
        "This page is not served over a secure connection (HTTPS): the browser will not allow"
        " the camera and the microphone here."
    ),
    "media_asking": N_("Your browser is asking your permission to use the camera and microphone…"),
    "media_ok": N_(
        "The camera and the microphone work: %(devices)s. You should see yourself below."
    ),
    "media_denied": N_(
        "You did not allow the camera and the microphone. Allow them for this site in the"
        " browser's settings (the icon next to the address), then try again."
    ),
    "media_missing": N_("No camera or microphone was found: connect them and try again."),
    "media_busy": N_(
        "The camera or the microphone is in use by another program: close it and try again."
    ),
    "media_unavailable": N_(
        "This browser cannot use a camera or a microphone on this page: update it or use"
        " another one."
    ),
    "media_failed": N_(
        "The check did not work (%(reason)s): try again, or write to the help desk."
    ),
    "media_stopped": N_("The check is over: the camera and the microphone are off again."),
}


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
        room = await session.get(Room, meeting.id)
    rules = svc.bookings.rules
    now = svc.clock.now()
    if meeting.status == MeetingStatus.CANCELLED:
        state = "cancelled"
    elif meeting.status == MeetingStatus.SCHEDULED and now < rules.room_opens(meeting):
        state = "not_yet"
    elif room is not None and room.ended_at is not None:
        state = "over"  # the conciliator closed it
    elif rules.room_open(meeting, now) or (
        # The conciliator may come back to a room they opened to close it, however late.
        actor == Actor.CONCILIATOR and room is not None and room.opened_at is not None
    ):
        state = "open"
    else:
        state = "over"
    gettext = ctx(request).gettext
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
        check_text={key: gettext(value) for key, value in CHECK_TEXT.items()},
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
