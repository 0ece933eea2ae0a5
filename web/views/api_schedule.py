"""The JSON API for scheduling (``/api/v1``): meetings, a case's window and meeting, booking by
hand, holding, adjourning and extending, and the automatic allocation's proposals.

The same domain operations as the scheduler's pages and the case file, with the same rules.
Who sees a meeting is decided on the server's rows: a scheduler every one, a conciliator their
own, a party those of their cases (only the delegate on a delegated case); anyone else gets
``not_found``, as for an id that does not exist. Bodies are checked field by field before
anything is done: a wrong field is a 422 naming it in ``error.fields``; a refusal of the domain
keeps its code and its parameters (``error.params``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cases.accounts import Account, Role
from cases.casefile import Case, visible_to
from cases.helpdesk import clean_text
from core.clock import ROME
from core.errors import ErrorCode, FieldErrors, UserError
from scheduling.bookings import EXTENDABLE, Meeting, MeetingStatus, Rules, Window
from scheduling.planner import STAGES, Proposal
from web.context import require, services
from web.forms import json_object
from web.services import Services
from web.streams import parse_id
from web.views.cases import case_id_of

routes = web.RouteTableDef()
SCHEDULERS = (Role.SCHEDULER,)
MEETING_STAFF = (Role.CONCILIATOR, Role.SCHEDULER)
MAX_DAYS = 62  # the longest period a list of meetings covers
REASON_MAX = 500  # an extension's reason (what the parties are told)
NOTE_MAX = 2000  # a note in the timeline (an adjournment, a cancellation)
YEARS = range(2000, 3000)
# What the list shows unless asked: the meetings on the calendar, not the cancelled ones.
LISTED = (MeetingStatus.SCHEDULED, MeetingStatus.HELD)
# What may be asked for ("moving" exists only inside the transaction that moves a meeting).
SHOWN = frozenset({*LISTED, MeetingStatus.CANCELLED})
ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


# ---- reading what clients send ---------------------------------------------------------------


class Fields:
    """The fields of a JSON body, each read and checked; every wrong one is collected and
    ``done`` refuses them all at once (422, ``error.fields``). A field not in ``known`` is
    wrong too: a misspelt name is not silently ignored."""

    def __init__(self, body: Mapping[str, Any], known: Collection[str]) -> None:
        self.body = body
        self.errors: dict[str, list[ErrorCode]] = {}
        for name in body:
            if name not in known:
                # Named as sent, within reason: the error is echoed back.
                self.errors[name[:64]] = [ErrorCode.BAD_REQUEST]

    def _wrong(self, name: str, code: ErrorCode) -> None:
        self.errors.setdefault(name, []).append(code)

    def moment(self, name: str, *, required: bool = False) -> datetime | None:
        """A point in time, ISO 8601 with its offset (``2026-12-01T09:00:00+01:00``), in UTC."""
        value = self.body.get(name)
        if value is None:
            if required:
                self._wrong(name, ErrorCode.REQUIRED)
            return None
        if not isinstance(value, str) or len(value) > 64:
            self._wrong(name, ErrorCode.DATE_INVALID)
            return None
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is None or moment.utcoffset() is None or moment.year not in YEARS:
            # Without an offset the time would mean nothing precise.
            self._wrong(name, ErrorCode.DATE_INVALID)
            return None
        return moment.astimezone(UTC)

    def account_id(self, name: str, *, required: bool = False) -> uuid.UUID | None:
        value = self.body.get(name)
        if value is None:
            if required:
                self._wrong(name, ErrorCode.REQUIRED)
            return None
        try:
            if not isinstance(value, str) or len(value) > 64:
                raise ValueError(value)
            return uuid.UUID(value)
        except ValueError:
            self._wrong(name, ErrorCode.INVALID_CHOICE)
            return None

    def text(self, name: str, limit: int, *, required: bool = False) -> str | None:
        """A text as typed (control characters dropped), at most ``limit`` characters."""
        value = self.body.get(name)
        if value is not None and not isinstance(value, str):
            self._wrong(name, ErrorCode.BAD_REQUEST)
            return None
        text = clean_text(value, limit)
        if len(text) > limit:
            self._wrong(name, ErrorCode.TOO_LONG)
        elif not text and required:
            self._wrong(name, ErrorCode.REQUIRED)
        return text or None

    def done(self) -> None:
        if self.errors:
            raise FieldErrors(self.errors)


async def optional_body(request: web.Request) -> dict[str, Any]:
    """A JSON object when the request has a body, else nothing."""
    return await json_object(request) if request.body_exists else {}


def query_day(request: web.Request, name: str, errors: dict[str, list[ErrorCode]]) -> date | None:
    value = request.query.get(name)
    if value is None:
        errors[name] = [ErrorCode.REQUIRED]
        return None
    try:
        day = date.fromisoformat(value) if ISO_DAY.fullmatch(value) else None
    except ValueError:
        day = None
    if day is None or day.year not in YEARS:
        errors[name] = [ErrorCode.DATE_INVALID]
        return None
    return day


def meeting_id_of(request: web.Request) -> uuid.UUID:
    return parse_id(request.match_info["meeting_id"])


def proposal_id_of(request: web.Request) -> uuid.UUID:
    return parse_id(request.match_info["proposal_id"])


# ---- what is sent back -----------------------------------------------------------------------


def utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def full_name(account: Account | None) -> str | None:
    return f"{account.first_name} {account.last_name}" if account is not None else None


def window_json(window: Window) -> dict[str, Any]:
    return {
        "earliest": window.earliest.isoformat(),
        "deadline": window.deadline.isoformat(),
        "procedure_end": window.procedure_end.isoformat(),
        "extended": window.extended,
        "adjourned": window.adjourned,
    }


async def _codes_and_names(
    session: AsyncSession, case_ids: Iterable[uuid.UUID], account_ids: Iterable[uuid.UUID]
) -> tuple[dict[uuid.UUID, str | None], dict[uuid.UUID, Account]]:
    """The cases' codes and the accounts (conciliators), two queries for any number."""
    wanted_cases, wanted_people = set(case_ids), set(account_ids)
    codes: dict[uuid.UUID, str | None] = {}
    people: dict[uuid.UUID, Account] = {}
    if wanted_cases:
        rows = await session.execute(select(Case.id, Case.code).where(Case.id.in_(wanted_cases)))
        codes = {row.id: row.code for row in rows}
    if wanted_people:
        found = await session.scalars(select(Account).where(Account.id.in_(wanted_people)))
        people = {a.id: a for a in found}
    return codes, people


async def describe(
    session: AsyncSession, rules: Rules, meetings: list[Meeting]
) -> list[dict[str, Any]]:
    """The meetings as the API shows them: times in UTC and the local start in Rome, the case's
    code, the conciliator's name, when the room opens."""
    codes, people = await _codes_and_names(
        session, (m.case_id for m in meetings), (m.conciliator_id for m in meetings)
    )
    return [
        {
            "id": str(m.id),
            "case_id": str(m.case_id),
            "case_code": codes.get(m.case_id),
            "starts_at": utc(m.starts_at),
            "ends_at": utc(m.ends_at),
            "local_start": m.starts_at.astimezone(ROME).isoformat(),
            "mode": m.mode,
            "status": m.status,
            "conciliator_id": str(m.conciliator_id),
            "conciliator_name": full_name(people.get(m.conciliator_id)),
            "room_opens_at": utc(rules.room_opens(m)),
        }
        for m in meetings
    ]


async def describe_one(svc: Services, meeting: Meeting | None) -> dict[str, Any] | None:
    if meeting is None:
        return None
    async with svc.db.session() as session:
        return (await describe(session, svc.bookings.rules, [meeting]))[0]


async def proposal_json(svc: Services, proposal: Proposal) -> dict[str, Any]:
    """A proposal: its status and stage while computed; once ready, where each case goes,
    what stays unplaced and why, and the score."""
    body = proposal.body
    ready = "placements" in body
    found: dict[str, Any] = {
        "id": str(proposal.id),
        "status": proposal.status,
        "created_at": utc(proposal.created_at),
        "first": body["first"],
        "last": body["last"],
        "stage": len(STAGES) if ready else int(body.get("stage", 0)),
        "stages": len(STAGES),
        "placements": None,
        "unplaced": None,
        "score": None,
    }
    if not ready:
        return found
    placements: list[list[str]] = body["placements"]
    unplaced: dict[str, str] = body["unplaced"]
    async with svc.db.session() as session:
        codes, people = await _codes_and_names(
            session,
            [uuid.UUID(c) for c, _s, _k in placements] + [uuid.UUID(c) for c in unplaced],
            [uuid.UUID(k) for _c, _s, k in placements],
        )
    found["placements"] = [
        {
            "case_id": case_id,
            "case_code": codes.get(uuid.UUID(case_id)),
            "starts_at": utc(datetime.fromisoformat(starts_at)),
            "local_start": datetime.fromisoformat(starts_at).astimezone(ROME).isoformat(),
            "conciliator_id": who,
            "conciliator_name": full_name(people.get(uuid.UUID(who))),
        }
        for case_id, starts_at, who in placements
    ]
    found["unplaced"] = [
        {"case_id": case_id, "case_code": codes.get(uuid.UUID(case_id)), "reason": reason}
        for case_id, reason in unplaced.items()
    ]
    found["score"] = dict(body["score"])
    return found


# ---- who sees which meetings -----------------------------------------------------------------


def meetings_seen_by(account: Account) -> ColumnElement[bool]:
    """The meetings ``account`` plans or takes part in, as a condition on meetings joined with
    their cases (within the case file's own visibility): every one for a scheduler, their own
    for a conciliator, their cases' for the applicant's side (only the delegate on a delegated
    case) and the company's representatives. Others take part in no meeting: ``FORBIDDEN``."""
    seen = visible_to(account)
    if account.role == Role.SCHEDULER:
        return seen
    if account.role == Role.CONCILIATOR:
        return and_(seen, Meeting.conciliator_id == account.id)
    if account.role in (Role.CUSTOMER, Role.DELEGATE):
        applicant = or_(
            Case.delegate_id == account.id,
            and_(Case.delegate_id.is_(None), Case.customer_id == account.id),
        )
        return and_(seen, applicant)
    if account.role == Role.COMPANY_REP:
        return seen  # the company's cases, never a draft
    raise UserError(ErrorCode.FORBIDDEN)


# ---- meetings --------------------------------------------------------------------------------


@routes.get("/api/v1/meetings")
async def api_meetings(request: web.Request) -> web.StreamResponse:
    account = require(request)
    condition = meetings_seen_by(account)
    errors: dict[str, list[ErrorCode]] = {}
    first, last = query_day(request, "from", errors), query_day(request, "to", errors)
    statuses: Collection[str] = LISTED
    if "status" in request.query:
        statuses = (request.query["status"],)
        if request.query["status"] not in SHOWN:
            errors["status"] = [ErrorCode.INVALID_CHOICE]
    if errors:
        raise FieldErrors(errors)
    assert first is not None and last is not None
    if not 0 <= (last - first).days < MAX_DAYS:
        raise UserError(ErrorCode.PERIOD_INVALID, days=MAX_DAYS)
    start = datetime.combine(first, time(), ROME)
    end = datetime.combine(last + timedelta(days=1), time(), ROME)
    svc = services(request)
    async with svc.db.session() as session:
        meetings = list(
            await session.scalars(
                select(Meeting)
                .join(Case, Case.id == Meeting.case_id)
                .where(
                    condition,
                    Meeting.status.in_(statuses),
                    Meeting.starts_at >= start,
                    Meeting.starts_at < end,
                )
                .order_by(Meeting.starts_at, Meeting.id)
            )
        )
        found = await describe(session, svc.bookings.rules, meetings)
    return web.json_response({"from": first.isoformat(), "to": last.isoformat(), "meetings": found})


@routes.get("/api/v1/meetings/{meeting_id}")
async def api_meeting(request: web.Request) -> web.StreamResponse:
    account = require(request)
    meeting_id = meeting_id_of(request)
    svc = services(request)
    if account.role == Role.SCHEDULER:
        async with svc.db.session() as session:
            meeting = await session.get(Meeting, meeting_id)
        if meeting is None:
            raise UserError(ErrorCode.NOT_FOUND)
    else:
        # Its participants only; anyone else is told it does not exist.
        meeting, _case, _actor = await svc.bookings.participation(account, meeting_id)
    return web.json_response(await describe_one(svc, meeting))


@routes.post("/api/v1/meetings/{meeting_id}/hold")
async def api_hold(request: web.Request) -> web.StreamResponse:
    """The meeting's conciliator records that it is taking place."""
    account = require(request, (Role.CONCILIATOR,))
    svc = services(request)
    meeting = await svc.bookings.do_hold(account, meeting_id_of(request))
    return web.json_response(await describe_one(svc, meeting))


# ---- a case's schedule -----------------------------------------------------------------------


@routes.get("/api/v1/cases/{case_id}/schedule")
async def api_case_schedule(request: web.Request) -> web.StreamResponse:
    """When the case's meeting may take place, and the meeting, for whoever sees the case."""
    account = require(request)
    svc = services(request)
    case, _actor = await svc.files.get_for(account, case_id_of(request))
    async with svc.db.session() as session:
        window = (
            await svc.bookings.window(session, case, await svc.bookings.calendar(session))
            if case.status in EXTENDABLE
            else None
        )
        meeting = await svc.bookings.meeting_of(session, case.id)
        held = await svc.bookings.held_meeting(session, case.id)
        shown = await describe(
            session, svc.bookings.rules, [m for m in (meeting, held) if m is not None]
        )
    return web.json_response(
        {
            "case_id": str(case.id),
            "case_code": case.code,
            "status": case.status,
            "window": window_json(window) if window is not None else None,
            "meeting": shown[0] if meeting is not None else None,
            "held_meeting": shown[-1] if held is not None else None,
        }
    )


@routes.put("/api/v1/cases/{case_id}/meeting")
async def api_book(request: web.Request) -> web.StreamResponse:
    """Book the case's meeting (201), or move it when it has one (200)."""
    account = require(request, SCHEDULERS)
    case_id = case_id_of(request)
    fields = Fields(await json_object(request), ("starts_at", "conciliator_id"))
    starts_at = fields.moment("starts_at", required=True)
    conciliator_id = fields.account_id("conciliator_id", required=True)
    fields.done()
    assert starts_at is not None and conciliator_id is not None
    svc = services(request)
    async with svc.db.session() as session:
        current = await svc.bookings.meeting_of(session, case_id)
    if current is None:
        meeting = await svc.bookings.do_book(account, case_id, starts_at, conciliator_id)
        status = 201
    else:
        meeting = await svc.bookings.do_move(account, current.id, starts_at, conciliator_id)
        status = 200
    return web.json_response(await describe_one(svc, meeting), status=status)


@routes.delete("/api/v1/cases/{case_id}/meeting")
async def api_cancel(request: web.Request) -> web.StreamResponse:
    """Cancel the case's meeting (the reason goes in the timeline); the case waits again."""
    account = require(request, SCHEDULERS)
    case_id = case_id_of(request)
    fields = Fields(await optional_body(request), ("reason",))
    reason = fields.text("reason", NOTE_MAX)
    fields.done()
    svc = services(request)
    case, _actor = await svc.files.get_for(account, case_id)
    async with svc.db.session() as session:
        current = await svc.bookings.meeting_of(session, case.id)
    if current is None:
        raise UserError(ErrorCode.NOT_FOUND, "the case has no scheduled meeting")
    meeting = await svc.bookings.do_cancel(account, current.id, reason)
    return web.json_response(await describe_one(svc, meeting))


@routes.post("/api/v1/cases/{case_id}/adjourn")
async def api_adjourn(request: web.Request) -> web.StreamResponse:
    """Adjourn the held meeting and book its continuation: in the slot given, else the best
    free one (with the same conciliator when possible); ``null`` when the case waits."""
    account = require(request, MEETING_STAFF)
    case_id = case_id_of(request)
    fields = Fields(await optional_body(request), ("starts_at", "conciliator_id", "note"))
    starts_at = fields.moment("starts_at")
    conciliator_id = fields.account_id("conciliator_id")
    note = fields.text("note", NOTE_MAX)
    if conciliator_id is not None and starts_at is None and "starts_at" not in fields.errors:
        fields.errors["starts_at"] = [ErrorCode.REQUIRED]  # a conciliator goes with a slot
    fields.done()
    svc = services(request)
    meeting = await svc.planner.do_adjourn(
        account, case_id, starts_at=starts_at, conciliator_id=conciliator_id, note=note
    )
    return web.json_response({"meeting": await describe_one(svc, meeting)})


@routes.post("/api/v1/cases/{case_id}/extend")
async def api_extend(request: web.Request) -> web.StreamResponse:
    """Extend the procedure once, with the reason both parties are told."""
    account = require(request, MEETING_STAFF)
    case_id = case_id_of(request)
    fields = Fields(await json_object(request), ("reason",))
    reason = fields.text("reason", REASON_MAX, required=True)
    fields.done()
    assert reason is not None
    window = await services(request).bookings.do_extend(account, case_id, reason)
    return web.json_response(window_json(window))


# ---- the automatic allocation ----------------------------------------------------------------


@routes.post("/api/v1/schedule/proposals")
async def api_propose(request: web.Request) -> web.StreamResponse:
    """Start a proposal; it is computed in the background (follow it with GET)."""
    account = require(request, SCHEDULERS)
    svc = services(request)
    proposal = await svc.planner.do_begin(account)
    svc.planner.start(proposal)
    return web.json_response(
        await proposal_json(svc, proposal),
        status=202,
        headers={"Location": f"/api/v1/schedule/proposals/{proposal.id}"},
    )


@routes.get("/api/v1/schedule/proposals/{proposal_id}")
async def api_proposal(request: web.Request) -> web.StreamResponse:
    account = require(request, SCHEDULERS)
    svc = services(request)
    proposal = await svc.planner.get(account, proposal_id_of(request))
    return web.json_response(await proposal_json(svc, proposal))


@routes.post("/api/v1/schedule/proposals/{proposal_id}/commit")
async def api_proposal_commit(request: web.Request) -> web.StreamResponse:
    """Book every meeting of the proposal, or none when it went stale (409)."""
    account = require(request, SCHEDULERS)
    svc = services(request)
    meetings = await svc.planner.do_commit(account, proposal_id_of(request))
    async with svc.db.session() as session:
        booked = await describe(session, svc.bookings.rules, meetings)
    return web.json_response({"meetings": booked})


@routes.post("/api/v1/schedule/proposals/{proposal_id}/discard")
async def api_proposal_discard(request: web.Request) -> web.StreamResponse:
    """Drop a proposal (one still computing stops); a committed one stays committed."""
    account = require(request, SCHEDULERS)
    svc = services(request)
    proposal_id = proposal_id_of(request)
    await svc.planner.do_discard(account, proposal_id)
    return web.json_response(await proposal_json(svc, await svc.planner.get(account, proposal_id)))
