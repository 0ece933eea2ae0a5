"""The security test list: one test for each way a stranger or a party may try to abuse the
service. Several items are also covered, in more detail, elsewhere (named in each docstring);
here each has its own direct test so the list reads as a checklist:

IDOR on every resource, CSRF, session fixation, the throttling, account enumeration timing,
XSS in user-supplied fields, room events naming other meetings, oversize frames, floods,
forged and expired room tokens.
"""

from __future__ import annotations

import asyncio
import io
import re
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import socketio
from sqlalchemy import func, select

from cases.accounts import Account
from cases.casefile import Case
from cases.documents import Category
from cases.helpdesk import Ticket
from cases.lifecycle import Action, Actor
from rooms.models import RoomMessage
from scheduling.bookings import Meeting
from tests.rooms_support import Meet, admitted
from tests.support import (
    GOOD_PASSWORD,
    PDF,
    Browser,
    Env,
    chunks_of,
    code_in,
    domain_request,
    registered,
    registration,
    sign_in,
    staff,
    staff_sign_in,
)
from tests.worlds import FIRST, rome
from web.context import SESSION_COOKIE

ROOT = Path(__file__).parents[1]
# Markup an attacker would type in any free-text field.
XSS = "<script>alert('x')</script><img src=x onerror=alert(1)>"
XSS_SHOWN = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"


async def me_token(browser: Browser) -> str:
    async with browser.client.get("/api/v1/me") as resp:
        assert resp.status == 200
        return str((await resp.json())["csrf_token"])


async def api(
    browser: Browser, method: str, path: str, token: str | None = None, **kwargs: Any
) -> tuple[int, Any]:
    headers = {} if token is None else {"X-CSRF-Token": token}
    async with browser.client.request(
        method, path, headers=headers, allow_redirects=False, **kwargs
    ) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.read()
        return resp.status, body


async def account(env: Env, name: str = "cliente") -> Account:
    found = await env.services.accounts.by_username(name)
    assert found is not None
    return found


async def outsider(env: Env, name: str = "estraneo") -> Browser:
    """Another customer, signed in, with a case and a help-desk ticket of their own."""
    await registered(env, name, email=f"{name}@example.org")
    browser = await env.new_browser()
    assert (await sign_in(browser, name, GOOD_PASSWORD)).status == 303
    return browser


async def ticket_of(browser: Browser, subject: str = "Domanda", message: str = "Testo") -> str:
    status, body = await api(
        browser,
        "POST",
        "/api/v1/helpdesk/tickets",
        await me_token(browser),
        json={"category": "support", "subject": subject, "message": message},
    )
    assert status == 201, body
    return str(body["id"])


async def minutes_for(meet: Meet) -> str:
    """Minutes filed in the meeting's case as the room files them (a generated document)."""
    svc = meet.world.env.services
    async with svc.db.session() as session:
        case = await session.get(Case, meet.case_id)
        author = await session.get(Account, meet.world.k1.id)
        assert case is not None and author is not None
        document = await svc.documents.file_generated(
            session,
            case,
            author,
            Actor.CONCILIATOR,
            name="verbale.pdf",
            content=PDF,
            category=Category.MINUTES,
            description="Verbale",
        )
        await session.commit()
        return str(document.id)


# -- IDOR -----------------------------------------------------------------------------------


async def test_idor_every_resource_of_another_account_is_not_found(meet: Meet) -> None:
    """Cases, request sections, documents, minutes, meetings and their room, tickets and
    exports, by the id of another account's: 404, the same as an id that does not exist, on
    pages and API alike; actions on them too, and nothing changes. (tests/test_access_matrix.py
    goes through every role; tests/test_helpdesk.py through tickets and their files.)"""
    env = meet.world.env
    svc = env.services
    case, meeting = str(meet.case_id), str(meet.meeting.id)
    documents = [d.id for d in await svc.documents.list_for(await account(env), meet.case_id)]
    document, minutes = str(documents[0]), await minutes_for(meet)
    ticket = await ticket_of(meet.customer)
    stranger = await outsider(env)
    own_case = await domain_request(
        env, "estraneo", str(meet.world.company_id), supply={"pod": "IT001E77777777"}
    )
    pages = [
        f"/cases/{case}",
        f"/cases/{case}/request/summary",
        f"/cases/{case}/request/supply",
        f"/documents/{document}",
        f"/documents/{minutes}",
        f"/meetings/{meeting}",
        f"/meetings/{meeting}/room",
        f"/meetings/{meeting}/token",
        f"/meetings/{meeting}/documents",
        f"/helpdesk/tickets/{ticket}",
        f"/api/v1/cases/{case}",
        f"/api/v1/cases/{case}/timeline",
        f"/api/v1/cases/{case}/documents",
        f"/api/v1/cases/{case}/notices",
        f"/api/v1/cases/{case}/review",
        f"/api/v1/cases/{case}/schedule",
        f"/api/v1/documents/{document}",
        f"/api/v1/documents/{document}/content",
        f"/api/v1/documents/{minutes}/content",
        f"/api/v1/meetings/{meeting}",
        f"/api/v1/helpdesk/tickets/{ticket}",
    ]
    for path in pages:
        owner = await meet.customer.get(path)
        # A submitted request's sections are no longer forms: its owner goes to the case.
        assert owner.status == (303 if path.endswith("/supply") else 200), (path, owner.status)
        assert (await stranger.get(path)).status == 404, path
        guessed = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", str(uuid.uuid4()), path)
        assert (await stranger.get(guessed)).status == 404, guessed
    token = await me_token(stranger)
    before = await api(meet.customer, "GET", f"/api/v1/cases/{case}/timeline")
    for method, path, body in (
        ("PUT", f"/api/v1/cases/{case}/request/dispute", {"json": {"description": "x"}}),
        ("POST", f"/api/v1/cases/{case}/submit", {}),
        ("POST", f"/api/v1/cases/{case}/steps/withdraw", {}),
        ("POST", f"/api/v1/cases/{case}/confirm", {}),
        ("POST", f"/api/v1/helpdesk/tickets/{ticket}/messages", {"json": {"message": "x"}}),
    ):
        status, answer = await api(stranger, method, path, token, **body)
        assert status == 404, (path, status, answer)
        assert answer["error"]["code"] == "not_found"
    page = await stranger.get("/")
    upload = await stranger.upload(
        f"/cases/{case}/documents",
        {"category": "other", "description": "x"},
        "x.pdf",
        PDF,
        csrf=page.csrf,
    )
    assert upload.status == 404
    assert await api(meet.customer, "GET", f"/api/v1/cases/{case}/timeline") == before
    # Exports list only what the person may see.
    async with svc.db.session() as session:
        codes = {k: str(v) for k, v in (await session.execute(select(Case.id, Case.code))).all()}
    for kind in ("csv", "xlsx"):
        exported = await stranger.client.get(f"/cases?format={kind}")
        assert exported.status == 200
        data = await exported.read()
        if kind == "csv":
            text = data.decode("utf-8-sig")
        else:
            sheet = openpyxl.load_workbook(io.BytesIO(data), read_only=True).active
            assert sheet is not None
            text = " ".join(str(c) for row in sheet.iter_rows(values_only=True) for c in row)
        assert codes[uuid.UUID(own_case)] in text, kind
        assert codes[meet.case_id] not in text, kind
    status, listed = await api(stranger, "GET", "/api/v1/helpdesk/tickets")
    assert status == 200 and ticket not in {t["id"] for t in listed["tickets"]}


# -- CSRF -----------------------------------------------------------------------------------


async def test_csrf_forms_refuse_a_missing_or_wrong_token_and_change_nothing(env: Env) -> None:
    """Every form posted without the page's token, with a made-up one or with another
    visitor's is refused (403 ``csrf_failed``) before anything happens; the API wants the
    header. (Also tests/test_web_security.py.)"""
    await registered(env, "vittima")
    browser = await env.new_browser()
    assert (await sign_in(browser, "vittima", GOOD_PASSWORD)).status == 303
    other = await env.new_browser()
    foreign = (await other.get("/login")).csrf
    forms: dict[str, dict[str, str]] = {
        "/logout": {},
        "/account": {"first_name": "Hacked", "language": "en"},
        "/account/password": {
            "current_password": GOOD_PASSWORD,
            "password": "Nuova-Chiave-9x",
            "password_confirm": "Nuova-Chiave-9x",
        },
        "/cases/new": {"customer_kind": "person", "acting_as": "self"},
        "/helpdesk": {"category": "support", "subject": "s", "message": "m"},
        "/account/security/method": {"method": "email"},
    }
    for path, data in forms.items():
        for token in (None, "0" * 64, foreign, ""):
            page = await browser.post(path, data, csrf=token)
            assert page.status == 403, (path, token, page.status)
            assert 'data-error-code="csrf_failed"' in page.text, path
    async with env.services.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Case)) == 0
        assert await session.scalar(select(func.count()).select_from(Ticket)) == 0
        victim = await session.scalar(select(Account).where(Account.username == "vittima"))
        assert victim is not None and victim.first_name == "Mario"
    assert (await browser.get("/account")).status == 200  # still signed in
    for token in (None, "0" * 64, foreign):
        status, body = await api(browser, "POST", "/api/v1/cases", token, json={})
        assert status == 403 and body["error"]["code"] == "csrf_failed"
    # The right token works, which shows the refusals were about the token alone.
    page = await browser.submit("/logout", {}, form_page="/")
    assert page.status == 303


# -- session fixation -----------------------------------------------------------------------


async def test_session_fixation_a_planted_session_id_is_replaced_at_sign_in(env: Env) -> None:
    """Whatever session id the browser held before signing in (one the service gave a
    visitor, or one an attacker planted) is not the one it holds after, and the old id opens
    nothing. (Also tests/test_signin.py.)"""
    await registered(env, "rotazione")
    attacker = await env.new_browser()
    await attacker.get("/login")
    planted = attacker.cookie(SESSION_COOKIE) or "planted-" + "a" * 40
    victim = await env.new_browser()
    server = env.client.make_url("/")
    victim.client.session.cookie_jar.update_cookies({SESSION_COOKIE: planted}, server)
    page = await sign_in(victim, "rotazione", GOOD_PASSWORD)
    assert page.status == 303
    signed = victim.cookie(SESSION_COOKIE)
    assert signed and signed != planted
    attacker.client.session.cookie_jar.update_cookies({SESSION_COOKIE: planted}, server)
    assert (await attacker.get("/account")).status == 303  # to the sign-in page
    assert (await victim.get("/account")).status == 200
    # The staff's second step rotates it again: the half-signed id is dead too.
    await staff(env, "operatore", role="helpdesk")
    desk = await env.new_browser()
    assert (await sign_in(desk, "operatore", GOOD_PASSWORD)).status == 303
    half = desk.cookie(SESSION_COOKIE)
    mail = await env.last_mail("operatore@example.org")
    page = await desk.submit("/login/code", {"code": code_in(mail.body_text), "next": "/"})
    assert page.status == 303
    full = desk.cookie(SESSION_COOKIE)
    assert half and full and full != half
    assert await env.services.sessions.get(half) is None


# -- throttling -----------------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"registrations_per_hour": 2}])
async def test_throttling_sign_in_registration_and_help_desk_are_rate_limited(
    env: Env, settings_overrides: dict[str, Any]
) -> None:
    """Sign-in failures slow down (per account name and per address), an address may register
    only so many accounts and send only so many anonymous help-desk messages an hour: 429
    with ``Retry-After``, nothing written, and the limit lifts by itself. (Details in
    tests/test_signin.py and tests/test_helpdesk.py.)"""
    await registered(env, "bersaglio")  # the first registration from this address
    browser = await env.new_browser()
    for _ in range(5):
        assert (await sign_in(browser, "bersaglio", "Sbagliata-123")).status == 401
    page = await sign_in(browser, "bersaglio", GOOD_PASSWORD)
    assert page.status == 429 and int(page.headers["Retry-After"]) >= 1
    # Registration: the second is allowed, the third from the same address is not.
    visitor = await env.new_browser()
    page = await visitor.submit("/register", registration("secondo"))
    assert page.status == 303
    page = await visitor.submit("/register", registration("terzo"))
    assert page.status == 429 and page.headers["Retry-After"] == "3601"
    assert "Troppe richieste: attendi un momento e riprova." in page.text
    assert 'value="terzo"' in page.text  # what was typed is kept for later
    assert await env.services.accounts.by_username("terzo") is None
    # Anonymous help-desk messages: five an hour.
    anonymous = await env.new_browser()
    token = (await anonymous.get("/login")).csrf
    body = {
        "category": "information",
        "subject": "Domanda",
        "message": "Testo",
        "name": "Lucia Bianchi",
        "email": "lucia@example.org",
    }
    answers = [
        (await api(anonymous, "POST", "/api/v1/helpdesk/tickets", token, json=body))[0]
        for _ in range(6)
    ]
    assert answers == [201] * 5 + [429]
    env.advance(minutes=61)
    assert (await sign_in(browser, "bersaglio", GOOD_PASSWORD)).status == 303
    assert (await visitor.submit("/register", registration("terzo"))).status == 303
    status, _ = await api(anonymous, "POST", "/api/v1/helpdesk/tickets", token, json=body)
    assert status == 201


# -- account enumeration timing -------------------------------------------------------------


async def medians(
    first: Callable[[int], Awaitable[Any]],
    second: Callable[[int], Awaitable[Any]],
    tries: int,
    settle: Callable[[], Awaitable[None]],
) -> tuple[float, float]:
    """The median durations of ``first`` and ``second``, tried in turns (so that the noise of
    a shared machine falls on both alike), with what each left to do finished (``settle``)
    before the next starts."""
    times: tuple[list[float], list[float]] = ([], [])
    for n in range(tries):
        for action, found in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            await action(n)
            found.append(time.perf_counter() - start)
            await settle()
    return statistics.median(times[0]), statistics.median(times[1])


PRODUCTION_HASHING = {
    # The production cost of a password hash (argon2's defaults in the settings, memory
    # lowered to keep the machine's other tests alive): a skipped hash would show.
    "argon2_time_cost": 3,
    "argon2_memory_kib": 16384,
    "argon2_parallelism": 2,
    "login_failures_allowed": 1000,  # the timing, not the throttling, is measured here
}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("settings_overrides", [PRODUCTION_HASHING])
async def test_account_enumeration_timing_is_the_same_for_known_and_unknown_accounts(
    env: Env, settings_overrides: dict[str, Any]
) -> None:
    """Signing in and asking for a password reset or one's username take the same time for
    an account that exists and one that does not (medians of several tries, a generous
    tolerance), and answer the same. (Same answers: tests/test_signin.py, test_recovery.py.)

    Recovery used to look the account up, issue the link and queue the mail before answering:
    a known account's request took two to three times as long (10-30 ms against 5-10 ms).
    That work now happens after the answer (``cases/recovery.py``)."""
    await registered(env, "esistente")
    browser = await env.new_browser()
    token = (await browser.get("/login")).csrf

    async def login(user: str) -> Callable[[int], Awaitable[Any]]:
        async def attempt(_n: int) -> None:
            page = await browser.post(
                "/login", {"username": user, "password": "Sbagliata-123", "next": "/"}, csrf=token
            )
            assert page.status == 401

        return attempt

    async def reset(user: str) -> Callable[[int], Awaitable[Any]]:
        async def attempt(n: int) -> None:
            # Below the hourly cap of reset mails, so every known-account try does the work.
            env.advance(minutes=20)
            page = await browser.post("/recover/password", {"identifier": user}, csrf=token)
            assert page.status in (200, 303)

        return attempt

    async def recover(address: str) -> Callable[[int], Awaitable[Any]]:
        async def attempt(_n: int) -> None:
            page = await browser.post("/recover/username", {"email": address}, csrf=token)
            assert page.status in (200, 303)

        return attempt

    for name, known, unknown, tries in (
        ("sign-in", await login("esistente"), await login("nessuno.qui"), 7),
        ("reset", await reset("esistente"), await reset("nessuno.qui"), 9),
        (
            "username",
            await recover("esistente@example.org"),
            await recover("nessuno@example.org"),
            9,
        ),
    ):
        await known(0)  # warm both paths up
        await unknown(0)
        a, b = await medians(known, unknown, tries, env.services.recovery.drain)
        print(f"{name}: known {a * 1000:.1f} ms, unknown {b * 1000:.1f} ms")
        # Generous: a shared machine is noisy; a leak (a skipped hash, a mail built or sent
        # inline) is a difference of several times.
        assert abs(a - b) <= max(0.4 * max(a, b), 0.004), (name, a, b)


# -- XSS ------------------------------------------------------------------------------------


async def test_xss_every_user_supplied_field_is_shown_as_text(meet: Meet) -> None:
    """Markup typed in any free-text field — the request's addresses, description, claim and
    notes, a document's description and file name, help-desk subjects, messages and answers,
    the scheduler's reasons, the room's chat and lobby note — is shown escaped on every page
    that shows it, to every role, and never as markup; the room page's script writes text
    only. (Also tests/test_web_security.py, tests/test_helpdesk.py.)"""
    env = meet.world.env
    svc = env.services
    case_id = await domain_request(
        env,
        "cliente",
        str(meet.world.company_id),
        supply={"pod": "IT001E99999999", "address": XSS[:60], "city": "Milano"},
        dispute={"description": XSS, "claim": XSS},
        meeting={"notes": XSS},
    )
    cliente = await account(env)
    await svc.documents.do_add(
        cliente,
        uuid.UUID(case_id),
        filename=XSS[:40] + ".pdf",
        chunks=chunks_of(PDF),
        category="other",
        description=XSS,
        visible_to_other_party="on",
    )
    ticket = await ticket_of(meet.customer, subject=XSS, message=XSS)
    desk = await env.new_browser()
    await staff_sign_in(env, desk, "sportello")
    status, _ = await api(
        desk,
        "POST",
        f"/api/v1/helpdesk/tickets/{ticket}/answer",
        await me_token(desk),
        json={"message": XSS},
    )
    assert status == 201
    sportello = await account(env, "sportello")
    await svc.files.do_step(sportello, uuid.UUID(case_id), Action.ADMIT)
    scheduler = await env.new_browser()
    await staff_sign_in(env, scheduler, "pianificatore")
    status, body = await api(
        scheduler,
        "POST",
        f"/api/v1/cases/{meet.case_id}/extend",
        await me_token(scheduler),
        json={"reason": XSS},
    )
    assert status == 200, body
    chair, (party,) = await admitted(meet, meet.customer)
    said = await party.say(XSS)
    assert said["ok"]
    assert (await chair.call("lobby_note", {"note": XSS}))["ok"]
    message = await chair.wait_for("message", lambda d: d["seq"] == said["seq"])
    assert message["text"] == XSS  # data, never pre-rendered markup
    shown = [
        (meet.customer, f"/cases/{case_id}"),
        (meet.customer, f"/cases/{case_id}/request/summary"),
        (meet.customer, f"/helpdesk/tickets/{ticket}"),
        (meet.customer, "/helpdesk/tickets"),
        (meet.customer, f"/cases/{meet.case_id}"),
        (desk, f"/cases/{case_id}"),
        (desk, f"/helpdesk/tickets/{ticket}"),
        (desk, "/desk/helpdesk"),
        (meet.rep, f"/cases/{case_id}"),
        (scheduler, f"/cases/{meet.case_id}"),
    ]
    for browser, path in shown:
        page = await browser.get(path)
        assert page.status == 200, (path, page.status)
        assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
        assert "&lt;script&gt;" in page.text or XSS_SHOWN[:40] in page.text, path
    for browser, path in (
        (meet.customer, "/cases"),
        (meet.conciliator, f"/meetings/{meet.meeting.id}/room"),
        (meet.conciliator, "/agenda"),
        (scheduler, "/schedule"),
    ):
        page = await browser.get(path)
        assert page.status == 200, (path, page.status)
        assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
    # The room is drawn by its script: chat, names and notes go in as text nodes only.
    for script in ("room.js", "room-video.js", "welcome.js"):
        source = (ROOT / "web" / "static" / script).read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in source, (script, sink)
        assert "textContent" in source or script != "room.js"


# -- the meeting room -----------------------------------------------------------------------


async def room_messages(meet: Meet, meeting_id: uuid.UUID) -> int:
    async with meet.world.env.services.db.session() as session:
        found = await session.scalar(
            select(func.count())
            .select_from(RoomMessage)
            .where(RoomMessage.meeting_id == meeting_id)
        )
    return int(found or 0)


async def other_meeting(meet: Meet) -> tuple[Meeting, uuid.UUID]:
    """A second meeting, of another case, with the other conciliator."""
    svc = meet.world.env.services
    case_id = await meet.world.admitted_case(pod="IT001E55555555")
    later = FIRST + timedelta(days=9)  # the case was admitted today: a slot next week
    meeting = await svc.bookings.do_book(
        meet.world.scheduler, case_id, rome(later, 9), meet.world.k2.id
    )
    return meeting, case_id


async def test_room_events_naming_other_meetings_are_refused(meet: Meet) -> None:
    """No event names a meeting (the room token does): a payload that tries is refused as a
    whole, and the ids events do carry (a document, an account) must belong to the
    connection's own meeting; nothing reaches the other meeting. (Every payload's rules:
    tests/test_fuzz_inputs.py.)"""
    env = meet.world.env
    svc = env.services
    other, other_case = await other_meeting(meet)
    chair, (party,) = await admitted(meet, meet.customer)
    for event, data in (
        ("say", {"client_id": "a1", "text": "ciao", "meeting": str(other.id)}),
        ("say", {"client_id": "a1", "text": "ciao", "meeting_id": str(other.id)}),
        ("history", {"after": 0, "meeting_id": str(other.id)}),
        ("join", {"meeting_id": str(other.id)}),
    ):
        answer = await party.call(event, data)
        assert answer["error"]["code"] == "bad_request", (event, answer)
        assert [f for f in answer["error"]["params"]["fields"] if "meeting" in f], answer
    foreign = await svc.documents.list_for(await account(env), other_case)
    answer = await chair.call("share", {"document": str(foreign[0].id)})
    assert answer["error"]["code"] == "not_found", answer
    outsider_id = (await account(env, "conciliatore2")).id
    for event in ("admit", "remove"):
        answer = await chair.call(event, {"account": str(outsider_id)})
        assert not answer["ok"], (event, answer)
    answer = await chair.call("mute", {"account": str(outsider_id), "muted": True})
    assert not answer["ok"], answer
    # A token of one meeting, altered to name the other, is refused at the handshake.
    token = await meet.client(meet.customer).token()
    meeting_part, rest = token.split(".", 1)
    assert meeting_part == str(meet.meeting.id)
    forged = meet.client(meet.customer)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await forged.connect(f"{other.id}.{rest}")
    assert forged.refusals[-1]["data"]["code"] == "token_invalid"
    assert await room_messages(meet, other.id) == 0


async def test_oversize_frames_close_the_connection_and_store_nothing(meet: Meet) -> None:
    """A frame past the limit (64 KiB) closes the sender's connection at once, nothing of it
    is stored or relayed, and the others go on. (Also tests/test_room.py.)"""
    chair, (party,) = await admitted(meet, meet.customer)
    seq_before = (await chair.join())["seq"]
    await party.sio.emit("say", {"client_id": "big", "text": "x" * 100_000}, namespace="/meeting")
    await asyncio.wait_for(party.disconnected.wait(), 10)
    said = await chair.say("si continua")
    assert said["ok"] and said["seq"] == seq_before + 1
    texts = [m["text"] for m in (await chair.join())["messages"]]
    assert all(len(t) < 1000 for t in texts)
    # The sender may come back with a normal frame.
    again = meet.client(meet.customer)
    await again.connect()
    assert (await again.join())["me"]["state"] == "admitted"


async def test_floods_are_refused_then_the_connection_is_closed(meet: Meet) -> None:
    """Events past the rate (10 a second, bursts of 20) are refused with ``rate_limited``
    and not acted on; a client that keeps flooding is disconnected; the room goes on.
    (Also tests/test_room.py.)"""
    chair, (party,) = await admitted(meet, meet.customer)
    stored_before = await room_messages(meet, meet.meeting.id)
    answers = await asyncio.gather(
        *(party.say(f"flood {n}", client_id=f"f{n}") for n in range(40)),
        return_exceptions=True,
    )
    codes = [a["error"]["code"] for a in answers if isinstance(a, dict) and not a["ok"]]
    stored = [a for a in answers if isinstance(a, dict) and a["ok"]]
    assert "rate_limited" in codes and len(stored) <= 25, (len(stored), codes[:3])
    assert await room_messages(meet, meet.meeting.id) == stored_before + len(stored)
    for _ in range(120):  # keep flooding past the limit of refusals in a row
        if party.disconnected.is_set():
            break
        await party.sio.emit("typing", {"on": True}, namespace="/meeting")
    await asyncio.wait_for(party.disconnected.wait(), 10)
    assert (await chair.say("ancora qui"))["ok"]


async def test_forged_and_expired_room_tokens_are_refused(meet: Meet) -> None:
    """A made-up token, one with a wrong signature, one past its two minutes, another
    account's, an overlong one and none at all: each refused at the handshake with
    ``token_invalid``, while a fresh token of one's own connects. (Also tests/test_room.py.)"""
    env = meet.world.env
    good = await meet.client(meet.customer).token()
    meeting_part, account_part, expiry, signature = good.split(".")
    rep_token = await meet.client(meet.rep).token()
    later = str(int(expiry) + 3600)
    bad_tokens = [
        "nonsense",
        "",
        f"{meeting_part}.{account_part}.{expiry}.{'0' * len(signature)}",
        f"{meeting_part}.{account_part}.{later}.{signature}",  # expiry pushed, same signature
        rep_token,  # another account's
        good + "." + "x" * 300,
    ]
    for bad in bad_tokens:
        client = meet.client(meet.customer)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(bad)
        assert client.refusals[-1]["data"]["code"] == "token_invalid", bad[:20]
    env.advance(minutes=3)  # the good token's two minutes are over
    expired = meet.client(meet.customer)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await expired.connect(good)
    assert expired.refusals[-1]["data"]["code"] == "token_invalid"
    fresh = meet.client(meet.customer)
    await fresh.connect()
    assert fresh.sio.connected
