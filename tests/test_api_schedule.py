"""Scheduling through the JSON API: meetings as each role sees them, booking by hand with its
refusals, holding, adjourning and extending, the automatic allocation's proposals, the checks
on what clients send, CSRF. Every answer is checked against the OpenAPI document."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import jsonschema_rs
import pytest
from sqlalchemy import func, select

from cases.casefile import CaseEvent
from cases.companies import do_create_company
from cases.lifecycle import Action, CaseStatus
from core.clock import ROME
from scheduling.bookings import Absence, ConciliatorProfile, Meeting
from scheduling.planner import Proposal
from tests.support import (
    DELEGATED_APPLICANT,
    DELEGATION_DOCUMENTS,
    GOOD_PASSWORD,
    Browser,
    domain_request,
    registered,
    sign_in,
    staff_sign_in,
)
from tests.worlds import FIRST, World, account, admitted_rows, rome
from web.views.api import openapi_document

PARTIES = ("cliente", "delegato", "rep.a", "rep.b", "estraneo")
STAFF = ("pianificatore", "conciliatore1", "conciliatore2", "sportello")
DOCUMENT = openapi_document()


def conforms(method: str, route: str, status: int, body: Any) -> None:
    """The answer is one the document lists for the operation, in the shape it gives."""
    operation = DOCUMENT["paths"][route][method.lower()]
    response = operation["responses"].get(str(status))
    assert response is not None, f"{method} {route} answered {status}: not documented"
    if "$ref" in response:
        response = DOCUMENT["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    validator = jsonschema_rs.Draft202012Validator(
        {**schema, "components": DOCUMENT["components"]}, validate_formats=True
    )
    errors = [e.message for e in validator.iter_errors(body)]
    assert not errors, (method, route, status, errors, body)


def local(day: date, hour: int, minute: int = 0) -> str:
    """A slot's start as a client in Italy sends it: Rome's wall clock with its offset."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ROME).isoformat()


@dataclass
class Crowd:
    """One signed-in browser per person, with the CSRF token of its session."""

    world: World
    browsers: dict[str, Browser]
    csrf: dict[str, str]

    async def sign_in(self, *names: str) -> None:
        """(Again, after the clock moved on:) sign these people in."""
        env = self.world.env
        for name in names:
            browser = await env.new_browser()
            if name in STAFF:
                await staff_sign_in(env, browser, name)
            else:
                assert (await sign_in(browser, name, GOOD_PASSWORD)).status == 303
            async with browser.client.get("/api/v1/me") as resp:
                self.csrf[name] = (await resp.json())["csrf_token"]
            self.browsers[name] = browser

    async def call(
        self,
        who: str,
        method: str,
        route: str,
        *,
        at: Mapping[str, object] | None = None,
        csrf: bool = True,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        """``method`` on ``route`` (the document's path, ``at`` filling its parameters) as
        ``who``; the answer must match the document."""
        headers = {"X-CSRF-Token": self.csrf[who]} if csrf else {}
        async with self.browsers[who].client.request(
            method, route.format(**(at or {})), headers=headers, allow_redirects=False, **kwargs
        ) as resp:
            assert resp.content_type == "application/json", (method, route, resp.status)
            body = await resp.json()
        conforms(method, route, resp.status, body)
        return resp.status, body

    async def refused(self, who: str, method: str, route: str, **kwargs: Any) -> tuple[int, str]:
        status, body = await self.call(who, method, route, **kwargs)
        assert status >= 400, (method, route, status, body)
        return status, body["error"]["code"]


@pytest.fixture
async def crowd(world: World) -> Crowd:
    """The world's people signed in, with a delegate, a representative of the world's company
    (rep.a), one of another company (rep.b) and an outsider."""
    env = world.env
    svc = env.services
    other = await do_create_company(
        svc.db, name="Energia B", vat="02345670158", sectors=["electricity"], now=env.clock.now()
    )
    await registered(env, "estraneo")
    await registered(env, "delegato", kind="delegate", delegate_kind="professional")
    for name, company in (("rep.a", world.company_id), ("rep.b", other.id)):
        await registered(env, name, kind="company_rep", company_id=str(company))
        await svc.accounts.do_activate((await account(env, name)).id)
    crowd = Crowd(world, {}, {})
    await crowd.sign_in(*PARTIES, *STAFF)
    return crowd


async def delegated_case(world: World) -> uuid.UUID:
    """An admitted case the delegate filed for a customer without an account."""
    svc = world.env.services
    case_id = uuid.UUID(
        await domain_request(
            world.env,
            "delegato",
            str(world.company_id),
            documents=DELEGATION_DOCUMENTS,
            applicant=DELEGATED_APPLICANT,
            supply={"pod": "IT001E55555555"},
        )
    )
    await svc.files.do_step(await account(world.env, "sportello"), case_id, Action.ADMIT)
    return case_id


async def meetings_count(world: World) -> int:
    async with world.env.services.db.session() as session:
        return await session.scalar(select(func.count()).select_from(Meeting)) or 0


MEETING = "/api/v1/cases/{case_id}/meeting"
SCHEDULE = "/api/v1/cases/{case_id}/schedule"


async def test_the_scheduler_books_moves_and_cancels_a_meeting(crowd: Crowd) -> None:
    world = crowd.world
    case_id = await world.admitted_case()
    at = {"case_id": case_id}
    status, body = await crowd.call("pianificatore", "GET", SCHEDULE, at=at)
    assert status == 200 and body["status"] == "admitted"
    assert body["meeting"] is None and body["held_meeting"] is None
    assert body["window"] == {
        "earliest": "2026-11-30",
        "deadline": "2027-01-02",
        "procedure_end": "2027-02-21",
        "extended": False,
        "adjourned": False,
    }
    booking = {"starts_at": local(date(2026, 12, 1), 9), "conciliator_id": str(world.k1.id)}
    status, booked = await crowd.call("pianificatore", "PUT", MEETING, at=at, json=booking)
    assert status == 201
    case, _ = await world.env.services.files.get_for(world.scheduler, case_id)
    assert booked == {
        "id": booked["id"],
        "case_id": str(case_id),
        "case_code": case.code,
        "starts_at": "2026-12-01T08:00:00+00:00",
        "ends_at": "2026-12-01T09:30:00+00:00",
        "local_start": "2026-12-01T09:00:00+01:00",
        "mode": "chat",
        "status": "scheduled",
        "conciliator_id": str(world.k1.id),
        "conciliator_name": "Anna Neri",
        "room_opens_at": "2026-12-01T07:45:00+00:00",
    }
    # Another slot and conciliator: the same meeting, moved (UTC is as good as Rome's time).
    moved = {"starts_at": "2026-12-01T14:30:00Z", "conciliator_id": str(world.k2.id)}
    status, body = await crowd.call("pianificatore", "PUT", MEETING, at=at, json=moved)
    assert status == 200 and body["id"] == booked["id"]
    assert body["local_start"] == "2026-12-01T15:30:00+01:00"
    assert body["conciliator_id"] == str(world.k2.id)
    status, body = await crowd.call("pianificatore", "GET", SCHEDULE, at=at)
    assert body["status"] == "scheduled" and body["meeting"]["id"] == booked["id"]
    status, body = await crowd.call(
        "pianificatore", "DELETE", MEETING, at=at, json={"reason": "Conciliatore malato"}
    )
    assert status == 200 and body["status"] == "cancelled" and body["id"] == booked["id"]
    events = await world.env.services.files.timeline(case_id)
    assert [(e.kind, e.note) for e in events if e.kind == Action.CANCEL_MEETING] == [
        ("cancel_meeting", "Conciliatore malato")
    ]
    status, body = await crowd.call("pianificatore", "GET", SCHEDULE, at=at)
    assert body["status"] == "admitted" and body["meeting"] is None
    # Nothing left to cancel; without a body a cancellation needs no reason.
    assert await crowd.refused("pianificatore", "DELETE", MEETING, at=at) == (404, "not_found")
    status, again = await crowd.call("pianificatore", "PUT", MEETING, at=at, json=booking)
    assert status == 201 and again["id"] != booked["id"]
    status, body = await crowd.call("pianificatore", "DELETE", MEETING, at=at)
    assert status == 200 and body["status"] == "cancelled"


async def test_refusals_keep_their_codes_and_parameters(crowd: Crowd) -> None:
    world = crowd.world
    svc = world.env.services
    case_id = await world.admitted_case()
    other = await world.admitted_case("IT001E87654321")
    at = {"case_id": case_id}

    async def book(case: uuid.UUID, when: str, who: uuid.UUID) -> tuple[int, Any]:
        body = {"starts_at": when, "conciliator_id": str(who)}
        return await crowd.call("pianificatore", "PUT", MEETING, at={"case_id": case}, json=body)

    status, body = await book(case_id, local(date(2026, 12, 8), 9), world.k1.id)
    assert status == 400 and body["error"]["code"] == "slot_not_available"
    assert body["error"]["params"] == {"reason": "Immacolata Concezione"}
    status, body = await book(case_id, local(FIRST, 9, 15), world.k1.id)
    assert (status, body["error"]["code"]) == (400, "slot_not_available")
    status, body = await book(case_id, local(date(2026, 11, 27), 9), world.k1.id)
    assert (status, body["error"]["code"]) == (400, "too_soon")
    assert body["error"]["params"] == {"earliest": "2026-11-30"}
    status, body = await book(case_id, local(date(2027, 1, 4), 9), world.k1.id)
    assert (status, body["error"]["code"]) == (400, "past_deadline")
    assert body["error"]["params"] == {"deadline": "2027-01-02"}
    async with svc.db.session() as session:
        session.add(Absence(account_id=world.k2.id, day=FIRST))
        session.add(
            ConciliatorProfile(account_id=world.k1.id, working_weekdays="0,1,2,3,4", max_per_day=1)
        )
        await session.commit()
    status, body = await book(case_id, local(FIRST, 9), world.k2.id)
    assert (status, body["error"]["code"]) == (400, "conciliator_unavailable")
    status, body = await book(case_id, local(FIRST, 9), world.scheduler.id)
    assert (status, body["error"]["code"]) == (400, "invalid_choice")
    status, _ = await book(case_id, local(FIRST, 9), world.k1.id)
    assert status == 201
    # The conciliator is taken in that slot (409), then full that day; the company has one
    # seat per slot.
    status, body = await book(other, local(FIRST, 9), world.k1.id)
    assert (status, body["error"]["code"]) == (409, "slot_taken")
    status, body = await book(other, local(FIRST, 12), world.k1.id)
    assert (status, body["error"]["code"]) == (400, "conciliator_day_full")
    tuesday = FIRST + timedelta(days=1)
    status, _ = await book(other, local(tuesday, 9), world.k1.id)
    assert status == 201
    third = await world.admitted_case("IT001E11223344")
    status, body = await book(third, local(tuesday, 9), world.k2.id)
    assert (status, body["error"]["code"]) == (400, "company_full")
    # A case that is not waiting for a slot (submitted, not admitted yet).
    submitted = uuid.UUID(
        await domain_request(
            world.env, "cliente", str(world.company_id), supply={"pod": "IT001E99999999"}
        )
    )
    status, body = await book(submitted, local(tuesday, 12), world.k2.id)
    assert (status, body["error"]["code"]) == (400, "transition_refused")
    # Only schedulers book, move or cancel.
    for who in ("conciliatore1", "sportello", "cliente", "rep.a"):
        booking = {"starts_at": local(tuesday, 12), "conciliator_id": str(world.k2.id)}
        assert await crowd.refused(who, "PUT", MEETING, at=at, json=booking) == (403, "forbidden")
        assert await crowd.refused(who, "DELETE", MEETING, at=at) == (403, "forbidden")
    assert await meetings_count(world) == 2


async def test_what_clients_send_is_checked_field_by_field(crowd: Crowd) -> None:
    world = crowd.world
    case_id = await world.admitted_case()
    at = {"case_id": case_id}

    async def fields(method: str, route: str, **kwargs: Any) -> dict[str, list[str]]:
        status, body = await crowd.call("pianificatore", method, route, at=at, **kwargs)
        assert status == 422 and body["error"]["fields"], body
        found: dict[str, list[str]] = body["error"]["fields"]
        return found

    for data in (b"not json", b"[1, 2]", b"[" * 50_000, "\ud800".encode(errors="surrogatepass")):
        status, body = await crowd.call("pianificatore", "PUT", MEETING, at=at, data=data)
        assert (status, body["error"]["code"]) == (400, "bad_request"), data[:10]
    assert await fields("PUT", MEETING, json={}) == {
        "starts_at": ["required"],
        "conciliator_id": ["required"],
    }
    wrong = {"starts_at": 1764576000, "conciliator_id": "k1", "start": "09:00"}
    assert await fields("PUT", MEETING, json=wrong) == {
        "start": ["bad_request"],
        "starts_at": ["date_invalid"],
        "conciliator_id": ["invalid_choice"],
    }
    k1 = str(world.k1.id)
    for when in ("2026-12-01T09:00:00", "2026-12-01", "9999-12-31T23:59:59-23:59", "x" * 100):
        body = {"starts_at": when, "conciliator_id": k1}
        assert await fields("PUT", MEETING, json=body) == {"starts_at": ["date_invalid"]}, when
    assert await fields("DELETE", MEETING, json={"reason": ["a"]}) == {"reason": ["bad_request"]}
    assert await fields("DELETE", MEETING, json={"reason": "x" * 2001}) == {"reason": ["too_long"]}
    extend = "/api/v1/cases/{case_id}/extend"
    assert await fields("POST", extend, json={}) == {"reason": ["required"]}
    assert await fields("POST", extend, json={"reason": " \x00\t "}) == {"reason": ["required"]}
    assert await fields("POST", extend, json={"reason": "x" * 501}) == {"reason": ["too_long"]}
    assert await fields("POST", extend, json={"reason": 5}) == {"reason": ["bad_request"]}
    adjourn = "/api/v1/cases/{case_id}/adjourn"
    assert await fields("POST", adjourn, json={"conciliator_id": k1}) == {"starts_at": ["required"]}
    assert await fields("POST", adjourn, json={"note": "x" * 2001}) == {"note": ["too_long"]}
    # Ids that are not ids name nothing.
    for route, method in ((SCHEDULE, "GET"), (MEETING, "DELETE")):
        status, body = await crowd.call("pianificatore", method, route, at={"case_id": "nope"})
        assert (status, body["error"]["code"]) == (404, "not_found")
    status, _ = await crowd.call(
        "pianificatore", "GET", "/api/v1/meetings/{meeting_id}", at={"meeting_id": "1 OR 1=1"}
    )
    assert status == 404
    # The list's period: both days, real ones, in order, at most 62 days.
    meetings = "/api/v1/meetings"
    assert await fields("GET", meetings) == {"from": ["required"], "to": ["required"]}
    query = {"from": "2026-13-01", "to": "2026-W49-1", "status": "moving"}
    assert await fields("GET", meetings, params=query) == {
        "from": ["date_invalid"],
        "to": ["date_invalid"],
        "status": ["invalid_choice"],
    }
    for last in ("2026-11-30", "2027-02-01"):
        status, body = await crowd.call(
            "pianificatore", "GET", meetings, params={"from": "2026-12-01", "to": last}
        )
        assert (status, body["error"]["code"]) == (400, "period_invalid")
        assert body["error"]["params"] == {"days": 62}
    status, body = await crowd.call(
        "pianificatore", "GET", meetings, params={"from": "2026-12-01", "to": "2027-01-31"}
    )
    assert status == 200 and body["meetings"] == []
    # Nothing was written by any of it.
    assert await meetings_count(world) == 0
    case, _ = await world.env.services.files.get_for(world.scheduler, case_id)
    assert case.status == CaseStatus.ADMITTED


async def test_each_role_sees_the_meetings_it_takes_part_in(crowd: Crowd) -> None:
    world = crowd.world
    svc = world.env.services
    own = await world.admitted_case()
    delegated = await delegated_case(world)
    mine = await svc.bookings.do_book(world.scheduler, own, rome(FIRST, 9), world.k1.id)
    theirs = await svc.bookings.do_book(world.scheduler, delegated, rome(FIRST, 14), world.k2.id)
    later = await world.admitted_case("IT001E87654321")
    cancelled = await svc.bookings.do_book(
        world.scheduler, later, rome(FIRST + timedelta(days=2), 9), world.k1.id
    )
    await svc.bookings.do_cancel(world.scheduler, cancelled.id, None)
    meetings = {"own": str(mine.id), "delegated": str(theirs.id)}
    takes_part = {
        "pianificatore": {"own", "delegated"},
        "conciliatore1": {"own"},
        "conciliatore2": {"delegated"},
        "cliente": {"own"},
        "delegato": {"delegated"},  # the customer of a delegated case has no account here
        "rep.a": {"own", "delegated"},
        "rep.b": set(),
        "estraneo": set(),
    }
    sees_case = {
        **{name: {"own", "delegated"} for name in STAFF},
        "cliente": {"own"},
        "delegato": {"delegated"},
        "rep.a": {"own", "delegated"},
        "rep.b": set(),
        "estraneo": set(),
    }
    period = {"from": "2026-11-30", "to": "2026-12-04"}
    for who, expected in takes_part.items():
        status, body = await crowd.call(who, "GET", "/api/v1/meetings", params=period)
        assert status == 200, who
        assert [m["id"] for m in body["meetings"]] == [
            meetings[name] for name in ("own", "delegated") if name in expected
        ], who
        for name, meeting_id in meetings.items():
            status, body = await crowd.call(
                who, "GET", "/api/v1/meetings/{meeting_id}", at={"meeting_id": meeting_id}
            )
            assert status == (200 if name in expected else 404), (who, name)
    # Help-desk staff take part in no meeting: they read a meeting only in the case file.
    assert await crowd.refused("sportello", "GET", "/api/v1/meetings", params=period) == (
        403,
        "forbidden",
    )
    status, _ = await crowd.call(
        "sportello", "GET", "/api/v1/meetings/{meeting_id}", at={"meeting_id": meetings["own"]}
    )
    assert status == 404
    for who in (*PARTIES, *STAFF):
        for name, case_id in (("own", own), ("delegated", delegated)):
            status, body = await crowd.call(who, "GET", SCHEDULE, at={"case_id": case_id})
            if name in sees_case[who]:
                assert status == 200 and body["meeting"]["id"] == meetings[name], (who, name)
            else:
                assert (status, body["error"]["code"]) == (404, "not_found"), (who, name)
    # Ids nobody has, and the cancelled meeting only when asked for.
    status, _ = await crowd.call(
        "pianificatore", "GET", "/api/v1/meetings/{meeting_id}", at={"meeting_id": uuid.uuid4()}
    )
    assert status == 404
    week = {"from": "2026-11-30", "to": "2026-12-06"}
    status, body = await crowd.call(
        "conciliatore1", "GET", "/api/v1/meetings", params={**week, "status": "cancelled"}
    )
    assert [m["id"] for m in body["meetings"]] == [str(cancelled.id)]
    status, body = await crowd.call("cliente", "GET", "/api/v1/meetings", params=week)
    assert [m["id"] for m in body["meetings"]] == [meetings["own"]]
    # Outside the period, nothing; signed out, nobody.
    status, body = await crowd.call(
        "pianificatore",
        "GET",
        "/api/v1/meetings",
        params={"from": "2026-12-01", "to": "2026-12-31"},
    )
    assert body["meetings"] == []
    stranger = await world.env.new_browser()
    async with stranger.client.get("/api/v1/meetings", params=period) as resp:
        body = await resp.json()
    conforms("GET", "/api/v1/meetings", resp.status, body)
    assert (resp.status, body["error"]["code"]) == (401, "unauthenticated")


async def test_hold_extend_and_adjourn_through_the_api(crowd: Crowd) -> None:
    world = crowd.world
    svc = world.env.services
    case_id = await world.admitted_case()
    meeting = await svc.bookings.do_book(world.scheduler, case_id, rome(FIRST, 9), world.k1.id)
    # A week later, a few minutes before the room opens (sessions have expired meanwhile).
    world.env.clock.set(rome(FIRST, 8, 40))
    await crowd.sign_in("conciliatore1", "conciliatore2", "pianificatore", "cliente")
    hold = "/api/v1/meetings/{meeting_id}/hold"
    at = {"meeting_id": meeting.id}
    status, body = await crowd.call("conciliatore1", "POST", hold, at=at)
    assert (status, body["error"]["code"]) == (400, "meeting_not_started")
    assert body["error"]["params"] == {"opens": "30/11/2026 08:45"}
    world.env.advance(minutes=5)
    assert await crowd.refused("conciliatore2", "POST", hold, at=at) == (403, "forbidden")
    for who in ("pianificatore", "cliente"):
        assert await crowd.refused(who, "POST", hold, at=at) == (403, "forbidden")
    status, body = await crowd.call("conciliatore1", "POST", hold, at=at)
    assert status == 200 and body["status"] == "held"
    assert await crowd.refused("conciliatore1", "POST", hold, at=at) == (400, "transition_refused")
    status, body = await crowd.call("cliente", "GET", SCHEDULE, at={"case_id": case_id})
    assert body["status"] == "meeting_held" and body["meeting"] is None
    assert body["held_meeting"]["id"] == str(meeting.id)
    # The procedure's one extension.
    extend = "/api/v1/cases/{case_id}/extend"
    at = {"case_id": case_id}
    reason = {"reason": "Verifica del contatore"}
    assert await crowd.refused("cliente", "POST", extend, at=at, json=reason) == (403, "forbidden")
    status, body = await crowd.call("conciliatore1", "POST", extend, at=at, json=reason)
    assert status == 200 and body["extended"] and body["procedure_end"] == "2027-03-23"
    assert await crowd.refused("pianificatore", "POST", extend, at=at, json=reason) == (
        400,
        "already_extended",
    )
    # Adjourned: by the held meeting's conciliator only; a refused slot writes nothing.
    adjourn = "/api/v1/cases/{case_id}/adjourn"
    assert await crowd.refused("conciliatore2", "POST", adjourn, at=at) == (403, "forbidden")
    assert await crowd.refused("cliente", "POST", adjourn, at=at) == (403, "forbidden")
    holiday = {"starts_at": local(date(2026, 12, 8), 9)}
    assert await crowd.refused("conciliatore1", "POST", adjourn, at=at, json=holiday) == (
        400,
        "slot_not_available",
    )
    case, _ = await svc.files.get_for(world.k1, case_id)
    assert case.status == CaseStatus.MEETING_HELD
    status, body = await crowd.call(
        "conciliatore1", "POST", adjourn, at=at, json={"note": "Servono le letture"}
    )
    assert status == 200
    continued = body["meeting"]
    assert continued["local_start"] == "2026-12-02T14:00:00+01:00"
    assert continued["conciliator_id"] == str(world.k1.id)
    status, body = await crowd.call("cliente", "GET", SCHEDULE, at=at)
    assert body["status"] == "scheduled" and body["meeting"]["id"] == continued["id"]
    assert body["window"]["adjourned"] and body["window"]["extended"]


async def test_an_adjournment_with_no_free_slot_leaves_the_case_waiting(crowd: Crowd) -> None:
    world = crowd.world
    svc = world.env.services
    case_id = await world.admitted_case()
    meeting = await svc.bookings.do_book(world.scheduler, case_id, rome(FIRST, 9), world.k1.id)
    world.env.clock.set(rome(FIRST, 8, 50))
    await svc.bookings.do_hold(world.k1, meeting.id)
    async with svc.db.session() as session:
        for k in (world.k1, world.k2):
            session.add(ConciliatorProfile(account_id=k.id, working_weekdays="", max_per_day=4))
        await session.commit()
    await crowd.sign_in("pianificatore")
    status, body = await crowd.call(
        "pianificatore", "POST", "/api/v1/cases/{case_id}/adjourn", at={"case_id": case_id}
    )
    assert status == 200 and body == {"meeting": None}
    case, _ = await svc.files.get_for(world.scheduler, case_id)
    assert case.status == CaseStatus.ADMITTED


PROPOSALS = "/api/v1/schedule/proposals"
PROPOSAL = "/api/v1/schedule/proposals/{proposal_id}"


async def computed(crowd: Crowd, proposal_id: str) -> dict[str, Any]:
    """The proposal once its background computation is over."""
    for _ in range(500):
        status, body = await crowd.call(
            "pianificatore", "GET", PROPOSAL, at={"proposal_id": proposal_id}
        )
        assert status == 200
        if body["status"] != "computing":
            found: dict[str, Any] = body
            return found
        assert body["placements"] is None and 0 <= body["stage"] <= body["stages"]
        await asyncio.sleep(0.02)
    raise AssertionError("the proposal was never computed")


async def test_the_automatic_allocation_through_the_api(crowd: Crowd) -> None:
    world = crowd.world
    svc = world.env.services
    cases = await admitted_rows(world, 2)
    async with crowd.browsers["pianificatore"].client.post(
        PROPOSALS, headers={"X-CSRF-Token": crowd.csrf["pianificatore"]}
    ) as resp:
        started = await resp.json()
        conforms("POST", PROPOSALS, resp.status, started)
        assert resp.status == 202
        assert resp.headers["Location"] == f"{PROPOSALS}/{started['id']}"
    assert started["status"] == "computing" and started["placements"] is None
    assert (started["first"], started["last"]) == ("2026-11-24", "2026-12-21")
    proposal = await computed(crowd, started["id"])
    assert proposal["status"] == "proposed" and proposal["stage"] == proposal["stages"] == 3
    assert proposal["score"]["placed"] == 2 and proposal["unplaced"] == []
    codes = {p["case_code"] for p in proposal["placements"]}
    assert codes == {"CONC-2026-900000", "CONC-2026-900001"}
    assert await meetings_count(world) == 0  # a preview books nothing
    commit = f"{PROPOSAL}/commit"
    at = {"proposal_id": started["id"]}
    status, body = await crowd.call("pianificatore", "POST", commit, at=at)
    assert status == 200
    assert sorted(m["case_id"] for m in body["meetings"]) == sorted(str(c) for c in cases)
    assert [m["starts_at"] for m in body["meetings"]] == [
        p["starts_at"] for p in proposal["placements"]
    ]
    for case_id in cases:
        case, _ = await svc.files.get_for(world.scheduler, case_id)
        assert case.status == CaseStatus.SCHEDULED
    assert await crowd.refused("pianificatore", "POST", commit, at=at) == (409, "proposal_stale")
    # Discarding a committed proposal changes nothing.
    status, body = await crowd.call("pianificatore", "POST", f"{PROPOSAL}/discard", at=at)
    assert status == 200 and body["status"] == "committed"


async def test_a_stale_proposal_is_refused_and_a_discarded_one_stops(crowd: Crowd) -> None:
    world = crowd.world
    svc = world.env.services
    cases = await admitted_rows(world, 3)
    status, started = await crowd.call("pianificatore", "POST", PROPOSALS)
    proposal = await computed(crowd, started["id"])
    assert proposal["score"]["placed"] == 3
    # Meanwhile a case is booked by hand: the proposal is stale and books nothing.
    await svc.bookings.do_book(world.scheduler, cases[0], rome(FIRST, 17), world.k2.id)
    at = {"proposal_id": started["id"]}
    assert await crowd.refused("pianificatore", "POST", f"{PROPOSAL}/commit", at=at) == (
        409,
        "proposal_stale",
    )
    assert await meetings_count(world) == 1
    # Stopped at once, whether or not its computation began: discarded, and it stays so.
    status, started = await crowd.call("pianificatore", "POST", PROPOSALS)
    at = {"proposal_id": started["id"]}
    status, body = await crowd.call("pianificatore", "POST", f"{PROPOSAL}/discard", at=at)
    assert status == 200 and body["status"] == "discarded"
    await asyncio.sleep(0.2)
    status, body = await crowd.call("pianificatore", "GET", PROPOSAL, at=at)
    assert body["status"] == "discarded"
    # A computation lost with its node is reported as failed.
    lost = await svc.planner.do_begin(world.scheduler)
    world.env.advance(minutes=11)
    status, body = await crowd.call("pianificatore", "GET", PROPOSAL, at={"proposal_id": lost.id})
    assert body["status"] == "failed" and body["placements"] is None and body["score"] is None


async def test_proposals_are_the_schedulers_alone(crowd: Crowd) -> None:
    svc = crowd.world.env.services
    proposal = await svc.planner.do_begin(crowd.world.scheduler)
    at = {"proposal_id": proposal.id}
    for who in ("conciliatore1", "sportello", "cliente", "rep.a"):
        assert await crowd.refused(who, "POST", PROPOSALS) == (403, "forbidden")
        assert await crowd.refused(who, "GET", PROPOSAL, at=at) == (403, "forbidden")
        for action in ("commit", "discard"):
            assert await crowd.refused(who, "POST", f"{PROPOSAL}/{action}", at=at) == (
                403,
                "forbidden",
            )
    for missing in (uuid.uuid4(), "nope"):
        nowhere = {"proposal_id": missing}
        assert await crowd.refused("pianificatore", "GET", PROPOSAL, at=nowhere) == (
            404,
            "not_found",
        )
        for action in ("commit", "discard"):
            assert await crowd.refused(
                "pianificatore", "POST", f"{PROPOSAL}/{action}", at=nowhere
            ) == (
                404,
                "not_found",
            )
    async with svc.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Proposal)) == 1


async def test_unsafe_requests_need_the_csrf_token(crowd: Crowd) -> None:
    world = crowd.world
    svc = world.env.services
    case_id = await world.admitted_case()
    meeting = await svc.bookings.do_book(world.scheduler, case_id, rome(FIRST, 9), world.k1.id)
    proposal = await svc.planner.do_propose(world.scheduler)
    case = {"case_id": case_id}
    booking = {"starts_at": local(FIRST, 12), "conciliator_id": str(world.k2.id)}
    attempts: list[tuple[str, str, str, Mapping[str, object], Any]] = [
        ("pianificatore", "PUT", MEETING, case, booking),
        ("pianificatore", "DELETE", MEETING, case, None),
        ("conciliatore1", "POST", "/api/v1/cases/{case_id}/extend", case, {"reason": "x"}),
        ("conciliatore1", "POST", "/api/v1/cases/{case_id}/adjourn", case, None),
        (
            "conciliatore1",
            "POST",
            "/api/v1/meetings/{meeting_id}/hold",
            {"meeting_id": meeting.id},
            None,
        ),
        ("pianificatore", "POST", PROPOSALS, {}, None),
        ("pianificatore", "POST", f"{PROPOSAL}/commit", {"proposal_id": proposal.id}, None),
        ("pianificatore", "POST", f"{PROPOSAL}/discard", {"proposal_id": proposal.id}, None),
    ]
    for who, method, route, at, body in attempts:
        assert await crowd.refused(who, method, route, at=at, json=body, csrf=False) == (
            403,
            "csrf_failed",
        ), (method, route)
        # Another session's token is no better.
        crowd.csrf[who], real = crowd.csrf["cliente"], crowd.csrf[who]
        try:
            assert await crowd.refused(who, method, route, at=at, json=body) == (
                403,
                "csrf_failed",
            ), (method, route)
        finally:
            crowd.csrf[who] = real
    # Nothing happened.
    async with svc.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Proposal)) == 1
        moved = await session.get(Meeting, meeting.id)
        assert moved is not None and moved.starts_at == rome(FIRST, 9)
        assert moved.status == "scheduled" and moved.sequence == 0
        assert (
            await session.scalar(
                select(func.count())
                .select_from(CaseEvent)
                .where(CaseEvent.case_id == case_id, CaseEvent.kind == "procedure_extended")
            )
            == 0
        )
    assert (await svc.planner.get(world.scheduler, proposal.id)).status == "proposed"
