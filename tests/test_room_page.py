"""The meeting room's page over HTTP: who gets it, what its data block carries (the room's
error messages in the reader's language, the case documents as plain data), its assets, the
documents it offers to share, and the welcome page's way in and browser check."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from sqlalchemy import update

from rooms.models import Room
from scheduling.bookings import Meeting
from tests.rooms_support import Meet, admitted
from tests.support import PDF, Browser, Page, attach, registered, sign_in, staff_sign_in
from tests.worlds import FIRST, rome

DATA_RE = re.compile(r'<script type="application/json" id="room-data">(.*?)</script>', re.S)
HOSTILE = '</script><script>alert("x")</script><b>bold</b> & <img src=x onerror=alert(1)>'


def data_of(page: Page) -> dict[str, Any]:
    found = DATA_RE.findall(page.text)
    assert len(found) == 1, "one data block"
    data: dict[str, Any] = json.loads(found[0])
    return data


async def test_each_participant_gets_the_room_page_with_its_own_controls(meet: Meet) -> None:
    svc = meet.world.env.services
    italian = svc.i18n.gettext("it")
    ids = await meet.ids()
    url = f"/meetings/{meet.meeting.id}/room"
    for browser, side, me in (
        (meet.customer, "applicant", ids["cliente"]),
        (meet.rep, "company", ids["rep"]),
        (meet.conciliator, "conciliator", ids["conciliatore1"]),
    ):
        page = await browser.get(url)
        assert page.status == 200, page.text
        assert page.headers["Cache-Control"] == "no-store"
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert (
            '<script src="/static/vendor/socket.io/socket.io.min.js" defer></script>' in page.text
        )
        assert '<script src="/static/app/room.js" defer></script>' in page.text
        data = data_of(page)
        assert data["side"] == side and data["me"] == str(me)
        assert data["meeting"] == str(meet.meeting.id)
        assert data["urls"]["token"] == f"/meetings/{meet.meeting.id}/token"
        assert data["starts_at"] == meet.meeting.starts_at.isoformat()
        assert data["server_time"] == rome(FIRST, 8, 46).isoformat()
        # The room's error codes, in the reader's language (Italian by default).
        assert data["errors"]["muted"] == italian("The conciliator has muted your chat.")
        assert data["errors"]["muted"] != "The conciliator has muted your chat."
        assert set(data["errors"]) >= {
            "room_closed",
            "not_admitted",
            "removed",
            "separate_session",
            "proposal_not_asked",
            "agreement_changed",
            "acceptance_missing",
            "no_agreement_text",
            "document_private",
            "code_invalid",
            "code_exhausted",
            "rate_limited",
            "file_type_not_allowed",
        }
        assert data["text"]["notice_admitted"] == italian("%(name)s joined the meeting.")
        assert set(data["outcomes"]) == {
            "agreement",
            "no_agreement",
            "adjournment",
            "applicant_absent",
            "company_absent",
        }
        # The conciliator's controls only on the conciliator's page; acceptance on the parties'.
        chairing = side == "conciliator"
        for control in ('id="close-form"', 'id="draft-form"', 'data-separate="company"'):
            assert (control in page.text) is chairing, (side, control)
        for control in ('id="send-code"', 'id="accept-form"', 'id="ask-proposal"'):
            assert (control in page.text) is not chairing, (side, control)
        # Every visible label is translated; the upload goes to the case file with its token.
        assert "Invia" in page.text and 'lang="it"' in page.text
        assert f'action="/cases/{meet.case_id}/documents?csrf_token=' in page.text
        assert data["urls"]["upload"].startswith(f"/cases/{meet.case_id}/documents?csrf_token=")
        assert data["urls"]["upload"].endswith(
            "&next=%2Fmeetings%2F" + str(meet.meeting.id) + "%2Fdocuments"
        )


async def test_the_page_speaks_english_on_request(meet: Meet) -> None:
    await meet.customer.get("/lang/en?next=/")
    page = await meet.customer.get(f"/meetings/{meet.meeting.id}/room")
    data = data_of(page)
    assert data["lang"] == "en"
    assert data["errors"]["muted"] == "The conciliator has muted your chat."
    assert data["errors"]["code_exhausted"].startswith("This code can no longer be used: ask")
    assert data["text"]["time_left"] == "Time left in the slot: %(time)s"
    assert ">Send</button>" in page.text


async def test_nobody_else_gets_the_room_page_or_its_documents(meet: Meet) -> None:
    env = meet.world.env
    room = f"/meetings/{meet.meeting.id}/room"
    documents = f"/meetings/{meet.meeting.id}/documents"
    anonymous = await env.new_browser()
    page = await anonymous.get(room)
    assert page.status == 303 and page.headers["Location"].startswith("/login?next=")
    await registered(env, "curioso")
    other = await env.new_browser()
    assert (await sign_in(other, "curioso", "Lampada-Verde-42")).status == 303
    k2 = await env.new_browser()
    await staff_sign_in(env, k2, "conciliatore2")
    for browser in (other, k2):
        assert (await browser.get(room)).status == 404
        assert (await browser.get(documents)).status == 404
    for path in (f"/meetings/{uuid.uuid4()}/room", f"/meetings/{uuid.uuid4()}/documents"):
        assert (await meet.customer.get(path)).status == 404
    assert (await meet.customer.get("/meetings/not-an-id/room")).status == 404


async def test_documents_are_plain_data_and_each_side_sees_its_own(meet: Meet) -> None:
    case_id = str(meet.case_id)
    assert (
        await attach(meet.customer, case_id, "bill", name="bolletta.pdf", description=HOSTILE)
    ).status == 303
    assert (
        await attach(meet.customer, case_id, "other", name="privato.pdf", visible=False)
    ).status == 303
    url = f"/meetings/{meet.meeting.id}/room"
    for browser, sees_private in (
        (meet.customer, True),
        (meet.rep, False),
        (meet.conciliator, True),
    ):
        page = await browser.get(url)
        # Typed text never reaches the page as markup: not in the data block, nowhere.
        assert "<script>alert" not in page.text and "<b>bold</b>" not in page.text
        # Each element the page opens (all with attributes) is closed once: nothing typed
        # closed the data block early.
        assert page.text.count("</script>") == page.text.count("<script ") == 6
        data = data_of(page)
        named = {d["name"]: d for d in data["documents"]}
        assert named["bolletta.pdf"]["description"] == HOSTILE
        assert named["bolletta.pdf"]["visible"] is True
        assert named["bolletta.pdf"]["mine"] is (browser is meet.customer)
        assert ("privato.pdf" in named) is sees_private
        listed = await browser.get(f"/meetings/{meet.meeting.id}/documents")
        assert listed.status == 200 and listed.headers["Content-Type"].startswith(
            "application/json"
        )
        assert json.loads(listed.text)["documents"] == data["documents"]


async def test_an_upload_from_the_room_comes_back_as_the_documents_list(meet: Meet) -> None:
    page = await meet.rep.get(f"/meetings/{meet.meeting.id}/room")
    # The form sends its fields before its file, as the case file's upload reads them.
    form = page.text[page.text.index('id="upload-form"') :]
    form = form[: form.index("</form>")]
    positions = [form.index(f'name="{name}"') for name in ("category", "description", "file")]
    assert positions == sorted(positions)
    upload = data_of(page)["urls"]["upload"]
    path, query = upload.split("?", 1)
    params = dict(part.split("=", 1) for part in query.split("&"))
    sent = await upload_as(meet.rep, path, params["next"], page.csrf)
    assert sent.status == 303
    assert sent.headers["Location"] == f"/meetings/{meet.meeting.id}/documents"
    listed = json.loads((await meet.rep.get(sent.headers["Location"])).text)["documents"]
    mine = [d for d in listed if d["mine"]]
    assert [d["name"] for d in mine] == ["offerta.pdf"] and mine[0]["side"] == "company"
    # A refused upload is the error page, with its code for the script to read.
    refused = await meet.rep.upload(
        path + "?next=" + params["next"],
        {"category": "bill", "description": "x"},
        "virus.exe",
        b"MZ",
        csrf=page.csrf,
    )
    assert refused.status == 422 and 'data-error-code="file_type_not_allowed"' in refused.text


async def upload_as(browser: Browser, path: str, next_: str, csrf: str) -> Page:
    return await browser.upload(
        f"{path}?next={next_}",
        {"category": "company_document", "description": "Offerta", "visible_to_other_party": "on"},
        "offerta.pdf",
        PDF,
        csrf=csrf,
    )


async def test_the_assets_are_served_by_the_app(meet: Meet) -> None:
    for path, kind in (
        ("/static/app/room.js", "javascript"),
        ("/static/app/welcome.js", "javascript"),
        ("/static/vendor/socket.io/socket.io.min.js", "javascript"),
        ("/static/app/app.css", "css"),
    ):
        async with meet.customer.client.get(path) as response:
            body = await response.text()
            assert response.status == 200, path
            assert kind in response.headers["Content-Type"], path
            assert len(body) > 1000, path
    async with meet.customer.client.get("/static/vendor/socket.io/socket.io.min.js") as response:
        assert "socket.io" in (await response.text())[:200].lower()


async def test_the_welcome_page_leads_into_the_open_room_and_checks_the_browser(
    meet: Meet,
) -> None:
    env = meet.world.env
    welcome = f"/meetings/{meet.meeting.id}"
    enter = f'<a class="btn btn-success" id="enter" href="/meetings/{meet.meeting.id}/room">'
    page = await meet.customer.get(welcome)
    assert enter in page.text and "Entra nella stanza" in page.text
    assert 'id="check-websocket"' in page.text and 'id="check-secure"' in page.text
    assert '<script src="/static/app/welcome.js" defer></script>' in page.text
    checks = json.loads(
        re.findall(r'<script type="application/json" id="welcome-data">(.*?)</script>', page.text)[
            0
        ]
    )
    assert set(checks) >= {"websocket_ok", "secure_missing", "media_ok", "media_denied"}
    # A chat meeting needs no camera; a video meeting offers the check.
    assert 'id="check-media"' not in page.text
    async with env.services.db.session() as session:
        await session.execute(
            update(Meeting).where(Meeting.id == meet.meeting.id).values(mode="video")
        )
        await session.commit()
    page = await meet.customer.get(welcome)
    assert 'id="check-media"' in page.text and 'id="media-preview"' in page.text
    # Before the room opens there is no way in yet; once the conciliator closed it, neither.
    env.clock.set(rome(FIRST, 8, 30))
    page = await meet.customer.get(welcome)
    assert page.status == 200 and 'id="enter"' not in page.text
    env.clock.set(rome(FIRST, 8, 50))
    chair, _parties = await admitted(meet, meet.customer)
    # The meeting is held from the conciliator's arrival: the case file still leads back in.
    case_file = await meet.customer.get(f"/cases/{meet.case_id}")
    assert f'<a class="btn btn-success" id="join" href="{welcome}">' in case_file.text
    # Past the room's grace time only its conciliator may come back, to close it.
    env.clock.set(rome(FIRST, 11, 30))
    customer = await env.new_browser()
    assert (await sign_in(customer, "cliente", "Lampada-Verde-42")).status == 303
    conciliator = await env.new_browser()
    await staff_sign_in(env, conciliator, "conciliatore1")
    assert 'id="enter"' not in (await customer.get(welcome)).text
    assert enter in (await conciliator.get(welcome)).text
    assert (await chair.call("close", {"outcome": "no_agreement"}))["ok"]
    async with env.services.db.session() as session:
        room = await session.get(Room, meet.meeting.id)
        assert room is not None and room.ended_at is not None
    for browser in (customer, conciliator):
        page = await browser.get(welcome)
        assert 'id="enter"' not in page.text and "Questo incontro è concluso." in page.text
