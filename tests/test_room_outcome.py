"""How a meeting ends: the settlement proposal only when both parties ask, the agreement each
party accepts with a code from its e-mail, the outcomes and what the case does after, the
sealed minutes filed in the case file; documents shared into the room."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import select

from cases.documents import Category, Document
from cases.lifecycle import CaseStatus
from rooms.models import Room, RoomMessage
from rooms.seal import verify_minutes
from scheduling.bookings import Meeting, MeetingStatus
from tests.rooms_support import Meet, RoomClient, admitted, code_for, minutes_of
from tests.support import PDF
from tests.worlds import rome


async def accept(meet: Meet, party: RoomClient, email: str, version: int) -> dict[str, object]:
    sent = await party.call("send_code", {})
    assert sent["ok"] and "@" in str(sent["sent_to"]) and "***" in str(sent["sent_to"])
    return await party.call("accept", {"code": await code_for(meet, email), "version": version})


async def test_an_agreement_accepted_by_both_closes_the_case_with_sealed_minutes(
    meet: Meet,
) -> None:
    svc = meet.world.env.services
    chair, (customer, rep) = await admitted(meet, meet.customer, meet.rep)
    # A settlement proposal from the conciliator only once both parties asked for one.
    assert (await chair.call("draft", {"text": "Proposta", "proposal": True}))["error"][
        "code"
    ] == "proposal_not_asked"
    assert (await customer.call("ask_proposal", {}))["ok"]
    assert (await chair.call("draft", {"text": "Proposta", "proposal": True}))["error"][
        "code"
    ] == "proposal_not_asked"
    assert (await rep.call("ask_proposal", {}))["ok"]
    assert (await chair.call("ask_proposal", {}))["error"]["code"] == "forbidden"
    text = "La società rimborsa 120,50 € entro 30 giorni.\n\n<b>Nessun</b> altro onere."
    first = await chair.call("draft", {"text": "Bozza", "proposal": True})
    assert first == {"ok": True, "version": 1}
    second = await chair.call("draft", {"text": text, "proposal": True})
    assert second["version"] == 2
    shown = await customer.wait_for("agreement", lambda d: d["version"] == 2)
    assert shown["text"] == text and shown["proposal"] is True
    # Closing with an agreement needs both acceptances of the current text.
    assert (await chair.call("close", {"outcome": "agreement"}))["error"][
        "code"
    ] == "acceptance_missing"
    # A code for an older version, a wrong code: refused.
    assert (await customer.call("accept", {"code": "000000", "version": 2}))["error"][
        "code"
    ] == "code_invalid"
    sent = await customer.call("send_code", {})
    assert sent["ok"]
    code = await code_for(meet, "cliente@example.org")
    assert (await customer.call("accept", {"code": code, "version": 1}))["error"][
        "code"
    ] == "agreement_changed"
    wrong = "111111" if code != "111111" else "222222"
    assert (await customer.call("accept", {"code": wrong, "version": 2}))["error"][
        "code"
    ] == "code_invalid"
    assert (await customer.call("accept", {"code": code, "version": 2}))["ok"]
    accepted = await chair.wait_for(
        "participant", lambda d: d["side"] == "applicant" and d["accepted_version"] == 2
    )
    assert accepted["asked_proposal"]
    meet.world.env.advance(seconds=61)
    assert (await accept(meet, rep, "rep@example.org", 2))["ok"]
    closed = await chair.call("close", {"outcome": "agreement", "note": "Accordo raggiunto"})
    assert closed["ok"], closed
    ended = await customer.wait_for("room", lambda d: d["ended"])
    assert ended["outcome"] == "agreement"
    await customer.disconnected.wait()
    case, _ = await svc.files.get_for(meet.world.k1, meet.case_id)
    assert case.status == CaseStatus.CLOSED and case.outcome == "agreement"
    # The minutes: filed once, visible to both parties, sealed, with the agreement inside.
    document = await minutes_of(meet)
    assert document.visible_to_other_party and document.name.endswith(".pdf")
    content = svc.storage.path(document.storage_key).read_bytes()
    check = await verify_minutes(content)
    assert check.intact and check.sealed and not check.modified_after_signing
    async with meet.customer.client.get(f"/documents/{document.id}") as response:
        assert response.status == 200 and await response.read() == content
    assert (await svc.jobs.run_due()) == 0  # nothing left to do: filed once
    async with svc.db.session() as session:
        room = await session.get(Room, meet.meeting.id)
        assert room is not None and room.minutes_document_id == document.id
    # Both parties were told a document is in their case file.
    assert await meet.world.env.last_mail("cliente@example.org", "/cases/")
    # The room is over: nobody gets back in.
    late = meet.client(meet.customer)
    try:
        await late.connect()
        connected = True
    except Exception:
        connected = False
    assert not connected


async def test_an_adjournment_books_the_next_meeting_and_no_agreement_closes(meet: Meet) -> None:
    svc = meet.world.env.services
    chair, (_customer, _rep) = await admitted(meet, meet.customer, meet.rep)
    assert (await chair.call("close", {"outcome": "adjournment", "note": "Serve una perizia"}))[
        "ok"
    ]
    case, _ = await svc.files.get_for(meet.world.k1, meet.case_id)
    assert case.status == CaseStatus.SCHEDULED
    async with svc.db.session() as session:
        meetings = list(
            await session.scalars(
                select(Meeting).where(Meeting.case_id == meet.case_id).order_by(Meeting.starts_at)
            )
        )
    assert [m.status for m in meetings] == [MeetingStatus.HELD, MeetingStatus.SCHEDULED]
    assert meetings[1].conciliator_id == meet.world.k1.id
    assert meetings[1].starts_at == rome(date(2026, 12, 2), 14)
    assert (await minutes_of(meet)).category == Category.MINUTES


async def test_only_the_conciliator_closes_and_absences_close_the_case(meet: Meet) -> None:
    svc = meet.world.env.services
    chair, (customer,) = await admitted(meet, meet.customer)
    assert (await customer.call("close", {"outcome": "no_agreement"}))["error"][
        "code"
    ] == "forbidden"
    assert (await chair.call("close", {"outcome": "settled_by_magic"}))["error"][
        "code"
    ] == "bad_request"
    assert (await chair.call("close", {"outcome": "agreement"}))["error"][
        "code"
    ] == "no_agreement_text"
    assert (await chair.call("close", {"outcome": "company_absent"}))["ok"]
    case, _ = await svc.files.get_for(meet.world.k1, meet.case_id)
    assert case.status == CaseStatus.CLOSED and case.outcome == "company_absent"


async def test_shared_documents_reach_only_those_who_may_see_them(meet: Meet) -> None:
    env = meet.world.env
    ids = await meet.ids()
    chair, (customer, rep) = await admitted(meet, meet.customer, meet.rep)
    page = await meet.customer.get(f"/cases/{meet.case_id}")
    for visible, description in ((True, "Bolletta contestata"), (False, "Nota riservata")):
        fields = {"category": "bill", "description": description}
        if visible:
            fields["visible_to_other_party"] = "on"
        posted = await meet.customer.upload(
            f"/cases/{meet.case_id}/documents",
            fields,
            "bolletta.pdf",
            PDF,
            csrf=page.csrf,
        )
        assert posted.status == 303, posted.text
    async with env.services.db.session() as session:
        documents = {
            d.description: d
            for d in await session.scalars(select(Document).where(Document.case_id == meet.case_id))
        }
    public, private = documents["Bolletta contestata"], documents["Nota riservata"]
    shared = await customer.call("share", {"document": str(public.id)})
    assert shared["ok"], shared
    seen = await rep.wait_for("message", lambda d: d["kind"] == "document")
    assert seen["document"] == str(public.id) and seen["author"] == str(ids["cliente"])
    # Not into the joint session what the company may not see, nor what one may not see.
    assert (await customer.call("share", {"document": str(private.id)}))["error"][
        "code"
    ] == "document_private"
    assert (await rep.call("share", {"document": str(private.id)}))["error"]["code"] == "not_found"
    assert (await rep.call("share", {"document": str(uuid.uuid4())}))["error"][
        "code"
    ] == "not_found"
    # A share sent again with its client_id (its answer was lost) is shared once.
    once = {"document": str(public.id), "client_id": "share-1"}
    first = await customer.call("share", once)
    assert first["ok"] and not first["duplicate"]
    assert await customer.call("share", once) == {
        "ok": True,
        "seq": first["seq"],
        "duplicate": True,
    }
    await rep.wait_for("message", lambda d: d["seq"] == first["seq"])
    async with env.services.db.session() as session:
        stored = await session.scalars(
            select(RoomMessage).where(RoomMessage.client_id == "share-1")
        )
        assert [m.seq for m in stored] == [first["seq"]]
    for bad in ("", "a b", 7, "x" * 65):
        refused = await customer.call("share", {"document": str(public.id), "client_id": bad})
        assert refused["error"]["code"] == "bad_request", bad
    # In a separate session with the applicant it may be shared there.
    assert (await chair.call("separate", {"side": "applicant"}))["ok"]
    assert (await customer.call("share", {"document": str(private.id)}))["ok"]
    await chair.wait_for("message", lambda d: d["document"] == str(private.id))
    assert all(m["document"] != str(private.id) for m in rep.received("message"))


async def test_the_sweep_leaves_a_just_ended_room_to_the_closing(meet: Meet) -> None:
    """Closing answers the conciliator after the minutes are filed; the access sweep must not
    cut that answer off, and catches leftovers of an ended room only a minute later."""
    env = meet.world.env
    ids = await meet.ids()
    chair, (_customer,) = await admitted(meet, meet.customer)
    assert (await chair.call("close", {"outcome": "no_agreement"}))["ok"]
    pairs = [(ids["cliente"], meet.meeting.id), (ids["conciliatore1"], meet.meeting.id)]
    assert await env.services.rooms.revoked(pairs) == set()
    env.advance(minutes=2)
    assert await env.services.rooms.revoked(pairs) == set(pairs)
