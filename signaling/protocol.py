"""The payloads of the ``/meeting`` namespace's client events, validated before anything else.

Every model forbids extra keys and checks types strictly, so a payload is either exactly what
``docs/protocol.md`` documents or refused with ``bad_request``. None of them names a meeting:
the meeting comes from the connection's room token. ``check_payload`` is the one place a
payload is checked: whatever JSON a client sends, it returns the model or raises a
``ProtocolError`` naming the wrong fields, never anything else.
"""

from __future__ import annotations

import uuid
from typing import Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from core.errors import ErrorCode, ProtocolError
from rooms.room import MESSAGE_MAX, NOTE_MAX

# Sequence and version numbers are 32-bit integer columns: a larger number names nothing and
# must be refused here, not reach the database (which would fail on it: a server error).
NUMBER_MAX = 2**31 - 1


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Join(Payload):
    """(Re)join: ``after`` is the last message sequence number the client holds."""

    after: StrictInt | None = Field(default=None, ge=0, le=NUMBER_MAX)


class Say(Payload):
    client_id: StrictStr = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    text: StrictStr = Field(min_length=1, max_length=MESSAGE_MAX)


class Typing(Payload):
    on: StrictBool


class History(Payload):
    after: StrictInt = Field(ge=0, le=NUMBER_MAX)
    limit: StrictInt = Field(default=200, ge=1, le=500)


class Target(Payload):
    account: uuid.UUID


class TurnAway(Payload):
    account: uuid.UUID
    note: StrictStr = Field(default="", max_length=NOTE_MAX)


class LobbyNote(Payload):
    note: StrictStr = Field(max_length=NOTE_MAX)


class Separate(Payload):
    side: Literal["applicant", "company"] | None


class Mute(Payload):
    account: uuid.UUID
    muted: StrictBool


class Share(Payload):
    document: uuid.UUID
    # The sender's id for this share: sent again (its answer was lost), it is shared once.
    client_id: StrictStr | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")


class Empty(Payload):
    pass


class Draft(Payload):
    text: StrictStr = Field(max_length=20000)
    proposal: StrictBool = False


class Accept(Payload):
    code: StrictStr = Field(pattern=r"^[0-9]{6}$")
    version: StrictInt = Field(ge=1, le=NUMBER_MAX)


class Close(Payload):
    outcome: Literal[
        "agreement", "no_agreement", "adjournment", "applicant_absent", "company_absent"
    ]
    note: StrictStr = Field(default="", max_length=2000)


SDP_MAX = 64 * 1024  # characters of one offer (Socket.IO frames are limited to as many bytes)
CANDIDATE_MAX = 1024


class MediaOffer(Payload):
    """The participant's SDP offer (their sending and receiving m-lines)."""

    sdp: StrictStr = Field(min_length=1, max_length=SDP_MAX)


class MediaCandidate(Payload):
    """A trickled ICE candidate line; ``null`` (or ``""``) says there are no more."""

    candidate: StrictStr | None = Field(max_length=CANDIDATE_MAX)


class MediaState(Payload):
    """The participant's own microphone and camera, on or off."""

    audio: StrictBool
    video: StrictBool


class MediaMute(Payload):
    """The conciliator cuts (or gives back) a party's audio on the server."""

    account: uuid.UUID
    muted: StrictBool


# Every client event and the model of its payload.
EVENTS: dict[str, type[Payload]] = {
    "join": Join,
    "say": Say,
    "typing": Typing,
    "history": History,
    "admit": Target,
    "turn_away": TurnAway,
    "lobby_note": LobbyNote,
    "separate": Separate,
    "mute": Mute,
    "remove": Target,
    "share": Share,
    "ask_proposal": Empty,
    "draft": Draft,
    "send_code": Empty,
    "accept": Accept,
    "close": Close,
    "media_offer": MediaOffer,
    "media_candidate": MediaCandidate,
    "media_state": MediaState,
    "media_mute": MediaMute,
    "media_leave": Empty,
}

P = TypeVar("P", bound=Payload)


def check_payload(model: type[P], data: object) -> P:
    """``data`` (any decoded JSON; ``None`` is an empty payload) as ``model``, or a
    ``ProtocolError`` (``bad_request``) whose ``fields`` param lists the wrong fields."""
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as exc:
        fields = sorted({".".join(str(x) for x in e["loc"]) or "payload" for e in exc.errors()})
        raise ProtocolError(ErrorCode.BAD_REQUEST, "invalid payload", fields=fields) from None
