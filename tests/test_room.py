"""The meeting room over real Socket.IO connections: who gets in, the lobby, the chat exactly
once, resync, separate sessions kept private, moderation, limits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
import socketio
from sqlalchemy import func, select
from sqlalchemy.exc import TimeoutError as PoolTimeout

from cases.accounts import Account
from cases.casefile import Case
from cases.lifecycle import CaseStatus
from core.errors import ErrorCode, UserError
from rooms.models import RoomMessage, RoomPresence
from rooms.room import HISTORY_TAIL, PAGE_MAX, Rooms, Said, Saying
from scheduling.bookings import Meeting, MeetingStatus
from tests.rooms_support import Meet, admitted, said_while_away
from tests.support import registered, sign_in
from tests.worlds import FIRST, rome


async def test_connections_need_a_session_and_a_fresh_token_for_the_same_account(
    meet: Meet,
) -> None:
    env = meet.world.env
    customer = meet.client(meet.customer)
    token = await customer.token()
    # Forged, another account's, expired, or without a session: refused at the handshake.
    for bad in ("nonsense", token[:-1] + ("0" if token[-1] != "0" else "1")):
        with pytest.raises(socketio.exceptions.ConnectionError):
            await meet.client(meet.customer).connect(bad)
    rep_token = await meet.client(meet.rep).token()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await meet.client(meet.customer).connect(rep_token)
    anonymous = meet.client(await env.new_browser())
    with pytest.raises(socketio.exceptions.ConnectionError):
        await anonymous.connect(token)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await meet.client(meet.customer).connect(token, origin="http://evil.example")
    env.advance(minutes=3)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await meet.client(meet.customer).connect(token)
    # Someone unrelated gets no token at all; a guessed meeting neither.
    await registered(env, "curioso")
    other = await env.new_browser()
    assert (await sign_in(other, "curioso", "Lampada-Verde-42")).status == 303
    assert (await other.get(f"/meetings/{meet.meeting.id}/token")).status == 404
    assert (await meet.customer.get(f"/meetings/{uuid.uuid4()}/token")).status == 404
    fine = meet.client(meet.customer)
    await fine.connect()
    assert fine.sio.connected


async def test_a_refused_connection_says_why_with_its_code(meet: Meet) -> None:
    env = meet.world.env
    forged = meet.client(meet.customer)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await forged.connect("nonsense")
    # The page reads the code from the error's data (and its message, for older clients).
    assert forged.refusals == [{"message": "token_invalid", "data": {"code": "token_invalid"}}]
    anonymous = meet.client(await env.new_browser())
    with pytest.raises(socketio.exceptions.ConnectionError):
        await anonymous.connect(await meet.client(meet.customer).token())
    assert anonymous.refusals == [
        {"message": "unauthenticated", "data": {"code": "unauthenticated"}}
    ]
    env.clock.set(rome(FIRST, 8, 0))  # a fresh token, but the room opens at 8:45
    early = meet.client(meet.customer)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await early.connect()
    assert early.refusals == [{"message": "room_closed", "data": {"code": "room_closed"}}]


async def test_the_lobby_holds_parties_until_the_conciliator_admits_them(meet: Meet) -> None:
    svc = meet.world.env.services
    ids = await meet.ids()
    customer = meet.client(meet.customer)
    await customer.connect()
    lobby = await customer.join()
    # Before the conciliator: waiting, no chat, no participants, no history.
    assert lobby["me"]["state"] == "waiting" and "messages" not in lobby
    assert lobby["room"]["opened"] is False
    assert (await customer.say("hello?"))["error"]["code"] == "not_admitted"
    chair = meet.client(meet.conciliator)
    await chair.connect()
    seen = await chair.join()
    assert seen["room"]["opened"] and seen["room"]["session"]["kind"] == "joint"
    waiting = [p for p in seen["participants"] if p["state"] == "waiting"]
    assert [p["id"] for p in waiting] == [str(ids["cliente"])]
    # Opening the room holds the meeting.
    case, _ = await svc.files.get_for(meet.world.k1, meet.case_id)
    assert case.status == CaseStatus.MEETING_HELD
    assert (await chair.call("lobby_note", {"note": "Two minutes, please"}))["ok"]
    room = await customer.wait_for("room", lambda d: d["lobby_note"] == "Two minutes, please")
    assert room["opened"]
    # A party cannot admit anyone, itself included.
    assert (await customer.call("admit", {"account": str(ids["cliente"])}))["error"][
        "code"
    ] == "not_admitted"
    turned = await chair.call("turn_away", {"account": str(ids["cliente"]), "note": "Not yet"})
    assert turned["ok"]
    me = await customer.wait_for("me", lambda d: d["state"] == "turned_away")
    assert me["note"] == "Not yet"
    # Knocking again puts it back in the lobby; then it is admitted.
    assert (await customer.join())["me"]["state"] == "waiting"
    assert (await chair.call("admit", {"account": str(ids["cliente"])}))["ok"]
    await customer.wait_for("me", lambda d: d["state"] == "admitted")
    full = await customer.join()
    assert full["me"]["state"] == "admitted" and "messages" in full
    assert {p["id"] for p in full["participants"]} == {
        str(ids["cliente"]),
        str(ids["conciliatore1"]),
    }


async def test_chat_is_stored_once_acknowledged_after_commit_and_resynced(meet: Meet) -> None:
    svc = meet.world.env.services
    chair, (customer, rep) = await admitted(meet, meet.customer, meet.rep)
    sent = await customer.say("Buongiorno <b>a tutti</b> & grazie", client_id="c-1")
    assert sent["ok"] and not sent["duplicate"]
    again = await customer.say("Buongiorno <b>a tutti</b> & grazie", client_id="c-1")
    assert again == {"ok": True, "seq": sent["seq"], "duplicate": True}
    async with svc.db.session() as session:
        count = await session.scalar(
            select(func.count()).select_from(RoomMessage).where(RoomMessage.client_id == "c-1")
        )
    assert count == 1
    heard = await rep.wait_for("message", lambda d: d["seq"] == sent["seq"])
    assert heard["text"] == "Buongiorno <b>a tutti</b> & grazie"  # text, exactly as typed
    # The customer goes away; the others talk; coming back with its last seq it gets exactly
    # what it missed, in order.
    last = sent["seq"]
    await customer.close()
    said = [(await chair.say(f"missed {i}"))["seq"] for i in range(3)]
    said.append((await rep.say("missed too"))["seq"])
    back = meet.client(meet.customer)
    await back.connect()
    snapshot = await back.join(after=last)
    assert [m["seq"] for m in snapshot["messages"]] == said
    history = await back.call("history", {"after": 0})
    assert [m["seq"] for m in history["messages"] if m["kind"] == "chat"][-4:] == said
    # Bad payloads are refused with a code, never stored.
    for bad in (
        {"client_id": "x", "text": ""},
        {"client_id": "has space", "text": "hi"},
        {"client_id": "ok", "text": "x" * 4001},
        {"client_id": "ok", "text": 42},
        {"client_id": "ok", "text": "hi", "meeting": str(uuid.uuid4())},
    ):
        answer = await back.call("say", bad)
        assert answer["ok"] is False and answer["error"]["code"] == "bad_request", bad
    # Control characters (a NUL would break PostgreSQL) are dropped, line breaks kept.
    odd = await back.say("a\x00b\x1b[31m\r\nc")
    assert odd["ok"]
    stored = (await back.call("history", {"after": odd["seq"] - 1}))["messages"]
    assert [m["text"] for m in stored] == ["ab[31m\nc"]


async def test_a_long_absence_is_resynced_in_order_page_by_page(meet: Meet) -> None:
    """More missed than a resumed snapshot holds: it gives the first of them, and ``history``
    pages on from the last seq received until an answer holds fewer than asked — every
    missed message once, in order, none skipped (the newest page alone would skip older)."""
    _chair, (customer, _rep) = await admitted(meet, meet.customer, meet.rep)
    last = (await customer.say("prima di andare"))["seq"]
    await customer.close()
    ids = await meet.ids()
    missed = await said_while_away(meet, ids["conciliatore1"], PAGE_MAX + 120)
    back = meet.client(meet.customer)
    await back.connect()
    snapshot = await back.join(after=last)
    got = [m["seq"] for m in snapshot["messages"]]
    assert got == missed[:PAGE_MAX]
    while True:
        page = (await back.call("history", {"after": got[-1], "limit": PAGE_MAX}))["messages"]
        got += [m["seq"] for m in page]
        if len(page) < PAGE_MAX:
            break
    assert got == missed
    assert snapshot["seq"] == got[-1]
    # A first join still shows the latest messages.
    fresh = meet.client(meet.rep)
    await fresh.connect()
    tail = (await fresh.join())["messages"]
    assert [m["seq"] for m in tail][-1] == got[-1] and len(tail) == HISTORY_TAIL


async def test_a_separate_session_is_private_now_and_in_history(meet: Meet) -> None:
    chair, (customer, rep) = await admitted(meet, meet.customer, meet.rep)
    assert (await chair.call("separate", {"side": "company"}))["ok"]
    state = await customer.wait_for(
        "room", lambda d: d["session"] is not None and d["session"]["kind"] == "separate"
    )
    assert state["session"]["side"] == "company"
    refused = await customer.say("Are you there?")
    assert refused["error"]["code"] == "separate_session"
    secret = await rep.say("Our best offer is 300 euro")
    reply = await chair.say("Thank you, I will explore it")
    await chair.wait_for("message", lambda d: d["seq"] == secret["seq"])
    await rep.wait_for("message", lambda d: d["seq"] == reply["seq"])
    assert (await chair.call("separate", {"side": None}))["ok"]
    await customer.wait_for(
        "room", lambda d: d["session"] is not None and d["session"]["kind"] == "joint"
    )
    public = await chair.say("We are all back together")
    await customer.wait_for("message", lambda d: d["seq"] == public["seq"])
    texts = [m["text"] for m in customer.received("message")]
    assert "Our best offer is 300 euro" not in texts and "Thank you, I will explore it" not in texts
    for source in (
        (await customer.call("history", {"after": 0}))["messages"],
        (await customer.join())["messages"],
    ):
        assert all(m["side"] in (None,) for m in source)
        assert "Our best offer is 300 euro" not in [m["text"] for m in source]
    chair_view = [m["text"] for m in (await chair.call("history", {"after": 0}))["messages"]]
    assert "Our best offer is 300 euro" in chair_view
    rep_view = [m["text"] for m in (await rep.call("history", {"after": 0}))["messages"]]
    assert "Our best offer is 300 euro" in rep_view


async def test_mute_and_remove_act_at_once_and_a_removed_party_stays_out(meet: Meet) -> None:
    ids = await meet.ids()
    chair, (customer,) = await admitted(meet, meet.customer)
    assert (await chair.call("mute", {"account": str(ids["cliente"]), "muted": True}))["ok"]
    await customer.wait_for("me", lambda d: d["muted"])
    assert (await customer.say("let me speak"))["error"]["code"] == "muted"
    assert (await chair.call("mute", {"account": str(ids["cliente"]), "muted": False}))["ok"]
    await customer.wait_for("me", lambda d: not d["muted"])
    assert (await customer.say("thank you"))["ok"]
    # Ids from elsewhere are refused: another person, the conciliator itself, garbage.
    for target in (str(uuid.uuid4()), str(ids["conciliatore1"])):
        assert (await chair.call("mute", {"account": target, "muted": True}))["error"][
            "code"
        ] == "not_found"
    assert (await chair.call("mute", {"account": "nope", "muted": True}))["error"][
        "code"
    ] == "bad_request"
    assert (await chair.call("remove", {"account": str(ids["cliente"])}))["ok"]
    await customer.disconnected.wait()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await meet.client(meet.customer).connect()
    # The party's own controls are refused to it.
    rep = meet.client(meet.rep)
    await rep.connect()
    await rep.join()
    assert (await rep.call("remove", {"account": str(ids["cliente"])}))["error"][
        "code"
    ] == "not_admitted"


async def test_messages_stored_together_are_each_checked_stored_once_and_told_in_order(
    meet: Meet,
) -> None:
    """Messages that arrive at once are stored in one transaction, each with its own checks
    and its own answer."""
    svc = meet.world.env.services
    ids = await meet.ids()
    chair, (_customer, rep) = await admitted(meet, meet.customer, meet.rep)
    assert (await chair.call("mute", {"account": str(ids["rep"]), "muted": True}))["ok"]
    await rep.wait_for("me", lambda d: d["muted"])
    meeting = meet.meeting.id
    batches: list[int] = []
    store = svc.rooms._chat_batch

    async def counted(batch: Sequence[Saying]) -> list[Said | BaseException]:
        batches.append(len(batch))
        return await store(batch)

    svc.rooms._chat_batch = counted  # type: ignore[method-assign]
    said = await asyncio.gather(
        *(svc.rooms.say(ids["cliente"], meeting, f"c-{i}", f"customer {i}") for i in range(3)),
        *(svc.rooms.say(ids["conciliatore1"], meeting, f"k-{i}", f"chair {i}") for i in range(2)),
        svc.rooms.say(ids["cliente"], meeting, "c-0", "customer 0, sent again"),
        svc.rooms.say(ids["rep"], meeting, "r-0", "muted, refused"),
        svc.rooms.say(meet.world.k2.id, meeting, "x-0", "not of this meeting"),
        return_exceptions=True,
    )
    assert batches == [8]  # one transaction for them all
    stored = [a for a in said[:5] if isinstance(a, dict)]
    assert [a["duplicate"] for a in stored] == [False] * 5
    seqs = [a["seq"] for a in stored]
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    assert said[5] == {"seq": seqs[0], "duplicate": True}
    assert isinstance(said[6], UserError) and said[6].code == ErrorCode.MUTED
    assert isinstance(said[7], UserError) and said[7].code == ErrorCode.NOT_FOUND
    async with svc.db.session() as session:
        rows = list(
            await session.execute(
                select(RoomMessage.seq, RoomMessage.client_id, RoomMessage.body)
                .where(RoomMessage.meeting_id == meeting, RoomMessage.kind == "chat")
                .order_by(RoomMessage.seq)
            )
        )
    assert [tuple(r) for r in rows] == [
        (seqs[0], "c-0", "customer 0"),
        (seqs[1], "c-1", "customer 1"),
        (seqs[2], "c-2", "customer 2"),
        (seqs[3], "k-0", "chair 0"),
        (seqs[4], "k-1", "chair 1"),
    ]
    # Everyone admitted hears each one once, in order, as a fresh snapshot shows it.
    await rep.wait_for("message", lambda d: d["seq"] == seqs[-1])
    heard = [m for m in rep.received("message") if m["seq"] >= seqs[0]]
    assert [m["seq"] for m in heard] == seqs
    snapshot = await rep.join()
    assert [m for m in snapshot["messages"] if m["seq"] >= seqs[0]] == heard
    # A room that ended takes no more: the batch says so, as the other events do.
    assert (await chair.call("close", {"outcome": "no_agreement"}))["ok"]
    with pytest.raises(UserError) as refused:
        await svc.rooms.say(ids["cliente"], meeting, "c-9", "too late")
    assert refused.value.code == ErrorCode.ROOM_CLOSED


async def test_floods_and_oversize_frames_close_the_connection(meet: Meet) -> None:
    _chair, (customer,) = await admitted(meet, meet.customer)
    answers = [await customer.call("typing", {"on": True}) for _ in range(30)]
    assert any(a.get("error", {}).get("code") == "rate_limited" for a in answers)
    big = meet.client(meet.rep)
    await big.connect()
    await big.sio.emit("say", {"client_id": "big", "text": "x" * 100_000}, namespace="/meeting")
    await big.disconnected.wait()


def apply(view: dict[str, Any], event: str, data: Any) -> None:
    """A client's reducer: the snapshot plus each event's whole new version of a thing."""
    if event == "message":
        if all(m["seq"] != data["seq"] for m in view["messages"]):
            view["messages"].append(data)
            view["messages"].sort(key=lambda m: m["seq"])
            view["seq"] = max(view["seq"], data["seq"])
    elif event == "participant":
        others = [p for p in view["participants"] if p["id"] != data["id"]]
        if view["me"]["side"] == "conciliator" or data["state"] == "admitted":
            others.append(data)
        view["participants"] = others
    elif event == "room":
        view["room"] = data
    elif event == "agreement":
        view["agreement"] = data
    elif event == "me":
        view["me"] = {k: data[k] for k in ("id", "side", "state", "muted")}


def comparable(view: dict[str, Any]) -> dict[str, Any]:
    found = {k: v for k, v in view.items() if k != "server_time"}
    found["participants"] = sorted(view["participants"], key=lambda p: p["id"])
    return found


async def test_a_snapshot_plus_the_events_since_equals_a_fresh_snapshot(meet: Meet) -> None:
    ids = await meet.ids()
    chair, (customer,) = await admitted(meet, meet.customer)
    start = len(customer.events)
    view = await customer.join()
    start = len(customer.events)
    rep = meet.client(meet.rep)
    await rep.connect()
    await rep.join()
    await chair.call("admit", {"account": str(ids["rep"])})
    await rep.wait_for("me", lambda d: d["state"] == "admitted")
    await rep.join()
    await customer.say("one")
    await rep.say("two")
    await chair.call("separate", {"side": "company"})
    await rep.say("private")
    await chair.call("separate", {"side": None})
    await chair.call("lobby_note", {"note": "note"})
    last = await chair.say("three")
    await customer.wait_for("message", lambda d: d["seq"] == last["seq"])
    await customer.wait_for("room", lambda d: d["lobby_note"] == "note")
    for event, data in customer.events[start:]:
        apply(view, event, data)
    fresh = await customer.join()
    assert comparable(view) == comparable(fresh)


async def test_the_room_opens_on_time_and_only_for_its_meeting(meet: Meet) -> None:
    env = meet.world.env
    env.clock.set(rome(FIRST, 8, 40))  # five minutes too early
    early = meet.client(meet.customer)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await early.connect()
    env.clock.set(rome(FIRST, 8, 45))
    fine = meet.client(meet.customer)
    await fine.connect()
    assert (await fine.join())["me"]["state"] == "waiting"
    async with env.services.db.session() as session:
        meeting = await session.get(Meeting, meet.meeting.id)
        case = await session.get(Case, meet.case_id)
        assert meeting is not None and case is not None
        assert meeting.status == MeetingStatus.SCHEDULED  # only the conciliator opens it


async def test_a_disabled_account_or_a_lost_role_loses_its_connections(meet: Meet) -> None:
    env = meet.world.env
    _chair, (customer, rep) = await admitted(meet, meet.customer, meet.rep)
    ids = await meet.ids()
    namespace = meet.namespace()
    assert await namespace.sweep() == 0
    # The representative moves to another company: it no longer takes part.
    async with env.services.db.session() as session:
        account = await session.get(Account, ids["rep"])
        assert account is not None
        account.company_id = None
        await session.commit()
    assert await namespace.sweep() == 1
    await rep.disconnected.wait()
    assert (await customer.say("still here"))["ok"]
    await env.services.accounts.do_set_disabled(ids["cliente"], True)
    assert await namespace.sweep() == 1
    await customer.disconnected.wait()


async def test_a_conciliator_who_reconnects_gets_the_room_back_as_it_was(meet: Meet) -> None:
    chair, (customer, rep) = await admitted(meet, meet.customer, meet.rep)
    assert (await chair.call("separate", {"side": "applicant"}))["ok"]
    assert (await customer.say("only for the conciliator"))["ok"]
    before = await chair.join()
    await chair.close()
    back = meet.client(meet.conciliator)
    await back.connect()
    after = await back.join()
    assert after["room"] == before["room"] and after["room"]["session"]["side"] == "applicant"
    assert [m["seq"] for m in after["messages"]] == [m["seq"] for m in before["messages"]]
    assert {p["id"]: p["state"] for p in after["participants"]} == {
        p["id"]: p["state"] for p in before["participants"]
    }
    # The parties were never sent back to the lobby.
    assert (await rep.join())["me"]["state"] == "admitted"


async def test_a_departure_the_database_cannot_take_is_recorded_later_with_its_time(
    meet: Meet, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = meet.world.env
    chair, (customer, rep) = await admitted(meet, meet.customer, meet.rep)
    ids = await meet.ids()
    namespace = meet.namespace()
    working = Rooms.leave

    async def database_down(self: Rooms, connection: str, at: Any = None) -> None:
        raise PoolTimeout("no connection to the database in time")  # an outage, for log_failure

    async def bug(self: Rooms, connection: str, at: Any = None) -> None:
        raise ValueError("not an outage")

    # A failure that is not the database being down is not kept: it would fail again and
    # hold up the others (the room's end closes that stretch).
    monkeypatch.setattr(Rooms, "leave", bug)
    await rep.close()
    await asyncio.sleep(0.3)
    assert not namespace._departures
    monkeypatch.setattr(Rooms, "leave", database_down)
    left_at = env.clock.now()
    await customer.close()
    await wait_until(lambda: bool(namespace._departures))
    env.clock.advance(timedelta(minutes=7))  # the database comes back later
    assert await namespace.record_departures() == 0  # still down: kept
    monkeypatch.setattr(Rooms, "leave", working)
    assert await namespace.record_departures() == 1
    assert await namespace.record_departures() == 0
    async with env.services.db.session() as session:
        stretches = list(
            await session.scalars(
                select(RoomPresence).where(RoomPresence.account_id == ids["cliente"])
            )
        )
    assert [s.left_at for s in stretches] == [left_at]  # when it left, not when recorded
    await chair.wait_for(
        "participant", lambda d: d["id"] == str(ids["cliente"]) and d["online"] is False
    )


async def wait_until(condition: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("never happened")
