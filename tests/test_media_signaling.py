"""Video through the ``/meeting`` namespace: offers answered only for admitted members of a
running video meeting, the media following the room (separate sessions, removal), the
conciliator's audio mute (stored: it outlives the media room), and the layout told to each
participant."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from media.room import MediaRoom, MediaRooms
from rooms.models import Room, RoomMember
from scheduling.bookings import Meeting
from signaling.presence import LocalPresence
from signaling.server import MediaElsewhere, Signaling
from tests.media_clients import Client
from tests.rooms_support import Meet, RoomClient, admitted
from tests.test_media import check_video, eventually, still
from web.app import SIGNALING


async def video_meeting(meet: Meet) -> MediaRooms:
    """Turn the booked meeting into a video one; the app's media rooms."""
    env = meet.world.env
    async with env.services.db.session() as session:
        meeting = await session.get(Meeting, meet.meeting.id)
        assert meeting is not None
        meeting.mode = "video"
        await session.commit()
    app = env.client.app
    assert app is not None
    media = app[SIGNALING].media
    assert media is not None
    return media


class Peers:
    """The in-process browsers of the test, closed at its end."""

    def __init__(self) -> None:
        self.clients: list[Client] = []

    def new(self, name: str, ident: int) -> Client:
        client = Client(name, ident)
        self.clients.append(client)
        return client


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    found = Peers()
    yield found
    for client in found.clients:
        await client.close()


async def connect_media(room_client: RoomClient, peer: Client) -> dict[str, Any]:
    """Offer through the namespace and take the answer; the ack."""
    answer = await room_client.call("media_offer", {"sdp": await peer.offer()})
    assert answer["ok"], answer
    await peer.accept(answer["sdp"])
    return answer


def video_from(room: MediaRoom, viewer: Client, source: str) -> list[tuple[int, int]]:
    layout = room.layout(viewer.name)
    slot = None if layout is None else layout.slot_of(source)
    return [] if slot is None else viewer.got(slot.video_mid).video


def audio_from(room: MediaRoom, viewer: Client, source: str) -> list[float]:
    layout = room.layout(viewer.name)
    slot = None if layout is None else layout.slot_of(source)
    return [] if slot is None else viewer.got(slot.audio_mid).pitches


async def stored(meet: Meet) -> tuple[int, dict[str, tuple[bool, bool]]]:
    """The room's version and each member's (audio mute, chat mute), as the database has them."""
    async with meet.world.env.services.db.session() as session:
        room = await session.get(Room, meet.meeting.id)
        assert room is not None
        rows = await session.execute(
            select(RoomMember.account_id, RoomMember.audio_muted, RoomMember.muted).where(
                RoomMember.meeting_id == meet.meeting.id
            )
        )
        return room.version, {str(a): (audio, chat) for a, audio, chat in rows.all()}


async def test_a_chat_meeting_and_the_lobby_get_no_video(meet: Meet) -> None:
    customer = meet.client(meet.customer)
    await customer.connect()
    await customer.join()
    assert (await customer.call("media_offer", {"sdp": "v=0"}))["error"]["code"] == "not_admitted"
    chair = meet.client(meet.conciliator)
    await chair.connect()
    await chair.join()
    # The chat meeting's conciliator is in the room, but there is no video in a chat meeting.
    refused = await chair.call("media_offer", {"sdp": "v=0"})
    assert refused["error"]["code"] == "forbidden"
    # Payloads are checked exactly.
    for bad in ({}, {"sdp": 3}, {"sdp": ""}, {"sdp": "v=0", "more": 1}):
        assert (await chair.call("media_offer", bad))["error"]["code"] == "bad_request"


async def test_video_follows_the_room(meet: Meet, peers: Peers) -> None:
    media = await video_meeting(meet)
    baseline = media.live_peer_connections
    ids = await meet.ids()
    chair_id, customer_id = str(ids["conciliatore1"]), str(ids["cliente"])
    chair, (customer,) = await admitted(meet, meet.customer)

    # The representative waits in the lobby: no video for it.
    rep = meet.client(meet.rep)
    await rep.connect()
    assert (await rep.join())["me"]["state"] == "waiting"
    waiting = await rep.call("media_offer", {"sdp": await peers.new("rep", 3).offer()})
    assert waiting["error"]["code"] == "not_admitted"

    chair_peer = peers.new(chair_id, 1)
    customer_peer = peers.new(customer_id, 2)
    ack = await connect_media(chair, chair_peer)
    assert isinstance(ack["ice_servers"], list)
    await connect_media(customer, customer_peer)
    room = media.get(str(meet.meeting.id))
    assert room is not None and sorted(room.participants) == sorted([chair_id, customer_id])
    assert media.live_peer_connections == baseline + 2

    # The party sees the conciliator, and is told which slot carries whom.
    await customer.wait_for(
        "media_layout", lambda d: any(s["participant"] == chair_id for s in d["slots"])
    )
    await eventually(
        lambda: len(video_from(room, customer_peer, chair_id)) >= 8, what="the chair's video"
    )
    check_video(video_from(room, customer_peer, chair_id)[-8:], 1)
    await customer.wait_for("media_connection", lambda d: d["state"] == "connected")

    # A party may not mute anyone; the conciliator may cut a party's audio.
    refused = await customer.call("media_mute", {"account": chair_id, "muted": True})
    assert refused["error"]["code"] == "forbidden"
    assert (await chair.call("media_mute", {"account": customer_id, "muted": True}))["ok"]
    await customer.wait_for("media_muted", lambda d: d == {"account": customer_id, "muted": True})
    assert room.routing.muted == {customer_id}
    assert (await customer.join())["media"] == {"muted": [customer_id]}
    assert (await chair.call("media_mute", {"account": customer_id, "muted": False}))["ok"]
    assert room.routing.muted == frozenset()
    # The party turns its own camera off and on.
    assert (await customer.call("media_state", {"audio": True, "video": False}))["ok"]
    assert (await customer.call("media_state", {"audio": True, "video": True}))["ok"]

    # A separate session with the other side: nothing flows between the chair and the party.
    assert (await chair.call("separate", {"side": "company"}))["ok"]
    layout = room.layout(customer_id)
    assert layout is not None and all(s.participant is None for s in layout.slots)
    await still(lambda: sum(r.frames for r in customer_peer.received.values()))
    assert (await chair.call("separate", {"side": None}))["ok"]
    seen = len(video_from(room, customer_peer, chair_id))
    await eventually(
        lambda: len(video_from(room, customer_peer, chair_id)) >= seen + 8, what="video back"
    )

    # Removing the party closes its peer connection.
    assert (await chair.call("remove", {"account": customer_id}))["ok"]
    await eventually(
        lambda: media.live_peer_connections == baseline + 1, what="the party's peer closed"
    )
    assert room.participants == [chair_id]
    # Video calls of a removed party are refused (its connection is closed anyway).
    assert customer_id not in room.routing.members

    # Closing the meeting ends its media. (Its ack may be lost: the access sweep can close
    # the connections of the ended room while the minutes are being drawn up.)
    await chair.sio.emit("close", {"outcome": "no_agreement"}, namespace="/meeting")
    await chair.wait_for("room", lambda d: d["ended"])
    await eventually(lambda: media.get(str(meet.meeting.id)) is None, what="media ended")
    await eventually(lambda: media.live_peer_connections == baseline, what="all peers closed")


async def test_media_events_before_any_offer_are_harmless(meet: Meet) -> None:
    await video_meeting(meet)
    chair, (customer,) = await admitted(meet, meet.customer)
    assert (await customer.call("media_candidate", {"candidate": None}))["ok"]
    assert (await customer.call("media_state", {"audio": False, "video": True}))["ok"]
    assert (await customer.call("media_leave", {}))["ok"]
    missing = await chair.call("media_mute", {"account": str(uuid.uuid4()), "muted": True})
    assert missing["error"]["code"] == "not_found"


class Keys:
    """Just the Redis string commands the media pins use, in memory (expiry not modelled)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def set(self, key: str, value: str, nx: bool = False, ex: int | None = None) -> bool:
        if nx and key in self.values:
            return False
        self.values[key] = value
        return True

    async def get(self, key: str) -> bytes | None:
        found = self.values.get(key)
        return None if found is None else found.encode()

    async def expire(self, key: str, seconds: int) -> bool:
        return key in self.values

    async def delete(self, key: str) -> int:
        return 1 if self.values.pop(key, None) is not None else 0


def node(keys: Keys, url: str) -> Signaling:
    def unused() -> Any:
        raise AssertionError("not called")

    async def nobody(_request: Any) -> uuid.UUID | None:
        return None

    found = Signaling(unused, nobody, unused, unused, LocalPresence())
    found.redis, found.redis_prefix, found.node_url = keys, "test", url
    return found


async def test_a_meetings_media_is_pinned_to_the_node_of_the_first_offer() -> None:
    keys = Keys()
    one, two = node(keys, "https://one.example"), node(keys, "https://two.example")
    meeting = uuid.uuid4()
    await one._host(meeting)
    assert keys.values == {f"test:media:{meeting}": f"{one.presence.node}|https://one.example"}
    await one._host(meeting)  # still its own
    with pytest.raises(MediaElsewhere) as elsewhere:
        await two._host(meeting)
    assert elsewhere.value.url == "https://one.example"
    with pytest.raises(MediaElsewhere):
        await two._host(meeting, claim=False)
    await two._unpin(meeting)  # not its pin: left alone
    assert f"test:media:{meeting}" in keys.values
    await one._unpin(meeting)
    assert keys.values == {}
    await two._host(meeting, claim=False)  # nobody holds it: nothing claimed
    assert keys.values == {}
    await two._host(meeting)
    assert keys.values[f"test:media:{meeting}"].endswith("|https://two.example")


async def test_the_audio_mute_is_stored_and_outlives_the_media_room(
    meet: Meet, peers: Peers
) -> None:
    media = await video_meeting(meet)
    ids = await meet.ids()
    chair_id, customer_id = str(ids["conciliatore1"]), str(ids["cliente"])
    chair, (customer,) = await admitted(meet, meet.customer)
    await connect_media(chair, peers.new(chair_id, 1))
    await connect_media(customer, peers.new(customer_id, 2))
    assert (await chair.call("media_mute", {"account": customer_id, "muted": True}))["ok"]
    await customer.wait_for("media_muted", lambda d: d == {"account": customer_id, "muted": True})
    told = await chair.wait_for(
        "participant", lambda d: d["id"] == customer_id and d["audio_muted"]
    )
    assert not told["muted"]
    # Stored on the party's membership; it is not the chat's mute: the party still writes.
    assert (await stored(meet))[1][customer_id] == (True, False)
    assert (await customer.say("I can still write"))["ok"]

    # The node hosting the media restarts: its media room, and all it held, is gone.
    await media.end(str(meet.meeting.id))
    assert media.get(str(meet.meeting.id)) is None
    # A snapshot taken where no media room is (another node, or this one now) lists the mute.
    assert (await customer.join())["media"] == {"muted": [customer_id]}
    view = await chair.join()
    assert view["media"] == {"muted": [customer_id]}
    assert {p["id"]: p["audio_muted"] for p in view["participants"]} == {
        chair_id: False,
        customer_id: True,
    }

    # The clients offer again: the new media room cuts the party's audio from the start.
    chair_peer, customer_peer = peers.new(chair_id, 1), peers.new(customer_id, 2)
    await connect_media(chair, chair_peer)
    await connect_media(customer, customer_peer)
    room = media.get(str(meet.meeting.id))
    assert room is not None and room.routing.muted == {customer_id}
    await eventually(
        lambda: len(video_from(room, chair_peer, customer_id)) >= 8, what="the party's video"
    )
    layout = room.layout(chair_id)
    slot = None if layout is None else layout.slot_of(customer_id)
    assert slot is not None and slot.video and not slot.audio
    assert audio_from(room, chair_peer, customer_id) == []
    # The party still hears the conciliator.
    await eventually(
        lambda: len(audio_from(room, customer_peer, chair_id)) >= 8, what="the chair's audio"
    )

    # Given back, the party's audio reaches the conciliator.
    assert (await chair.call("media_mute", {"account": customer_id, "muted": False}))["ok"]
    assert room.routing.muted == frozenset()
    await eventually(
        lambda: len(audio_from(room, chair_peer, customer_id)) >= 8, what="the party's audio"
    )
    assert (await stored(meet))[1][customer_id] == (False, False)
    assert (await customer.join())["media"] == {"muted": []}


async def test_only_the_conciliator_cuts_the_audio_of_an_admitted_party_of_a_video_meeting(
    meet: Meet,
) -> None:
    ids = await meet.ids()
    chair_id, customer_id, rep_id = (str(ids[n]) for n in ("conciliatore1", "cliente", "rep"))
    chair, (customer,) = await admitted(meet, meet.customer)
    rep = meet.client(meet.rep)
    await rep.connect()
    assert (await rep.join())["me"]["state"] == "waiting"
    before = await stored(meet)

    # A chat meeting has no audio to cut, and its snapshot says nothing of it.
    refused = await chair.call("media_mute", {"account": customer_id, "muted": True})
    assert refused["error"]["code"] == "forbidden"
    await video_meeting(meet)
    for caller, target, code in [
        (customer, chair_id, "forbidden"),  # a party mutes nobody
        (customer, customer_id, "forbidden"),
        (rep, customer_id, "not_admitted"),  # from the lobby
        (chair, chair_id, "not_found"),  # never the conciliator
        (chair, rep_id, "not_found"),  # a party in the lobby is not in the video
        (chair, str(uuid.uuid4()), "not_found"),  # no member of this meeting
    ]:
        answer = await caller.call("media_mute", {"account": target, "muted": True})
        assert answer["error"]["code"] == code, (target, answer)
    for bad in (
        {"account": "nope", "muted": True},
        {"account": customer_id, "muted": 1},
        {"account": customer_id},
        {"account": customer_id, "muted": True, "meeting": str(uuid.uuid4())},
    ):
        assert (await chair.call("media_mute", bad))["error"]["code"] == "bad_request"
    # Nothing was written, nothing was announced.
    assert await stored(meet) == before
    assert all(not audio for audio, _chat in before[1].values())
    assert not customer.received("media_muted") and not chair.received("media_muted")
    assert (await customer.join())["media"] == {"muted": []}
    assert "media" not in await rep.join()  # the lobby sees nobody
